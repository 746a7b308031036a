"""One user's streaming state: what the fold-in and the segment features need, kept small.

Every event reaches the event store through the streaming job, so the stream sees each user's
whole history and can keep its sufficient statistics instead of the events:

- ``weights``: the user's rating of each item, the sum of its events' weights (model/feedback.py),
  decayed to ``ref_ms`` (the user's newest event time). Exponential decay is multiplicative, so
  moving the reference later rescales every weight by one factor: the sums stay exact;
- the behaviour summary the segment features are made of: event count, count per event type,
  newest event time;
- ``batch``: the last micro-batch applied, so a replayed micro-batch is not counted twice;
- ``ids``: the newest event ids, so a producer's retry of an event in a later micro-batch is
  not counted twice either (the batch job drops duplicate ids the same way).

Bounds keep a heavy user's state small: at most ``max_items`` items (the smallest |weight|
go first) and ``max_ids`` ids. Under the bounds, the interactions equal the batch job's for the
same events (with decay off; with decay, the stream decays to the user's newest event, the
batch to its data cut).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from streamrec.model.feedback import DAY_MS, event_weights
from streamrec.model.segments import BehaviourSummary
from streamrec.schemas import events as E
from streamrec.schemas.config import FeedbackConfig

STATE_FORMAT_VERSION = 1
NO_BATCH = -1


@dataclass(frozen=True)
class UserState:
    batch: int = NO_BATCH
    ref_ms: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    events: int = 0
    types: dict[str, int] = field(default_factory=dict)
    last_ms: int | None = None
    ids: tuple[str, ...] = ()

    @property
    def behaviour(self) -> BehaviourSummary:
        return BehaviourSummary(self.events, self.last_ms, dict(self.types))

    def interactions(self, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(item indexes, ratings) of the items the model knows, sorted by index."""
        pairs = sorted((index[item], w) for item, w in self.weights.items() if item in index)
        return (np.array([i for i, _ in pairs], dtype=np.int64),
                np.array([w for _, w in pairs], dtype=np.float64))  # fmt: skip


def merge(
    state: UserState,
    events: pd.DataFrame,
    batch_id: int,
    feedback: FeedbackConfig,
    max_items: int = 1000,
    max_ids: int = 256,
) -> UserState | None:
    """``state`` with one micro-batch's events of this user (columns event_id, item_id,
    event_type, event_time, value); None when the micro-batch was applied already."""
    if batch_id <= state.batch:
        return None
    seen = set(state.ids)
    fresh = events[~events[E.EVENT_ID].isin(seen)].drop_duplicates(E.EVENT_ID)
    # A fixed order: the same events give the same floating-point sums, whatever Spark's order.
    fresh = fresh.sort_values([E.EVENT_TIME, E.EVENT_ID], kind="stable")
    if fresh.empty:
        return UserState(batch_id, state.ref_ms, state.weights, state.events, state.types,
                         state.last_ms, state.ids)  # fmt: skip
    newest = int(fresh[E.EVENT_TIME].max())
    ref_ms = max(state.ref_ms, newest)
    scale = 1.0
    if feedback.half_life_days > 0 and state.ref_ms:
        scale = 0.5 ** ((ref_ms - state.ref_ms) / (feedback.half_life_days * DAY_MS))
    weights = {item: w * scale for item, w in state.weights.items()}
    added = event_weights(feedback, fresh[E.EVENT_TYPE], fresh[E.VALUE], fresh[E.EVENT_TIME],
                          ref_ms)  # fmt: skip
    for item, w in zip(fresh[E.ITEM_ID], added, strict=True):
        weights[item] = weights.get(item, 0.0) + float(w)
    weights = {item: w for item, w in weights.items() if w != 0.0}  # as the batch job drops 0
    if len(weights) > max_items:
        keep = sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:max_items]
        weights = dict(keep)
    types = dict(state.types)
    for event_type, count in fresh[E.EVENT_TYPE].value_counts().items():
        types[str(event_type)] = types.get(str(event_type), 0) + int(count)
    last_ms = newest if state.last_ms is None else max(state.last_ms, newest)
    ids = (*state.ids, *fresh[E.EVENT_ID].astype(str))[-max_ids:]
    return UserState(batch_id, ref_ms, weights, state.events + len(fresh), types, last_ms, ids)


def encode_state(state: UserState) -> bytes:
    payload: dict[str, Any] = {
        "v": STATE_FORMAT_VERSION,
        "batch": state.batch,
        "ref": state.ref_ms,
        "w": state.weights,
        "n": state.events,
        "types": state.types,
        "last": state.last_ms,
        "ids": list(state.ids),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_state(raw: bytes | str | None) -> UserState:
    """The stored state, or a new user's empty one."""
    if raw is None:
        return UserState()
    data = json.loads(raw)
    if data.get("v") != STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported user state version {data.get('v')!r}")
    return UserState(
        batch=int(data["batch"]),
        ref_ms=int(data["ref"]),
        weights={str(k): float(v) for k, v in data["w"].items()},
        events=int(data["n"]),
        types={str(k): int(v) for k, v in data["types"].items()},
        last_ms=None if data["last"] is None else int(data["last"]),
        ids=tuple(data["ids"]),
    )
