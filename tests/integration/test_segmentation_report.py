"""`streamrec segments report` on a small delimited file with planted taste groups: the report,
its plots and metrics.json are written, with values that match the planted truth."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from streamrec.batch.segment_report import PLOTS
from streamrec.cli import main
from streamrec.model.item_metadata import MOVIELENS_GENRES
from streamrec.schemas.config import Config
from tests.conftest import base_test_config

pytestmark = pytest.mark.integration

GROUPS = ("Action", "Comedy", "Drama")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_inputs(folder: Path) -> tuple[Path, Path]:
    """Three groups of 25 users; each rates 7 of its group's 10 movies highly and one movie of
    another group low. u.item gives each group's movies its genre and a title naming it."""
    rng = random.Random(5)
    ratings = []
    for u in range(75):
        group = u % 3
        own = [group * 10 + i + 1 for i in range(10)]
        for n, item in enumerate(rng.sample(own, 7)):
            ratings.append(f"{u + 1},{item},{rng.choice([4, 5])},{880_000_000 + u * 100 + n}")
        other = rng.choice([g for g in range(3) if g != group]) * 10 + rng.randint(1, 10)
        ratings.append(f"{u + 1},{other},2,{880_000_000 + u * 100 + 9}")
    lines = []
    for item in range(1, 31):
        genre = GROUPS[(item - 1) // 10]
        flags = ["1" if g == genre else "0" for g in MOVIELENS_GENRES]
        lines.append("|".join([str(item), f"{genre} movie {item}", "01-Jan-1995", "", "", *flags]))
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder / "ratings.csv", folder / "u.item"


def _config_file(folder: Path, base: Config) -> Path:
    """The test session's Spark settings (so the CLI reuses its session) and small models."""
    data = {
        "stack": {"cache_dir": base.stack.cache_dir},
        "spark": {
            "master": base.spark.master,
            "shuffle_partitions": base.spark.shuffle_partitions,
            "checkpoint_dir": base.spark.checkpoint_dir,
            "conf": dict(base.spark.conf),
        },
        "batch": {"rank": 4, "max_iter": 10, "alpha": 1.0, "reg_param": 0.1},
        "segments": {"k_min": 2, "k_max": 4, "report_items": 5},
    }
    path = folder / "streamrec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_segments_report_cli_writes_a_sane_report(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings, items = _write_inputs(tmp_path)
    config = _config_file(tmp_path, base_test_config())
    out = tmp_path / "report"
    args = [
        "--config",
        str(config),
        "segments",
        "report",
        "--train",
        str(ratings),
        "--format",
        "delimited",
        "--items",
        str(items),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "k = 3 segments" in capsys.readouterr().out

    for name in PLOTS.values():
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["users"] == 75 and m["k"] == 3
    assert 0.3 < m["silhouette"] <= 1.0
    assert [row["k"] for row in m["per_k"]] == [2, 3, 4]
    assert m["silhouette"] == max(row["silhouette"] for row in m["per_k"])
    assert sum(m["explained_variance"]) == pytest.approx(1.0)
    assert "category:Action" in m["features"] and "factor:3" in m["features"]
    assert sorted(m["segment_sizes"].values()) == [25, 25, 25]
    matrix = m["confusion_matrix"]
    assert sum(map(sum, matrix)) == m["classifier"]["test_users"] > 0
    assert m["classifier_agreement"] >= 0.8
    for seg in m["segments"]:
        # each segment is one planted group: its distinctive and popular titles name its genre
        genres = {item["title"].split()[0] for item in seg["distinctive"] + seg["popular"]}
        assert len(genres) == 1 and len(seg["popular"]) == 5
    report = (out / "report.md").read_text()
    assert "# User segments" in report and "### Segment 2: 25 users" in report
    assert all(f"]({name})" in report for name in PLOTS.values())
    assert m["durations_s"]["als"] > 0


def test_segments_report_cli_names_a_missing_file(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, base_test_config())
    args = [
        "--config",
        str(config),
        "segments",
        "report",
        "--train",
        str(tmp_path / "nope.csv"),
        "--format",
        "delimited",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2
    assert "nope.csv" in capsys.readouterr().err
