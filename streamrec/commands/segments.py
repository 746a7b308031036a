"""`streamrec segments report`: segment users of a ratings file and write the report."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.commands.common import add_ratings_file_options, command, refuse_delimited_options
from streamrec.schemas.config import Config


def register(sub: Any) -> None:
    seg = sub.add_parser("segments", help="user segments: train on a ratings file and report")
    seg.add_argument("action", choices=["report"])
    seg.add_argument("--train", required=True, help="ratings/interactions file to train on")
    add_ratings_file_options(seg)
    seg.add_argument(
        "--items", help="MovieLens u.item file: titles in the report, genre shares as features"
    )
    seg.add_argument("--out", required=True, help="folder for report.md, metrics.json, plots")
    command(seg, report)


def report(cfg: Config, args: argparse.Namespace) -> int:
    from streamrec.batch.segment_report import report_from_ratings_file
    from streamrec.spark import build_spark

    assert args.action == "report"
    refuse_delimited_options(args)
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
