"""`streamrec bench lookup`'s HTTP part: `streamrec serve` and the threaded baseline, both up
at once, under the same open-loop generator (bench/loadgen.py), with the cores each side used
(bench/cpu.py). The method is described in bench/lookup.py."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from streamrec.bench import cpu
from streamrec.bench.loadgen import LoadGenerator
from streamrec.bench.server_process import ServerProcess
from streamrec.redis_lists import connect
from streamrec.schemas.config import Config

if TYPE_CHECKING:
    from streamrec.bench.lookup import LookupParams


def _step(
    gen: LoadGenerator,
    url: str,
    paths: list[str],
    rate: float,
    params: LookupParams,
    groups: dict[str, list[int]],
) -> dict[str, Any]:
    """One run of the generator at ``rate``, with the cores each process group used meanwhile."""
    before, started = cpu.snapshot(groups), time.perf_counter()
    step = gen.run(url, paths, rate, params.duration_s, params.http_connections)
    step["cores"] = cpu.cores_used(before, cpu.snapshot(groups), time.perf_counter() - started)
    # What a request costs the server in CPU: less noisy than rates on a shared machine.
    step["server_cpu_us_per_request"] = 1e6 * step["cores"]["server"] / step["rate_achieved"]
    return step


Step = Callable[[list[str], float], dict[str, Any]]


def _held(step: dict[str, Any], rate: float, params: LookupParams) -> bool:
    return (
        step["p99_ms"] < params.p99_limit_ms
        and step["errors"] == 0
        and step["rate_achieved"] >= 0.95 * rate
    )


def _ramps(
    runs: dict[str, Callable[[float], dict[str, Any]]], params: LookupParams
) -> dict[str, tuple[list[dict[str, Any]], float]]:
    """Each server's ramp and highest rate held, their steps interleaved rate by rate (the
    first to go alternates) so that both meet the same machine; a server's ramp stops after
    ``ramp_misses`` rates in a row not held (one noisy step does not end it)."""
    ramps: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    held, misses = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0)
    for i, rate in enumerate(params.ramp_rates):
        names = [name for name in runs if misses[name] < params.ramp_misses]
        for name in names[::-1] if i % 2 else names:
            step = runs[name](rate)
            step["held"] = _held(step, rate, params)
            ramps[name].append(step)
            held[name], misses[name] = (rate, 0) if step["held"] else (held[name], misses[name] + 1)
    return {name: (ramps[name], held[name]) for name in runs}


def measure_servers(
    cfg: Config, users: list[str], params: LookupParams, gen: LoadGenerator, redis_pids: list[int]
) -> dict[str, dict[str, Any]]:
    """``streamrec serve`` (``http``) and the threaded baseline (``http_threaded``), both up
    at once and loaded in turn by the same generator."""
    order = list(users)
    random.Random(11).shuffle(order)
    paths = [f"/recommendations/{quote(u, safe='')}?n={params.n}" for u in order]
    # Items like an item, at the rate the issue names for /similar (the catalogue's ids).
    similar_paths = [f"/similar/item-{i}?n={params.n}" for i in range(params.items)]
    random.Random(12).shuffle(similar_paths)
    with ServerProcess(cfg) as new, ServerProcess(cfg, threaded=True) as threaded:
        servers = {"http": new, "http_threaded": threaded}
        runs: dict[str, Step] = {}
        processes: dict[str, int] = {}
        for name, server in servers.items():
            gen.run(server.url, paths, 200.0, 0.5, params.http_connections)  # warm-up
            # After the warm-up: uvicorn's workers start after the socket is bound.
            groups = {
                "generator": [gen.pid],
                "server": cpu.tree(server.proc.pid),
                "redis": redis_pids,
            }
            runs[name] = functools.partial(_step, gen, server.url, params=params, groups=groups)
            processes[name] = len(groups["server"])
        out: dict[str, dict[str, Any]] = {
            name: {
                "at_rate": run(paths, params.http_rate),
                # The threaded baseline has no /similar.
                "similar_at_rate": None if name != "http" else run(similar_paths, params.http_rate),
                "connections": params.http_connections,
                "server_processes": processes[name],
            }
            for name, run in runs.items()
        }
        ramps = _ramps({name: functools.partial(run, paths) for name, run in runs.items()}, params)
    for name, (ramp, held) in ramps.items():
        at_rate = out[name]["at_rate"]
        if _held(at_rate, params.http_rate, params):
            held = max(held, params.http_rate)
        cost = float(np.median([step["server_cpu_us_per_request"] for step in ramp]))
        out[name].update(
            ramp=ramp,
            highest_rate_held=held,
            every_rate_held_up_to=held_without_a_miss(ramp),
            server_cpu_us_per_request=cost,
        )
    return out


def held_without_a_miss(ramp: list[dict[str, Any]]) -> float:
    """The highest rate of the ramp below which no step missed: a stricter figure than the
    highest rate held, which one quiet step after a missed one can raise."""
    held = 0.0
    for step in ramp:
        if not step["held"]:
            break
        held = step["rate_asked"]
    return held


def redis_pids_of(cfg: Config) -> list[int]:
    """Redis's pid when it runs on this machine (its CPU is then counted), else none."""
    if cfg.redis.host not in ("127.0.0.1", "localhost", "::1"):
        return []
    client = connect(cfg.redis)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return [pid] if Path(f"/proc/{pid}").exists() else []
