"""User segments in batch: every user's features (the shared feature function, run on the
executors), then a Spark ML pipeline StandardScaler -> feature weights (ElementwiseProduct) ->
PCA -> KMeans (or GaussianMixture).

The number of PCA components is the smallest reaching ``explained_variance``; k is the one of
``k_min..k_max`` with the best silhouette (ties: the smaller k), with inertia and, for a mixture,
log-likelihood recorded for every k. The clustering is seeded, so the same data gives the same
segments. The trained ``PipelineModel`` takes a ``feature_vector`` column (``as_vectors``) and is
exported as a numpy ``SegmentAssigner`` for the streaming job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import GaussianMixture, GaussianMixtureModel, KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import (
    PCA,
    ElementwiseProduct,
    PCAModel,
    StandardScaler,
    StandardScalerModel,
)
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import Vectors
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from streamrec.batch.interactions import RATING
from streamrec.errors import InputError, ModelStoreError
from streamrec.model.segments import (
    GMM,
    KMEANS,
    FeatureSpec,
    SegmentAssigner,
    feature_weights,
    user_features,
)
from streamrec.schemas import events as E
from streamrec.schemas.config import SegmentsConfig

log = logging.getLogger(__name__)

FEATURES = "features"  # array<double>: a user's features, or ALS factor in user_factors_df
VECTOR = "feature_vector"
SCALED = "scaled"
WEIGHTED = "weighted"
REDUCED = "reduced"
SEGMENT = "segment"
PROBABILITY = "probability"  # the mixture's vector column
PROBABILITIES = "probabilities"  # the same as array<double>, in assignments
ITEMS = "items"
SCORES = "scores"

_FACTOR = "_factor"


def ratings_as_events(ratings: DataFrame) -> DataFrame:
    """(user_id, item_id, rating, event_time) rows as events of type "rating" valued by it."""
    return ratings.select(
        E.USER_ID,
        E.ITEM_ID,
        F.lit("rating").alias(E.EVENT_TYPE),
        E.EVENT_TIME,
        F.col(RATING).cast("double").alias(E.VALUE),
    )


def user_feature_frame(
    spark: SparkSession,
    events_df: DataFrame,
    user_factors_df: DataFrame | None,
    reference_ms: int,
    spec: FeatureSpec,
    item_categories: dict[str, tuple[str, ...]] | None,
) -> DataFrame:
    """(user_id, features array<double>) for every user with events: ``user_features`` applied
    to each user's events and ALS factor (``user_factors_df``: user_id, features) on the
    executors. Users without a factor get zeros there, as in the streaming job."""
    events = events_df.select(E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE)
    if user_factors_df is None:
        factors = spark.createDataFrame([], f"{E.USER_ID} string, {_FACTOR} array<double>")
    else:
        factors = user_factors_df.select(
            E.USER_ID, F.col(FEATURES).cast("array<double>").alias(_FACTOR)
        )
    schema = T.StructType(
        [
            T.StructField(E.USER_ID, T.StringType(), False),
            T.StructField(FEATURES, T.ArrayType(T.DoubleType(), False), False),
        ]
    )

    def per_user(user_events: pd.DataFrame, user_factor: pd.DataFrame) -> pd.DataFrame:
        if user_events.empty:  # a factor without events: not a user of this data
            return pd.DataFrame({E.USER_ID: pd.Series([], dtype=str), FEATURES: []})
        factor = np.asarray(user_factor[_FACTOR].iloc[0]) if len(user_factor) else None
        vector = user_features(user_events, factor, reference_ms, spec, item_categories)
        return pd.DataFrame({E.USER_ID: [user_events[E.USER_ID].iloc[0]], FEATURES: [vector]})

    return (
        events.groupBy(E.USER_ID)
        .cogroup(factors.groupBy(E.USER_ID))
        .applyInPandas(per_user, schema)
    )


def as_vectors(features_df: DataFrame) -> DataFrame:
    """(user_id, feature_vector): the pipeline's input, from (user_id, features array)."""
    return features_df.select(E.USER_ID, array_to_vector(F.col(FEATURES)).alias(VECTOR))


@dataclass(frozen=True)
class KScore:
    k: int
    silhouette: float
    inertia: float  # within-segment sum of squared distances, in the PCA space
    log_likelihood: float | None = None  # Gaussian mixture only


@dataclass
class SegmentationResult:
    model: PipelineModel
    config: SegmentsConfig
    k: int
    silhouette: float
    n_components: int
    explained_variance: list[float]  # share of variance of every component (all of them)
    per_k: list[KScore]
    assignments: DataFrame  # user_id, segment[, probabilities]
    assigner: SegmentAssigner
    users: int
    feature_names: tuple[str, ...]

    @property
    def method(self) -> str:
        return self.config.method

    def unpersist(self) -> None:
        self.assignments.unpersist()


def components_for(explained: np.ndarray, threshold: float) -> int:
    """The fewest leading components whose variance shares add up to ``threshold``."""
    cumulative = np.cumsum(np.nan_to_num(explained))
    # a hair below the threshold counts: float sums of shares that make 1.0 may end at 0.9999
    reached = np.nonzero(cumulative >= threshold - 1e-9)[0]
    return int(reached[0]) + 1 if len(reached) else len(explained)


def _fit_clustering(cfg: SegmentsConfig, k: int, reduced: DataFrame) -> Any:
    if cfg.method != GMM:
        kmeans = KMeans(
            k=k, featuresCol=REDUCED, predictionCol=SEGMENT, maxIter=cfg.max_iter, seed=cfg.seed
        )
        return kmeans.fit(reduced)
    best: GaussianMixtureModel | None = None
    for restart in range(cfg.gmm_restarts):
        mixture = GaussianMixture(
            k=k,
            featuresCol=REDUCED,
            predictionCol=SEGMENT,
            probabilityCol=PROBABILITY,
            maxIter=cfg.max_iter,
            seed=cfg.seed + restart,
        ).fit(reduced)
        if best is None or mixture.summary.logLikelihood > best.summary.logLikelihood:
            best = mixture
    return best


def _inertia(predictions: DataFrame, centers: np.ndarray) -> float:
    """Sum of squared distances of the points to their segment's center (the KMeans
    objective), computed for a mixture from its component means."""
    center_col = F.array(*[F.array(*[F.lit(float(x)) for x in c]) for c in centers])
    center = F.element_at(center_col, F.col(SEGMENT) + 1)
    diffs = F.zip_with(vector_to_array(F.col(REDUCED)), center, lambda a, b: (a - b) * (a - b))
    squared = F.aggregate(diffs, F.lit(0.0), lambda acc, x: acc + x)
    total = predictions.agg(F.sum(squared)).collect()[0][0]
    return float(total or 0.0)


def _score_k(cfg: SegmentsConfig, k: int, reduced: DataFrame) -> tuple[KScore, object]:
    model = _fit_clustering(cfg, k, reduced)
    predictions = model.transform(reduced)
    silhouette = ClusteringEvaluator(
        featuresCol=REDUCED, predictionCol=SEGMENT, metricName="silhouette"
    ).evaluate(predictions)
    if isinstance(model, KMeansModel):
        score = KScore(k, float(silhouette), float(model.summary.trainingCost))
    else:
        assert isinstance(model, GaussianMixtureModel)
        means = np.array([r["mean"].toArray() for r in model.gaussiansDF.collect()])
        score = KScore(
            k, float(silhouette), _inertia(predictions, means), float(model.summary.logLikelihood)
        )
    log.info("segments: k=%d silhouette=%.4f inertia=%.2f", k, score.silhouette, score.inertia)
    return score, model


def train_segments(
    features_df: DataFrame, cfg: SegmentsConfig, spec: FeatureSpec | None = None
) -> SegmentationResult:
    """Fit scaler, weights and PCA, then the clustering for every k of the range; keep the best
    silhouette. ``spec`` names the features (and marks the factor's); without it they are
    f0, f1, ... and all weigh the same."""
    vectors = as_vectors(features_df).cache()
    users = vectors.count()
    ks = list(range(cfg.k_min, min(cfg.k_max, users - 1) + 1))
    if not ks:
        vectors.unpersist()
        raise InputError(f"{users} users cannot be split into {cfg.k_min} or more segments")
    scaler = StandardScaler(inputCol=VECTOR, outputCol=SCALED, withMean=True, withStd=True)
    scaler_model = scaler.fit(vectors)
    dim = len(scaler_model.mean)
    names = spec.names() if spec else tuple(f"f{i}" for i in range(dim))
    if len(names) != dim:
        raise ValueError(f"the feature spec names {len(names)} features, the data has {dim}")
    weights = feature_weights(names, cfg.behaviour_weight) if spec else np.ones(dim)
    weighting = ElementwiseProduct(
        scalingVec=Vectors.dense(weights), inputCol=SCALED, outputCol=WEIGHTED
    )
    weighted = weighting.transform(scaler_model.transform(vectors))
    curve = PCA(k=dim, inputCol=WEIGHTED, outputCol=REDUCED).fit(weighted).explainedVariance
    shares = curve.toArray()
    n_components = components_for(shares, cfg.explained_variance)
    pca = PCA(k=n_components, inputCol=WEIGHTED, outputCol=REDUCED).fit(weighted)
    reduced = pca.transform(weighted).select(E.USER_ID, REDUCED).cache()
    log.info(
        "segments: %d users, %d features -> %d components (%.0f%% of variance)",
        users,
        dim,
        n_components,
        100 * float(np.sum(shares[:n_components])),
    )
    scores, models = [], {}
    for k in ks:
        score, models[k] = _score_k(cfg, k, reduced)
        scores.append(score)
    best = max(scores, key=lambda s: (s.silhouette, -s.k))
    stages = [scaler_model, weighting, pca, models[best.k]]
    model = PipelineModel(stages=stages)  # type: ignore[arg-type]
    assignments = assign_segments(model, features_df).cache()
    assignments.count()
    reduced.unpersist()
    vectors.unpersist()
    return SegmentationResult(
        model=model,
        config=cfg,
        k=best.k,
        silhouette=best.silhouette,
        n_components=n_components,
        explained_variance=[float(v) for v in shares],
        per_k=scores,
        assignments=assignments,
        assigner=export_assigner(model, names, spec),
        users=users,
        feature_names=names,
    )


def assign_segments(model: PipelineModel, features_df: DataFrame) -> DataFrame:
    """(user_id, segment[, probabilities]) of every user of ``features_df``."""
    out = model.transform(as_vectors(features_df))
    cols = [F.col(E.USER_ID), F.col(SEGMENT).cast("int").alias(SEGMENT)]
    if PROBABILITY in out.columns:
        cols.append(vector_to_array(F.col(PROBABILITY)).alias(PROBABILITIES))
    return out.select(*cols)


def export_assigner(
    model: PipelineModel, feature_names: tuple[str, ...], spec: FeatureSpec | None = None
) -> SegmentAssigner:
    """The plain arrays of a trained segment pipeline, for assignment without Spark."""
    scaler, weighting, pca, clusterer = model.stages
    assert isinstance(scaler, StandardScalerModel) and isinstance(pca, PCAModel)
    assert isinstance(weighting, ElementwiseProduct)
    common: dict[str, Any] = dict(
        feature_names=tuple(feature_names),
        scaler_mean=scaler.mean.toArray(),
        scaler_std=scaler.std.toArray(),
        with_mean=bool(scaler.getWithMean()),
        with_std=bool(scaler.getWithStd()),
        feature_weights=weighting.getScalingVec().toArray(),
        pca=pca.pc.toArray(),
        spec=spec,
    )
    if isinstance(clusterer, KMeansModel):
        return SegmentAssigner(KMEANS, centers=np.array(clusterer.clusterCenters()), **common)
    assert isinstance(clusterer, GaussianMixtureModel)
    rows = clusterer.gaussiansDF.collect()
    return SegmentAssigner(
        GMM,
        centers=np.array([r["mean"].toArray() for r in rows]),
        weights=np.array(clusterer.weights, dtype=np.float64),
        covariances=np.array([r["cov"].toArray() for r in rows]),
        **common,
    )


def save_pipeline(result: SegmentationResult, folder_uri: str) -> None:
    """Write the PipelineModel with Spark's ML writer (any Hadoop URI), replacing the folder."""
    result.model.write().overwrite().save(folder_uri)


def load_pipeline(folder_uri: str) -> PipelineModel:
    try:
        return PipelineModel.load(folder_uri)
    except AnalysisException as exc:
        raise ModelStoreError(f"no segment pipeline at {folder_uri}: {exc}") from exc


def segment_top_items(interactions_df: DataFrame, assignments_df: DataFrame, n: int) -> DataFrame:
    """(segment, items, scores): each segment's ``n`` most popular items, the score being the
    share of the segment's users with a positive rating of the item (ties: by item id)."""
    segments = assignments_df.select(E.USER_ID, SEGMENT)
    sizes = segments.groupBy(SEGMENT).agg(F.count("*").alias("_users"))
    positive = interactions_df.where(F.col(RATING) > 0).select(E.USER_ID, E.ITEM_ID).distinct()
    scored = (
        positive.join(segments, E.USER_ID)
        .groupBy(SEGMENT, E.ITEM_ID)
        .agg(F.count("*").alias("_n"))
        .join(sizes, SEGMENT)
        .withColumn("_score", F.col("_n") / F.col("_users"))
    )
    order = Window.partitionBy(SEGMENT).orderBy(F.desc("_score"), E.ITEM_ID)
    top = scored.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= n)
    ranked = F.sort_array(F.collect_list(F.struct("_rank", E.ITEM_ID, "_score")))
    return (
        top.groupBy(SEGMENT)
        .agg(ranked.alias("_top"))
        .select(
            SEGMENT,
            F.transform("_top", lambda s: s[E.ITEM_ID]).alias(ITEMS),
            F.transform("_top", lambda s: s["_score"]).alias(SCORES),
        )
        .orderBy(SEGMENT)
    )
