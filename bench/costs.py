"""`streamrec bench costs [--json OUT]`: per-unit costs measured here, and what they imply at scale.

Measured, each as a cost per unit so that it can be multiplied out (docs/scaling.md):

- **ALS**: Spark ALS (batch/train.py, implicit, the config's rank) on synthetic ratings, fitted
  with two iteration counts; the difference is the cost of the extra iterations without a fit's
  fixed cost. Per iteration and per rating, in core-seconds (wall time x the session's cores).
- **stream**: one active user's fold-in and top-N (streaming/fresh_lists.finish_users) on
  realistic states, against a small catalogue and the large one, BLAS on one thread; and the
  Redis step of the stream (``STREAM_WRITE_LUA``: state + list), per user, pipelined as the
  executors do.
- **scoring**: one user's top-N against the large catalogue (model/scoring.top_n, what the batch
  publish runs on the executors), BLAS on one thread.
- **publish**: encoding and writing one user's list from Spark (batch/publish.user_lists +
  batch/publish.write_list_rows), and the same rows through one pipelined connection.
- **memory**: Redis ``MEMORY USAGE`` of the user-list hashes and user states written above, the
  ``INFO used_memory`` growth as a cross-check (noisy on a shared Redis), and the item model in
  a Python process (factors, ids, id index; tracemalloc).

``extrapolate`` multiplies these out for a target (10 million users, 1 million items): every
figure there is linear in a measured unit; what that leaves out is listed in docs/scaling.md.
Keys go to ``<prefix>-bench-costs`` and are removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.interactions import RATING
from streamrec.batch.publish import SEGMENT, ListStamp, user_lists, write_list_rows
from streamrec.batch.scoring import ITEMS, RANKED, SCORES
from streamrec.batch.train import train_als
from streamrec.model.scoring import top_n
from streamrec.model.store import ItemModel, training_record
from streamrec.model.user_state import UserState, encode_state
from streamrec.redis_lists import RedisClient, connect, pipelined_script, write_publish
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import BatchConfig, Config, FeedbackConfig
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.fresh_lists import finish_users

VERSION = "vbench-costs"
START_MS = 1_704_067_200_000


@dataclass(frozen=True)
class CostParams:
    als_users: int = 20_000
    als_items: int = 5_000
    als_ratings_per_user: int = 25
    als_iterations: tuple[int, int] = (2, 8)
    catalogues: tuple[int, int] = (20_000, 1_000_000)  # small, and the target's item count
    stream_users: int = 200
    state_items: int = 50  # items in a user's state (the fold-in's input)
    state_ids: int = 64  # event ids kept in a state
    publish_users: int = 20_000
    seed: int = 1


@dataclass(frozen=True)
class Target:
    """What ``extrapolate`` multiplies the units out to."""

    users: int = 10_000_000
    items: int = 1_000_000
    ratings_per_user: int = 50
    stream_events_per_s: float = 2_000.0


def item_id(i: int) -> str:
    """A 12-character item id: list and state sizes in Redis grow with the ids' length."""
    return f"item:{i:07d}"


def _popular_items(rng: np.random.Generator, n_items: int, size: int) -> np.ndarray:
    """Item indexes with a Zipf-like popularity, as real catalogues have."""
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    return rng.choice(n_items, size=size, p=weights / weights.sum())


def measure_als(spark: SparkSession, cfg: Config, p: CostParams) -> dict[str, Any]:
    rng = np.random.default_rng(p.seed)
    users = np.repeat(np.arange(p.als_users), p.als_ratings_per_user)
    items = _popular_items(rng, p.als_items, users.size)
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    values = rng.gamma(2.0, 1.0, len(pairs)).astype(np.float32)
    ratings = pd.DataFrame(
        {
            USER_INDEX: pairs[:, 0].astype(np.int32),
            ITEM_INDEX: pairs[:, 1].astype(np.int32),
            RATING: values,
        }
    )
    df = spark.createDataFrame(ratings).repartition(cfg.spark.shuffle_partitions).cache()
    n = df.count()
    cores = session_cores(spark)
    # A first fit pays one-off costs (JIT, Python workers): not part of either timing.
    train_als(df, dataclasses.replace(cfg.batch, max_iter=1), cfg.spark.shuffle_partitions)
    seconds = []
    for iterations in p.als_iterations:
        batch = dataclasses.replace(cfg.batch, max_iter=iterations)
        t = time.monotonic()
        train_als(df, batch, cfg.spark.shuffle_partitions).itemFactors.count()
        seconds.append(time.monotonic() - t)
    df.unpersist()
    (i1, i2), (s1, s2) = p.als_iterations, seconds
    per_iteration = max(s2 - s1, 1e-9) / (i2 - i1)
    return {
        "ratings": n,
        "users": p.als_users,
        "items": p.als_items,
        "rank": cfg.batch.rank,
        "cores": cores,
        "fit_s": dict(zip(map(str, p.als_iterations), seconds, strict=True)),
        "per_iteration_s": per_iteration,
        "core_s_per_rating_iteration": per_iteration * cores / n,
    }


def session_cores(spark: SparkSession) -> int:
    """Task slots of the session: N of local[N] (every CPU for local[*]), else Spark's default
    parallelism (which streamrec/spark.py sets to spark.shuffle_partitions: set it to the
    cluster's cores when measuring there)."""
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", spark.sparkContext.master or "")
    if match:
        return (os.cpu_count() or 1) if match.group(1) == "*" else int(match.group(1))
    return spark.sparkContext.defaultParallelism


def _states(rng: np.random.Generator, n_items: int, p: CostParams) -> list[UserState]:
    states = []
    for u in range(p.stream_users):
        picked = np.unique(_popular_items(rng, n_items, p.state_items * 2))[: p.state_items]
        weights = {
            item_id(int(i)): float(w)
            for i, w in zip(picked, rng.gamma(2.0, 1.0, len(picked)), strict=True)
        }
        last = START_MS + u * 1000
        states.append(
            UserState(
                batch=1,
                ref_ms=last,
                weights=weights,
                events=3 * len(weights),
                types={"play": 2 * len(weights), "click": len(weights)},
                last_ms=last,
                ids=tuple(f"e-{u}-{k}" for k in range(p.state_ids)),
            )
        )
    return states


def _model(rng: np.random.Generator, n_items: int, rank: int) -> ItemModel:
    factors = (rng.standard_normal((n_items, rank)) / np.sqrt(rank)).astype(np.float32)
    f64 = factors.astype(np.float64)
    meta = training_record(BatchConfig(rank=rank), FeedbackConfig())
    return ItemModel(VERSION, [item_id(i) for i in range(n_items)], factors, f64.T @ f64, meta)


def measure_stream(client: RedisClient, cfg: Config, p: CostParams) -> dict[str, Any]:
    """finish_users per user at each catalogue size; then the stream's Redis step per user."""
    rng = np.random.default_rng(p.seed)
    per_catalogue: dict[str, float] = {}
    updates = []
    for n_items in p.catalogues:
        model = _model(rng, n_items, cfg.batch.rank)
        index = model.index_of()
        states = _states(rng, n_items, p)
        with one_blas_thread():
            finish_users(states[:2], model, index, cfg, START_MS)  # warm up BLAS
            t = time.monotonic()
            updates = finish_users(states, model, index, cfg, START_MS)
            per_catalogue[str(n_items)] = (time.monotonic() - t) / len(states)
        del model, index
    prefix, ttl = cfg.redis.key_prefix, cfg.lists.ttl_seconds
    script = pipelined_script(client, LUA.STREAM_WRITE_LUA)
    pipe = client.pipeline(transaction=False)
    t = time.monotonic()
    for u, update in enumerate(updates):
        user = f"streamed-{u:08d}"
        script(
            keys=[L.user_list_key(prefix, VERSION, user), L.user_state_key(prefix, user)],
            # Revision "": each user's first write (their state key is new).
            args=[update.payload, update.fence, ttl, "", encode_state(update.state), "3", ""],
            client=pipe,
        )
    pipe.execute()
    write_s = (time.monotonic() - t) / len(updates)
    return {
        "users": len(updates),
        "state_items": p.state_items,
        "foldin_topn_s_per_user": per_catalogue,
        "redis_write_s_per_user": write_s,
    }


@contextmanager
def one_blas_thread() -> Iterator[int | None]:
    """BLAS on one thread, so that a timing is one core's (threadpoolctl, from the `bench`
    extra); yields the thread count, None when BLAS could not be limited."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS may use every core
        yield None
        return
    with threadpool_limits(1, "blas"):
        yield 1


def measure_scoring(p: CostParams, rank: int, n: int) -> dict[str, Any]:
    """top_n against the large catalogue, as the publish runs it on the executors."""
    rng = np.random.default_rng(p.seed)
    n_items = p.catalogues[-1]
    factors = rng.standard_normal((n_items, rank)).astype(np.float32)
    users = rng.standard_normal((p.stream_users, rank)).astype(np.float32)
    seen = [_popular_items(rng, n_items, p.state_items).tolist() for _ in range(len(users))]
    with one_blas_thread() as threads:
        top_n(users[:2], factors, seen[:2], n)
        t = time.monotonic()
        top_n(users, factors, seen, n)
        seconds = (time.monotonic() - t) / len(users)
    return {"items": n_items, "rank": rank, "threads": threads, "s_per_user": seconds}


def measure_publish(
    spark: SparkSession, client: RedisClient, cfg: Config, p: CostParams
) -> dict[str, Any]:
    """Spark's publish path (encode + write on the executors) and one pipelined connection."""
    rng = np.random.default_rng(p.seed)
    n = cfg.batch.top_n
    picks = rng.integers(0, p.catalogues[0], size=(p.publish_users, n))
    scores = np.sort(rng.random((p.publish_users, n)))[:, ::-1]
    ranked = pd.DataFrame(
        {
            E.USER_ID: [f"user-{u:08d}" for u in range(p.publish_users)],
            ITEMS: [[item_id(int(i)) for i in row] for row in picks],
            SCORES: [row.tolist() for row in scores],
            SEGMENT: np.arange(p.publish_users, dtype=np.int32) % 8,
        }
    )
    schema = T.StructType([*RANKED.fields, T.StructField(SEGMENT, T.IntegerType())])
    frame = spark.createDataFrame(ranked, schema).repartition(cfg.spark.shuffle_partitions).cache()
    frame.count()
    stamp = ListStamp(L.SOURCE_BATCH, VERSION, int(time.time() * 1000), START_MS)
    rows = user_lists(frame, cfg, stamp)
    t = time.monotonic()
    written, _ = write_list_rows(rows, cfg)
    spark_s = time.monotonic() - t
    local = rows.collect()
    frame.unpersist()
    t = time.monotonic()
    # PUBLISH_ROWS' columns are write_publish's fields, in order.
    write_publish(client, (tuple(r) for r in local), cfg.lists.ttl_seconds)
    pipe_s = time.monotonic() - t
    return {
        "users": written,
        "list_length": n,
        "spark_s_per_user": spark_s / p.publish_users,
        "spark_cores": session_cores(spark),
        "pipeline_s_per_user": pipe_s / p.publish_users,
    }


def measure_memory(client: RedisClient, cfg: Config, used_before: int) -> dict[str, Any]:
    prefix = cfg.redis.key_prefix

    def usage(pattern: str, limit: int = 2000) -> tuple[float, int]:
        keys = [
            k
            for _, k in zip(range(limit), client.scan_iter(match=pattern, count=1000), strict=False)
        ]
        sizes = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
        return (float(np.mean(sizes)) if sizes else 0.0), len(sizes)

    list_bytes, lists = usage(L.version_keys_pattern(prefix, VERSION))
    state_bytes, states = usage(L.user_state_key(prefix, "*"))
    keys = sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    grown = int(client.info("memory")["used_memory"]) - used_before
    return {
        "user_list_bytes": list_bytes,
        "user_lists_sampled": lists,
        "user_state_bytes": state_bytes,
        "user_states_sampled": states,
        "info_used_memory_growth_per_key": grown / max(keys, 1),
        "keys": keys,
    }


def measure_item_model(n_items: int, rank: int) -> dict[str, Any]:
    """Bytes of an item model in a Python process: factors, the id list and the id index."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ids = [item_id(i) for i in range(n_items)]
    index = {item: i for i, item in enumerate(ids)}
    objects = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del ids, index
    return {
        "items": n_items,
        "rank": rank,
        "factor_bytes": n_items * rank * 4,
        "ids_and_index_bytes": objects,
    }


def run_costs(
    spark: SparkSession, cfg: Config, params: CostParams | None = None, target: Target | None = None
) -> dict[str, Any]:
    """Every per-unit cost, and their extrapolation to ``target``."""
    p = params or CostParams()
    cfg = with_overrides(cfg, redis=dict(key_prefix=f"{cfg.redis.key_prefix}-bench-costs"))
    client = connect(cfg.redis)
    try:
        _clear(client, cfg.redis.key_prefix)
        used_before = int(client.info("memory")["used_memory"])
        result: dict[str, Any] = {
            "params": dataclasses.asdict(p),
            # Figures are wall times: what else runs on the machine shows here.
            "load_average_at_start": os.getloadavg()[0],
            "als": measure_als(spark, cfg, p),
            "stream": measure_stream(client, cfg, p),
            "scoring": measure_scoring(p, cfg.batch.rank, cfg.batch.top_n),
            "publish": measure_publish(spark, client, cfg, p),
        }
        result["memory"] = measure_memory(client, cfg, used_before)
        result["item_model"] = measure_item_model(p.catalogues[-1], cfg.batch.rank)
        result["load_average_at_end"] = os.getloadavg()[0]
    finally:
        _clear(client, cfg.redis.key_prefix)
        client.close()
    result["extrapolated"] = extrapolate(result, target or Target(), cfg.batch.max_iter)
    return result


def extrapolate(units: dict[str, Any], target: Target, iterations: int) -> dict[str, Any]:
    """The target's costs, each linear in one measured unit (docs/scaling.md says what that
    leaves out). Core-hours are CPU time on cores like this machine's."""
    ratings = target.users * target.ratings_per_user
    measured_items = int(units["item_model"]["items"])
    stream = units["stream"]
    foldin_s = stream["foldin_topn_s_per_user"][str(measured_items)]
    per_event_s = foldin_s * target.items / measured_items + stream["redis_write_s_per_user"]
    scoring_s = units["scoring"]["s_per_user"] * target.items / int(units["scoring"]["items"])
    model = units["item_model"]
    gib = 1024**3
    return {
        "target": dataclasses.asdict(target),
        "ratings": ratings,
        "iterations": iterations,
        "als_core_hours": ratings * iterations * units["als"]["core_s_per_rating_iteration"] / 3600,
        "publish_scoring_core_hours": target.users * scoring_s / 3600,
        "publish_write_core_hours": target.users
        * units["publish"]["spark_s_per_user"]
        * units["publish"]["spark_cores"]
        / 3600,
        "publish_redis_pipeline_minutes": target.users
        * units["publish"]["pipeline_s_per_user"]
        / 60,
        "stream_core_s_per_event": per_event_s,
        "stream_cores_at_rate": target.stream_events_per_s * per_event_s,
        "redis_lists_gib_one_version": target.users * units["memory"]["user_list_bytes"] / gib,
        "redis_lists_gib_during_switch": 2
        * target.users
        * units["memory"]["user_list_bytes"]
        / gib,
        "redis_states_gib": target.users * units["memory"]["user_state_bytes"] / gib,
        "item_factors_mib": target.items * int(model["rank"]) * 4 / 1024**2,
        "item_model_python_mib": (
            target.items * int(model["rank"]) * 4
            + model["ids_and_index_bytes"] * target.items / measured_items
        )
        / 1024**2,
        "scoring_s_per_user_at_target_items": scoring_s,
    }


def _clear(client: RedisClient, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


def table(result: dict[str, Any]) -> str:
    x, u = result["extrapolated"], result
    t = x["target"]
    big = str(u["item_model"]["items"])
    lines = [
        f"measured here ({u['als']['cores']} cores, load average "
        f"{u['load_average_at_start']:.1f} -> {u['load_average_at_end']:.1f}):",
        f"  ALS rank {u['als']['rank']}: {u['als']['core_s_per_rating_iteration'] * 1e6:.2f} "
        f"core-us per rating per iteration ({u['als']['ratings']} ratings)",
        f"  stream fold-in + top-N at {big} items: "
        f"{u['stream']['foldin_topn_s_per_user'][big] * 1e3:.1f} ms/user; Redis step "
        f"{u['stream']['redis_write_s_per_user'] * 1e6:.0f} us/user",
        f"  publish scoring at {big} items: {u['scoring']['s_per_user'] * 1e3:.1f} ms/user; "
        f"encode + write {u['publish']['spark_s_per_user'] * 1e6:.0f} us/user (Spark), "
        f"{u['publish']['pipeline_s_per_user'] * 1e6:.0f} us/user (one pipeline)",
        f"  Redis: {u['memory']['user_list_bytes']:.0f} B per user list, "
        f"{u['memory']['user_state_bytes']:.0f} B per user state",
        f"extrapolated to {t['users']:,} users x {t['items']:,} items "
        f"({x['ratings']:,} ratings, {x['iterations']} iterations):",
        f"  ALS {x['als_core_hours']:.1f} core-h; publish scoring "
        f"{x['publish_scoring_core_hours']:.1f} core-h, writes {x['publish_write_core_hours']:.1f}"
        f" core-h ({x['publish_redis_pipeline_minutes']:.0f} min through one pipeline)",
        f"  stream {x['stream_core_s_per_event'] * 1e3:.1f} core-ms per event: "
        f"{x['stream_cores_at_rate']:.0f} cores at {t['stream_events_per_s']:,.0f} events/s",
        f"  Redis {x['redis_lists_gib_one_version']:.1f} GiB of lists "
        f"({x['redis_lists_gib_during_switch']:.1f} during a switch) + "
        f"{x['redis_states_gib']:.1f} GiB of states; item factors "
        f"{x['item_factors_mib']:.0f} MiB ({x['item_model_python_mib']:.0f} MiB with ids)",
    ]
    return "\n".join(lines)
