"""Retraining: ids keep their ALS index across versions, old versions are pruned."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def _events(spark: SparkSession, users: range, items: range, tag: str):  # type: ignore[no-untyped-def]
    rows = [
        (f"{tag}-{u}-{i}", f"u{u}", f"i{i}", "play", T + u * 1000 + i, 30.0)
        for u in users
        for i in items
        if (u + i) % 3 != 0
    ]
    return spark.createDataFrame(rows, E.spark_event_schema())


def _map(spark: SparkSession, cfg: Config, version: str, kind: str, col: str) -> dict[str, int]:
    df = spark.read.parquet(store.id_map_dir(cfg.paths.model_store, version, kind))
    return {r[0]: r[col] for r in df.collect()}


@pytest.mark.parametrize("location", ["path", "uri"])
def test_ids_are_stable_across_retrains_and_old_versions_pruned(
    spark: SparkSession, isolated_cfg: Config, location: str
) -> None:
    cfg = with_overrides(isolated_cfg, batch=dict(keep_versions=2))
    if location == "uri":
        # file:// goes through Hadoop's FileSystem, as hdfs:// or s3a:// would on a cluster.
        cfg = with_overrides(
            cfg,
            paths=dict(
                event_store=f"file://{cfg.paths.event_store}",
                model_store=f"file://{cfg.paths.model_store}",
            ),
        )
    write_batch(_events(spark, range(0, 20), range(0, 15), "a"), cfg.paths.event_store, 0)
    first = run_batch(cfg, spark=spark)
    users1 = _map(spark, cfg, first.version, "users", USER_INDEX)
    items1 = _map(spark, cfg, first.version, "items", ITEM_INDEX)
    assert sorted(users1.values()) == list(range(20))

    # New users and items arrive; "u0".."u19" and "i0".."i14" must keep their indexes.
    write_batch(_events(spark, range(15, 40), range(10, 30), "b"), cfg.paths.event_store, 1)
    second = run_batch(cfg, spark=spark)
    users2 = _map(spark, cfg, second.version, "users", USER_INDEX)
    items2 = _map(spark, cfg, second.version, "items", ITEM_INDEX)
    assert {u: users2[u] for u in users1} == users1
    assert {i: items2[i] for i in items1} == items1
    assert len(set(users2.values())) == len(users2) == 40  # no two ids share an index
    assert min(users2[f"u{u}"] for u in range(20, 40)) > max(users1.values())
    assert min(items2[f"i{i}"] for i in range(15, 30)) > max(items1.values())

    third = run_batch(cfg, spark=spark)
    assert store.versions(cfg.paths.model_store) == sorted([second.version, third.version])
    assert store.current_version(cfg.paths.model_store) == third.version
    users3 = _map(spark, cfg, third.version, "users", USER_INDEX)
    assert users3 == users2
