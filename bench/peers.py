"""A peer tuned the same way: the `implicit` library's ALS, chosen by the same search on the same
validation split as streamrec's, then scored on the same test (`streamrec evaluate --peer
implicit`). A peer run at streamrec's own setting would compare settings, not recommenders.

Conventions differ (`implicit` regularizes with a plain lambda and weighs confidence alpha * r;
Spark scales lambda by each user's count and uses 1 + alpha * r), so both search the same space
of numbers and each gets the numbers that suit it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from streamrec.batch.evaluate import EvalOptions, training_input, validation_split
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.metrics import RankingMetrics, ranking_metrics
from streamrec.batch.rating_files import RATING, read_ratings
from streamrec.batch.scores import ModelScore, make_split
from streamrec.batch.search import candidates, successive_halving
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibrarySetting:
    """One setting of the `implicit` library's ALS, in streamrec's names."""

    rank: int
    reg_param: float
    alpha: float
    max_iter: int
    k: int = 10


def _params(setting: BatchConfig, k: int) -> LibrarySetting:
    return LibrarySetting(setting.rank, setting.reg_param, setting.alpha, setting.max_iter, k)


def implicit_library(split: Any, params: LibrarySetting, seed: int) -> dict[str, Any]:
    """Fit and score `implicit`'s ALS on exactly the training matrix streamrec uses."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    rows = split.train.select(USER_INDEX, ITEM_INDEX, RATING).collect()
    n_users = split.users.count()
    matrix = sp.csr_matrix(
        (
            [float(r[RATING]) for r in rows],
            ([r[USER_INDEX] for r in rows], [r[ITEM_INDEX] for r in rows]),
        ),
        shape=(n_users, split.item_count),
        dtype=np.float32,
    )
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model = AlternatingLeastSquares(
            factors=params.rank,
            regularization=params.reg_param,
            alpha=params.alpha,
            iterations=params.max_iter,
            random_state=seed,
            calculate_training_loss=False,
        )
        t = time.monotonic()
        model.fit(matrix, show_progress=False)
        fit_s = time.monotonic() - t
        users = np.arange(n_users)
        t = time.monotonic()
        ids, _ = model.recommend(users, matrix[users], N=params.k, filter_already_liked_items=True)
        topk_s = time.monotonic() - t
    item_of = {r[ITEM_INDEX]: r[E.ITEM_ID] for r in split.items.collect()}
    user_of = {r[USER_INDEX]: r[E.USER_ID] for r in split.users.collect()}
    lists = {user_of[u]: [item_of[int(i)] for i in ids[u] if i >= 0] for u in range(n_users)}
    evaluated = sorted(split.relevant)
    ranking = ranking_metrics(
        [lists.get(u, []) for u in evaluated],
        [split.relevant[u] for u in evaluated],
        params.k,
        split.item_count,
    )
    return {"ranking": ranking.as_dict(), "fit_s": fit_s, "topk_all_users_s": topk_s}


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
