"""One user's streaming state: what the fold-in and the segment features need, kept small.

Every event reaches the event store through the streaming job, so the stream sees each user's
whole history and can keep its sufficient statistics instead of the events:

- ``weights``: the user's rating of each item, the sum of its events' weights (model/feedback.py),
  decayed to ``ref_ms`` (the user's newest event time). Exponential decay is multiplicative, so
  moving the reference later rescales every weight by one factor: the sums stay exact;
- the behaviour summary the segment features are made of: event count, count per event type,
  newest event time;
- ``batch`` and ``parts``: the last micro-batch applied and which of its Spark partitions (one
  per Kafka partition: the stream does not shuffle), so a replayed micro-batch or a retried task
  is not counted twice, while a user whose events came through two Kafka partitions gets both
  shares of the micro-batch (``parts`` None: the whole micro-batch, as a caller without
  partitions and states written before partitions were recorded mean);
- ``ids``: the newest event ids, so a producer's retry of an event in a later micro-batch is
  not counted twice either (the batch job drops duplicate ids the same way).

Bounds keep a heavy user's state small: at most ``max_items`` items (the smallest |weight|
go first) and ``max_ids`` ids. Under the bounds, the interactions equal the batch job's for the
same events (with decay off; with decay, the stream decays to the user's newest event, the
batch to its data cut).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from streamrec.model.feedback import DAY_MS, MIN_DECAY, event_weights
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
    parts: tuple[int, ...] | None = ()

    def applied(self, batch_id: int, part: int | None) -> bool:
        """Whether partition ``part`` of micro-batch ``batch_id`` (None: all of it) is in."""
        if batch_id != self.batch:
            return batch_id < self.batch
        return part is None or self.parts is None or part in self.parts

    def after(self, batch_id: int, part: int | None) -> tuple[int, tuple[int, ...] | None]:
        """The (batch, parts) fence once ``part`` of ``batch_id`` is applied too."""
        if part is None:
            return batch_id, None
        earlier = self.parts if batch_id == self.batch and self.parts is not None else ()
        return batch_id, (*earlier, part)

    @property
    def behaviour(self) -> BehaviourSummary:
        return BehaviourSummary(self.events, self.last_ms, dict(self.types))

    def interactions(self, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(item indexes, ratings) of the items the model knows, sorted by index."""
        pairs = sorted((index[item], w) for item, w in self.weights.items() if item in index)
        return (
            np.array([i for i, _ in pairs], dtype=np.int64),
            np.array([w for _, w in pairs], dtype=np.float64),
        )


def merge(
    state: UserState,
    events: pd.DataFrame,
    batch_id: int,
    feedback: FeedbackConfig,
    max_items: int = 1000,
    max_ids: int = 256,
    part: int | None = None,
) -> UserState | None:
    """``state`` with one micro-batch's events of this user (columns event_id, item_id,
    event_type, event_time, value) that came through Spark partition ``part`` (None: the whole
    micro-batch); None when they were applied already."""
    if E.USER_ID not in events.columns:  # one user's events: the id does not matter here
        events = events.assign(**{E.USER_ID: ""})
    _, by_user = weighed_rows(events, feedback)
    rows = [row for user_rows in by_user.values() for row in user_rows]
    return merge_rows(state, rows, batch_id, feedback, max_items, max_ids, part)


Row = tuple[str, str, str, int, float]  # event id, item, type, time, weight at the reference


def weighed_rows(
    events: pd.DataFrame, feedback: FeedbackConfig
) -> tuple[int, dict[str, list[Row]]]:
    """Every event's weight decayed to its user's newest event time in ``events``, in one
    vectorised call, as plain rows grouped by user; and the newest event time of all. Each user
    is decayed to their own newest time: one event dated far ahead in the same partition must
    not decay everyone else's weights to nothing."""
    if events.empty:
        return 0, {}
    reference = int(events[E.EVENT_TIME].max())
    user_newest = events.groupby(E.USER_ID)[E.EVENT_TIME].transform("max").to_numpy(np.int64)
    weights = event_weights(
        feedback, events[E.EVENT_TYPE], events[E.VALUE], events[E.EVENT_TIME], user_newest
    )
    by_user: dict[str, list[Row]] = {}
    for user, *row in zip(
        events[E.USER_ID].astype(str),
        events[E.EVENT_ID].astype(str),
        events[E.ITEM_ID].astype(str),
        events[E.EVENT_TYPE].astype(str),
        events[E.EVENT_TIME].astype("int64").tolist(),
        weights.tolist(),
        strict=True,
    ):
        by_user.setdefault(user, []).append(tuple(row))
    return reference, by_user


def merge_rows(
    state: UserState,
    rows: list[Row],
    batch_id: int,
    feedback: FeedbackConfig,
    max_items: int = 1000,
    max_ids: int = 256,
    part: int | None = None,
) -> UserState | None:
    """``merge`` on plain rows (event id, item, type, time, weight decayed to the newest time
    among ``rows``, as ``weighed_rows`` gives them): the executors weigh a whole partition at
    once, then merge each user
    without pandas (a few microseconds per event instead of a millisecond per user). ``part``
    is the Spark partition the rows came through (None: the whole micro-batch)."""
    if state.applied(batch_id, part):
        return None
    batch, parts = state.after(batch_id, part)
    seen = set(state.ids)
    fresh = []
    for row in sorted(rows, key=lambda r: (r[3], r[0])):  # fixed order: the same float sums
        if row[0] not in seen:
            seen.add(row[0])
            fresh.append(row)
    if not fresh:
        return UserState(
            batch,
            state.ref_ms,
            state.weights,
            state.events,
            state.types,
            state.last_ms,
            state.ids,
            parts,
        )
    newest = max(r[3] for r in fresh)
    weighed_to = max(r[3] for r in rows)
    ref_ms = max(state.ref_ms, newest, weighed_to)
    old_scale = new_scale = 1.0
    if feedback.half_life_days > 0:
        half_life_ms = feedback.half_life_days * DAY_MS
        # Both exponents are >= 0: nothing overflows, and the floor keeps old weights alive.
        old_scale = max(0.5 ** ((ref_ms - state.ref_ms) / half_life_ms), MIN_DECAY)
        new_scale = max(0.5 ** ((ref_ms - weighed_to) / half_life_ms), MIN_DECAY)
    weights = {item: _kept(w * old_scale, w) for item, w in state.weights.items()}
    types = dict(state.types)
    for _, item, event_type, _, w in fresh:
        weights[item] = weights.get(item, 0.0) + _kept(w * new_scale, w)
        types[event_type] = types.get(event_type, 0) + 1
    weights = {item: w for item, w in weights.items() if w != 0.0}  # as the batch job drops 0
    if len(weights) > max_items:
        keep = sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:max_items]
        weights = dict(keep)
    last_ms = newest if state.last_ms is None else max(state.last_ms, newest)
    ids = (*state.ids, *(r[0] for r in fresh))[-max_ids:] if max_ids else ()
    return UserState(batch, ref_ms, weights, state.events + len(fresh), types, last_ms, ids, parts)


# The smallest magnitude a non-zero weight decays to (a normal float: sums stay exact enough).
MIN_WEIGHT = sys.float_info.min


def _kept(decayed: float, weight: float) -> float:
    """A decayed weight, never rounded away to zero while the weight itself is not zero."""
    if decayed == 0.0 and weight != 0.0:
        return math.copysign(MIN_WEIGHT, weight)
    return decayed


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
        "parts": None if state.parts is None else list(state.parts),
    }
    # orjson: compact UTF-8 JSON like json.dumps(..., separators=(",", ":")), 7x faster both
    # ways (every active user's state is read and written once per micro-batch).
    return orjson.dumps(payload)


def decode_state(raw: bytes | str | None) -> UserState:
    """The stored state, or a new user's empty one."""
    if raw is None:
        return UserState()
    data = orjson.loads(raw)
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
        # Written before partitions were recorded: its micro-batch counts as applied whole.
        parts=None if data.get("parts") is None else tuple(int(p) for p in data["parts"]),
    )
