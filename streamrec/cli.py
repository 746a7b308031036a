"""The `streamrec` console script: thin argument parsing that delegates to the packages.

Settings come from one YAML file (``--config``, else $STREAMREC_CONFIG, else built-in defaults);
see config/streamrec.example.yaml. Environment overrides are written in that file as ${VAR}.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from streamrec.errors import StreamrecError
from streamrec.schemas.config import ENV_CONFIG_PATH, BatchConfig, Config, load_config

log = logging.getLogger("streamrec")


def _cmd_stack(cfg: Config, args: argparse.Namespace) -> int:
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


def _cmd_produce(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.producer.run import ProduceOptions, produce

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


def _cmd_stream(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.streaming.job import run_stream

    run_stream(cfg, available_now=args.available_now, timeout_s=args.timeout, new_run=args.new_run)
    return 0


# `streamrec batch run`'s exit codes for a version that is saved but not promoted.
EXIT_BELOW_CURRENT = 3
EXIT_BELOW_POPULARITY = 4
EXIT_SUPERSEDED = 5


def _cmd_batch(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.batch.holdout import BELOW_POPULARITY, SUPERSEDED
    from streamrec.batch.job import run_batch

    if args.every:
        from streamrec.batch.schedule import parse_duration, run_every
        from streamrec.spark import build_spark

        try:
            every_s = parse_duration(args.every)
        except ValueError as exc:
            print(f"streamrec: error: --every: {exc}", file=sys.stderr)
            return 2
        spark = build_spark(cfg, "batch")
        run_every(every_s, lambda: print(run_batch(cfg, spark=spark).summary(), flush=True))
        return 0
    result = run_batch(cfg)
    print(result.summary())
    # Trained and saved, but not promoted: worth an alert, and the code says why.
    if result.promoted:
        return 0
    exits = {BELOW_POPULARITY: EXIT_BELOW_POPULARITY, SUPERSEDED: EXIT_SUPERSEDED}
    return exits.get(result.refusal, EXIT_BELOW_CURRENT)


def _cmd_models(cfg: Config, args: argparse.Namespace) -> int:
    import json

    from streamrec.model.describe import describe, describe_all, table

    if args.version:
        print(json.dumps(describe(cfg.paths.model_store, args.version), indent=2))
        return 0
    rows = describe_all(cfg.paths.model_store)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


def _cmd_state(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.spark import build_spark
    from streamrec.streaming.state_rebuild import rebuild_states

    report = rebuild_states(build_spark(cfg, "state-rebuild"), cfg)
    print(report.summary())
    return 0


def _cmd_evaluate(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.batch.evaluate import EvalOptions, evaluate, write_json
    from streamrec.spark import build_spark

    batch = cfg.batch
    for name in ("rank", "reg_param", "alpha", "max_iter"):
        value = getattr(args, name)
        if value is not None:
            batch = dataclasses.replace(batch, **{name: value})
    if args.event_store:
        return _evaluate_event_store(cfg, batch, args)
    if args.peer and (args.mode != "implicit" or args.estimator != "als"):
        print("streamrec: error: --peer compares implicit-mode ALS", file=sys.stderr)
        return 2
    if not (args.train and args.test):
        print(
            "streamrec: error: evaluate needs --train and --test, or --event-store", file=sys.stderr
        )
        return 2
    from streamrec.batch.bayes import BayesParams

    try:
        bayes = BayesParams(
            rank=args.rank or BayesParams.rank,
            sweeps=args.sweeps,
            burn_in=args.burn_in,
            seed=batch.seed,
        )
        opts = EvalOptions(
            train=args.train,
            test=args.test,
            fmt=args.format,
            sep=args.sep,
            header=args.header,
            mode=args.mode,
            relevant_min=args.relevant_min,
            k=args.k,
            tune=args.tune,
            estimator=args.estimator,
            bayes=bayes,
            event_type=args.event_type,
        )
    except ValueError as exc:
        print(f"streamrec: error: {exc}", file=sys.stderr)
        return 2
    spark = build_spark(cfg, "evaluate")
    report = evaluate(spark, opts, batch, cfg.spark.shuffle_partitions, cfg.feedback)
    if args.peer:
        from streamrec.bench.peers import implicit_peer

        peer, peer_trials = implicit_peer(spark, opts, batch, cfg.feedback)
        report.models.append(peer)
        report.peer_tuning = peer_trials
    print(report.table())
    if args.json:
        write_json(report, args.json)
        print(f"written: {args.json}")
    if args.plot:
        from streamrec.batch.plots import plot_models

        plot_models(report, args.plot)
        print(f"written: {args.plot}")
    return 0


def _evaluate_event_store(cfg: Config, batch: BatchConfig, args: argparse.Namespace) -> int:
    """The batch job's own judgement: a time split of the event store (newest share held out)."""
    import json
    from pathlib import Path

    from streamrec.batch.holdout import holdout_metrics
    from streamrec.batch.interactions import dedupe_events
    from streamrec.batch.job import read_event_store
    from streamrec.spark import build_spark

    share = args.holdout_share if args.holdout_share is not None else batch.holdout_share or 0.1
    batch = dataclasses.replace(batch, holdout_share=share, eval_k=args.k)
    spark = build_spark(cfg, "evaluate")
    events = dedupe_events(read_event_store(spark, cfg.paths.event_store))
    result = holdout_metrics(events, dataclasses.replace(cfg, batch=batch))
    if result is None:
        print(
            "streamrec: error: the newest events have no user with new items to score",
            file=sys.stderr,
        )
        return 1
    k = args.k
    print(
        f"event store {cfg.paths.event_store}, newest {share:.0%} held out (from "
        f"{result['split_ms']} ms)\n{'model':<12} {'P@' + str(k):>8} {'R@' + str(k):>8} "
        f"{'NDCG@' + str(k):>8} {'MAP@' + str(k):>8} {'cover':>7} {'users':>6}"
    )
    for name in ("als", "popularity"):
        m = result[name]
        print(
            f"{name:<12} {m['precision']:8.4f} {m['recall']:8.4f} {m['ndcg']:8.4f} "
            f"{m['map']:8.4f} {m['coverage']:7.3f} {m['users']:>6}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"written: {args.json}")
    return 0


def _cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.bench.quality import QualityParams, run_quality, table, write
    from streamrec.spark import build_spark

    if args.which == "freshness":
        from streamrec.bench import freshness

        params = freshness.FreshnessParams()
        if args.rate:
            params = dataclasses.replace(params, rates=tuple(args.rate))
        if args.duration:
            params = dataclasses.replace(params, duration_s=args.duration)
        if args.settle is not None:
            params = dataclasses.replace(params, settle_s=args.settle)
        fresh = freshness.run_freshness(cfg, params)
        print(freshness.table(fresh))
        if args.json:
            freshness.write(fresh, args.json)
            print(f"written: {args.json}")
        return 0
    if args.which == "lookup":
        from streamrec.bench import lookup

        lookup_params = lookup.LookupParams()
        if args.duration:
            lookup_params = dataclasses.replace(lookup_params, duration_s=args.duration)
        timed = lookup.run_lookup(cfg, lookup_params)
        print(lookup.table(timed))
        if args.json:
            write(timed, args.json)
            print(f"written: {args.json}")
        return 0
    if args.which == "costs":
        return _bench_costs(cfg, args)
    if args.which == "faults":
        from streamrec.bench import faults

        result = faults.run_faults(cfg, faults.SHORT if args.short else faults.FaultParams())
        print(faults.table(result))
        if args.json:
            write(result, args.json)
            print(f"written: {args.json}")
        return 0
    spark = build_spark(cfg, "bench")
    if args.which in ("replay", "tuning"):
        if not args.data:
            message = f"streamrec: error: bench {args.which} needs --data FILE (u.data)"
            print(message, file=sys.stderr)
            return 2
        if args.which == "replay" and args.live:
            from streamrec.bench import replay, replay_live

            replay_params = replay.ReplayParams()
            result = replay_live.run_live_replay(cfg, args.data, replay_params, args.live)
            print(replay_live.table(result))
        elif args.which == "replay":
            from streamrec.bench import replay

            result = replay.run_replay(spark, cfg, args.data, replay.ReplayParams())
            print(replay.table(result))
        else:
            from streamrec.bench import tuning

            result = tuning.run_tuning_bench(spark, cfg, args.data)
            print(tuning.table(result))
    elif args.which == "session":
        from streamrec.bench import session

        session_params = session.SessionParams()
        if args.duration:
            session_params = dataclasses.replace(session_params, duration_s=args.duration)
        result = session.run_session(spark, cfg, args.data, session_params)
        print(session.table(result))
    elif args.which == "scoring":
        from streamrec.bench.scoring import run_scoring

        result = run_scoring(spark, args.users, args.items, args.rank, args.seen, args.k)
        print(
            f"top-{args.k} for {args.users} users x {args.items} items, rank {args.rank}: "
            f"streamrec {result['streamrec_topk_s']:.1f}s, implicit "
            f"{result['implicit_topk_s']:.1f}s, ratio {result['ratio_vs_implicit']:.2f}x"
        )
    else:
        result = run_quality(spark, cfg, args.data, QualityParams(), steam_dir=args.steam)
        print(table(result))
    if args.json:
        write(result, args.json)
        print(f"written: {args.json}")
    return 0


def _bench_costs(cfg: Config, args: argparse.Namespace) -> int:
    """Per-unit costs measured here and their extrapolation (docs/scaling.md)."""
    from streamrec.bench.costs import run_costs
    from streamrec.bench.costs import table as costs_table
    from streamrec.bench.quality import write
    from streamrec.spark import build_spark

    result = run_costs(build_spark(cfg, "bench"), cfg)
    print(costs_table(result))
    if args.json:
        write(result, args.json)
        print(f"written: {args.json}")
    return 0


def _cmd_segments(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.batch.segment_report import report_from_ratings_file
    from streamrec.spark import build_spark

    spark = build_spark(cfg, "segments")
    m = report_from_ratings_file(
        spark, args.train, args.format, args.sep, args.header, args.items, args.out, cfg
    )
    agreement = m["classifier_agreement"]
    sizes = ", ".join(f"{s}: {n}" for s, n in m["segment_sizes"].items())
    print(
        f"{m['users']} users -> k = {m['k']} segments ({m['method']}), silhouette "
        f"{m['silhouette']:.3f}, classifier agreement "
        f"{'n/a' if agreement is None else f'{agreement:.1%}'}; sizes {sizes}"
    )
    print(f"written: {args.out}/report.md, metrics.json and plots")
    return 0


def _cmd_recommend(cfg: Config, args: argparse.Namespace) -> int:
    import json

    from streamrec.lookup import LookupClient, table

    titles: dict[str, str] = {}
    if args.items:
        from streamrec.model.item_metadata import read_movielens_items

        titles = read_movielens_items(args.items).titles
    with LookupClient.open(cfg.redis) as client:
        rec = client.lookup(args.user, args.n, args.exclude or ())
    if args.json:
        payload = rec.to_json()
        for item in payload["items"]:
            if item["item_id"] in titles:
                item["title"] = titles[item["item_id"]]
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print(table(rec, titles))
    # 1: nothing to recommend (no model published yet, or no list of any kind).
    return 0 if rec.items else 1


def _cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.serve import serve

    return serve(cfg, args.host, args.port)


def _cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.demo import run_demo

    return run_demo(cfg, events=args.events, users_to_show=args.show)


def _add_ratings_file_options(parser: argparse.ArgumentParser) -> None:
    """How a ratings file is read (batch/rating_files.py), the same for every command."""
    parser.add_argument("--format", choices=["movielens", "delimited"], default="movielens")
    parser.add_argument("--sep", default=",", help="delimiter of a delimited file (default ',')")
    parser.add_argument("--header", action="store_true", help="delimited files have a header")


def _config_help() -> str:
    """The epilog of --help: where settings come from, and every environment override."""
    import textwrap
    import typing

    from streamrec.schemas.config import ENV_ALIASES, env_override_name

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

    stack = sub.add_parser("stack", help="run the local Kafka + Redis stack")
    stack.add_argument(
        "action",
        choices=["up", "down", "status", "fetch"],
        help="fetch only resolves the Kafka and connector jars with Maven",
    )
    stack.set_defaults(func=_cmd_stack)

    prod = sub.add_parser("produce", help="publish events to Kafka")
    prod.add_argument(
        "--source", choices=["synthetic", "movielens", "delimited"], default="synthetic"
    )
    prod.add_argument("--path", help="input file for movielens (u.data) or delimited sources")
    prod.add_argument("--sep", default=",", help="delimiter of a delimited file (default ',')")
    prod.add_argument("--header", action="store_true", help="the delimited file has a header")
    prod.add_argument(
        "--count",
        type=int,
        default=None,
        help="events to send (synthetic default 10000; files: all)",
    )
    prod.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events per second; 0 sends as fast as the broker takes them",
    )
    prod.add_argument("--users", type=int, default=1000, help="synthetic: number of users")
    prod.add_argument("--items", type=int, default=500, help="synthetic: number of items")
    prod.add_argument("--segments", type=int, default=5, help="synthetic: latent user segments")
    prod.add_argument(
        "--new-user-share",
        type=float,
        default=0.05,
        help="synthetic: share of events from users never seen before",
    )
    prod.add_argument(
        "--inject-invalid",
        type=float,
        default=0.0,
        help="share of deliberately malformed records sent unvalidated "
        "(to exercise the dead-letter path)",
    )
    prod.add_argument("--seed", type=int, default=7)
    prod.add_argument("--no-progress", action="store_true", help="no progress bar")
    prod.set_defaults(func=_cmd_produce)

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
    stream.set_defaults(func=_cmd_stream)

    batch = sub.add_parser("batch", help="the batch job: train ALS and publish lists")
    batch.add_argument("action", choices=["run"])
    batch.add_argument(
        "--every",
        metavar="DURATION",
        help="repeat every DURATION (90s, 30m, 2h, 1d) until interrupted; a "
        "failed run is logged and the schedule goes on",
    )
    batch.set_defaults(func=_cmd_batch)

    ev = sub.add_parser("evaluate", help="train on one ratings file, score on another")
    ev.add_argument("--train", help="training ratings/interactions file")
    ev.add_argument("--test", help="test ratings/interactions file")
    ev.add_argument(
        "--event-store",
        action="store_true",
        help="instead of files: a time split of the event store (paths.event_store)",
    )
    ev.add_argument(
        "--holdout-share",
        type=float,
        help="with --event-store: newest share of events held out (default batch.holdout_share)",
    )
    _add_ratings_file_options(ev)
    ev.add_argument("--mode", choices=["implicit", "explicit"], default="implicit")
    ev.add_argument(
        "--event-type",
        help="implicit mode: the event type a row stands for, weighted by the config's feedback "
        "section as the batch job weighs it (default: rating for movielens, play for delimited)",
    )
    ev.add_argument(
        "--relevant-min",
        type=float,
        default=4.0,
        help="test rows with a rating at least this are relevant (default 4)",
    )
    ev.add_argument("--k", type=int, default=10, help="list length scored (default 10)")
    ev.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="choose rank/regParam/alpha as the batch job does (successive halving over "
        "batch.tune_*) on each user's newest training rows (default: when batch.tune_every "
        "> 0, as in production)",
    )
    ev.add_argument(
        "--peer",
        choices=["implicit"],
        help="implicit mode: also score the `implicit` library's ALS, tuned by the same search "
        "on the same validation split (needs the bench extra)",
    )
    ev.add_argument(
        "--estimator",
        choices=["als", "bayes"],
        default="als",
        help="explicit mode: als (ALS on bias residuals) or bayes (Bayesian ALS, Gibbs "
        "sampled; lower RMSE, slower)",
    )
    ev.add_argument("--sweeps", type=int, default=400, help="bayes: Gibbs sweeps (default 400)")
    ev.add_argument(
        "--burn-in", type=int, default=60, help="bayes: sweeps discarded first (default 60)"
    )
    ev.add_argument("--rank", type=int, help="ALS rank (default: batch.rank; bayes: 30)")
    ev.add_argument("--reg-param", type=float, help="ALS regParam (default: batch.reg_param)")
    ev.add_argument("--alpha", type=float, help="ALS alpha (default: batch.alpha)")
    ev.add_argument("--max-iter", type=int, help="ALS iterations (default: batch.max_iter)")
    ev.add_argument("--json", help="write every figure to this JSON file")
    ev.add_argument("--plot", help="write a PNG comparing the models")
    ev.set_defaults(func=_cmd_evaluate)

    bench = sub.add_parser("bench", help="benchmarks, as ratios against same-run baselines")
    bench.add_argument(
        "which",
        choices=[
            "quality",
            "scoring",
            "freshness",
            "lookup",
            "costs",
            "tuning",
            "replay",
            "faults",
            "session",
        ],
    )
    bench.add_argument(
        "--data",
        help="quality: folder with MovieLens 100K (ua.base, ua.test, u.data); tuning, replay: "
        "a ratings file with times (u.data); session: u.data (else synthetic events)",
    )
    bench.add_argument(
        "--steam",
        metavar="DIR",
        help="quality: folder with the Steam play hours (plays.tsv), split 80/20 per user",
    )
    bench.add_argument("--users", type=int, default=100_000, help="scoring: users")
    bench.add_argument("--items", type=int, default=20_000, help="scoring: items")
    bench.add_argument("--rank", type=int, default=32, help="scoring: factors")
    bench.add_argument("--seen", type=int, default=20, help="scoring: seen items per user")
    bench.add_argument("--k", type=int, default=10, help="scoring: list length")
    bench.add_argument(
        "--rate",
        type=float,
        action="append",
        help="freshness: events/s to hold (repeat for several; 500, 2000, 5000)",
    )
    bench.add_argument(
        "--duration",
        type=float,
        help="freshness: seconds per rate (30); lookup: seconds per measurement (3); "
        "session: seconds per measurement (10)",
    )
    bench.add_argument(
        "--settle",
        type=float,
        help="freshness: unmeasured seconds at the first rate before measuring (40; JIT warm-up)",
    )
    bench.add_argument(
        "--live",
        type=int,
        default=0,
        metavar="N",
        help="replay: send the first N replayed events through Kafka, the stream and Redis "
        "(the local stack, namespace 'replay') beside the offline replay of the same events",
    )
    bench.add_argument(
        "--short",
        action="store_true",
        help="faults: the short form (1,000 valid and 1,000 malformed records, 1,200 events "
        "under load, Redis down 3 s and frozen 5 s)",
    )
    bench.add_argument("--json", help="write every figure to this JSON file")
    bench.set_defaults(func=_cmd_bench)

    seg = sub.add_parser("segments", help="user segments: train on a ratings file and report")
    seg.add_argument("action", choices=["report"])
    seg.add_argument("--train", required=True, help="ratings/interactions file to train on")
    _add_ratings_file_options(seg)
    seg.add_argument(
        "--items", help="MovieLens u.item file: titles in the report, genre shares as features"
    )
    seg.add_argument("--out", required=True, help="folder for report.md, metrics.json, plots")
    seg.set_defaults(func=_cmd_segments)

    rec = sub.add_parser("recommend", help="look up a user's recommendations in Redis")
    rec.add_argument("user", help="the user id (any characters; quote it in the shell)")
    rec.add_argument("-n", type=int, default=10, help="items to show (default 10)")
    rec.add_argument(
        "--exclude", action="append", metavar="ITEM", help="leave an item out (repeat for several)"
    )
    rec.add_argument("--items", help="MovieLens u.item file: show item titles")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.set_defaults(func=_cmd_recommend)

    srv = sub.add_parser("serve", help="serve lookups over HTTP (GET /recommendations/{user})")
    srv.add_argument("--host", help="address to listen on (default serve.host)")
    srv.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (default serve.port)"
    )
    srv.set_defaults(func=_cmd_serve)

    models = sub.add_parser(
        "models", help="model versions: setting, how it was chosen, holdout scores, decision"
    )
    models.add_argument("version", nargs="?", help="one version in full (JSON), with trials")
    models.add_argument("--json", action="store_true", help="every version as JSON")
    models.set_defaults(func=_cmd_models)

    state = sub.add_parser(
        "state",
        help="the stream's per-user states: `rebuild` writes, from the event store, the states "
        "Redis no longer has (after a restart without persistence)",
    )
    state.add_argument("action", choices=["rebuild"])
    state.set_defaults(func=_cmd_state)

    demo = sub.add_parser("demo", help="run the whole path on synthetic data on the local stack")
    demo.add_argument("--events", type=int, default=20000, help="synthetic events to train on")
    demo.add_argument("--show", type=int, default=3, help="users whose lists to print")
    demo.set_defaults(func=_cmd_demo)
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
