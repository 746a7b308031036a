"""The segment pipeline on Spark against planted truth: it recovers planted clusters and their
number, round-trips through Spark's ML writer, agrees with the numpy assigner, and the batch
features equal the single-user feature function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.interactions import to_interactions
from streamrec.batch.segmentation import (
    FEATURES,
    assign_segments,
    export_assigner,
    load_pipeline,
    save_pipeline,
    segment_top_items,
    train_segments,
    user_feature_frame,
)
from streamrec.batch.train import train_als
from streamrec.errors import ModelStoreError
from streamrec.model.segments import FeatureSpec, adjusted_rand_index, user_features
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig, SegmentsConfig

pytestmark = pytest.mark.integration


def _planted_features(
    spark: SparkSession, k: int, per: int, dim: int, seed: int
) -> tuple[DataFrame, np.ndarray, np.ndarray]:
    """``k`` unit Gaussian blobs of ``per`` users, 8 apart on the first ``k`` of ``dim``
    features, then put on different scales."""
    rng = np.random.default_rng(seed)
    centers = 8.0 * np.eye(dim)[:k]
    x = np.vstack([c + rng.normal(0.0, 1.0, size=(per, dim)) for c in centers])
    x = x * np.linspace(0.5, 50.0, dim)  # the scaler has work to do
    truth = np.repeat(np.arange(k), per)
    rows = [(f"u{i:04d}", [float(v) for v in x[i]]) for i in range(len(x))]
    return spark.createDataFrame(rows, f"{E.USER_ID} string, {FEATURES} array<double>"), x, truth


def _by_user(df: DataFrame, col: str) -> np.ndarray:
    return np.array([r[col] for r in df.orderBy(E.USER_ID).collect()])


def test_kmeans_recovers_planted_clusters_and_round_trips(
    spark: SparkSession, tmp_path: Path
) -> None:
    features, x, truth = _planted_features(spark, k=4, per=40, dim=6, seed=0)
    cfg = SegmentsConfig(k_min=3, k_max=5, seed=7)
    result = train_segments(features, cfg)
    segments = _by_user(result.assignments, "segment")
    assert result.k == 4
    assert adjusted_rand_index(truth, segments) >= 0.9
    assert [s.k for s in result.per_k] == [3, 4, 5]
    assert max(result.per_k, key=lambda s: s.silhouette).k == 4
    assert result.per_k[0].inertia > result.per_k[1].inertia > 0
    assert sum(result.explained_variance) == pytest.approx(1.0)
    assert 1 <= result.n_components <= 6
    assert sum(result.explained_variance[: result.n_components]) >= cfg.explained_variance - 1e-9

    # numpy assigner == PipelineModel.transform, also after a bytes round trip
    from streamrec.model.segments import SegmentAssigner

    assigner = SegmentAssigner.from_bytes(result.assigner.to_bytes())
    np.testing.assert_array_equal(assigner.assign(x)[0], segments)

    # save/load through Spark's ML writer (a URI, as for a Hadoop file system)
    uri = (tmp_path / "segments").as_uri()
    save_pipeline(result, uri)
    loaded = load_pipeline(uri)
    np.testing.assert_array_equal(_by_user(assign_segments(loaded, features), "segment"), segments)
    np.testing.assert_array_equal(
        export_assigner(loaded, result.feature_names).assign(x)[0], segments
    )
    with pytest.raises(ModelStoreError, match="no segment pipeline"):
        load_pipeline((tmp_path / "missing").as_uri())

    # the same seed gives the same segments
    again = train_segments(features, SegmentsConfig(k_min=4, k_max=4, seed=7))
    np.testing.assert_array_equal(_by_user(again.assignments, "segment"), segments)
    result.unpersist()
    again.unpersist()


def test_gaussian_mixture_gives_probabilities_the_assigner_reproduces(
    spark: SparkSession, tmp_path: Path
) -> None:
    features, x, truth = _planted_features(spark, k=3, per=40, dim=4, seed=1)
    # k's choice is the KMeans test's concern; here one k keeps the (slow) mixture fits few.
    result = train_segments(features, SegmentsConfig(method="gmm", k_min=3, k_max=3, seed=3))
    rows = result.assignments.orderBy(E.USER_ID).collect()
    segments = np.array([r["segment"] for r in rows])
    probs = np.array([r["probabilities"] for r in rows])
    assert result.k == 3
    assert adjusted_rand_index(truth, segments) >= 0.9
    assert probs.shape == (120, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert all(s.log_likelihood is not None for s in result.per_k)
    mine, my_probs = result.assigner.assign(x)
    np.testing.assert_array_equal(mine, segments)
    assert my_probs is not None
    np.testing.assert_allclose(my_probs, probs, atol=1e-6)

    save_pipeline(result, str(tmp_path / "gmm"))
    loaded = assign_segments(load_pipeline(str(tmp_path / "gmm")), features)
    back = loaded.orderBy(E.USER_ID).collect()
    np.testing.assert_array_equal([r["segment"] for r in back], segments)
    np.testing.assert_allclose([r["probabilities"] for r in back], probs, atol=1e-12)
    result.unpersist()


def test_synthetic_world_segments_from_als_and_behaviour(spark: SparkSession) -> None:
    """End to end from events: ALS factors plus behaviour features recover the planted segments;
    the batch features equal the single-user function's."""
    world = SyntheticWorld(
        users=200, items=200, segments=4, seed=3, new_user_share=0.0, segment_focus=0.9
    )
    pdf = pd.DataFrame(list(world.events(8000)))
    events = spark.createDataFrame(pdf).cache()
    ratings = to_interactions(events, FeedbackConfig())
    users = index_ids(ratings, E.USER_ID, USER_INDEX).cache()
    items = index_ids(ratings, E.ITEM_ID, ITEM_INDEX)
    indexed = ratings.join(users, E.USER_ID).join(items, E.ITEM_ID)
    # Low alpha, more regularisation: light users' factors still point at their segment.
    als = train_als(indexed, BatchConfig(rank=8, max_iter=10, alpha=1.0, reg_param=0.1), 2)
    factors = als.userFactors.join(users, als.userFactors.id == users[USER_INDEX]).select(
        E.USER_ID, FEATURES
    )
    # Categories unrelated to the planted segments: they exercise the code, not give the answer.
    categories = {i: ("even",) if int(i[1:]) % 2 == 0 else ("odd", "even") for i in world.item_ids}
    spec = FeatureSpec(
        event_types=("play", "click", "like", "skip"), categories=("even", "odd"), factor_dim=8
    )
    reference_ms = int(pdf[E.EVENT_TIME].max())
    features = user_feature_frame(spark, events, factors, reference_ms, spec, categories).cache()
    result = train_segments(features, SegmentsConfig(k_min=3, k_max=5), spec)
    rows = result.assignments.collect()
    truth = np.array([world.segment_of[r[E.USER_ID]] for r in rows])
    assert result.k == 4
    assert adjusted_rand_index(truth, np.array([r["segment"] for r in rows])) >= 0.9

    # batch (applyInPandas on executors) == one user's state through the same function
    batch = {r[E.USER_ID]: np.array(r[FEATURES]) for r in features.collect()}
    factor_of = {r[E.USER_ID]: np.array(r[FEATURES]) for r in factors.collect()}
    for user in ("u00000", "u00017", "u00123"):
        mine = pdf[pdf[E.USER_ID] == user]
        single = user_features(mine, factor_of[user], reference_ms, spec, categories)
        np.testing.assert_array_equal(single, batch[user])
        segment = result.assigner.assign(single[None, :])[0][0]
        assert segment == next(r["segment"] for r in rows if r[E.USER_ID] == user)

    top = segment_top_items(ratings, result.assignments, 5).collect()
    assert [r["segment"] for r in top] == [0, 1, 2, 3]
    for r in top:
        assert len(r["items"]) == 5 and r["scores"] == sorted(r["scores"], reverse=True)
        # a segment's most popular items are mostly of the item cluster its users favour
        clusters = [world.item_cluster(i) for i in r["items"]]
        assert max(clusters.count(c) for c in set(clusters)) >= 4
    result.unpersist()
    features.unpersist()
    events.unpersist()
