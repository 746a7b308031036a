"""The jobs: `streamrec stream`, `streamrec batch run [--every D]`, `streamrec state rebuild`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamrec.commands.common import command
from streamrec.schemas.config import Config

# `streamrec batch run`'s exit codes for a version that is saved but not promoted.
EXIT_BELOW_CURRENT = 3
EXIT_BELOW_POPULARITY = 4
EXIT_SUPERSEDED = 5


def register(sub: Any) -> None:
    stream = sub.add_parser("stream", help="run the streaming job")
    stream.add_argument(
        "--available-now", action="store_true", help="process what is in the topic, then stop"
    )
    stream.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop a continuous stream after this many seconds",
    )
    stream.add_argument(
        "--new-run",
        action="store_true",
        help="start on a new checkpoint although Redis holds an earlier run's states "
        "(refused otherwise: see the error for what to do)",
    )
    command(stream, run_stream)

    batch = sub.add_parser("batch", help="the batch job: train ALS and publish lists")
    batch.add_argument("action", choices=["run"])
    batch.add_argument(
        "--every",
        metavar="DURATION",
        help="repeat every DURATION (90s, 30m, 2h, 1d) until interrupted; a "
        "failed run is logged and the schedule goes on",
    )
    command(batch, run_batch)

    state = sub.add_parser(
        "state",
        help="the stream's per-user states: `rebuild` writes, from the event store, the states "
        "Redis no longer has (after a restart without persistence)",
    )
    state.add_argument("action", choices=["rebuild"])
    command(state, rebuild_state)


def run_stream(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.streaming.job import run_stream as stream

    stream(cfg, available_now=args.available_now, timeout_s=args.timeout, new_run=args.new_run)
    return 0


def run_batch(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.batch.holdout import BELOW_POPULARITY, SUPERSEDED
    from streamrec.batch.job import run_batch as batch_run

    if args.every:
        from streamrec.batch.schedule import parse_duration, run_every
        from streamrec.spark import build_spark

        try:
            every_s = parse_duration(args.every)
        except ValueError as exc:
            print(f"streamrec: error: --every: {exc}", file=sys.stderr)
            return 2
        spark = build_spark(cfg, "batch")
        run_every(every_s, lambda: print(batch_run(cfg, spark=spark).summary(), flush=True))
        return 0
    result = batch_run(cfg)
    print(result.summary())
    # Trained and saved, but not promoted: worth an alert, and the code says why.
    if result.promoted:
        return 0
    exits = {BELOW_POPULARITY: EXIT_BELOW_POPULARITY, SUPERSEDED: EXIT_SUPERSEDED}
    return exits.get(result.refusal, EXIT_BELOW_CURRENT)


def rebuild_state(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.spark import build_spark
    from streamrec.streaming.state_rebuild import rebuild_states

    assert args.action == "rebuild"
    report = rebuild_states(build_spark(cfg, "state-rebuild"), cfg)
    print(report.summary())
    return 0
