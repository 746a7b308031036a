"""`python -m streamrec.bench.cluster_lookup [--duration S] [--json OUT]`: what Redis Cluster
costs a lookup.

The Python lookup client (streamrec.lookup) on the same published data (bench/lookup.py's
``_seed``: most users with a list, some with a segment only, some unknown), first on one Redis
node (the local stack's), where a lookup is one ``LOOKUP_LUA`` round trip, then on a local
Redis Cluster of three masters (stack/redis_cluster.py, started here on ``first_port`` and the
next two ports, stopped after if started here), where it is two to four rounds
(streamrec/cluster_reads.py). Reported: each one's rate and latencies, and the cluster's as
ratios to the single node's measured in the same run; nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from streamrec.bench.lookup import LookupParams, _python_client, _seed
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import load_config, with_overrides
from streamrec.stack import redis_server
from streamrec.stack.process import port_open
from streamrec.stack.redis_cluster import LocalCluster

log = logging.getLogger(__name__)


def run_cluster_lookup(
    cfg: Config, params: LookupParams, first_port: int = 17001
) -> dict[str, Any]:
    single = with_overrides(cfg, redis=dict(key_prefix=f"{cfg.redis.key_prefix}-bench-cluster"))
    if not port_open(single.redis.host, single.redis.port):
        redis_server.start(single)
    cluster = LocalCluster(
        Path(cfg.stack.home).resolve() / "redis-cluster",
        first_port,
        password=cfg.redis.password,
    )
    started = cluster.start()
    on_cluster = with_overrides(
        single, redis=dict(host=cluster.host, port=first_port, db=0, tls=False, cluster=True)
    )
    load_before = os.getloadavg()
    out: dict[str, Any] = {}
    try:
        for name, where in (("single_node", single), ("cluster", on_cluster)):
            _, users, sample = _seed(where, params)
            out[name] = _python_client(where, users, sample, params)
    finally:
        if started != "already running":
            cluster.stop()
    one, many = out["single_node"], out["cluster"]
    return {
        "params": {**asdict(params), "ramp_rates": list(params.ramp_rates)},
        "cpus": os.cpu_count(),
        "load_average_before": list(load_before),
        **out,
        "cluster_vs_single": {
            "lookup_throughput": many["lookup"]["per_s"] / one["lookup"]["per_s"],
            "lookup_p50": many["lookup"]["p50_ms"] / one["lookup"]["p50_ms"],
            "lookup_p99": many["lookup"]["p99_ms"] / one["lookup"]["p99_ms"],
            "lookup_many_throughput": many["lookup_many"]["users_per_s"]
            / one["lookup_many"]["users_per_s"],
            "plain_get_throughput": many["plain_get"]["per_s"] / one["plain_get"]["per_s"],
        },
    }


def table(result: dict[str, Any]) -> str:
    lines = []
    for name in ("single_node", "cluster"):
        py = result[name]
        lines.append(
            f"{name:<12} lookup {py['lookup']['per_s']:7.0f}/s  p50 {py['lookup']['p50_ms']:.3f} "
            f"ms  p99 {py['lookup']['p99_ms']:.3f} ms   lookup_many "
            f"{py['lookup_many']['users_per_s']:7.0f} users/s   "
            f"GET {py['plain_get']['per_s']:.0f}/s"
        )
    ratios = result["cluster_vs_single"]
    lines.append(
        "cluster / single node: "
        + ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.bench.cluster_lookup")
    parser.add_argument("--config", help="config file (default: $STREAMREC_CONFIG, else defaults)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--port", type=int, default=17001, help="the cluster's first port")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = load_config(args.config)
    result = run_cluster_lookup(cfg, replace(LookupParams(), duration_s=args.duration), args.port)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
