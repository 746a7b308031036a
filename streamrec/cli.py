"""The `streamrec` console script: the command groups of streamrec/commands/, one module each
with its parser next to what it runs, behind one set of global options.

Settings come from one YAML file (``--config``, else $STREAMREC_CONFIG, else built-in defaults)
with the environment on top; see config/streamrec.example.yaml and ``streamrec --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from streamrec.commands import bench, demo, evaluate, jobs, lookup, produce, segments, stack
from streamrec.errors import StreamrecError
from streamrec.schemas.config import ENV_CONFIG_PATH, Config
from streamrec.schemas.config_loader import load_config

log = logging.getLogger("streamrec")

# In the order `streamrec --help` lists them.
COMMAND_GROUPS = (stack, produce, jobs, evaluate, bench, segments, lookup, demo)


def _config_help() -> str:
    """The epilog of --help: where settings come from, and every environment override."""
    import textwrap
    import typing

    from streamrec.schemas.config_loader import ENV_ALIASES, env_override_name

    lines = [
        f"Config: --config FILE, else ${ENV_CONFIG_PATH}, else the built-in defaults; then the",
        "environment on top, with or without a file. Inside a file, ${VAR} and",
        "${VAR:-default} read the environment (e.g. redis.password: ${REDIS_PASSWORD:-}).",
        "",
        "Environment overrides (empty ones set nothing; a list is comma-separated):",
        "  " + ", ".join(f"{var} ({section}.{key})" for var, (section, key) in ENV_ALIASES.items()),
        "  and every key as STREAMREC_<SECTION>__<KEY>, which wins over the names above:",
    ]
    defaults = Config()
    for section in dataclasses.fields(defaults):
        if section.name == "source":
            continue
        hints = typing.get_type_hints(type(getattr(defaults, section.name)))
        # mappings (feedback.weights) are set in a file only
        keys = [key for key, hint in hints.items() if typing.get_origin(hint) is not dict]
        names = ", ".join(env_override_name(section.name, key) for key in keys)
        lines += textwrap.wrap(names, 92, initial_indent="    ", subsequent_indent="      ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Near-real-time recommender on Spark Structured Streaming, Kafka and Redis.",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help=f"YAML config file (default: ${ENV_CONFIG_PATH})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def submit_main(script: str, doc: str | None, command: Sequence[str], argv: Sequence[str]) -> int:
    """Body of the spark-submit entry scripts in deploy/: ``--config FILE`` and then the
    options of ``streamrec <command>``."""
    import os

    parser = argparse.ArgumentParser(
        prog=script, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="streamrec YAML config (on the driver)")
    args, job_options = parser.parse_known_args(list(argv))
    # spark-submit hands spark.pyspark.python to the driver as PYSPARK_PYTHON: say which
    # interpreter the executors were told to run (./environment/bin/python with the archive).
    name = script.removesuffix(".py")
    print(
        f"{name}: executors' Python: {os.environ.get('PYSPARK_PYTHON', 'python3')}",
        file=sys.stderr,
        flush=True,
    )
    return main(["--config", args.config, *command, *job_options])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # kafka-python logs every failed connection attempt at ERROR; streamrec reports an
    # unreachable broker itself, once, with what to do.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config)
        return int(args.func(cfg, args))
    except StreamrecError as exc:
        print(f"streamrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
