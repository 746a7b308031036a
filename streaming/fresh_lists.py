"""Fresh lists for the users active in a micro-batch, computed on the executors.

Each active user's events in the batch are turned into ratings (model/feedback.py), folded into
the current model with the exact implicit-ALS solve (model/foldin.py) and scored against all
items (model/scoring.py). Items the user touched in the batch are left out of the list. This is
the first, stateless step: the user's earlier history joins the fold-in with per-user state.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame

from streamrec.model.feedback import event_weights
from streamrec.model.foldin import fold_in
from streamrec.model.scoring import top_n
from streamrec.model.store import ItemModel
from streamrec.redis_lists import LIST_ROWS
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config


def user_list_frame(
    user_events: pd.DataFrame,
    model: ItemModel,
    index: dict[str, int],
    cfg: Config,
) -> pd.DataFrame:
    """One user's events -> zero or one LIST_ROWS row. Pure: the unit of the grouped UDF."""
    empty = _empty_rows()
    user_id = str(user_events[E.USER_ID].iloc[0])
    known = user_events[E.ITEM_ID].map(index)
    usable = user_events[known.notna()]
    if usable.empty:
        return empty  # only items the model does not know yet: the segment/popular list stays
    watermark = int(user_events[E.EVENT_TIME].max())
    weights = event_weights(cfg.feedback, usable[E.EVENT_TYPE], usable[E.VALUE],
                            usable[E.EVENT_TIME], watermark)  # fmt: skip
    ratings = (
        pd.DataFrame({"i": known[known.notna()].astype(np.int64).to_numpy(), "r": weights})
        .groupby("i", sort=True)["r"]
        .sum()
    )
    vector = fold_in(
        model.item_factors,
        model.gram,
        ratings.index.to_numpy(),
        ratings.to_numpy(),
        cfg.batch.reg_param,
        cfg.batch.alpha,
    )
    if vector is None:
        return empty
    ((best, scores),) = top_n(
        vector[None, :].astype(np.float32),
        model.item_factors,
        [ratings.index.to_list()],
        cfg.streaming.top_n,
    )
    rec = L.RecList(
        items=tuple((model.item_ids[i], float(s)) for i, s in zip(best, scores, strict=True)),
        source=L.SOURCE_STREAM,
        model_version=model.version,
        generated_ms=int(time.time() * 1000),
        watermark_ms=watermark,
    )
    return pd.DataFrame(
        {
            "key": [L.user_list_key(cfg.redis.key_prefix, model.version, user_id)],
            "payload": [L.encode_list(rec)],
            "fence": [watermark],
        }
    )


def _empty_rows() -> pd.DataFrame:
    # Typed columns: an untyped empty frame makes Arrow fail to convert the group's output.
    return pd.DataFrame(
        {
            "key": pd.Series([], dtype=object),
            "payload": pd.Series([], dtype=object),
            "fence": pd.Series([], dtype="int64"),
        }
    )


def fresh_list_rows(events: DataFrame, bc: Broadcast[ItemModel], cfg: Config) -> DataFrame:
    """LIST_ROWS for every user with events in ``events``, one group per user on executors.
    ``bc`` is the model's broadcast, made once per model version (not once per micro-batch)."""

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        m: ItemModel = bc.value
        return user_list_frame(pdf, m, _index_of(m), cfg)

    cols = [E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.VALUE, E.EVENT_TIME]
    return events.select(*cols).groupBy(E.USER_ID).applyInPandas(per_user, schema=LIST_ROWS)


_INDEX_CACHE: dict[str, dict[str, int]] = {}


def _index_of(model: ItemModel) -> dict[str, int]:
    # Built once per model version per Python worker, not once per user.
    if model.version not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[model.version] = model.index_of()
    return _INDEX_CACHE[model.version]
