"""`streamrec bench <benchmark>`: each benchmark with its own flags, every figure a ratio or a
latency measured against a baseline in the same run (bench/)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from streamrec.commands.common import Command, command, write_json
from streamrec.schemas.config import Config


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks, as ratios against same-run baselines")
    which = bench.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    for name, help_text, add_flags, run in BENCHMARKS:
        parser = which.add_parser(name, help=help_text)
        add_flags(parser)
        parser.add_argument("--json", help="write every figure to this JSON file")
        command(parser, run)


def _quality_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with MovieLens 100K (ua.base, ua.test, u.data)")
    p.add_argument(
        "--steam", metavar="DIR", help="folder with the Steam play hours (plays.tsv), 80/20"
    )


def quality(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench.quality import QualityParams, run_quality, table
    from streamrec.spark import build_spark

    spark = build_spark(cfg, "bench")
    result = run_quality(spark, cfg, args.data, QualityParams(), steam_dir=args.steam)
    print(table(result))
    write_json(result, args.json)
    return 0


def _scoring_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=100_000, help="users (100000)")
    p.add_argument("--items", type=int, default=20_000, help="items (20000)")
    p.add_argument("--rank", type=int, default=32, help="factors (32)")
    p.add_argument("--seen", type=int, default=20, help="seen items per user (20)")
    p.add_argument("--k", type=int, default=10, help="list length (10)")


def scoring(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench.scoring import run_scoring
    from streamrec.spark import build_spark

    spark = build_spark(cfg, "bench")
    result = run_scoring(spark, args.users, args.items, args.rank, args.seen, args.k)
    print(
        f"top-{args.k} for {args.users} users x {args.items} items, rank {args.rank}: "
        f"streamrec {result['streamrec_topk_s']:.1f}s, implicit "
        f"{result['implicit_topk_s']:.1f}s, ratio {result['ratio_vs_implicit']:.2f}x"
    )
    write_json(result, args.json)
    return 0


def _freshness_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate",
        type=float,
        action="append",
        help="events/s to hold (repeat for several; 500, 2000, 5000)",
    )
    p.add_argument("--duration", type=float, help="seconds per rate (30)")
    p.add_argument(
        "--settle",
        type=float,
        help="unmeasured seconds at the first rate before measuring (40; JIT warm-up)",
    )


def freshness(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import freshness as bench

    params = bench.FreshnessParams()
    if args.rate:
        params = dataclasses.replace(params, rates=tuple(args.rate))
    if args.duration:
        params = dataclasses.replace(params, duration_s=args.duration)
    if args.settle is not None:
        params = dataclasses.replace(params, settle_s=args.settle)
    result = bench.run_freshness(cfg, params)
    print(bench.table(result))
    write_json(result, args.json)
    return 0


def _duration_flag(default_s: float) -> Any:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--duration", type=float, help=f"seconds per measurement ({default_s:g})")

    return add


def lookup(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import lookup as bench

    params = bench.LookupParams()
    if args.duration:
        params = dataclasses.replace(params, duration_s=args.duration)
    result = bench.run_lookup(cfg, params)
    print(bench.table(result))
    write_json(result, args.json)
    return 0


def _no_flags(p: argparse.ArgumentParser) -> None:
    return None


def costs(cfg: Config, args: argparse.Namespace) -> int:
    """Per-unit costs measured here and their extrapolation (docs/scaling.md)."""
    from streamrec.bench.costs import run_costs, table
    from streamrec.spark import build_spark

    result = run_costs(build_spark(cfg, "bench"), cfg)
    print(table(result))
    write_json(result, args.json)
    return 0


def _ratings_file_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a ratings file with times (u.data)")


def tuning(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import tuning as bench
    from streamrec.spark import build_spark

    result = bench.run_tuning_bench(build_spark(cfg, "bench"), cfg, args.data)
    print(bench.table(result))
    write_json(result, args.json)
    return 0


def _replay_flags(p: argparse.ArgumentParser) -> None:
    _ratings_file_flag(p)
    p.add_argument(
        "--live",
        type=int,
        default=0,
        metavar="N",
        help="send the first N replayed events through Kafka, the stream and Redis (the local "
        "stack, namespace 'replay') beside the offline replay of the same events",
    )


def replay(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import replay as bench

    if args.live:
        from streamrec.bench import replay_live

        result = replay_live.run_live_replay(cfg, args.data, bench.ReplayParams(), args.live)
        print(replay_live.table(result))
    else:
        from streamrec.spark import build_spark

        result = bench.run_replay(build_spark(cfg, "bench"), cfg, args.data, bench.ReplayParams())
        print(bench.table(result))
    write_json(result, args.json)
    return 0


def _faults_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--short",
        action="store_true",
        help="the short form (1,000 valid and 1,000 malformed records, 1,200 events under load, "
        "Redis down 3 s and frozen 5 s)",
    )


def faults(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import faults as bench
    from streamrec.bench.fault_counts import SHORT, FaultParams

    result = bench.run_faults(cfg, SHORT if args.short else FaultParams())
    print(bench.table(result))
    write_json(result, args.json)
    return 0


def _session_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="MovieLens u.data to train on (default: synthetic events)")
    _duration_flag(10)(p)


def session(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench import session as bench
    from streamrec.spark import build_spark

    params = bench.SessionParams()
    if args.duration:
        params = dataclasses.replace(params, duration_s=args.duration)
    result = bench.run_session(build_spark(cfg, "bench"), cfg, args.data, params)
    print(bench.table(result))
    write_json(result, args.json)
    return 0


BENCHMARKS: list[tuple[str, str, Any, Command]] = [
    (
        "quality",
        "streamrec beside tuned peers and popularity on several datasets",
        _quality_flags,
        quality,
    ),
    ("scoring", "top-N scoring against the implicit library", _scoring_flags, scoring),
    ("freshness", "event to list in Redis under load", _freshness_flags, freshness),
    ("lookup", "lookups: Python client, HTTP server, its baseline", _duration_flag(3), lookup),
    ("costs", "per-unit costs and their extrapolation", _no_flags, costs),
    ("tuning", "the batch job's tuned retrain", _ratings_file_flag, tuning),
    ("replay", "replay a ratings file through the fold-in", _replay_flags, replay),
    ("faults", "lost, doubled, halted under real faults", _faults_flags, faults),
    ("session", "anonymous sessions and lookup options on a real server", _session_flags, session),
]
