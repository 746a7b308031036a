"""Diversification, explanations and anonymous sessions: pure functions on small models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.lookup_answers import ItemFilter, pick
from streamrec.model.ease import fit_ease, gram_matrix
from streamrec.model.lists import rank_histories, score_history
from streamrec.model.rerank import diversify, explain
from streamrec.model.store import FoldInParams, ItemModel
from streamrec.personal import LiveModel, SessionItem, rank_session, session_history
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import FeedbackConfig

RNG = np.random.default_rng(7)
N_ITEMS, RANK = 30, 4
FACTORS = RNG.normal(size=(N_ITEMS, RANK)).astype(np.float32)
IDS = [f"i{j}" for j in range(N_ITEMS)]
PARAMS = FoldInParams(reg_param=0.1, alpha=5.0, ease_binary=False)


def als_model() -> ItemModel:
    gram = FACTORS.astype(np.float64).T @ FACTORS.astype(np.float64)
    return ItemModel("v1", IDS, FACTORS, gram, {})


def ease_model() -> ItemModel:
    users = np.repeat(np.arange(40), 5)
    items = RNG.integers(0, N_ITEMS, size=users.size)
    gram = gram_matrix(users, items, np.ones(users.size), N_ITEMS, binary=True)
    base = als_model()
    return ItemModel("v1", IDS, base.item_factors, base.gram, {}, None, fit_ease(gram, 2.0))


HISTORY = (np.array([1, 4, 9]), np.array([3.0, 1.0, 0.5]))


@pytest.mark.parametrize("make", [als_model, ease_model], ids=["als", "ease"])
def test_shares_sum_to_the_score_the_stream_ranks_with(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    (positions, scores) = rank_histories(model, PARAMS, [HISTORY], 5)[0] or ((), ())
    found = explain(model, PARAMS, HISTORY, positions.tolist(), top=10)
    assert found is not None and len(found) == 5
    full = score_history(model, PARAMS, HISTORY)
    assert full is not None
    for e, score in zip(found, scores.tolist(), strict=True):
        assert e.score == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert e.score == pytest.approx(float(full[e.position]), rel=1e-4, abs=1e-5)
        # the shares named are the history's items, largest first, all positive
        named = [p for p, _ in e.because]
        assert set(named) <= {1, 4, 9}
        shares = [s for _, s in e.because]
        assert shares == sorted(shares, reverse=True) and all(s > 0 for s in shares)


def test_a_history_without_positive_feedback_is_not_explained() -> None:
    assert explain(als_model(), PARAMS, (np.array([2]), np.array([-1.0])), [3]) is None


def test_no_diversity_keeps_the_order() -> None:
    positions = [3, 1, 2, 0, -1]
    assert diversify(positions, [5, 4, 3, 2, 1], FACTORS, 3, 0.0) == [0, 1, 2]
    assert diversify(positions, [1, 1, 1, 1, 1], FACTORS, 5, 0.0) == [0, 1, 2, 3, 4]


def test_diversity_skips_near_duplicates() -> None:
    factors = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]], dtype=np.float32)
    # the second candidate is almost the first: with diversity it comes after the third
    assert diversify([0, 1, 2], [1.0, 0.9, 0.5], factors, 2, 0.0) == [0, 1]
    assert diversify([0, 1, 2], [1.0, 0.9, 0.5], factors, 2, 0.5) == [0, 2]
    with pytest.raises(ValueError, match="diversity"):
        diversify([0], [1.0], factors, 1, 1.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12),
    st.integers(1, 15),
    st.floats(0, 1),
)
def test_diversify_picks_distinct_candidates(scores: list[float], n: int, d: float) -> None:
    positions = [j % N_ITEMS if j % 4 else -1 for j in range(len(scores))]
    ranked = sorted(scores, reverse=True)
    rows = diversify(positions, ranked, FACTORS, n, d)
    assert len(rows) == min(n, len(scores)) and len(set(rows)) == len(rows)
    assert rows[0] == 0  # the most relevant always comes first


def live(model: ItemModel) -> LiveModel:
    return LiveModel(model, PARAMS, FeedbackConfig(), {item: j for j, item in enumerate(IDS)})


def test_a_session_history_sums_weights_and_names_unknown_items() -> None:
    items = [
        SessionItem("i2"),
        SessionItem("nobody"),
        SessionItem("i2", "purchase"),
        SessionItem("i5", "play", 0.0),
    ]
    (positions, ratings), unknown = session_history(live(als_model()), items)
    assert positions.tolist() == [2, 5]
    assert ratings.tolist() == pytest.approx([1.0 + 4.0, 0.0])  # log1p(0) plays count nothing
    assert unknown == ["nobody"]


def test_a_session_ranks_the_whole_catalogue_without_its_items() -> None:
    model = live(ease_model())
    categories = {item: frozenset({"even" if j % 2 == 0 else "odd"}) for j, item in enumerate(IDS)}
    plain = rank_session(model, HISTORY, 5, ItemFilter([]), categories, 0.0)
    assert plain is not None and len(plain) == 5
    expected = rank_histories(model.model, PARAMS, [HISTORY], 5)[0]
    assert expected is not None
    assert [p for p, _ in plain] == expected[0].tolist()
    blocked = ItemFilter([IDS[plain[0][0]]], ["even"], categories)
    filtered = rank_session(model, HISTORY, 5, blocked, categories, 0.0)
    assert filtered and all(p % 2 == 0 and p != plain[0][0] for p, _ in filtered)
    assert not {p for p, _ in filtered} & {1, 4, 9}
    mixed = rank_session(model, HISTORY, 5, ItemFilter([]), categories, 0.8)
    assert mixed is not None and len({p for p, _ in mixed}) == 5 and mixed[0] == plain[0]


def test_an_item_filter_makes_a_lookup_fall_through() -> None:
    def encoded(items: list[str], source: str) -> bytes:
        return L.encode_list(L.RecList(tuple((i, 1.0) for i in items), source, "v", 1, 1))

    categories = {"a": frozenset({"x"}), "b": frozenset({"y"}), "c": frozenset({"y"})}
    own, popular = encoded(["a"], "batch"), encoded(["b", "c", "a"], "popular")
    answer = pick("u", "v", [own, None, popular], None, 5, ItemFilter(["c"], ["y"], categories))
    assert answer.source == "popular" and [i for i, _ in answer.items] == ["b"]
    assert "a" not in ItemFilter(["b"]) and bool(ItemFilter([])) is False
