"""`streamrec bench tuning --data FILE`: what self-tuning costs a retrain, and what it buys.

A ratings file with times (MovieLens ``u.data``) becomes an event store of one event type, and
the batch job runs on it in the same process, on its own model stores and Redis prefix: with
tuning off (the configured setting), with tuning on, and with tuning off again (the faster of
the two untuned runs is the baseline). Reported: each run's
seconds and their ratio, the setting each trained with, and each one's holdout NDCG@k beside
popularity's (the holdout is the newest events, which tuning never sees).
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec.batch.job import BatchResult, run_batch
from streamrec.batch.rating_files import DEFAULT_EVENT_TYPES, RATING, read_ratings
from streamrec.model.describe import family_label
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

log = logging.getLogger(__name__)


def _event_store(spark: SparkSession, path: str, fmt: str, event_type: str, out: str) -> int:
    """The file's rows as events in a fresh event store; rows without a time are refused."""
    rows = read_ratings(spark, path, fmt, "\t" if fmt == "movielens" else ",")
    if rows.where(F.col(E.EVENT_TIME).isNull()).limit(1).count():
        raise ValueError(f"{path}: every row needs a time: the batch job holds out by time")
    events = rows.select(
        F.concat(F.lit("row-"), F.monotonically_increasing_id().cast("string")).alias(E.EVENT_ID),
        E.USER_ID,
        E.ITEM_ID,
        F.lit(event_type).alias(E.EVENT_TYPE),
        E.EVENT_TIME,
        F.col(RATING).alias(E.VALUE),
    )
    write_batch(events, out, 0)
    return int(events.count())


def _run(spark: SparkSession, cfg: Config, label: str) -> tuple[BatchResult, float]:
    started = time.monotonic()
    result = run_batch(cfg, spark=spark)
    seconds = time.monotonic() - started
    log.info("bench tuning: %s run in %.1f s: %s", label, seconds, result.summary())
    return result, seconds


def _summary(result: BatchResult, seconds: float) -> dict[str, Any]:
    holdout = result.holdout or {}
    return {
        "seconds": round(seconds, 2),
        "steps_s": {k: round(v, 2) for k, v in result.durations_s.items()},
        "params": result.params,
        "holdout_ndcg": (holdout.get("als") or {}).get("ndcg"),
        "holdout_precision": (holdout.get("als") or {}).get("precision"),
        "popularity_ndcg": (holdout.get("popularity") or {}).get("ndcg"),
        "validation": (result.tuning or {}).get("validation"),
        "trials": len((result.tuning or {}).get("trials") or []),
    }


def run_tuning_bench(
    spark: SparkSession,
    cfg: Config,
    data: str,
    fmt: str = "movielens",
    event_type: str | None = None,
) -> dict[str, Any]:
    kind = event_type or DEFAULT_EVENT_TYPES[fmt]
    prefix = f"bench-tuning-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-tuning-") as tmp:
        store = str(Path(tmp) / "events")
        n = _event_store(spark, data, fmt, kind, store)
        base = with_overrides(
            cfg,
            redis=dict(key_prefix=prefix),
            paths=dict(event_store=store, model_store=str(Path(tmp) / "models")),
            segments=dict(enabled=False),  # the same in both runs; not what is measured
        )
        untuned_cfg = with_overrides(base, batch=dict(tune_every=0))
        tuned_cfg = replace(
            base, batch=replace(base.batch, tune_every=max(1, cfg.batch.tune_every))
        )
        try:
            # Untuned, tuned, untuned again (each on a fresh model store, so that every run
            # starts from the configured setting): the faster untuned run is the baseline, so
            # the JVM's warm-up in the first run does not flatter tuning.
            untuned, untuned_s = _run(spark, untuned_cfg, "untuned")
            tuned_cfg = with_overrides(tuned_cfg, paths=dict(model_store=str(Path(tmp) / "tuned")))
            tuned, tuned_s = _run(spark, tuned_cfg, "tuned")
            again_cfg = with_overrides(
                untuned_cfg, paths=dict(model_store=str(Path(tmp) / "again"))
            )
            again, again_s = _run(spark, again_cfg, "untuned again")
            if again_s < untuned_s:
                untuned, untuned_s = again, again_s
        finally:
            client = connect(cfg.redis)
            keys = list(client.scan_iter(match=f"{prefix}:*"))  # the prefix has no glob chars
            if keys:
                client.delete(*keys)
            client.close()
    return {
        "data": str(Path(data).resolve()),
        "event_type": kind,
        "events": n,
        "untuned": _summary(untuned, untuned_s),
        "tuned": _summary(tuned, tuned_s),
        "time_ratio_tuned_vs_untuned": round(tuned_s / untuned_s, 2),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{'run':<8} {'seconds':>8} {'family':<10} {'rank':>5} {'reg':>6} {'alpha':>6} "
        f"{'NDCG@10':>8} {'pop':>7}"
    ]
    for name in ("untuned", "tuned"):
        r = result[name]
        p = r["params"]
        lines.append(
            f"{name:<8} {r['seconds']:8.1f} {family_label(p):<10} {p['rank']:>5} "
            f"{p['reg_param']:>6g} {p['alpha']:>6g} "
            f"{r['holdout_ndcg'] or 0:8.4f} {r['popularity_ndcg'] or 0:7.4f}"
        )
    lines.append(
        f"a tuned retrain costs {result['time_ratio_tuned_vs_untuned']:.2f}x an untuned one"
    )
    return "\n".join(lines)
