"""The stream's per-user state: merging is exact, idempotent and bounded."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pytest

from streamrec.errors import ModelStoreError
from streamrec.model.feedback import DAY_MS, event_weights
from streamrec.model.foldin import fold_in
from streamrec.model.scoring import top_n
from streamrec.model.store import FoldInParams, ItemModel, check_foldable
from streamrec.model.user_state import UserState, decode_state, encode_state, merge
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config, FeedbackConfig
from streamrec.schemas.config_loader import with_overrides
from tests.conftest import trained_with
from tests.support import update_user

pytestmark = pytest.mark.unit

T = 1_700_000_000_000


def _events(rows: list[tuple[str, str, str, int, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[E.EVENT_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE])


def test_merge_sums_event_weights_per_item_and_counts_behaviour() -> None:
    cfg = FeedbackConfig()
    events = _events(
        [
            ("a", "x", "play", T, 30.0),
            ("b", "x", "like", T + 1, None),
            ("c", "y", "skip", T + 2, None),
        ]
    )
    state = merge(UserState(), events, 0, cfg)
    assert state is not None
    w = event_weights(cfg, events[E.EVENT_TYPE], events[E.VALUE])
    assert state.weights == pytest.approx({"x": w[0] + w[1], "y": w[2]})
    assert (state.events, state.last_ms, state.batch) == (3, T + 2, 0)
    assert state.types == {"play": 1, "like": 1, "skip": 1}


def test_a_batch_applied_twice_and_retried_ids_count_once() -> None:
    cfg = FeedbackConfig()
    first = merge(UserState(), _events([("a", "x", "play", T, 30.0)]), 4, cfg)
    assert first is not None
    assert merge(first, _events([("b", "y", "play", T, 1.0)]), 4, cfg) is None  # replay
    again = merge(first, _events([("a", "x", "play", T, 30.0)]), 5, cfg)  # producer retry
    assert again is not None and again.weights == first.weights and again.events == 1
    assert again.batch == 5


def test_decay_in_two_steps_equals_decay_in_one() -> None:
    cfg = FeedbackConfig(half_life_days=7.0)
    early = ("a", "x", "play", T, 30.0)
    later = ("b", "y", "play", T + 3 * DAY_MS, 30.0)
    both = merge(UserState(), _events([early, later]), 0, cfg)
    step = merge(UserState(), _events([early]), 0, cfg)
    assert step is not None
    step = merge(step, _events([later]), 1, cfg)
    assert both is not None and step is not None
    assert step.weights == pytest.approx(both.weights) and step.ref_ms == both.ref_ms


def test_bounds_keep_the_strongest_items_and_newest_ids() -> None:
    rows = [(f"e{i}", f"i{i}", "play", T + i, float(i + 1)) for i in range(10)]
    state = merge(UserState(), _events(rows), 0, FeedbackConfig(), max_items=3, max_ids=4)
    assert state is not None
    assert set(state.weights) == {"i9", "i8", "i7"} and state.ids == ("e6", "e7", "e8", "e9")
    assert decode_state(encode_state(state)) == state
    assert decode_state(None) == UserState()


def test_update_user_folds_in_a_new_user_and_leaves_history_out() -> None:
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(12, 3)).astype(np.float32)
    f64 = factors.astype(np.float64)
    model = ItemModel("v1", [f"i{n}" for n in range(12)], factors, f64.T @ f64, trained_with())
    cfg = with_overrides(Config(), streaming=dict(top_n=5))
    events = _events([("a", "i1", "play", T, 30.0), ("b", "new-item", "play", T + 1, 5.0)])
    update = update_user(UserState(), events, 0, model, model.index_of(), cfg, T + 1)
    assert update is not None and update.payload and update.fence == T + 1
    assert set(update.state.weights) == {"i1", "new-item"}
    assert update.segment == ""  # the model has no segments
    assert update_user(update.state, events, 0, model, model.index_of(), cfg, T) is None
    no_model = update_user(UserState(), events, 0, None, {}, cfg, T)
    assert no_model is not None and no_model.payload == b"" and no_model.state.events == 2


def test_each_partition_of_a_micro_batch_applies_once() -> None:
    cfg = FeedbackConfig()
    first = merge(UserState(), _events([("a", "x", "play", T, 30.0)]), 4, cfg, part=1)
    assert first is not None and (first.batch, first.parts) == (4, (1,))
    # The same micro-batch's other partition joins; a replay of either changes nothing.
    both = merge(first, _events([("b", "y", "play", T + 1, 1.0)]), 4, cfg, part=0)
    assert both is not None and both.parts == (1, 0) and both.events == 2
    assert merge(both, _events([("c", "z", "play", T, 1.0)]), 4, cfg, part=1) is None
    assert merge(both, _events([("c", "z", "play", T, 1.0)]), 3, cfg, part=2) is None
    later = merge(both, _events([("c", "z", "play", T + 2, 1.0)]), 5, cfg, part=0)
    assert later is not None and (later.batch, later.parts) == (5, (0,))
    assert decode_state(encode_state(later)) == later


def test_a_state_written_before_partitions_were_recorded_covers_its_whole_micro_batch() -> None:
    old = encode_state(
        merge(UserState(), _events([("a", "x", "play", T, 30.0)]), 4, FeedbackConfig())
    )  # type: ignore[arg-type]
    legacy = json.loads(old)
    del legacy["parts"]
    state = decode_state(json.dumps(legacy))
    assert state.parts is None and state.applied(4, 0) and not state.applied(5, 0)


def test_lists_follow_the_model_given_even_when_two_models_share_a_version_name() -> None:
    # The per-worker id index and list encoder are cached per model object: a second model
    # under the same name (bench/costs.py builds such) must not reuse the first one's catalogue.
    rng = np.random.default_rng(2)
    cfg = with_overrides(Config(), streaming=dict(top_n=3))
    events = _events([("a", "i1", "play", T, 30.0)])
    for n_items in (4, 40):
        factors = rng.normal(size=(n_items, 3)).astype(np.float32)
        f64 = factors.astype(np.float64)
        model = ItemModel(
            "same", [f"i{n}" for n in range(n_items)], factors, f64.T @ f64, trained_with()
        )
        update = update_user(UserState(), events, 0, model, model.index_of(), cfg, T)
        assert update is not None
        items = [item for item, _ in json.loads(update.payload)["items"]]
        ratings = np.array([update.state.weights["i1"]])
        x = fold_in(
            factors, model.gram, np.array([1]), ratings, cfg.batch.reg_param, cfg.batch.alpha
        )
        assert x is not None
        ranked = [f"i{i}" for i in np.argsort(-(factors @ x.astype(np.float32))) if i != 1]
        assert items == ranked[:3]


def _model_trained_with(reg_param: float, alpha: float) -> ItemModel:
    rng = np.random.default_rng(7)
    factors = rng.normal(size=(40, 4)).astype(np.float32)
    f64 = factors.astype(np.float64)
    cfg = with_overrides(Config(), batch=dict(reg_param=reg_param, alpha=alpha))
    ids = [f"i{n}" for n in range(40)]
    return ItemModel("v-own", ids, factors, f64.T @ f64, trained_with(cfg))


def test_the_stream_folds_in_with_the_models_own_parameters() -> None:
    # The job's own batch section says regParam 0.05, alpha 10: the model says otherwise.
    cfg = with_overrides(Config(), streaming=dict(top_n=8))
    model = _model_trained_with(reg_param=3.0, alpha=0.5)
    events = _events([(f"e{n}", f"i{n}", "play", T + n, 10.0 * n) for n in range(1, 9)])
    update = update_user(UserState(), events, 0, model, model.index_of(), cfg, T + 9)
    assert update is not None
    listed = [item for item, _ in L.decode_list(update.payload).items]

    items, ratings = update.state.interactions(model.index_of())
    expected = []
    for reg_param, alpha in ((3.0, 0.5), (cfg.batch.reg_param, cfg.batch.alpha)):
        vector = fold_in(model.item_factors, model.gram, items, ratings, reg_param, alpha)
        assert vector is not None
        best, _ = top_n(vector[None, :].astype(np.float32), model.item_factors, [items], 8)[0]
        expected.append([model.item_ids[i] for i in best])
    own, configs = expected
    assert own != configs  # the parameters matter here, so the check below can tell
    assert listed == own


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({}, "lacks a usable params.reg_param"),
        ({"params": {"reg_param": 0.1}}, "lacks a usable params.alpha"),
        ({"params": {"reg_param": 0.1, "alpha": 1.0, "implicit": False}}, "explicit ratings"),
    ],
)
def test_a_model_without_fold_in_parameters_is_refused(meta: dict[str, Any], reason: str) -> None:
    model = ItemModel("v-bad", ["a"], np.ones((1, 2), np.float32), np.eye(2), meta)
    with pytest.raises(ModelStoreError, match=reason):
        check_foldable(model, asdict(FeedbackConfig()))


def test_a_model_trained_on_another_feedback_transform_is_refused() -> None:
    model = _model_trained_with(reg_param=0.1, alpha=1.0)
    assert check_foldable(model, asdict(FeedbackConfig())) == FoldInParams(0.1, 1.0)
    linear = asdict(FeedbackConfig(value_scale="linear"))
    with pytest.raises(ModelStoreError, match="same `feedback` section"):
        check_foldable(model, linear)
    # A version from before the transform was recorded is taken as trained with it.
    legacy_meta = {"params": {"reg_param": 0.1, "alpha": 1.0}}
    legacy = ItemModel("v-old", ["a"], np.ones((1, 2), np.float32), np.eye(2), legacy_meta)
    assert check_foldable(legacy, linear) == FoldInParams(0.1, 1.0)


YEAR_MS = 365 * DAY_MS


def test_one_user_far_in_the_future_leaves_the_others_weights_alone() -> None:
    from streamrec.model.user_state import merge_rows, weighed_rows

    cfg = FeedbackConfig(half_life_days=1.0)
    partition = pd.DataFrame(
        {
            E.USER_ID: ["now", "now", "future"],
            E.EVENT_ID: ["a", "b", "c"],
            E.ITEM_ID: ["x", "y", "x"],
            E.EVENT_TYPE: ["play", "play", "play"],
            E.EVENT_TIME: [T, T + DAY_MS, T + 74 * YEAR_MS],
            E.VALUE: [30.0, 30.0, 30.0],
        }
    )
    _, by_user = weighed_rows(partition, cfg)
    mixed = merge_rows(UserState(), by_user["now"], 0, cfg)  # no OverflowError
    alone = merge(UserState(), partition[partition[E.USER_ID] == "now"], 0, cfg)
    assert mixed is not None and alone is not None
    assert mixed.weights == pytest.approx(alone.weights)
    assert mixed.weights["y"] == pytest.approx(2 * mixed.weights["x"])  # one half-life apart


def test_decay_never_rounds_a_preference_away_to_zero() -> None:
    cfg = FeedbackConfig(half_life_days=1.0)
    old = _events([("a", "x", "play", T, 30.0)])
    state = merge(UserState(), old, 0, cfg)
    assert state is not None
    # 100 years later, three times over: x is still a (tiny) positive preference.
    for n in range(1, 4):
        later = _events([(f"e{n}", f"item{n}", "play", T + n * 100 * YEAR_MS, 30.0)])
        state = merge(state, later, n, cfg)
        assert state is not None
    assert 0 < state.weights["x"] < 1e-90 and set(state.weights) == {"x", "item1", "item2", "item3"}
    skip = merge(UserState(), _events([("s", "z", "skip", T, None)]), 0, cfg)
    assert skip is not None
    skip = merge(skip, _events([("t", "w", "play", T + 300 * YEAR_MS, 1.0)]), 1, cfg)
    assert skip is not None and skip.weights["z"] < 0  # a "no" stays a "no"
    weights = event_weights(
        cfg, pd.Series(["play"]), pd.Series([30.0]), pd.Series([T]), T + 200 * YEAR_MS
    )
    assert weights[0] > 0
