"""A version's user segments: the pipeline fitted on every user's features (ALS factors and
behaviour), saved with its plain-array assigner into the version's folder, and the validation
report written beside them."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.batch.ids import USER_INDEX
from streamrec.batch.prepare import Prepared
from streamrec.batch.segment_report import write_report
from streamrec.batch.segmentation import FEATURES as SEG_FEATURES
from streamrec.batch.segmentation import (
    save_pipeline,
    train_segments,
    user_feature_frame,
)
from streamrec.errors import InputError
from streamrec.model import store
from streamrec.model.segments import feature_spec
from streamrec.model.store import SEGMENT_ASSIGNER
from streamrec.schemas import events as E
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """A version's segments: the assignments to publish and the summary kept in meta.json."""

    assignments: DataFrame  # user_id, segment[, probabilities]
    summary: dict[str, Any]


def segment_users(
    spark: SparkSession, cfg: Config, als: ALSModel, data: Prepared, version: str
) -> Segmentation | None:
    """Fit the segment pipeline on every user's features (ALS factor and behaviour), save it
    and its plain-array assigner into the version's folder, and write the validation report
    beside them (``segments/report/``)."""
    if not cfg.segments.enabled:
        return None
    factors = als.userFactors.join(data.users, als.userFactors.id == data.users[USER_INDEX])
    factors = factors.select(E.USER_ID, F.col("features").alias(SEG_FEATURES))
    spec = feature_spec(cfg.segments, cfg.batch.rank)
    features = user_feature_frame(spark, data.events, factors, data.data_cut_ms, spec, None).cache()
    try:
        result = train_segments(features, cfg.segments, spec)
    except InputError as exc:  # too few users to segment: lists still publish
        log.warning("batch: no segments for %s: %s", version, exc)
        features.unpersist()
        return None
    folder = store.version_dir(cfg.paths.model_store, version)
    save_pipeline(result, storage.join(folder, "segments", "pipeline"))
    store.write_version_file(
        cfg.paths.model_store, version, SEGMENT_ASSIGNER, result.assigner.to_bytes()
    )
    with tempfile.TemporaryDirectory(prefix="streamrec-segments-") as tmp:
        # matplotlib writes local files; they are then copied to the store, wherever it is.
        metrics = write_report(result, features, data.ratings, tmp)
        for report_file in sorted(Path(tmp).iterdir()):
            store.write_version_file(
                cfg.paths.model_store,
                version,
                f"segments/report/{report_file.name}",
                report_file.read_bytes(),
            )
    features.unpersist()
    summary = {
        key: metrics[key]
        for key in (
            "method",
            "k",
            "silhouette",
            "n_components",
            "classifier_agreement",
            "segment_sizes",
        )
    }
    summary["features"] = list(spec.names())
    return Segmentation(result.assignments, summary)
