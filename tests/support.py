"""Helpers the tests share that production code does not need: one user's micro-batch step as
the executors run it for a whole partition, and the newest stream metrics as plain dicts."""

from __future__ import annotations

import pandas as pd

from streamrec.model.store import ItemModel
from streamrec.model.user_state import UserState, merge
from streamrec.redis_lists import RedisClient, decoded
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import UserUpdate, finish_users


def update_user(
    state: UserState,
    events: pd.DataFrame,
    batch_id: int,
    model: ItemModel | None,
    index: dict[str, int],
    cfg: Config,
    reference_ms: int,
) -> UserUpdate | None:
    """One user's state, list and segment after a micro-batch; None when the micro-batch was
    applied already. Without a model yet only the state grows."""
    merged = merge(
        state,
        events,
        batch_id,
        cfg.feedback,
        cfg.streaming.state_max_items,
        cfg.streaming.state_max_ids,
    )
    return None if merged is None else finish_users([merged], model, index, cfg, reference_ms)[0]


def read_recent(client: RedisClient, prefix: str, count: int = 100) -> list[dict[str, str]]:
    """The newest ``count`` stream metric entries, newest first, as string dicts."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrevrange(  # type: ignore[assignment]
        L.stream_metrics_key(prefix), count=count
    )
    return [{str(decoded(k)): str(decoded(v)) for k, v in values.items()} for _, values in entries]
