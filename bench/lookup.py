"""`streamrec bench lookup [--duration S] --json OUT`: how fast apps get their lists.

On the local stack's Redis (started if it does not answer), in its own key prefix
(``<prefix>-bench-lookup``), cleared first:

1. one published version: ``users`` users, most with a list of ``list_length`` items, some with
   only a segment (their segment's list answers), some unknown (the popular list answers);
2. the Python client (streamrec.lookup) on one connection, for ``duration_s``: latency p50/p99
   and throughput, as a ratio to a plain redis-py GET loop of a list-sized value on the same
   Redis in the same run (the floor a Lua lookup cannot beat); plus lookup_many;
3. a real `streamrec serve` process and the threaded baseline server
   (bench/threaded_server.py), both up at once, under the same open-loop load generator
   (bench/loadgen.py: a process of its own on uvloop; request k is due at start + k/rate
   whatever the server does, goes out on an idle one of ``http_connections`` keep-alive
   connections or queues for one, and its latency counts from its due time, so a server that
   falls behind is charged for the wait): p50/p99 at ``http_rate`` requests/s, then the rates
   of ``ramp_rates`` (steps of 500/s), the two servers' steps interleaved rate by rate so that
   both meet the same load from the rest of the machine, each until ``ramp_misses`` of its
   rates in a row are not held (p99 over ``p99_limit_ms``, an error, or under 95% of the rate
   achieved); the highest rate held is the server's figure.
   Every step also reports the cores (from /proc) the generator, the server's processes,
   Redis and everything else on the machine used meanwhile, and the server's CPU time a
   request (its median over the ramp is the per-request cost, compared as a ratio too);
4. ``redis-benchmark`` GET on the same Redis, one connection and 50: the server's ceiling.

Every figure is a ratio or a latency measured in the same run; nothing is asserted on time.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.loadgen import LoadGenerator
from streamrec.bench.lookup_http import measure_servers, redis_pids_of
from streamrec.lookup import LookupClient
from streamrec.redis_lists import connect, switch_version, write_lists, write_publish
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack import redis_server
from streamrec.stack.process import port_open

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LookupParams:
    users: int = 10_000
    items: int = 2_000
    list_length: int = 20
    segments: int = 8
    n: int = 10
    duration_s: float = 3.0
    http_rate: float = 500.0
    ramp_rates: tuple[float, ...] = tuple(float(r) for r in range(1000, 10_001, 500))
    ramp_misses: int = 2
    http_connections: int = 8
    p99_limit_ms: float = 10.0
    many_batch: int = 50
    redis_benchmark_requests: int = 50_000


def _user(n: int) -> str:
    # Odd ids on purpose: colons, a space, a brace and unicode all go through the same paths.
    return f"bench:user {n}/{{ü}}"


def _seed(cfg: Config, params: LookupParams) -> tuple[str, list[str], bytes]:
    """One published version; returns it, every user id, and one encoded list (GET's value)."""
    client = connect(cfg.redis)
    prefix, rng = cfg.redis.key_prefix, random.Random(5)
    try:
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.unlink(*stale)
        version, now = f"v{int(time.time())}-bench", int(time.time() * 1000)

        def encoded(source: str) -> bytes:
            items = rng.sample(range(params.items), params.list_length)
            return L.encode_list(
                L.RecList(
                    tuple((f"item-{i}", 1.0 - r / params.list_length) for r, i in enumerate(items)),
                    source,
                    version,
                    now,
                    now,
                )
            )

        users = [_user(n) for n in range(params.users)]
        rows = []
        for n, user in enumerate(users):  # 80% with a list, 10% segment only, 10% unknown
            if n % 10 < 8:
                key = L.user_list_key(prefix, version, user)
                rows.append((key, encoded(L.SOURCE_BATCH), now, str(n % params.segments), ""))
            elif n % 10 == 8:
                client.hset(
                    L.user_list_key(prefix, version, user),
                    L.FIELD_SEGMENT,
                    str(n % params.segments),
                )
        ttl = cfg.lists.ttl_seconds
        write_publish(client, rows, ttl)
        write_lists(
            client,
            [
                (L.segment_list_key(prefix, version, s), encoded(L.SOURCE_SEGMENT), now)
                for s in range(params.segments)
            ],
            ttl,
        )
        sample = encoded(L.SOURCE_POPULAR)
        write_lists(client, [(L.popular_list_key(prefix, version), sample, now)], ttl)
        similar = [
            (L.similar_list_key(prefix, version, f"item-{i}"), encoded(L.SOURCE_SIMILAR), now)
            for i in range(params.items)
        ]
        write_lists(client, similar, ttl)
        switch_version(client, prefix, version)
    finally:
        client.close()
    return version, users, sample


def _timed_loop(call: Callable[[int], object], duration_s: float) -> dict[str, float]:
    """Call back to back for ``duration_s`` (after a short warm-up): rate and latencies."""
    warm_until = time.perf_counter() + min(0.3, duration_s / 10)
    i = 0
    while time.perf_counter() < warm_until:
        call(i)
        i += 1
    latencies: list[int] = []
    started = time.perf_counter_ns()
    stop = started + int(duration_s * 1e9)
    now = started
    while now < stop:
        call(i)
        i += 1
        after = time.perf_counter_ns()
        latencies.append(after - now)
        now = after
    ns = np.array(latencies, dtype=np.float64)
    return {
        "calls": len(latencies),
        "per_s": len(latencies) / ((now - started) / 1e9),
        "p50_ms": float(np.percentile(ns, 50) / 1e6),
        "p99_ms": float(np.percentile(ns, 99) / 1e6),
    }


def _python_client(
    cfg: Config, users: list[str], sample: bytes, params: LookupParams
) -> dict[str, Any]:
    order = list(users)
    random.Random(9).shuffle(order)
    lookup = LookupClient.open(cfg.redis)
    plain = connect(cfg.redis)
    get_key = f"{cfg.redis.key_prefix}:bench:get"
    plain.set(get_key, sample)
    sources: dict[str, int] = {}

    def one(i: int) -> None:
        source = str(lookup.lookup(order[i % len(order)], params.n).source)
        sources[source] = sources.get(source, 0) + 1

    batch = params.many_batch
    try:
        lookups = _timed_loop(one, params.duration_s)
        gets = _timed_loop(lambda i: plain.get(get_key), params.duration_s)
        many = _timed_loop(
            lambda i: lookup.lookup_many(
                order[(i * batch) % len(order) : (i * batch) % len(order) + batch], params.n
            ),
            params.duration_s / 3,
        )
    finally:
        lookup.close()
        plain.close()
    return {
        "lookup": {**lookups, "sources": sources},
        "plain_get": {**gets, "value_bytes": len(sample)},
        "lookup_vs_get_throughput": lookups["per_s"] / gets["per_s"],
        "lookup_many": {
            "batch": batch,
            "users_per_s": many["per_s"] * batch,
            "p50_ms": many["p50_ms"],
            "p99_ms": many["p99_ms"],
        },
    }


def redis_benchmark_binary() -> str | None:
    """redis-benchmark on PATH, else next to the redis-server the local stack runs."""
    found = shutil.which("redis-benchmark")
    server = shutil.which("redis-server")
    if found is None and server is not None:
        beside = Path(server).resolve().parent / "redis-benchmark"
        found = str(beside) if beside.is_file() else None
    return found


def _redis_benchmark(cfg: Config, value_bytes: int, params: LookupParams) -> dict[str, Any]:
    binary = redis_benchmark_binary()
    if binary is None:
        return {"skipped": "redis-benchmark not found (Debian package redis-tools)"}
    if cfg.redis.password or cfg.redis.tls:
        # Its only way to take a password is on the command line, where `ps` shows it.
        return {"skipped": "Redis has a password or TLS: redis-benchmark is not run"}
    out: dict[str, Any] = {"binary": binary}
    for clients in (1, 50):
        cmd = [
            binary,
            "-h",
            cfg.redis.host,
            "-p",
            str(cfg.redis.port),
            "-t",
            "get",
            "--csv",
            "-n",
            str(params.redis_benchmark_requests),
            "-c",
            str(clients),
            "-d",
            str(value_bytes),
        ]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
        head, *rows = [line.replace('"', "").split(",") for line in text.strip().splitlines()]
        row = dict(zip(head, rows[-1], strict=True))
        out[f"get_c{clients}"] = {
            "per_s": float(row["rps"]),
            "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]),
        }
    return out


def run_lookup(cfg: Config, params: LookupParams) -> dict[str, Any]:
    cfg = with_overrides(cfg, redis=dict(key_prefix=f"{cfg.redis.key_prefix}-bench-lookup"))
    if not port_open(cfg.redis.host, cfg.redis.port):
        redis_server.start(cfg)
    load_before = os.getloadavg()
    version, users, sample = _seed(cfg, params)
    python = _python_client(cfg, users, sample, params)
    redis_pids = redis_pids_of(cfg)
    with LoadGenerator() as gen:
        both = measure_servers(cfg, users, params, gen, redis_pids)
    http, threaded = both["http"], both["http_threaded"]
    ceiling = _redis_benchmark(cfg, len(sample), params)
    if "get_c1" in ceiling:
        python["plain_get_vs_redis_benchmark_c1"] = (
            python["plain_get"]["per_s"] / ceiling["get_c1"]["per_s"]
        )
    return {
        "params": {**asdict(params), "ramp_rates": list(params.ramp_rates)},
        "model_version": version,
        "cpus": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "python_client": python,
        "http": http,
        "http_threaded": threaded,
        "highest_rate_vs_threaded": http["highest_rate_held"] / threaded["highest_rate_held"]
        if threaded["highest_rate_held"]
        else None,
        "every_rate_held_vs_threaded": http["every_rate_held_up_to"]
        / threaded["every_rate_held_up_to"]
        if threaded["every_rate_held_up_to"]
        else None,
        "server_cpu_per_request_vs_threaded": http["server_cpu_us_per_request"]
        / threaded["server_cpu_us_per_request"],
        "redis_benchmark": ceiling,
    }


def table(result: dict[str, Any]) -> str:
    py, web, rb = result["python_client"], result["http"], result["redis_benchmark"]
    lines = [
        f"python lookup   {py['lookup']['per_s']:8.0f}/s  p50 {py['lookup']['p50_ms']:.3f} ms  "
        f"p99 {py['lookup']['p99_ms']:.3f} ms  ({py['lookup_vs_get_throughput']:.2f}x a plain "
        f"GET loop: {py['plain_get']['per_s']:.0f}/s)",
        f"lookup_many     {py['lookup_many']['users_per_s']:8.0f} users/s in batches of "
        f"{py['lookup_many']['batch']}",
    ]
    old = result["http_threaded"]
    rows = [
        ("http", web["at_rate"]),
        ("http /similar", web["similar_at_rate"]),
        *(("http ramp", step) for step in web["ramp"]),
        ("threaded", old["at_rate"]),
        *(("threaded ramp", step) for step in old["ramp"]),
    ]
    for name, r in rows:
        cores = " ".join(f"{k} {v:.2f}" for k, v in r["cores"].items() if k != "machine")
        lines.append(
            f"{name:<15} {r['rate_asked']:6.0f}/s asked, {r['rate_achieved']:6.0f}/s "
            f"done  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"errors {r['errors']}{'' if 'held' not in r else '  held ' + str(r['held'])}"
            f"  cores: {cores}"
        )
    ratio = result["highest_rate_vs_threaded"]
    lines.append(
        f"highest HTTP rate held with p99 < {result['params']['p99_limit_ms']:.0f} ms: "
        f"{web['highest_rate_held']:.0f}/s; the threaded baseline {old['highest_rate_held']:.0f}/s"
        + ("" if ratio is None else f" ({ratio:.2f}x)")
    )
    strict = result["every_rate_held_vs_threaded"]
    lines.append(
        f"every rate held up to: {web['every_rate_held_up_to']:.0f}/s; the threaded baseline "
        f"{old['every_rate_held_up_to']:.0f}/s" + ("" if strict is None else f" ({strict:.2f}x)")
    )
    lines.append(
        f"server CPU a request (median over the ramp): {web['server_cpu_us_per_request']:.0f} us;"
        f" the threaded baseline {old['server_cpu_us_per_request']:.0f} us "
        f"({result['server_cpu_per_request_vs_threaded']:.2f}x)"
    )
    for clients in (1, 50):
        if f"get_c{clients}" in rb:
            r = rb[f"get_c{clients}"]
            lines.append(
                f"redis-benchmark GET, {clients:>2} connection(s): {r['per_s']:8.0f}/s  "
                f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
            )
    if "skipped" in rb:
        lines.append(f"redis-benchmark: {rb['skipped']}")
    return "\n".join(lines)
