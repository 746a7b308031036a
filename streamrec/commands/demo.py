"""`streamrec demo`: the whole path on synthetic data on the local stack."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.commands.common import command
from streamrec.schemas.config import Config


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the whole path on synthetic data on the local stack")
    demo.add_argument("--events", type=int, default=20000, help="synthetic events to train on")
    demo.add_argument("--show", type=int, default=3, help="users whose lists to print")
    command(demo, run)


def run(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.demo import run_demo

    return run_demo(cfg, events=args.events, users_to_show=args.show)
