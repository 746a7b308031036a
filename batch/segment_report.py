"""The segment validation report: ``report.md``, PNG plots and ``metrics.json``.

It shows how the pipeline chose (explained variance, inertia and silhouette against k), what it
found (segment sizes, a 2-D projection), whether the segments are distinct (a multinomial Naive
Bayes classifier trained on users' item ratings with the segments as labels: its agreement on
held-out users and the confusion matrix), and what each segment is about: its most distinctive
items by TF-IDF beside its most popular ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.classification import NaiveBayes
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.batch import segment_plots as plots
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.interactions import RATING
from streamrec.batch.rating_files import read_ratings
from streamrec.batch.segment_markdown import PLOTS, render_markdown
from streamrec.batch.segmentation import (
    FEATURES,
    ITEMS,
    REDUCED,
    SCORES,
    SEGMENT,
    SegmentationResult,
    as_vectors,
    ratings_as_events,
    segment_top_items,
    train_segments,
    user_feature_frame,
)
from streamrec.batch.train import train_als
from streamrec.model.item_metadata import read_movielens_items
from streamrec.model.segments import feature_spec
from streamrec.schemas import events as E
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)

_PROJECTION_USERS = 5000
CLASSIFIER = "multinomial Naive Bayes on users' item ratings"


def distinctive_items(mass: pd.DataFrame, n: int) -> dict[int, list[tuple[str, float]]]:
    """Each segment's ``n`` most distinctive items by TF-IDF, segments as documents and items as
    terms (``mass``: segment, item_id, mass = the segment's summed ratings of the item).

    tf = the item's share of the segment's mass. With hard presence counts almost every item
    is in every one of a few segments and every idf would be 0, so each segment counts towards
    an item's document frequency by how strongly it holds it: df = sum(tf / max tf) over the
    segments, in [1, k], and idf = log(k / df). An item as frequent everywhere scores 0.
    """
    if mass.empty:
        return {}
    table = mass.pivot_table(
        index=SEGMENT, columns=E.ITEM_ID, values="mass", aggfunc="sum", fill_value=0.0
    ).clip(lower=0.0)
    totals = table.sum(axis=1).replace(0.0, np.nan)
    tf = table.div(totals, axis=0).fillna(0.0)
    top = tf.max(axis=0).replace(0.0, np.nan)
    df = (tf / top).sum(axis=0)
    idf = np.log(len(tf) / df).fillna(0.0)
    scores = tf * idf
    out: dict[int, list[tuple[str, float]]] = {}
    for segment, row in scores.iterrows():
        ranked = row[row > 0].reset_index()
        ranked.columns = pd.Index([E.ITEM_ID, "score"])
        ranked = ranked.sort_values(["score", E.ITEM_ID], ascending=[False, True]).head(n)
        out[int(str(segment))] = [(str(i), float(s)) for i, s in ranked.itertuples(index=False)]
    return out


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels.astype(int), predicted.astype(int)), 1)
    return matrix


def _item_vectors(interactions: DataFrame) -> DataFrame:
    """(user_id, _items): each user's positive ratings as a sparse vector over the items."""
    positive = (
        interactions.where(F.col(RATING) > 0)
        .groupBy(E.USER_ID, E.ITEM_ID)
        .agg(F.sum(RATING).alias(RATING))
    )
    items = index_ids(positive, E.ITEM_ID, ITEM_INDEX)
    size = items.count()
    to_vector = F.udf(
        lambda pairs: Vectors.sparse(size, [(p[0], p[1]) for p in pairs]), VectorUDT()
    )
    return (
        positive.join(items, E.ITEM_ID)
        .groupBy(E.USER_ID)
        .agg(F.collect_list(F.struct(ITEM_INDEX, RATING)).alias("_pairs"))
        .select(E.USER_ID, to_vector("_pairs").alias("_items"))
    )


def classifier_agreement(result: SegmentationResult, interactions: DataFrame) -> dict[str, Any]:
    """Train Naive Bayes on some users' items with their segments as labels; its accuracy on
    the held-out users is the agreement. High agreement: the segments differ in what their
    users consume, not only in the features they were clustered on."""
    cfg = result.config
    data = (
        _item_vectors(interactions)
        .join(
            result.assignments.select(E.USER_ID, F.col(SEGMENT).cast("double").alias("_label")),
            E.USER_ID,
        )
        .cache()
    )
    train, test = data.randomSplit([1 - cfg.validation_share, cfg.validation_share], cfg.seed)
    n_train = train.count()
    matrix = np.zeros((result.k, result.k), dtype=np.int64)
    agreement = None
    if n_train and train.select("_label").distinct().count() > 1:
        model = NaiveBayes(
            featuresCol="_items",
            labelCol="_label",
            predictionCol="_predicted",
            modelType="multinomial",
            smoothing=1.0,
        ).fit(train)
        rows = model.transform(test).select("_label", "_predicted").collect()
        if rows:
            labels = np.array([r["_label"] for r in rows])
            predicted = np.array([r["_predicted"] for r in rows])
            matrix = confusion_matrix(labels, predicted, result.k)
            agreement = float(np.trace(matrix) / matrix.sum())
    n_test = int(matrix.sum())
    data.unpersist()
    return {
        "name": CLASSIFIER,
        "agreement": agreement,
        "train_users": n_train,
        "test_users": n_test,
        "confusion_matrix": matrix.tolist(),
    }


def _projection(
    result: SegmentationResult, features_df: DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    reducer = PipelineModel(stages=result.model.stages[:-1])
    reduced = reducer.transform(as_vectors(features_df)).select(
        E.USER_ID, vector_to_array(F.col(REDUCED)).alias(REDUCED)
    )
    rows = reduced.join(result.assignments, E.USER_ID)
    if result.users > _PROJECTION_USERS:
        rows = rows.sample(fraction=_PROJECTION_USERS / result.users, seed=result.config.seed)
    collected = rows.select(REDUCED, SEGMENT).collect()
    xy = np.zeros((len(collected), 2))
    for n, r in enumerate(collected):
        head = list(r[REDUCED][:2])
        xy[n, : len(head)] = head
    return xy, np.array([r[SEGMENT] for r in collected], dtype=int)


def _segment_items(
    result: SegmentationResult, interactions: DataFrame, titles: dict[str, str] | None
) -> list[dict[str, Any]]:
    n = result.config.report_items
    mass = (
        interactions.where(F.col(RATING) > 0)
        .join(result.assignments.select(E.USER_ID, SEGMENT), E.USER_ID)
        .groupBy(SEGMENT, E.ITEM_ID)
        .agg(F.sum(RATING).alias("mass"))
        .toPandas()
    )
    distinct = distinctive_items(mass, n)
    popular = {
        r[SEGMENT]: list(zip(r[ITEMS], r[SCORES], strict=True))
        for r in segment_top_items(interactions, result.assignments, n).collect()
    }

    def named(pairs: list[tuple[str, float]]) -> list[dict[str, Any]]:
        return [
            {"item": i, "title": (titles or {}).get(i, i), "score": round(s, 6)} for i, s in pairs
        ]

    return [
        {
            "segment": s,
            "distinctive": named(distinct.get(s, [])),
            "popular": named(popular.get(s, [])),
        }
        for s in range(result.k)
    ]


def write_report(
    result: SegmentationResult,
    features_df: DataFrame,
    interactions_df: DataFrame,
    out_dir: str,
    item_titles: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write report.md, metrics.json and the plots into ``out_dir``; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    interactions = interactions_df.select(E.USER_ID, E.ITEM_ID, RATING)
    counts = {
        r[SEGMENT]: r["n"]
        for r in result.assignments.groupBy(SEGMENT).agg(F.count("*").alias("n")).collect()
    }
    sizes = {s: int(counts.get(s, 0)) for s in range(result.k)}
    classifier = classifier_agreement(result, interactions)
    segments = _segment_items(result, interactions, item_titles)
    for entry in segments:
        entry["users"] = sizes[entry["segment"]]
    metrics: dict[str, Any] = {
        "users": result.users,
        "features": list(result.feature_names),
        "method": cfg.method,
        "k": result.k,
        "k_range": [cfg.k_min, cfg.k_max],
        "silhouette": result.silhouette,
        "per_k": [dataclasses.asdict(s) for s in result.per_k],
        "explained_variance_threshold": cfg.explained_variance,
        "n_components": result.n_components,
        "explained_variance": result.explained_variance,
        "classifier_agreement": classifier["agreement"],
        "confusion_matrix": classifier["confusion_matrix"],
        "classifier": classifier,
        "segment_sizes": {str(s): n for s, n in sizes.items()},
        "segments": segments,
        "plots": dict(PLOTS),
    }
    _write_plots(result, features_df, sizes, classifier, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(metrics), encoding="utf-8")
    log.info(
        "segments: report written to %s (k=%d, silhouette %.3f, agreement %s)",
        out,
        result.k,
        result.silhouette,
        classifier["agreement"],
    )
    return metrics


def _write_plots(
    result: SegmentationResult,
    features_df: DataFrame,
    sizes: dict[int, int],
    classifier: dict[str, Any],
    out: Path,
) -> None:
    plots.plot_explained_variance(
        result.explained_variance,
        result.config.explained_variance,
        result.n_components,
        out / PLOTS["explained_variance"],
    )
    plots.plot_k_selection(
        [s.k for s in result.per_k],
        [s.inertia for s in result.per_k],
        [s.silhouette for s in result.per_k],
        result.k,
        out / PLOTS["k_selection"],
    )
    plots.plot_sizes(sizes, out / PLOTS["segment_sizes"])
    xy, segments = _projection(result, features_df)
    plots.plot_projection(xy, segments, out / PLOTS["projection"])
    plots.plot_confusion(
        np.array(classifier["confusion_matrix"]),
        classifier["agreement"],
        out / PLOTS["confusion_matrix"],
    )


def report_from_ratings_file(
    spark: SparkSession,
    train_path: str,
    fmt: str,
    sep: str,
    header: bool,
    items_path: str | None,
    out_dir: str,
    cfg: Config,
) -> dict[str, Any]:
    """Train implicit ALS (the ratings as confidences) and segments on a ratings file, then
    write the report. ``items_path``: MovieLens ``u.item`` for titles and genre shares."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    ratings = read_ratings(spark, train_path, fmt, sep, header).cache()
    meta = read_movielens_items(items_path) if items_path else None
    users = index_ids(ratings, E.USER_ID, USER_INDEX)
    items = index_ids(ratings, E.ITEM_ID, ITEM_INDEX)
    indexed = ratings.join(users, E.USER_ID).join(items, E.ITEM_ID)
    batch = dataclasses.replace(cfg.batch, implicit=True)
    als = train_als(indexed, batch, cfg.spark.shuffle_partitions)
    factors = als.userFactors.join(users, als.userFactors.id == users[USER_INDEX]).select(
        E.USER_ID, F.col("features").alias(FEATURES)
    )
    timings["als"] = time.monotonic() - t

    t = time.monotonic()
    reference_ms = int(ratings.agg(F.max(E.EVENT_TIME)).collect()[0][0] or 0)
    # A ratings file holds one event type: an event-type mix would be a constant.
    spec = feature_spec(
        cfg.segments, batch.rank, event_types=(), categories=meta.category_names if meta else ()
    )
    features = user_feature_frame(
        spark,
        ratings_as_events(ratings),
        factors,
        reference_ms,
        spec,
        meta.categories if meta else None,
    ).cache()
    timings["features"] = time.monotonic() - t

    t = time.monotonic()
    result = train_segments(features, cfg.segments, spec)
    timings["segments"] = time.monotonic() - t

    t = time.monotonic()
    metrics = write_report(result, features, ratings, out_dir, meta.titles if meta else None)
    timings["report"] = time.monotonic() - t
    metrics["source"] = {
        "train": train_path,
        "format": fmt,
        "items": items_path,
        "als": {
            "rank": batch.rank,
            "max_iter": batch.max_iter,
            "alpha": batch.alpha,
            "reg_param": batch.reg_param,
        },
    }
    metrics["durations_s"] = {k: round(v, 2) for k, v in timings.items()}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    result.unpersist()
    features.unpersist()
    ratings.unpersist()
    return metrics
