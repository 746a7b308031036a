"""`streamrec bench session [--data u.data] [--duration S] --json OUT`: anonymous sessions and
the model-side options of a lookup, on a real server.

For each model family (ALS, EASE) the production batch job trains a version on the events
(MovieLens ``u.data`` when given, else the synthetic world's clicks and plays) and publishes it
to the local stack's Redis under its own key prefix (``<prefix>-bench-session``, cleared
first). A real `streamrec serve` then answers, at ``rate`` requests/s from the open-loop
generator (bench/loadgen.py, its own process), in this order:

1. ``GET /recommendations/{user}`` of users the version knows: a list read from Redis, the
   baseline of the same server in the same run;
2. ``POST /recommendations``: sessions of ``session_min`` to ``session_max`` items drawn from
   real users' histories, folded in and scored over the whole catalogue;
3. the same sessions with ``explain`` and ``diversity`` (0.3);
4. ``GET /recommendations/{user}?explain=true&diversity=0.3``, the user's state read too.

Each gets p50/p99 and its p99 as a ratio to the baseline's. Nothing is asserted on time.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.bench.loadgen import LoadGenerator, get_requests, post_requests
from streamrec.bench.server_process import ServerProcess
from streamrec.model.user_state import UserState, encode_state, merge
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack import redis_server
from streamrec.stack.process import port_open
from streamrec.streaming.event_store import write_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionParams:
    families: tuple[str, ...] = ("als", "ease")
    rate: float = 500.0
    duration_s: float = 10.0
    connections: int = 8
    n: int = 10
    session_min: int = 5
    session_max: int = 30
    sessions: int = 2000
    diversity: float = 0.3
    synthetic_users: int = 3000
    synthetic_items: int = 1500
    synthetic_events: int = 150_000
    p99_limit_ms: float = 20.0


def _events(data: str | None, params: SessionParams) -> pd.DataFrame:
    """The events every family trains on: ``u.data`` rows as rating events, else the
    synthetic world's."""
    if data:
        rows = pd.read_csv(data, sep="\t", names=["user", "item", "rating", "time"], dtype=str)
        return pd.DataFrame(
            {
                E.EVENT_ID: [f"row-{i}" for i in range(len(rows))],
                E.USER_ID: rows["user"],
                E.ITEM_ID: rows["item"],
                E.EVENT_TYPE: "rating",
                E.EVENT_TIME: rows["time"].astype("int64") * 1000,
                E.VALUE: rows["rating"].astype("float64"),
            }
        )
    world = SyntheticWorld(users=params.synthetic_users, items=params.synthetic_items, seed=3)
    frame = pd.DataFrame(world.events(params.synthetic_events))
    return frame[[E.EVENT_ID, E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE]]


def _sessions(events: pd.DataFrame, params: SessionParams) -> list[bytes]:
    """POST bodies: each a random run of a real user's items (with repeats)."""
    rng = random.Random(17)
    histories = [
        items.tolist()
        for _, items in events.groupby(E.USER_ID)[E.ITEM_ID]
        if len(items) >= params.session_min
    ]
    bodies = []
    for _ in range(params.sessions):
        items = rng.choice(histories)
        size = rng.randint(params.session_min, min(params.session_max, len(items)))
        bodies.append({"items": rng.sample(items, size), "n": params.n})
    return [json.dumps(body).encode() for body in bodies]


def _with(body: bytes, extra: dict[str, Any]) -> bytes:
    return json.dumps({**json.loads(body), **extra}).encode()


def _write_states(cfg: Config, events: pd.DataFrame, users: list[str]) -> None:
    """The stream's state of ``users`` from their events, as the stream writes it."""
    client = connect(cfg.redis)
    try:
        pipe = client.pipeline(transaction=False)
        by_user = events[events[E.USER_ID].isin(set(users))].groupby(E.USER_ID)
        for user, rows in by_user:
            state = merge(UserState(), rows.drop(columns=[E.USER_ID]), 0, cfg.feedback)
            if state is not None:
                key = L.user_state_key(cfg.redis.key_prefix, str(user))
                pipe.hset(key, "state", encode_state(state))
        pipe.execute()
    finally:
        client.close()


def _clear(cfg: Config) -> None:
    client = redis.Redis(host=cfg.redis.host, port=cfg.redis.port)
    try:
        stale = list(client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000))
        if stale:
            client.unlink(*stale)
    finally:
        client.close()


def _family(
    spark: SparkSession,
    cfg: Config,
    family: str,
    events: pd.DataFrame,
    sessions: list[bytes],
    gen: LoadGenerator,
    params: SessionParams,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"streamrec-bench-session-{family}-"))
    cfg = with_overrides(
        cfg,
        paths=dict(event_store=str(work / "events"), model_store=str(work / "models")),
        batch=dict(family=family, holdout_share=0.0, tune_every=0),
        segments=dict(enabled=False),
    )
    _clear(cfg)
    write_batch(spark.createDataFrame(events, E.spark_event_schema()), cfg.paths.event_store, 0)
    version = run_batch(cfg, spark=spark).version
    users = sorted(events[E.USER_ID].unique().tolist())
    random.Random(5).shuffle(users)
    users = users[:1000]
    _write_states(cfg, events, users)
    plain = [f"/recommendations/{quote(u, safe='')}?n={params.n}" for u in users]
    options = f"&explain=true&diversity={params.diversity}"
    mixed = {"explain": True, "diversity": params.diversity}
    out: dict[str, Any] = {"model_version": version, "items": int(events[E.ITEM_ID].nunique())}
    with ServerProcess(cfg) as server:
        runs = {
            "get_list": get_requests(server.url, plain),
            "post_session": post_requests(server.url, "/recommendations", sessions),
            "post_session_explain_diversity": post_requests(
                server.url, "/recommendations", [_with(b, mixed) for b in sessions]
            ),
            "get_list_explain_diversity": get_requests(server.url, [p + options for p in plain]),
        }
        for requests in runs.values():  # warm-up: the model loads, the code paths run once
            gen.run_requests(server.url, requests, 100.0, 1.0, params.connections)
        for name, requests in runs.items():
            out[name] = gen.run_requests(
                server.url, requests, params.rate, params.duration_s, params.connections
            )
    base = out["get_list"]["p99_ms"]
    for name in runs:
        out[name]["p99_vs_get_list"] = out[name]["p99_ms"] / base if base else None
        out[name]["under_p99_limit"] = (
            out[name]["p99_ms"] < params.p99_limit_ms and out[name]["errors"] == 0
        )
    return out


def run_session(
    spark: SparkSession, cfg: Config, data: str | None, params: SessionParams
) -> dict[str, Any]:
    cfg = with_overrides(cfg, redis=dict(key_prefix=f"{cfg.redis.key_prefix}-bench-session"))
    if not port_open(cfg.redis.host, cfg.redis.port):
        redis_server.start(cfg)
    events = _events(data, params)
    sessions = _sessions(events, params)
    load_before = os.getloadavg()
    with LoadGenerator() as gen:
        families = {
            family: _family(spark, cfg, family, events, sessions, gen, params)
            for family in params.families
        }
    _clear(cfg)
    return {
        "params": asdict(params),
        "data": data or "synthetic",
        "events": len(events),
        "cpus": os.cpu_count(),
        "load_average_before": list(load_before),
        "families": families,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['data']}: {result['events']} events"]
    for family, runs in result["families"].items():
        lines.append(f"{family} ({runs['items']} items, version {runs['model_version']})")
        for name, r in runs.items():
            if not isinstance(r, dict):
                continue
            lines.append(
                f"  {name:<32} {r['rate_achieved']:6.0f}/s  p50 {r['p50_ms']:.2f} ms  "
                f"p99 {r['p99_ms']:.2f} ms ({r['p99_vs_get_list']:.2f}x GET)  "
                f"errors {r['errors']}"
            )
    return "\n".join(lines)
