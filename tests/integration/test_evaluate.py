"""`evaluate` on planted data: ALS finds the structure popularity cannot, metrics are sane."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from streamrec.batch.evaluate import EvalOptions, evaluate, write_json
from streamrec.schemas.config import BatchConfig

pytestmark = pytest.mark.integration


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    """Three groups of users, each liking its own 10 items (plus a popular item everyone has);
    each user's held-out items are more items of their group."""
    rng = random.Random(0)
    train, test = [], []
    for u in range(90):
        group = u % 3
        own = [group * 10 + i for i in range(10)]
        rng.shuffle(own)
        for i in own[:6]:
            train.append(f"u{u},i{i},5,{1_700_000_000 + u}")
        train.append(f"u{u},i99,3,{1_700_000_000}")
        for i in own[6:9]:
            test.append(f"u{u},i{i},5,{1_700_000_100}")
        test.append(f"u{u},i{own[9]},2,{1_700_000_100}")  # not relevant (< 4)
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    return tmp_path / "train.csv", tmp_path / "test.csv"


def test_als_beats_popularity_on_planted_groups(spark: SparkSession, tmp_path: Path) -> None:
    train, test = _planted(tmp_path)
    opts = EvalOptions(train=str(train), test=str(test), fmt="delimited", k=5)
    cfg = BatchConfig(rank=4, reg_param=0.05, alpha=5.0, max_iter=10)
    report = evaluate(spark, opts, cfg, parallelism=2)
    als, pop = report.models
    assert (als.name, pop.name) == ("als-implicit", "popularity")
    assert als.ranking.users == pop.ranking.users == 90
    # 3 relevant held-out items among the 4 unseen items of the group: ALS finds them
    # (the fourth unseen group item, rated 2, is not relevant but ranks among them)
    assert als.ranking.recall > 0.9 and als.ranking.ndcg > 0.8
    assert pop.ranking.ndcg < als.ranking.ndcg - 0.3
    out = tmp_path / "eval.json"
    write_json(report, str(out))
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["als-implicit", "popularity"]
    assert data["catalogue"] == 31 and data["options"]["k"] == 5
    from streamrec.batch.plots import plot_models

    png = tmp_path / "eval.png"
    plot_models(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_explicit_mode_reports_rmse_and_tuning_uses_training_data_only(
    spark: SparkSession, tmp_path: Path
) -> None:
    train, test = _planted(tmp_path)
    opts = EvalOptions(
        train=str(train), test=str(test), fmt="delimited", k=5, mode="explicit", tune=True,
        rank_grid=(2, 4), reg_grid=(0.05, 0.1), validation_share=0.25,
    )  # fmt: skip
    report = evaluate(spark, opts, BatchConfig(max_iter=5), parallelism=2)
    als = report.models[0]
    assert als.name == "als-explicit" and als.rmse is not None and als.rmse >= 0
    assert len(report.tuning) == 4  # explicit mode does not search alpha
    assert {(t["rank"], t["reg_param"]) for t in report.tuning} == {
        (2, 0.05),
        (2, 0.1),
        (4, 0.05),
        (4, 0.1),
    }
    best = min(report.tuning, key=lambda t: t["rmse"])
    assert (als.params["rank"], als.params["reg_param"]) == (best["rank"], best["reg_param"])
