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
  trained model's item factors; popularity until a user has an event on a known item.
- ``trending``: the most played items of the last ``trending_window`` events, the user's own
  items left out: a list that follows the stream without any model.

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
from streamrec.batch.rating_files import read_ratings
from streamrec.batch.scoring import dense_item_factors
from streamrec.batch.train import train_als
from streamrec.model.scoring import top_n
from streamrec.model.store import ItemModel, training_record
from streamrec.model.user_state import UserState, merge
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import finish_users

log = logging.getLogger(__name__)

STRATEGIES = ("batch_only", "fold_in", "trending")


@dataclass(frozen=True)
class ReplayParams:
    fmt: str = "movielens"
    sep: str = "\t"
    relevant_min: float = 4.0
    k: int = 10
    trending_window: int = 2000


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


def _train(
    spark: SparkSession, cfg: Config, rows: pd.DataFrame, params: ReplayParams, path: str
) -> tuple[ItemModel, dict[str, np.ndarray], dict[str, Any]]:
    """The model of the training half: item factors, and each user's batch vector."""
    frame = spark.createDataFrame(rows[[E.USER_ID, E.ITEM_ID, RATING, E.EVENT_TIME]])
    opts = EvalOptions(train=path, test=path, fmt=params.fmt, relevant_min=params.relevant_min)
    batch = cfg.batch
    trace: list[dict[str, Any]] = []
    if cfg.batch.tune_every > 0:
        batch, trace = tune(frame, opts, cfg.batch, cfg.feedback, cfg.spark.shuffle_partitions)
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
    meta = training_record(batch, cfg.feedback)
    model = ItemModel("replay", item_ids, factors, f64.T @ f64, meta)
    indexed.unpersist()
    return model, vectors, {"params": meta["params"], "tuning": trace}


def _without(ranked: list[str], seen: set[str], k: int) -> list[str]:
    return [item for item in ranked if item not in seen][:k]


def run_replay(spark: SparkSession, cfg: Config, data: str, params: ReplayParams) -> dict[str, Any]:
    rows: pd.DataFrame = read_ratings(spark, data, params.fmt, params.sep).toPandas()
    if rows[E.EVENT_TIME].isna().any():
        raise ValueError(f"{data}: every row needs a time to be replayed in order")
    rows = rows.sort_values(E.EVENT_TIME, kind="stable").reset_index(drop=True)
    half = len(rows) // 2
    train, replay = rows.iloc[:half], rows.iloc[half:]
    started = time.monotonic()
    model, batch_vectors, trained = _train(spark, cfg, train, params, data)
    train_s = time.monotonic() - started
    index, k, event_type = (
        model.index_of(),
        params.k,
        "rating" if params.fmt == "movielens" else "play",
    )

    def as_events(frame: pd.DataFrame, first_id: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                E.EVENT_ID: [f"r{first_id + n}" for n in range(len(frame))],
                E.ITEM_ID: frame[E.ITEM_ID].to_numpy(),
                E.EVENT_TYPE: event_type,
                E.EVENT_TIME: frame[E.EVENT_TIME].to_numpy(dtype=np.int64),
                E.VALUE: frame[RATING].to_numpy(dtype=np.float64),
            }
        )

    # The batch job's lists: every known user's top-k over the catalogue, training items out.
    seen_train = train.groupby(E.USER_ID)[E.ITEM_ID].agg(set).to_dict()
    known_users = sorted(batch_vectors)
    matrix = np.stack([batch_vectors[u] for u in known_users])
    exclude = [[index[i] for i in seen_train.get(u, ()) if i in index] for u in known_users]
    batch_lists = {
        user: [model.item_ids[i] for i in best]
        for user, (best, _) in zip(
            known_users, top_n(matrix, model.item_factors, exclude, k + 50), strict=True
        )
    }
    popular = [item for item, _ in Counter(train[E.ITEM_ID]).most_common()]

    states: dict[str, UserState] = {}
    max_items, max_ids = 100_000, 8  # the whole history: the replay is not bounded like Redis
    for user, frame in train.groupby(E.USER_ID):
        merged = merge(UserState(), as_events(frame, 0), 0, cfg.feedback, max_items, max_ids)
        if merged is not None:
            states[str(user)] = merged
    seen_now = {user: set(items) for user, items in seen_train.items()}
    recent: deque[str] = deque(maxlen=params.trending_window)
    recent.extend(train[E.ITEM_ID].iloc[-params.trending_window :])
    tallies = Tallies()
    started = time.monotonic()
    for n, row in enumerate(replay.itertuples(index=False)):
        user, item, value = (
            str(getattr(row, E.USER_ID)),
            str(getattr(row, E.ITEM_ID)),
            float(getattr(row, RATING)),
        )
        known, seen = user in seen_train, seen_now.setdefault(user, set())
        if value >= params.relevant_min and item not in seen:
            batch_list = batch_lists.get(user) or popular
            tallies.add(
                "batch_only", known, _without(batch_list, seen_train.get(user, set()), k), item
            )
            state = states.get(user)
            folded: list[str] = []
            if state is not None:
                update = finish_users([state], model, index, cfg, int(state.last_ms or 0))[0]
                if update.payload:
                    folded = [i for i, _ in L.decode_list(update.payload).items]
            tallies.add("fold_in", known, _without(folded or popular, seen, k), item)
            trending = [i for i, _ in Counter(recent).most_common(k + len(seen))]
            tallies.add("trending", known, _without(trending, seen, k), item)
        one = replay.iloc[n : n + 1]
        merged = merge(
            states.get(user, UserState()),
            as_events(one, half + n),
            n + 1,
            cfg.feedback,
            max_items,
            max_ids,
        )
        if merged is not None:
            states[user] = merged
        seen.add(item)
        recent.append(item)
    replay_s = time.monotonic() - started
    result = {
        "data": str(Path(data).resolve()),
        "events": len(rows),
        "trained_on": half,
        "replayed": len(replay),
        "k": k,
        "relevant_min": params.relevant_min,
        "trending_window": params.trending_window,
        **trained,
        "train_s": round(train_s, 1),
        "replay_s": round(replay_s, 1),
        "results": {
            group: {name: tally.as_dict() for name, tally in by_strategy.items()}
            for group, by_strategy in tallies.by_group.items()
        },
    }
    overall = result["results"]["all"]
    batch_hr = overall["batch_only"]["hr"]
    result["fold_in_hr_vs_batch_only"] = overall["fold_in"]["hr"] / batch_hr if batch_hr else None
    return result


def table(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [f"{'users':<6} {'strategy':<11} {'events':>7} {f'HR@{k}':>7} {f'NDCG@{k}':>8}"]
    for group, by_strategy in result["results"].items():
        for name, m in by_strategy.items():
            lines.append(f"{group:<6} {name:<11} {m['events']:>7} {m['hr']:7.4f} {m['ndcg']:8.4f}")
    ratio = result["fold_in_hr_vs_batch_only"]
    if ratio is not None:
        lines.append(f"fold-in HR@{k} is {ratio:.2f}x batch-only's")
    return "\n".join(lines)
