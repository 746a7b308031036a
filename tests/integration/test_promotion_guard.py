"""A retrain that is clearly worse on the holdout is saved but not promoted or published."""

from __future__ import annotations

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas.config import Config, with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration


def test_worse_model_is_not_promoted(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    world = SyntheticWorld(users=150, items=120, segments=4, seed=3, new_user_share=0.0)
    fields = list(E.event_contract().field_names)
    rows = [tuple(e.get(f) for f in fields) for e in world.events(6000)]
    write_batch(
        spark.createDataFrame(rows, E.spark_event_schema()), isolated_cfg.paths.event_store, 0
    )

    good_cfg = with_overrides(isolated_cfg, batch=dict(rank=8, max_iter=8, holdout_share=0.2))
    good = run_batch(good_cfg, spark=spark)
    assert good.promoted and good.holdout is not None
    assert good.holdout["als"]["ndcg"] > good.holdout["popularity"]["ndcg"]

    # A crippled model: one iteration with a huge regularization ranks close to randomly.
    bad_cfg = with_overrides(good_cfg, batch=dict(rank=2, max_iter=1, reg_param=50.0,
                                                  promote_margin=0.01))  # fmt: skip
    bad = run_batch(bad_cfg, spark=spark)
    assert not bad.promoted and "not promoted" in bad.decision
    assert bad.holdout is not None and bad.holdout["als"]["ndcg"] < good.holdout["als"]["ndcg"]
    assert store.current_version(isolated_cfg.paths.model_store) == good.version
    assert bad.version in store.versions(isolated_cfg.paths.model_store)  # kept for inspection
    version, _, lists = read_lists(redis_client, isolated_cfg.redis.key_prefix, ["u00000"])
    assert version == good.version and lists["u00000"] is not None
    assert lists["u00000"].model_version == good.version
