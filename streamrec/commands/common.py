"""What the command modules share: the command signature, flags given against the ones a mode
uses, and how a result is written."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from streamrec.errors import StreamrecError
from streamrec.schemas.config import Config

Command = Callable[[Config, argparse.Namespace], int]


class UnusedFlag(StreamrecError):
    """A flag the command was given that it would not use: refused instead of ignored."""


def command(parser: argparse.ArgumentParser, run: Command) -> None:
    """``run`` is what ``parser``'s command does; the parser goes along to tell given flags."""
    parser.set_defaults(func=run, parser=parser)


def given(args: argparse.Namespace) -> set[str]:
    """The options of the command's parser whose value is not their default: those given."""
    parser: argparse.ArgumentParser = args.parser
    return {
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings
        and action.dest not in ("help", "parser", "func")
        and getattr(args, action.dest, action.default) != action.default
    }


def refuse_unless(
    args: argparse.Namespace, flags: Collection[str], applies: bool, when: str
) -> None:
    """UnusedFlag naming the given ``flags`` when they do not apply (``when`` says when they
    do)."""
    used = sorted(set(flags) & given(args))
    if used and not applies:
        raise UnusedFlag(f"{', '.join(used)}: only with {when}")


def add_ratings_file_options(parser: argparse.ArgumentParser) -> None:
    """How a ratings file is read (batch/rating_files.py), the same for every command."""
    parser.add_argument("--format", choices=["movielens", "delimited"], default="movielens")
    parser.add_argument("--sep", default=",", help="delimiter of a delimited file (default ',')")
    parser.add_argument("--header", action="store_true", help="delimited files have a header")


def refuse_delimited_options(args: argparse.Namespace) -> None:
    refuse_unless(args, ("--sep", "--header"), args.format == "delimited", "--format delimited")


def write_json(result: Any, path: str | None) -> None:
    """``result`` as indented JSON at ``path`` (folders made), when a path is given."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written: {path}")
