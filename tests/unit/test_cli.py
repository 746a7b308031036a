"""Every flag of every command is one its command reads, and a flag given where the command
would not use it is refused (exit 2, naming it), never silently ignored."""

from __future__ import annotations

import argparse
import inspect
import sys

import pytest

from streamrec.cli import build_parser, main

pytestmark = pytest.mark.unit

# Set by the parsers themselves, not by users.
INTERNAL = {"help", "func", "parser", "command", "which"}


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser that runs a command, with the words that reach it."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += leaf_parsers(child, (*path, name))
    return out or [(path, parser)]


LEAVES = leaf_parsers(build_parser())


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"stack", "produce", "stream", "batch", "evaluate", "bench lookup", "serve"} <= names
    assert {"bench quality", "bench faults", "bench session", "recommend", "demo"} <= names
    assert len(names) == len(LEAVES)


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_flag_is_read_by_its_command(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    run = parser.get_default("func")
    assert run is not None, path
    source = inspect.getsource(sys.modules[run.__module__])
    for action in parser._actions:
        if action.dest in INTERNAL:
            continue
        assert f"args.{action.dest}" in source, (path, action.dest)


@pytest.mark.parametrize(
    "argv,named",
    [
        (["evaluate", "--event-store", "--sweeps", "10"], "--sweeps"),
        (["evaluate", "--event-store", "--train", "a", "--test", "b"], "--train"),
        (["evaluate", "--train", "a", "--test", "b", "--holdout-share", "0.2"], "--holdout-share"),
        (["evaluate", "--train", "a", "--test", "b", "--burn-in", "5"], "--burn-in"),
        (["evaluate", "--train", "a", "--test", "b", "--sep", ";"], "--sep"),
        (["evaluate", "--train", "a", "--test", "b", "--estimator", "bayes"], "--estimator"),
        (["produce", "--source", "movielens", "--path", "u.data", "--users", "5"], "--users"),
        (["produce", "--path", "u.data"], "--path"),
        (["produce", "--source", "movielens", "--path", "u.data", "--header"], "--header"),
        (["segments", "report", "--train", "a", "--out", "b", "--header"], "--header"),
        (["models", "v1", "--json"], "--json"),
    ],
)
def test_a_flag_the_command_would_not_use_is_refused(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamrec: error: ") and named in err


def test_a_benchmark_takes_only_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "lookup", "--users", "5"])
    assert exit_.value.code == 2 and "--users" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "replay"])  # its ratings file is required
