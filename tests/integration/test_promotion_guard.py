"""The promotion gate on a real batch job: candidate, popularity and the current model scored
on the same holdout; a refused version is saved but not promoted or published."""

from __future__ import annotations

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.holdout import (
    BELOW_CURRENT,
    BELOW_POPULARITY,
    FOLDED_IN,
    RETRAINED_ON_SPLIT,
    SAME_PARAMETERS,
)
from streamrec.batch.job import BatchResult, run_batch
from streamrec.model import store
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration


def _assert_not_published(
    cfg: Config, client: redis.Redis, live: str, refused: BatchResult
) -> None:
    assert not refused.promoted and "not promoted" in refused.decision
    assert store.current_version(cfg.paths.model_store) == live
    assert refused.version in store.versions(cfg.paths.model_store)  # kept for inspection
    version, _, lists = read_lists(client, cfg.redis.key_prefix, ["u00000"])
    assert version == live and lists["u00000"] is not None
    assert lists["u00000"].model_version == live


def test_the_gate_scores_all_three_on_one_holdout_and_refuses_the_worse(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    world = SyntheticWorld(users=150, items=120, segments=4, seed=3, new_user_share=0.0)
    fields = list(E.event_contract().field_names)
    rows = [tuple(e.get(f) for f in fields) for e in world.events(6000)]
    rows.sort(key=lambda row: row[fields.index(E.EVENT_TIME)])
    older, newer = rows[:4000], rows[4000:]
    schema, events = E.spark_event_schema(), isolated_cfg.paths.event_store
    write_batch(spark.createDataFrame(older, schema), events, 0)

    good_cfg = with_overrides(isolated_cfg, batch=dict(rank=8, max_iter=8, holdout_share=0.2))
    good = run_batch(good_cfg, spark=spark)
    assert good.promoted and good.holdout is not None and good.holdout["current"] is None
    assert good.holdout["als"]["ndcg"] > good.holdout["popularity"]["ndcg"]

    # Newer events: this run's holdout (the newest 1,200) comes after everything the current
    # model was trained on, so the model itself is scored, its users folded in from the same
    # training events as the candidate's, over the same users.
    write_batch(spark.createDataFrame(newer, schema), events, 1)
    again = run_batch(good_cfg, spark=spark)
    assert again.holdout is not None
    current = again.holdout["current"]
    assert (current["version"], current["method"]) == (good.version, FOLDED_IN)
    assert current["users"] == again.holdout["als"]["users"]
    assert current["ndcg"] > again.holdout["popularity"]["ndcg"]
    assert again.promoted, again.decision

    # Now the current model has seen this run's holdout: its parameters, here the candidate's
    # own, stand for it. A candidate that has to beat it by far more than it can is refused
    # as below the current model.
    strict_cfg = with_overrides(good_cfg, batch=dict(promote_margin=-1.0))
    strict = run_batch(strict_cfg, spark=spark)
    assert strict.holdout is not None
    assert strict.holdout["current"]["method"] == SAME_PARAMETERS
    assert strict.holdout["current"]["ndcg"] == strict.holdout["als"]["ndcg"]
    assert strict.refusal == BELOW_CURRENT and again.version in strict.decision
    _assert_not_published(isolated_cfg, redis_client, again.version, strict)

    # A crippled model, one iteration with a huge regularisation, ranks below popularity; the
    # current model's parameters are trained on the split to compare with it.
    bad_cfg = with_overrides(good_cfg, batch=dict(rank=2, max_iter=1, reg_param=50.0))
    bad = run_batch(bad_cfg, spark=spark)
    assert bad.holdout is not None
    assert bad.holdout["current"]["method"] == RETRAINED_ON_SPLIT
    assert bad.holdout["als"]["ndcg"] < bad.holdout["popularity"]["ndcg"]
    assert bad.refusal == BELOW_POPULARITY
    _assert_not_published(isolated_cfg, redis_client, again.version, bad)
