"""The checks of `streamrec bench quality` on MovieLens 100K ``ua`` besides the tuned
comparison: streamrec's ALS against the `implicit` library's at one setting (an implementation
check), the explicit-mode RMSEs, and the speed of scoring every user."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.rating_files import file_interactions, read_ratings
from streamrec.batch.scores import Split, make_split, score_als, score_bayes, score_popularity
from streamrec.batch.scoring import FEATURES, SEEN, dense_item_factors, rank_users
from streamrec.batch.train import train_als
from streamrec.bench.peers import LibrarySetting, implicit_library
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig

if TYPE_CHECKING:  # bench/quality.py imports this module
    from streamrec.bench.quality import QualityParams

log = logging.getLogger(__name__)


def _time_scoring(spark: SparkSession, split: Any, cfg: BatchConfig, k: int) -> dict[str, float]:
    """Top-k for every user: streamrec's publishing path vs Spark's recommendForAllUsers."""
    model = train_als(split.train, cfg, 2)
    factors = dense_item_factors(model, split.item_count)
    item_ids = [str(i) for i in range(split.item_count)]
    seen = split.train.groupBy(E.USER_ID).agg(F.collect_list(ITEM_INDEX).alias(SEEN))
    users = (
        model.userFactors.join(split.users, model.userFactors.id == split.users[USER_INDEX])
        .select(E.USER_ID, F.col("features").alias(FEATURES))
        .join(seen, E.USER_ID)
        .cache()
    )
    users.count()
    t = time.monotonic()
    n = rank_users(users, item_ids, factors, k).count()
    ours_s = time.monotonic() - t
    t = time.monotonic()
    model.recommendForAllUsers(k).count()
    spark_s = time.monotonic() - t
    users.unpersist()
    return {"users": float(n), "streamrec_topk_s": ours_s, "spark_recommend_for_all_s": spark_s}


def movielens_checks(spark: SparkSession, ml: Path, params: QualityParams) -> dict[str, Any]:
    """Explicit-mode RMSEs and the implementation check at one setting on ``ua``."""
    base, test = ml / "ua.base", ml / "ua.test"
    # Implicit mode trains on what the batch job would make of the ratings as `rating` events;
    # the explicit models fit the ratings themselves.
    base_rows, test_rows = read_ratings(spark, str(base)), read_ratings(spark, str(test))
    split = make_split(
        file_interactions(base_rows, "rating", FeedbackConfig()), test_rows, params.relevant_min
    )
    explicit_split = make_split(base_rows, test_rows, params.relevant_min)
    implicit_cfg = BatchConfig(
        rank=params.rank,
        reg_param=params.reg_param,
        alpha=params.alpha,
        max_iter=params.max_iter,
        implicit=True,
    )
    explicit_cfg = replace(
        implicit_cfg,
        rank=params.explicit_rank,
        reg_param=params.explicit_reg,
        max_iter=params.explicit_iter,
        implicit=False,
    )
    one_setting, fits = _one_setting(split, implicit_cfg, params)
    speed = _time_scoring(spark, split, implicit_cfg, params.k)
    return {
        "one_setting": one_setting,
        **_explicit_checks(explicit_split, explicit_cfg, params),
        "speed": {
            **speed,
            **fits,
            "fit_ratio_vs_implicit": fits["streamrec_fit_s"] / fits["implicit_fit_s"],
            "topk_ratio_vs_implicit": speed["streamrec_topk_s"] / fits["implicit_topk_all_users_s"],
            "spark_recommend_ratio_vs_implicit": speed["spark_recommend_for_all_s"]
            / fits["implicit_topk_all_users_s"],
        },
    }


def _one_setting(
    split: Split, implicit_cfg: BatchConfig, params: QualityParams
) -> tuple[dict[str, Any], dict[str, float]]:
    """streamrec's and the `implicit` library's ALS at the same setting over several seeds,
    beside popularity (the implementation check), and their fit and top-k times."""
    setting = LibrarySetting(params.rank, params.reg_param, params.alpha, params.max_iter, params.k)
    ours, theirs = [], []
    for seed in params.seeds:
        log.info("bench quality: streamrec implicit ALS at one setting, seed %d", seed)
        ours.append(score_als(split, replace(implicit_cfg, seed=seed), params.k, 2))
        log.info("bench quality: implicit library ALS at one setting, seed %d", seed)
        theirs.append(implicit_library(split, setting, seed))
    popularity = score_popularity(split, params.k)
    streamrec_als = _mean_over_seeds([{**o.ranking.as_dict(), "fit_s": o.train_s} for o in ours])
    library_als = _mean_over_seeds([{**t["ranking"], "fit_s": t["fit_s"]} for t in theirs])
    one_setting = {
        "streamrec_als": streamrec_als,
        "implicit_library_als": library_als,
        "popularity": popularity.ranking.as_dict(),
        "precision_vs_library": streamrec_als["precision"] / library_als["precision"],
        "ndcg_vs_library": streamrec_als["ndcg"] / library_als["ndcg"],
    }
    fits = {
        "streamrec_fit_s": min(o.train_s for o in ours),
        "implicit_fit_s": min(t["fit_s"] for t in theirs),
        "implicit_topk_all_users_s": min(t["topk_all_users_s"] for t in theirs),
    }
    return one_setting, fits


def _explicit_checks(split: Split, cfg: BatchConfig, params: QualityParams) -> dict[str, Any]:
    """Explicit-mode RMSEs: ALS on bias residuals, plain ALS, Bayesian ALS."""
    log.info(
        "bench quality: explicit ALS, plain ALS, Bayesian ALS (%d sweeps)", params.bayes.sweeps
    )
    explicit = score_als(split, cfg, params.k, 2)
    plain_cfg = replace(cfg, rank=10, reg_param=0.1, max_iter=10)
    plain = score_als(split, plain_cfg, params.k, 2, biases=False)
    bayes = score_bayes(split, params.bayes, params.k, 2)
    return {
        "explicit": {
            "rmse": explicit.rmse,
            "params": explicit.params,
            **explicit.ranking.as_dict(),
        },
        "explicit_plain_als": {
            "rmse": plain.rmse,
            "params": plain.params,
            **plain.ranking.as_dict(),
        },
        "explicit_bayes": {
            "rmse": bayes.rmse,
            "params": bayes.params,
            "fit_s": bayes.train_s,
            **bayes.ranking.as_dict(),
        },
    }


def _mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every metric's mean over the seeds, and each seed's run as it was."""
    mean = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    mean["users"] = runs[0]["users"]
    mean["k"] = runs[0]["k"]
    return {**mean, "per_seed": runs}
