"""`streamrec produce`: publish events to Kafka, synthetic or from a ratings file."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.commands.common import command, refuse_unless
from streamrec.schemas.config import Config

SYNTHETIC_ONLY = ("--users", "--items", "--segments", "--new-user-share")


def register(sub: Any) -> None:
    parser = sub.add_parser("produce", help="publish events to Kafka")
    parser.add_argument(
        "--source", choices=["synthetic", "movielens", "delimited"], default="synthetic"
    )
    parser.add_argument("--path", help="input file for movielens (u.data) or delimited sources")
    parser.add_argument("--sep", default=",", help="delimiter of a delimited file (default ',')")
    parser.add_argument("--header", action="store_true", help="the delimited file has a header")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="events to send (synthetic default 10000; files: all)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events per second; 0 sends as fast as the broker takes them",
    )
    parser.add_argument("--users", type=int, default=1000, help="synthetic: number of users")
    parser.add_argument("--items", type=int, default=500, help="synthetic: number of items")
    parser.add_argument("--segments", type=int, default=5, help="synthetic: latent user segments")
    parser.add_argument(
        "--new-user-share",
        type=float,
        default=0.05,
        help="synthetic: share of events from users never seen before",
    )
    parser.add_argument(
        "--inject-invalid",
        type=float,
        default=0.0,
        help="share of deliberately malformed records sent unvalidated "
        "(to exercise the dead-letter path)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    command(parser, run)


def run(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.producer.run import ProduceOptions, produce

    synthetic = args.source == "synthetic"
    refuse_unless(args, SYNTHETIC_ONLY, synthetic, "--source synthetic")
    refuse_unless(args, ("--path",), not synthetic, "--source movielens or delimited")
    refuse_unless(args, ("--sep", "--header"), args.source == "delimited", "--source delimited")
    report = produce(
        cfg,
        ProduceOptions(
            source=args.source,
            path=args.path,
            sep=args.sep,
            header=args.header,
            count=args.count,
            rate=args.rate,
            users=args.users,
            items=args.items,
            segments=args.segments,
            new_user_share=args.new_user_share,
            inject_invalid=args.inject_invalid,
            seed=args.seed,
            progress=not args.no_progress,
        ),
    )
    print(report.summary())
    return 0
