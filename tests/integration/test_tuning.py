"""Self-tuning retrains on a real batch job: the search leaves a bad starting setting for the
region that ranks well, records how it chose, and re-tunes only as often as told."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.cli import main
from streamrec.model import store
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration


def _planted_groups(groups: int, users_per_group: int, items_per_group: int) -> list[tuple]:  # type: ignore[type-arg]
    """Users in disjoint taste groups: each plays their group's items one per round, all users
    round by round (so the newest events are everyone's latest plays), plus one play of any
    item. A one-factor model cannot tell the groups apart; one factor per group can."""
    rng = random.Random(11)
    t0 = 1_700_000_000_000
    plays = []
    for u in range(groups * users_per_group):
        group = u % groups
        own = [f"g{group}i{i}" for i in range(items_per_group)]
        rng.shuffle(own)
        noise = f"g{rng.randrange(groups)}i{rng.randrange(items_per_group)}"
        plays.append((f"u{u:03d}", [*own[:-1], noise]))
    rows = []
    for round_no in range(items_per_group):
        for user, items in plays:
            n = len(rows)
            rows.append((f"e{n}", user, items[round_no], "play", t0 + n * 1000, 60.0))
    return rows


def test_the_search_finds_the_good_region_and_retunes_every_n_runs(
    spark: SparkSession,
    isolated_cfg: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = _planted_groups(groups=16, users_per_group=20, items_per_group=8)
    write_batch(
        spark.createDataFrame(rows, E.spark_event_schema()), isolated_cfg.paths.event_store, 0
    )
    # The configured setting is the bad one, a single factor: the search starts there and
    # must leave it for one factor per group.
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(
            rank=1,
            reg_param=0.1,
            alpha=1.0,
            max_iter=8,
            holdout_share=0.2,
            tune_every=2,
            tune_candidates=6,
            tune_ranks=(1, 16),
            tune_reg_params=(0.05, 0.1),
            tune_alphas=(1.0, 10.0),
            tune_families=("als",),  # the ALS search alone (tests/integration/test_ease_family.py)
        ),
    )
    first = run_batch(cfg, spark=spark)
    assert first.tuning is not None and first.tuning["tuned"] is True
    assert first.params["rank"] == 16, str(first.tuning)
    trials = first.tuning["trials"]
    assert (trials[0]["rank"], trials[0]["reg_param"]) == (1, 0.1)  # the warm start first
    first_round = [t for t in trials if t["round"] == 1]
    assert len(first_round) == 6 and {t["max_iter"] for t in first_round} == {2}
    assert max(t["ndcg"] for t in first_round if t["rank"] == 1) < min(
        t["ndcg"] for t in first_round if t["rank"] == 16
    )
    validation = first.tuning["validation"]
    assert validation["split_ms"] < first.holdout["split_ms"]  # chosen before the holdout
    assert validation["best_ndcg"] > validation["popularity_ndcg"]
    assert first.promoted and first.holdout["als"]["ndcg"] > first.holdout["popularity"]["ndcg"]
    meta = store.read_meta(cfg.paths.model_store, first.version)
    assert meta["params"]["rank"] == 16 and meta["tuning"]["trials"] == trials

    # Every second run re-tunes: the next one keeps the current model's setting...
    second = run_batch(cfg, spark=spark)
    assert second.tuning is not None and second.tuning["tuned"] is False
    assert second.tuning["runs_since"] == 1
    kept = ("rank", "reg_param", "alpha")
    assert [second.params[k] for k in kept] == [first.params[k] for k in kept]
    # ... and the one after tunes again, starting from it.
    third = run_batch(cfg, spark=spark)
    assert third.tuning is not None and third.tuning["tuned"] is True
    assert [third.tuning["trials"][0][k] for k in kept] == [first.params[k] for k in kept]

    # `streamrec models` shows each version's setting, how it was chosen and the gate's word.
    config = tmp_path / "streamrec.yaml"
    config.write_text(dump_config(cfg)[0], "utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "models"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert [line.split()[0] for line in lines] == [third.version, second.version, first.version]
    assert lines[0].split()[1] == "yes" and "tuned" in lines[0] and "kept" in lines[1]
    assert " 16 " in lines[2] and "promoted" in lines[2]
    assert main(["--config", str(config), "models", first.version]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["tuning"]["trials"] == trials and detail["promotion"]["promote"] is True
