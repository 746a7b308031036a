"""`streamrec stack up|down|status|fetch`: the local Kafka + Redis stack."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.commands.common import command
from streamrec.schemas.config import Config


def register(sub: Any) -> None:
    parser = sub.add_parser("stack", help="run the local Kafka + Redis stack")
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "fetch"],
        help="fetch only resolves the Kafka and connector jars with Maven",
    )
    command(parser, run)


def run(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.stack import manager

    if args.action == "fetch":
        for name, folder in manager.fetch(cfg).items():
            print(f"{name}: {folder}")
        return 0
    if args.action == "up":
        manager.up(cfg)
    elif args.action == "down":
        manager.down(cfg)
    print(manager.status_text(cfg))
    return 0
