"""A batch run segments its users: the pipeline, assigner and report land in the model version,
every user's segment and each segment's list land in Redis, and the stream's loader assigns a
user from their events the way the batch did."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec import storage
from streamrec.batch.job import run_batch
from streamrec.batch.segmentation import load_pipeline
from streamrec.model import store
from streamrec.model.segments import adjusted_rand_index, feature_spec, user_features
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration


def test_batch_run_publishes_segments(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    world = SyntheticWorld(
        users=200, items=200, segments=4, seed=3, new_user_share=0.0, segment_focus=0.9
    )
    fields = list(E.event_contract().field_names)
    events = [tuple(e.get(f) for f in fields) for e in world.events(8000)]
    write_batch(
        spark.createDataFrame(events, E.spark_event_schema()), isolated_cfg.paths.event_store, 0
    )
    # Low alpha, more regularisation: light users' factors still point at their segment.
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(rank=8, max_iter=10, alpha=1.0, reg_param=0.1, holdout_share=0.0),
        segments=dict(enabled=True, k_min=3, k_max=5),
    )
    result = run_batch(cfg, spark=spark)
    assert result.promoted

    # The model store: pipeline, assigner (loaded with the item model) and the report.
    model = store.load_item_model(cfg.paths.model_store)
    summary = model.meta["segments"]
    assert model.segments is not None and model.segments.k == summary["k"]
    folder = store.version_dir(cfg.paths.model_store, model.version)
    pipeline = load_pipeline(storage.join(folder, "segments", "pipeline"))
    assert len(pipeline.stages) >= 3
    raw_report = store.read_version_file(
        cfg.paths.model_store, model.version, "segments/report/metrics.json"
    )
    report = json.loads(raw_report or b"{}")
    assert report["k"] == summary["k"] and -1 <= report["silhouette"] <= 1
    assert store.read_version_file(
        cfg.paths.model_store, model.version, "segments/report/report.md"
    )

    # Redis: every published user has a segment, and every segment a list of real items.
    prefix, k = cfg.redis.key_prefix, summary["k"]
    segment_of = {}
    for user in world.user_ids:
        raw = redis_client.hget(L.user_list_key(prefix, model.version, user), L.FIELD_SEGMENT)
        assert raw is not None, user
        segment_of[user] = int(raw)
    assert set(segment_of.values()) == set(range(k))
    for segment in range(k):
        raw_list = redis_client.hget(L.segment_list_key(prefix, model.version, segment), "list")
        seg_list = L.decode_list(raw_list)
        assert seg_list.source == L.SOURCE_SEGMENT and len(seg_list.items) == cfg.segments.top_n
        assert set(item for item, _ in seg_list.items) <= set(world.item_ids)
        assert redis_client.ttl(L.segment_list_key(prefix, model.version, segment)) > 0
    # The planted segments are what the features are made of: found, not invented.
    truth = world.segment_of
    users = sorted(segment_of)
    ari = adjusted_rand_index(
        np.array([truth[u] for u in users]), np.array([segment_of[u] for u in users])
    )
    assert k == 4 and ari >= 0.9, (k, ari)

    # The streaming loader: one user's events and factor through the shared feature code and
    # the plain-array assigner give the batch's segment.
    from pyspark.ml.recommendation import ALSModel

    als = ALSModel.load(storage.join(folder, "als"))
    users_map = spark.read.parquet(store.id_map_dir(cfg.paths.model_store, model.version, "users"))
    index_of = {r[0]: r[1] for r in users_map.collect()}
    factor_of = {r["id"]: np.array(r["features"]) for r in als.userFactors.collect()}
    frame = pd.DataFrame(events, columns=fields)
    spec = model.segments.spec  # the trained model's own features, whatever the config says
    assert spec is not None and spec == feature_spec(cfg.segments, cfg.batch.rank)
    for user in users[:10]:
        mine = frame[frame[E.USER_ID] == user]
        vector = user_features(mine, factor_of[index_of[user]], model.meta["data_cut_ms"], spec)
        segments, _ = model.segments.assign(vector[None, :])
        assert int(segments[0]) == segment_of[user], user
