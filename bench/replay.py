"""`streamrec bench replay --data FILE`: what the real-time path is worth, replayed in time order.

A ratings or plays file with times is sorted by time. The first half trains a model as the batch
job would (the rows as events through the feedback transform; tuned as the batch job tunes
unless ``batch.tune_every`` is 0). The second half is replayed event by event: before each
relevant event (value at least ``--relevant-min``), each strategy's top-k list for that user is
checked for the event's item (HR@k, and NDCG@k with the item's rank), then the event is applied.

- ``batch_only``: the lists of the trained model, as published (training items left out),
  popularity for users it does not know; nothing changes until the next retrain.
- ``fold_in``: the stream's own per-user step (model/user_state.py ``merge``, then
  streaming/fresh_lists.py ``finish_users``) over the user's whole history so far, against the
  trained model (ALS factors or EASE's matrix, whichever the setting names); popularity until
  a user has an event on a known item.
- ``retrain``: as ``batch_only``, with the model retrained on every event so far (the same
  setting) every ``retrain_every`` replayed events.
- ``retrain_fold_in``: the stream's fold-in against the latest retrained model.
- ``trending``: the most played items of the last ``trending_window`` events, the user's own
  items left out: a list that follows the stream without any model.
- ``fold_in_trending``: ``retrain_fold_in``, with ``trending`` instead of the popular list for
  a user the model cannot rank yet.

Users are split into known (in the training half) and new. The figures are offline; the
stream's code computes the fold-in lists.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from streamrec.batch.evaluate import EvalOptions, training_input, tune
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.interactions import RATING
from streamrec.batch.rating_files import DEFAULT_EVENT_TYPES, read_ratings
from streamrec.batch.scoring import dense_item_factors
from streamrec.batch.train import train_als, train_ease
from streamrec.model.ease import history_vectors
from streamrec.model.scoring import top_n
from streamrec.model.store import ItemModel, training_record
from streamrec.model.user_state import UserState, merge
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import BatchConfig, Config
from streamrec.streaming.fresh_lists import finish_users

log = logging.getLogger(__name__)

STRATEGIES = (
    "batch_only",
    "retrain",
    "fold_in",
    "retrain_fold_in",
    "trending",
    "fold_in_trending",
)


@dataclass(frozen=True)
class ReplayParams:
    fmt: str = "movielens"
    sep: str = "\t"
    relevant_min: float = 4.0
    k: int = 10
    trending_window: int = 2000
    # Replayed events between retrains of the `retrain` strategies (0: never).
    retrain_every: int = 10_000


@dataclass
class Tally:
    """Hits and NDCG over the relevant events a strategy was checked on."""

    events: int = 0
    hits: int = 0
    ndcg: float = 0.0

    def add(self, ranked: list[str], item: str) -> None:
        self.events += 1
        if item in ranked:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(ranked.index(item) + 2)

    def as_dict(self) -> dict[str, float | int]:
        n = max(self.events, 1)
        return {"events": self.events, "hr": self.hits / n, "ndcg": self.ndcg / n}


@dataclass
class Tallies:
    by_group: dict[str, dict[str, Tally]] = field(
        default_factory=lambda: {
            group: {s: Tally() for s in STRATEGIES} for group in ("all", "known", "new")
        }
    )

    def add(self, strategy: str, known: bool, ranked: list[str], item: str) -> None:
        for group in ("all", "known" if known else "new"):
            self.by_group[group][strategy].add(ranked, item)


def _fit(
    spark: SparkSession, cfg: Config, rows: pd.DataFrame, batch: BatchConfig, opts: EvalOptions
) -> tuple[ItemModel, dict[str, np.ndarray]]:
    """ALS on ``rows`` as the batch job trains: item factors, and each user's batch vector."""
    frame = spark.createDataFrame(rows[[E.USER_ID, E.ITEM_ID, RATING, E.EVENT_TIME]])
    interactions = training_input(frame, opts, cfg.feedback, implicit=True)
    users = index_ids(interactions, E.USER_ID, USER_INDEX)
    items = index_ids(interactions, E.ITEM_ID, ITEM_INDEX)
    indexed = interactions.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    als = train_als(indexed, batch, cfg.spark.shuffle_partitions)
    item_ids = [r[E.ITEM_ID] for r in items.orderBy(ITEM_INDEX).collect()]
    factors = dense_item_factors(als, len(item_ids))
    user_of = {r[USER_INDEX]: r[E.USER_ID] for r in users.collect()}
    vectors = {
        user_of[r.id]: np.asarray(r.features, dtype=np.float32) for r in als.userFactors.collect()
    }
    f64 = factors.astype(np.float64)
    # An EASE setting ranks with its item-item matrix, and a user's batch vector is their row.
    matrix = train_ease(indexed, item_ids, batch) if batch.family == "ease" else None
    model = ItemModel(
        "replay",
        item_ids,
        factors,
        f64.T @ f64,
        training_record(batch, cfg.feedback),
        item_matrix=matrix,
    )
    if matrix is not None:
        rows_of = indexed.select(E.USER_ID, ITEM_INDEX, RATING).toPandas()
        rows_by_user = _history_rows(rows_of, len(item_ids), batch)
        vectors = {user: row for user, row in rows_by_user.items() if row is not None}
    indexed.unpersist()
    return model, vectors


def _history_rows(
    rows: pd.DataFrame, n_items: int, batch: BatchConfig
) -> dict[str, np.ndarray | None]:
    users = [str(user) for user, _ in rows.groupby(E.USER_ID)]
    histories = [
        (group[ITEM_INDEX].to_numpy(dtype=np.int64), group[RATING].to_numpy(dtype=np.float64))
        for _, group in rows.groupby(E.USER_ID)
    ]
    vectors = history_vectors(histories, n_items, batch.ease_binary)
    return dict(zip(users, vectors, strict=True))


@dataclass
class Published:
    """What one training run published: its model, each known user's list (their training
    items left out) and the popular list, for users it does not know."""

    model: ItemModel
    index: dict[str, int]  # the model's item id -> position, built once per training run
    lists: dict[str, list[str]]
    seen: dict[str, set[str]]
    popular: list[str]

    @classmethod
    def of(
        cls, model: ItemModel, vectors: dict[str, np.ndarray], rows: pd.DataFrame, k: int
    ) -> Published:
        seen = rows.groupby(E.USER_ID)[E.ITEM_ID].agg(set).to_dict()
        index, users = model.index_of(), sorted(vectors)
        exclude = [[index[i] for i in seen.get(u, ()) if i in index] for u in users]
        matrix = model.item_factors if model.item_matrix is None else model.item_matrix
        ranked = top_n(np.stack([vectors[u] for u in users]), matrix, exclude, k)
        lists = {
            user: [model.item_ids[i] for i in best]
            for user, (best, _) in zip(users, ranked, strict=True)
        }
        popular = [item for item, _ in Counter(rows[E.ITEM_ID]).most_common()]
        return cls(model, index, lists, seen, popular)

    def list_for(self, user: str, k: int) -> list[str]:
        return self.lists.get(user) or without(self.popular, self.seen.get(user, set()), k)

    def folded_in(
        self,
        state: UserState | None,
        cfg: Config,
        seen: set[str],
        k: int,
        fallback: list[str] | None = None,
    ) -> list[str]:
        """The stream's list for ``state`` against this model; until it has one, ``fallback``
        (the popular list when None)."""
        folded: list[str] = []
        if state is not None:
            update = finish_users([state], self.model, self.index, cfg, int(state.last_ms or 0))[0]
            if update.payload:
                folded = [i for i, _ in L.decode_list(update.payload).items]
        return without(folded or (self.popular if fallback is None else fallback), seen, k)


def without(ranked: list[str], seen: set[str], k: int) -> list[str]:
    return [item for item in ranked if item not in seen][:k]


def _as_events(frame: pd.DataFrame, first_id: int, event_type: str) -> pd.DataFrame:
    """Rating rows as the events the stream would have applied."""
    return pd.DataFrame(
        {
            E.EVENT_ID: [f"r{first_id + n}" for n in range(len(frame))],
            E.ITEM_ID: frame[E.ITEM_ID].to_numpy(),
            E.EVENT_TYPE: event_type,
            E.EVENT_TIME: frame[E.EVENT_TIME].to_numpy(dtype=np.int64),
            E.VALUE: frame[RATING].to_numpy(dtype=np.float64),
        }
    )


# The whole history: the replay's states are not bounded as the stream's are in Redis.
_MAX_ITEMS, _MAX_IDS = 100_000, 8


def _merged(state: UserState, events: pd.DataFrame, batch: int, cfg: Config) -> UserState | None:
    return merge(state, events, batch, cfg.feedback, _MAX_ITEMS, _MAX_IDS)


def _strategy_lists(
    first: Published,
    latest: Published,
    user: str,
    state: UserState | None,
    cfg: Config,
    seen: set[str],
    k: int,
    trending: list[str],
) -> dict[str, list[str]]:
    """What each strategy would show ``user`` at this point of the replay."""
    return {
        "batch_only": first.list_for(user, k),
        "retrain": latest.list_for(user, k),
        "fold_in": first.folded_in(state, cfg, seen, k),
        "retrain_fold_in": latest.folded_in(state, cfg, seen, k),
        "trending": without(trending, seen, k),
        "fold_in_trending": latest.folded_in(state, cfg, seen, k, trending),
    }


def run_replay(spark: SparkSession, cfg: Config, data: str, params: ReplayParams) -> dict[str, Any]:
    rows: pd.DataFrame = read_ratings(spark, data, params.fmt, params.sep).toPandas()
    if rows[E.EVENT_TIME].isna().any():
        raise ValueError(f"{data}: every row needs a time to be replayed in order")
    rows = rows.sort_values(E.EVENT_TIME, kind="stable").reset_index(drop=True)
    half, k = len(rows) // 2, params.k
    train, replay = rows.iloc[:half], rows.iloc[half:]
    event_type = DEFAULT_EVENT_TYPES[params.fmt]
    opts = EvalOptions(train=data, test=data, fmt=params.fmt, relevant_min=params.relevant_min)

    started = time.monotonic()
    batch = cfg.batch
    trace: list[dict[str, Any]] = []
    if cfg.batch.tune_every > 0:
        frame = spark.createDataFrame(train[[E.USER_ID, E.ITEM_ID, RATING, E.EVENT_TIME]])
        batch, trace = tune(frame, opts, cfg.batch, cfg.feedback, cfg.spark.shuffle_partitions)
    first = Published.of(*_fit(spark, cfg, train, batch, opts), train, k)
    train_s = time.monotonic() - started
    latest, retrain_s = first, 0.0

    states = {
        str(user): merged
        for user, frame in train.groupby(E.USER_ID)
        if (merged := _merged(UserState(), _as_events(frame, 0, event_type), 0, cfg)) is not None
    }
    seen_now = {user: set(items) for user, items in first.seen.items()}
    recent: deque[str] = deque(
        train[E.ITEM_ID].iloc[-params.trending_window :], maxlen=params.trending_window
    )
    tallies = Tallies()
    started = time.monotonic()
    for n, row in enumerate(replay.itertuples(index=False)):
        if n and params.retrain_every and n % params.retrain_every == 0:
            t = time.monotonic()
            so_far = rows.iloc[: half + n]
            latest = Published.of(*_fit(spark, cfg, so_far, batch, opts), so_far, k)
            retrain_s += time.monotonic() - t
        user, item = str(getattr(row, E.USER_ID)), str(getattr(row, E.ITEM_ID))
        known, seen = user in first.seen, seen_now.setdefault(user, set())
        if float(getattr(row, RATING)) >= params.relevant_min and item not in seen:
            trending = [i for i, _ in Counter(recent).most_common(k + len(seen))]
            lists = _strategy_lists(first, latest, user, states.get(user), cfg, seen, k, trending)
            for strategy, recommended in lists.items():
                tallies.add(strategy, known, recommended, item)
        one = _as_events(replay.iloc[n : n + 1], half + n, event_type)
        merged = _merged(states.get(user, UserState()), one, n + 1, cfg)
        if merged is not None:
            states[user] = merged
        seen.add(item)
        recent.append(item)
    replay_s = time.monotonic() - started
    return {
        "data": str(Path(data).resolve()),
        "events": len(rows),
        "trained_on": half,
        "replayed": len(replay),
        "k": k,
        "relevant_min": params.relevant_min,
        "trending_window": params.trending_window,
        "retrain_every": params.retrain_every,
        "params": first.model.meta["params"],
        "tuning": trace,
        "train_s": round(train_s, 1),
        "retrain_s": round(retrain_s, 1),
        "replay_s": round(replay_s - retrain_s, 1),
        **_results(tallies),
    }


def _results(tallies: Tallies) -> dict[str, Any]:
    """Hit rates per group of users and strategy, and fold-in's against the batch list's."""
    overall = {name: tally.as_dict() for name, tally in tallies.by_group["all"].items()}
    batch_hr = overall["batch_only"]["hr"]
    return {
        "results": {
            group: {name: tally.as_dict() for name, tally in by_strategy.items()}
            for group, by_strategy in tallies.by_group.items()
        },
        "fold_in_hr_vs_batch_only": overall["fold_in"]["hr"] / batch_hr if batch_hr else None,
    }


def table(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [f"{'users':<6} {'strategy':<16} {'events':>7} {f'HR@{k}':>7} {f'NDCG@{k}':>8}"]
    for group, by_strategy in result["results"].items():
        for name, m in by_strategy.items():
            lines.append(f"{group:<6} {name:<16} {m['events']:>7} {m['hr']:7.4f} {m['ndcg']:8.4f}")
    ratio = result["fold_in_hr_vs_batch_only"]
    if ratio is not None:
        lines.append(f"fold-in HR@{k} is {ratio:.2f}x batch-only's")
    return "\n".join(lines)
