"""One owner for the live version: Redis's pointer moves first and the stream follows it, runs
take a lock, versions only move forward, and what killed runs leave behind (keys, folders, a
store pointer behind Redis's) is cleaned up by the next run, including after real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.holdout import SUPERSEDED
from streamrec.batch.job import run_batch
from streamrec.batch.run_lock import RunLocked, exclusive_run
from streamrec.model import store
from streamrec.redis_lists import versions_with_keys
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.streaming.event_store import write_batch
from streamrec.streaming.model_holder import ModelHolder

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def _store_events(spark: SparkSession, cfg: Config, batch_id: int = 0) -> None:
    rows = [
        (f"e{batch_id}-{u}-{i}", f"u{u}", f"i{i}", "play", T + batch_id * 10**6 + u * 100 + i, 30.0)
        for u in range(40)
        for i in range(30)
        if (u * 7 + i) % 4 == 0
    ]
    write_batch(
        spark.createDataFrame(rows, E.spark_event_schema()), cfg.paths.event_store, batch_id
    )


def _cfg(isolated_cfg: Config) -> Config:
    return with_overrides(isolated_cfg, batch=dict(holdout_share=0.0, rank=4))


def _live(client: redis.Redis, cfg: Config) -> str | None:
    raw = client.get(L.current_model_key(cfg.redis.key_prefix))
    return None if raw is None else raw.decode()


def test_a_second_run_is_refused_while_one_holds_the_lock(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = _cfg(isolated_cfg)
    _store_events(spark, cfg)
    with exclusive_run(redis_client, cfg.redis.key_prefix):
        started = time.monotonic()
        with pytest.raises(RunLocked, match="another batch run holds the lock"):
            run_batch(cfg, spark=spark)
        assert time.monotonic() - started < 10  # refused before any training
    assert store.current_version(cfg.paths.model_store) is None
    assert run_batch(cfg, spark=spark).promoted  # the lock is free again


def test_versions_only_move_forward(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = _cfg(isolated_cfg)
    _store_events(spark, cfg)
    newer = "v99991231T235959Z-ffff"  # as if a run that started later had already published
    redis_client.set(L.current_model_key(cfg.redis.key_prefix), newer)
    result = run_batch(cfg, spark=spark)
    assert not result.promoted and result.refusal == SUPERSEDED and newer in result.decision
    assert _live(redis_client, cfg) == newer
    assert store.current_version(cfg.paths.model_store) is None
    assert versions_with_keys(redis_client, cfg.redis.key_prefix) == set()  # its keys went


def test_the_next_run_finishes_or_cleans_up_what_a_killed_run_left(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = _cfg(isolated_cfg)
    prefix = cfg.redis.key_prefix
    _store_events(spark, cfg, 0)
    first = run_batch(cfg, spark=spark)
    _store_events(spark, cfg, 1)
    second = run_batch(cfg, spark=spark)
    # Killed between Redis's switch and the store's: Redis serves `second`, the store says
    # `first`. The stream follows what readers follow.
    store.promote(cfg.paths.model_store, first.version)
    holder = ModelHolder(spark, cfg.paths.model_store, redis_client, prefix, cfg.feedback)
    assert holder.live_version() == second.version
    # Killed mid-publish and mid-save: keys of a version nobody follows, a folder without
    # meta.json.
    dead = "v20000101T000000Z-dead"
    redis_client.hset(L.user_list_key(prefix, dead, "u1"), mapping={"list": "x", "fence": 1})
    half = Path(cfg.paths.model_store) / dead
    half.mkdir()
    (half / "item_ids.json").write_text("[]")

    third = run_batch(cfg, spark=spark)
    assert third.promoted
    versions = store.versions(cfg.paths.model_store)
    assert second.version in versions and not half.exists()
    assert versions_with_keys(redis_client, prefix) == {third.version}
    assert _live(redis_client, cfg) == third.version
    assert store.current_version(cfg.paths.model_store) == third.version


@pytest.mark.parametrize("kill_after_s", [6.0, 12.0, 18.0])
def test_readers_see_one_whole_version_whenever_a_run_is_killed(
    spark: SparkSession,
    isolated_cfg: Config,
    redis_client: redis.Redis,
    tmp_path: Path,
    kill_after_s: float,
) -> None:
    cfg = _cfg(isolated_cfg)
    prefix = cfg.redis.key_prefix
    _store_events(spark, cfg, 0)
    first = run_batch(cfg, spark=spark)
    _store_events(spark, cfg, 1)
    config = tmp_path / "streamrec.yaml"
    text, env = dump_config(cfg)
    config.write_text(text, "utf-8")
    run = subprocess.Popen(
        [sys.executable, "-m", "streamrec.cli", "--config", str(config), "batch", "run"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + kill_after_s
    while time.monotonic() < deadline and run.poll() is None:
        # At every instant: the pointer names a version whose lists are all there.
        live = _live(redis_client, cfg)
        assert live is not None
        assert redis_client.exists(L.popular_list_key(prefix, live))
        assert redis_client.exists(L.user_list_key(prefix, live, "u0"))
        time.sleep(0.1)
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    live = _live(redis_client, cfg)
    assert live is not None and redis_client.exists(L.popular_list_key(prefix, live))
    # The next run cleans up and publishes; no orphan keys or folders remain.
    redis_client.delete(L.batch_lock_key(prefix))  # the killed run's lock would expire
    after = run_batch(cfg, spark=spark)
    assert after.promoted and _live(redis_client, cfg) == after.version
    assert versions_with_keys(redis_client, prefix) == {after.version}
    root = Path(cfg.paths.model_store)
    folders = {p.name for p in root.iterdir() if p.name.startswith("v")}
    assert folders == set(store.versions(cfg.paths.model_store))
    assert first.version != after.version
