"""Fold-in, top-N scoring, feedback weights and the model store, on tiny known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.errors import ModelStoreError
from streamrec.model import store
from streamrec.model.feedback import event_weights
from streamrec.model.foldin import fold_in, fold_in_many
from streamrec.model.scoring import top_n
from streamrec.schemas.config import FeedbackConfig

pytestmark = pytest.mark.unit


def _implicit_loss(
    x: np.ndarray, y: np.ndarray, ratings: dict[int, float], reg: float, alpha: float
) -> float:
    """Spark's implicit objective for one user, over all items (the reference)."""
    loss = 0.0
    for i in range(y.shape[0]):
        r = ratings.get(i, 0.0)
        c = 1 + alpha * abs(r)
        p = 1.0 if r > 0 else 0.0
        loss += c * (p - x @ y[i]) ** 2
    n_pos = sum(1 for r in ratings.values() if r > 0)
    return loss + reg * n_pos * float(x @ x)


def test_fold_in_minimises_the_implicit_objective() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 4))
    ratings = {2: 3.0, 5: 1.0, 7: -2.0, 11: 0.5}
    idx = np.array(list(ratings))
    x = fold_in(y, y.T @ y, idx, np.array(list(ratings.values())), reg_param=0.1, alpha=2.0)
    assert x is not None
    best = _implicit_loss(x, y, ratings, 0.1, 2.0)
    for _ in range(50):  # any nudge makes it worse: x is the minimiser
        nudged = x + rng.normal(scale=1e-3, size=x.shape)
        assert _implicit_loss(nudged, y, ratings, 0.1, 2.0) > best


def test_fold_in_of_only_negative_feedback_is_none() -> None:
    y = np.eye(3)
    assert fold_in(y, y.T @ y, np.array([0]), np.array([-1.0]), 0.1, 1.0) is None


def test_fold_in_many_solves_each_user_as_fold_in_does() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 6))
    histories = [
        (np.array([], dtype=np.int64), np.array([])),  # nothing: None
        (np.array([4]), np.array([-2.0])),
    ]  # only negative feedback: None
    for length in (1, 2, 3, 5, 8, 9, 40, 300):  # widths 1 to 512, padded in groups
        items = np.sort(rng.choice(300, size=length, replace=False))
        histories.append((items, rng.normal(size=length) + 0.3))
    many = fold_in_many(y, y.T @ y, histories, reg_param=0.1, alpha=2.0)
    for (items, ratings), got in zip(histories, many, strict=True):
        want = fold_in(y, y.T @ y, items, ratings, 0.1, 2.0)
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_top_n_excludes_seen_and_breaks_ties_by_index() -> None:
    items = np.array([[1.0], [3.0], [3.0], [2.0], [0.0]])
    users = np.array([[1.0], [1.0]])
    (best0, s0), (best1, _) = top_n(users, items, [[], [1]], n=3)
    assert best0.tolist() == [1, 2, 3] and s0.tolist() == [3.0, 3.0, 2.0]
    assert best1.tolist() == [2, 3, 0]


def test_top_n_when_user_has_seen_almost_everything() -> None:
    items = np.eye(3)
    ((best, _),) = top_n(np.ones((1, 3)), items, [[0, 1]], n=5)
    assert best.tolist() == [2]


def test_event_weights_type_and_log_scaled_value() -> None:
    cfg = FeedbackConfig(weights={"play": 1.0, "skip": -0.5}, value_scale="log")
    w = event_weights(
        cfg, pd.Series(["play", "play", "skip", "click"]), pd.Series([None, np.e - 1, None, 5.0])
    )
    assert w.tolist() == pytest.approx([1.0, 1.0, -0.5, 0.0])


def test_model_store_promote_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelStoreError, match="batch run"):
        store.load_item_model(tmp_path)
    factors = np.arange(6, dtype=np.float32).reshape(3, 2)
    store.write_item_model(tmp_path, "v1", ["a", "b", "c"], factors, {"k": 1})
    assert store.current_version(tmp_path) is None  # written, not yet promoted
    store.promote(tmp_path, "v1")
    model = store.load_item_model(tmp_path)
    assert model.version == "v1" and model.item_ids == ["a", "b", "c"]
    assert np.array_equal(model.item_factors, factors)
    assert np.allclose(model.gram, factors.T.astype(np.float64) @ factors)
    with pytest.raises(ModelStoreError, match="incomplete"):
        store.promote(tmp_path, "v2")


def test_top_n_in_blocks_equals_a_plain_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrec.model import scoring

    rng = np.random.default_rng(7)
    users, items = rng.normal(size=(37, 5)), rng.normal(size=(50, 5))
    seen = [list(rng.choice(50, size=int(rng.integers(0, 10)), replace=False)) for _ in range(37)]
    monkeypatch.setattr(scoring, "SCORE_BLOCK_ELEMENTS", 50 * 4)  # 4 users per block
    got = scoring.top_n(users, items, seen, n=7)
    for u in range(37):
        s = users[u] @ items.T
        ranked = [i for i in np.argsort(-s, kind="stable") if i not in set(seen[u])][:7]
        assert got[u][0].tolist() == ranked
        assert np.allclose(got[u][1], s[ranked])


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ("log", [1.0, 1.0, 0.0, -0.5]),
        ("linear", [1.0, np.e - 1, 0.0, -0.5 * 4.0]),
        ("binary", [1.0, 1.0, 0.0, -0.5]),
    ],
)
def test_event_weights_scale_values_as_configured(scale: str, expected: list[float]) -> None:
    cfg = FeedbackConfig(weights={"play": 1.0, "skip": -0.5}, value_scale=scale)
    values = pd.Series([None, np.e - 1, 0.0, 4.0 if scale != "log" else None])
    w = event_weights(cfg, pd.Series(["play", "play", "play", "skip"]), values)
    assert w.tolist() == pytest.approx(expected)
