"""The operator page's metrics route as the metrics stream grows: GET /console/api/stream on a
real `streamrec serve` with 1,000, 5,000 and 100,000 micro-batch entries in ``P:stats:stream``,
each against GET /health on the same server in the same run (the baseline: one Redis round
trip and a small JSON body). The route reads at most 5,000 entries (streamrec/console.py
MAX_ENTRIES), so its time should stop growing past that; the ratio to the baseline says what
a poll costs. Each request asks for a different number of points, so none is answered from
the route's 2-second cache.

    python -m streamrec.bench.console [--config FILE] [--json OUT]

It writes under its own key prefix on the configured Redis and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

from streamrec.bench.server_process import ServerProcess
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import load_config, with_overrides
from streamrec.streaming.metrics import LISTS, BatchMetrics

SIZES = (1_000, 5_000, 100_000)
REQUESTS = 30


def seed(client: redis.Redis, key: str, n: int) -> None:
    """``n`` lists micro-batches 20 ms apart, ending at Redis's clock now."""
    client.delete(key)
    now_ms = int(client.time()[0]) * 1000
    for start in range(0, n, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 10_000)):
            lag = {"p50_ms": 800.0 + i % 40, "p95_ms": 1500.0, "p99_ms": 2100.0}
            metrics = BatchMetrics(LISTS, i, 500, i % 3, 0.2, 900.0, users=40, lag_ms=lag)
            pipe.xadd(key, metrics.fields(), id=f"{now_ms - (n - i) * 20}-0")  # type: ignore[arg-type]
        pipe.execute()


def timed(url: str) -> tuple[float, int]:
    """Median milliseconds of REQUESTS sequential GETs of ``url`` (``{p}`` replaced by 300,
    299, ...), and the first body's size."""
    times, size = [], 0
    for i in range(REQUESTS):
        started = time.perf_counter()
        with urllib.request.urlopen(url.format(p=300 - i), timeout=30) as response:
            size = size or len(response.read())
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


def run_console_bench(cfg: Config) -> dict[str, Any]:
    cfg = with_overrides(
        cfg, redis=dict(key_prefix=f"benchconsole{uuid.uuid4().hex[:8]}"), serve=dict(workers=1)
    )
    key = L.stream_metrics_key(cfg.redis.key_prefix)
    client = redis.Redis(host=cfg.redis.host, port=cfg.redis.port, db=cfg.redis.db)
    rows = []
    try:
        with ServerProcess(cfg) as server:
            for n in SIZES:
                seed(client, key, n)
                health_ms, _ = timed(f"{server.url}/health")
                stream_ms, size = timed(f"{server.url}/console/api/stream?points={{p}}")
                rows.append(
                    {
                        "entries": n,
                        "stream_ms": round(stream_ms, 2),
                        "health_ms": round(health_ms, 2),
                        "ratio_to_health": round(stream_ms / health_ms, 1),
                        "payload_bytes": size,
                    }
                )
    finally:
        client.delete(key)
        client.close()
    growth = rows[-1]["stream_ms"] / rows[1]["stream_ms"]
    return {"requests": REQUESTS, "sizes": rows, "ratio_100k_to_5k": round(growth, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="streamrec config file (default: the usual lookup)")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    result = run_console_bench(load_config(args.config))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
