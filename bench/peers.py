"""A peer tuned the same way: the `implicit` library's ALS, chosen by the same search on the same
validation split as streamrec's, then scored on the same test (`streamrec evaluate --peer
implicit`). A peer run at streamrec's own setting would compare settings, not recommenders.

Conventions differ (`implicit` regularizes with a plain lambda and weighs confidence alpha * r;
Spark scales lambda by each user's count and uses 1 + alpha * r), so both search the same space
of numbers and each gets the numbers that suit it.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from streamrec.batch.evaluate import (
    EvalOptions,
    ModelScore,
    make_split,
    training_input,
    validation_split,
)
from streamrec.batch.metrics import RankingMetrics
from streamrec.batch.rating_files import read_ratings
from streamrec.batch.search import candidates, successive_halving
from streamrec.bench.quality import QualityParams, implicit_library
from streamrec.schemas.config import BatchConfig, FeedbackConfig

log = logging.getLogger(__name__)


def _params(setting: BatchConfig, k: int) -> QualityParams:
    return QualityParams(
        rank=setting.rank,
        reg_param=setting.reg_param,
        alpha=setting.alpha,
        max_iter=setting.max_iter,
        k=k,
    )


def implicit_peer(
    spark: SparkSession, opts: EvalOptions, base: BatchConfig, feedback: FeedbackConfig
) -> tuple[ModelScore, list[dict[str, Any]]]:
    """The `implicit` library's ALS on ``opts``' files: tuned by successive halving over
    ``base``'s ``tune_*`` space on each user's newest training rows, trained on the whole
    training file, scored on the test file; and its search's trials."""
    train_raw = read_ratings(spark, opts.train, opts.fmt, opts.sep, opts.header).cache()
    test_raw = read_ratings(spark, opts.test, opts.fmt, opts.sep, opts.header)
    split = make_split(training_input(train_raw, opts, feedback, True), test_raw, opts.relevant_min)
    fit, valid = validation_split(train_raw, opts.validation_share, base.seed)
    fit_input = training_input(fit, opts, feedback, True)
    inner = make_split(fit_input, valid, opts.relevant_min, known_users_only=True)

    def score(setting: BatchConfig) -> float:
        ndcg = float(
            implicit_library(inner, _params(setting, opts.k), base.seed)["ranking"]["ndcg"]
        )
        log.info(
            "peer implicit: rank %d regularization %g alpha %g, %d iterations: ndcg@%d %.4f",
            setting.rank,
            setting.reg_param,
            setting.alpha,
            setting.max_iter,
            opts.k,
            ndcg,
        )
        return ndcg

    chosen, trials = successive_halving(candidates(base, base, base.seed), score, base.max_iter)
    final = implicit_library(split, _params(chosen, opts.k), base.seed)
    params = {
        "rank": chosen.rank,
        "regularization": chosen.reg_param,
        "alpha": chosen.alpha,
        "iterations": chosen.max_iter,
    }
    ranking = RankingMetrics(**final["ranking"])
    model = ModelScore(
        "implicit-lib", params, ranking, None, final["fit_s"], final["topk_all_users_s"]
    )
    return model, [trial.as_dict() for trial in trials]
