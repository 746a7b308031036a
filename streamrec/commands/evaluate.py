"""`streamrec evaluate`: train on one ratings file and score on another, or judge the event
store the way the batch job does (a time split, the newest share held out)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from streamrec.commands.common import (
    add_ratings_file_options,
    command,
    refuse_delimited_options,
    refuse_unless,
)
from streamrec.schemas.config import BatchConfig, Config

# What only the files' evaluation uses: refused with --event-store.
FILES_ONLY = (
    "--train",
    "--test",
    "--format",
    "--sep",
    "--header",
    "--mode",
    "--event-type",
    "--relevant-min",
    "--tune",
    "--peer",
    "--estimator",
    "--sweeps",
    "--burn-in",
    "--plot",
)


def register(sub: Any) -> None:
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
    add_ratings_file_options(ev)
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
    command(ev, run)


def run(cfg: Config, args: argparse.Namespace) -> int:
    setting = {
        "rank": args.rank,
        "reg_param": args.reg_param,
        "alpha": args.alpha,
        "max_iter": args.max_iter,
    }
    batch = dataclasses.replace(cfg.batch, **{k: v for k, v in setting.items() if v is not None})
    refuse_unless(args, FILES_ONLY, not args.event_store, "--train and --test (files)")
    if args.event_store:
        return _event_store(cfg, batch, args)
    refuse_unless(args, ("--holdout-share",), False, "--event-store")
    refuse_delimited_options(args)
    refuse_unless(args, ("--event-type",), args.mode == "implicit", "--mode implicit")
    refuse_unless(args, ("--estimator",), args.mode == "explicit", "--mode explicit")
    refuse_unless(args, ("--sweeps", "--burn-in"), args.estimator == "bayes", "--estimator bayes")
    if args.peer and (args.mode != "implicit" or args.estimator != "als"):
        print("streamrec: error: --peer compares implicit-mode ALS", file=sys.stderr)
        return 2
    if not (args.train and args.test):
        print(
            "streamrec: error: evaluate needs --train and --test, or --event-store", file=sys.stderr
        )
        return 2
    return _files(cfg, batch, args)


def _files(cfg: Config, batch: BatchConfig, args: argparse.Namespace) -> int:
    from streamrec.batch.bayes import BayesParams
    from streamrec.batch.evaluate import EvalOptions, evaluate, write_json
    from streamrec.spark import build_spark

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


def _event_store(cfg: Config, batch: BatchConfig, args: argparse.Namespace) -> int:
    """The batch job's own judgement: a time split of the event store (newest share held out)."""
    from streamrec.batch.holdout import holdout_metrics
    from streamrec.batch.interactions import dedupe_events
    from streamrec.batch.prepare import read_event_store
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
