"""Each model family scored on a split the same way: a full-ranking top-k for every user with a
relevant test item, their training items left out (batch/metrics.py), and for explicit ratings
the RMSE on the test rows both sides know. What `streamrec evaluate`, the batch job's holdout
and its tuning all score with."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.batch.bayes import BayesParams, fit_bayes
from streamrec.batch.biases import ITEM_BIAS, USER_BIAS, fit_biases
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.metrics import RankingMetrics, ranking_metrics, rmse
from streamrec.batch.rating_files import (
    RATING,
)
from streamrec.batch.scoring import FEATURES, ITEMS, SEEN, dense_item_factors, rank_users
from streamrec.batch.train import train_als
from streamrec.model.ease import fit_ease, gram_matrix, history_vectors
from streamrec.model.scoring import top_n
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig

log = logging.getLogger(__name__)


@dataclass
class ModelScore:
    name: str
    params: dict[str, Any]
    ranking: RankingMetrics
    rmse: float | None = None
    train_s: float = 0.0
    score_s: float = 0.0


@dataclass(frozen=True)
class Split:
    """Train and test with dense indexes over the training ids; test rows of unknown users or
    items are kept for ranking (they count as misses) but cannot be rated."""

    train: DataFrame
    relevant: dict[str, set[str]]
    test_known: DataFrame
    users: DataFrame
    items: DataFrame
    item_count: int


def make_split(
    train_raw: DataFrame, test_raw: DataFrame, relevant_min: float, known_users_only: bool = False
) -> Split:
    """Index the training ids and collect each user's relevant test items. A test item the user
    already has in training is not relevant: lists leave training items out, so it could never
    be hit. ``known_users_only`` leaves users absent from training out of the metrics."""
    users = index_ids(train_raw, E.USER_ID, USER_INDEX).cache()
    items = index_ids(train_raw, E.ITEM_ID, ITEM_INDEX).cache()
    train = train_raw.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    test_known = test_raw.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    positives = test_raw.where(F.col(RATING) >= relevant_min).select(E.USER_ID, E.ITEM_ID)
    new_to_user = positives.join(
        train_raw.select(E.USER_ID, E.ITEM_ID), [E.USER_ID, E.ITEM_ID], "left_anti"
    )
    if known_users_only:
        new_to_user = new_to_user.join(users.select(E.USER_ID), E.USER_ID)
    relevant: dict[str, set[str]] = {}
    for row in new_to_user.collect():
        relevant.setdefault(row[E.USER_ID], set()).add(row[E.ITEM_ID])
    return Split(train, relevant, test_known, users, items, items.count())


def _item_ids(split: Split) -> list[str]:
    """Training item ids in index order (the rows of an item factor matrix)."""
    ids_by_index = {r[ITEM_INDEX]: r[E.ITEM_ID] for r in split.items.collect()}
    return [ids_by_index[i] for i in range(split.item_count)]


def _seen(split: Split) -> DataFrame:
    return split.train.groupBy(E.USER_ID).agg(F.collect_list(ITEM_INDEX).alias(SEEN))


def _ranking_of(ranked: DataFrame, split: Split, k: int) -> RankingMetrics:
    lists = {r[E.USER_ID]: r[ITEMS] for r in ranked.collect()}
    users = sorted(split.relevant)
    return ranking_metrics(
        [lists.get(u, []) for u in users], [split.relevant[u] for u in users], k, split.item_count
    )


def score_als(
    split: Split, cfg: BatchConfig, k: int, parallelism: int, biases: bool = True
) -> ModelScore:
    """Implicit ALS, or in explicit mode ALS on the residuals of baseline biases (plain
    explicit ALS with ``biases=False``, for comparison with the textbook recipe)."""
    t = time.monotonic()
    fitted = None if cfg.implicit or not biases else fit_biases(split.train, RATING)
    train = split.train if fitted is None else fitted.residuals(split.train, RATING)
    model: ALSModel = train_als(train, cfg, parallelism)
    train_s = time.monotonic() - t
    t = time.monotonic()
    item_ids = _item_ids(split)
    # With biases, rank by b_i + x·y (μ and b_u do not change a user's order): an extra factor
    # of 1 on the user side and b_i on the item side.
    extra = 0 if fitted is None else 1
    factors = dense_item_factors(model, split.item_count, extra)
    if fitted is not None:
        for r in fitted.items.collect():
            factors[r[ITEM_INDEX], cfg.rank] = r[ITEM_BIAS]
    user_features = F.col("features")
    if fitted is not None:
        user_features = F.concat(user_features, F.array(F.lit(1.0).cast("float")))
    user_vectors = (
        model.userFactors.join(split.users, model.userFactors.id == split.users[USER_INDEX])
        .select(E.USER_ID, user_features.alias(FEATURES))
        .join(_seen(split), E.USER_ID)
    )
    ranking = _ranking_of(rank_users(user_vectors, item_ids, factors, k), split, k)
    error = None
    if not cfg.implicit:
        predicted = model.transform(split.test_known)
        if fitted is not None:
            predicted = fitted.attach(predicted).withColumn(
                "prediction",
                F.col("prediction") + F.lit(fitted.mean) + F.col(USER_BIAS) + F.col(ITEM_BIAS),
            )
        rows = predicted.select("prediction", RATING).collect()
        error = rmse(np.array([r["prediction"] for r in rows]), np.array([r[RATING] for r in rows]))
    params = {
        "rank": cfg.rank,
        "reg_param": cfg.reg_param,
        "alpha": cfg.alpha,
        "max_iter": cfg.max_iter,
        "implicit": cfg.implicit,
    }
    name = "als-implicit" if cfg.implicit else "als-explicit"
    return ModelScore(name, params, ranking, error, train_s, time.monotonic() - t)


def score_ease(split: Split, cfg: BatchConfig, k: int) -> ModelScore:
    """EASE (model/ease.py) fitted on the split's training ratings on the driver, every user
    with relevant items ranked by their training row times the item-item matrix."""
    t = time.monotonic()
    data = EaseInputs.of(split)
    matrix = fit_ease(gram_matrix(*data.rows, split.item_count, cfg.ease_binary), cfg.ease_l2)
    train_s = time.monotonic() - t
    t = time.monotonic()
    ranking = ranking_from_ease(split, data, matrix, cfg.ease_binary, k)
    return ModelScore("ease", ease_params(cfg), ranking, None, train_s, time.monotonic() - t)


def search_ease(split: Split, cfg: BatchConfig, k: int) -> list[dict[str, Any]]:
    """Every EASE setting of the search space (``tune_ease_l2s``, binarised or not) scored on
    the split: the training rows collected once, one Gram matrix per input, one inverse per
    penalty. Empty when the catalogue is larger than ``ease_max_items``."""
    if split.item_count > cfg.ease_max_items:
        log.info(
            "tune: EASE skipped: %d items > batch.ease_max_items %d",
            split.item_count,
            cfg.ease_max_items,
        )
        return []
    data = EaseInputs.of(split)
    trials = []
    for binary in (True, False):
        gram = gram_matrix(*data.rows, split.item_count, binary)
        for l2 in cfg.tune_ease_l2s:
            setting = replace(cfg, family="ease", ease_l2=l2, ease_binary=binary)
            ranking = ranking_from_ease(split, data, fit_ease(gram, l2), binary, k)
            log.info("tune: EASE l2 %g binary %s: ndcg@%d %.4f", l2, binary, k, ranking.ndcg)
            trials.append({**ease_params(setting), "ndcg": ranking.ndcg})
    return trials


@dataclass(frozen=True)
class EaseInputs:
    """What fitting and scoring EASE on a split take from Spark, collected once: the training
    rows (user index, item index, rating), the users with relevant items and their histories,
    and the item ids in index order."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    users: list[str]
    histories: list[tuple[np.ndarray, np.ndarray]]
    item_ids: list[str]

    @classmethod
    def of(cls, split: Split) -> EaseInputs:
        collected = split.train.select(USER_INDEX, ITEM_INDEX, RATING).collect()
        users = np.array([r[USER_INDEX] for r in collected], dtype=np.int64)
        items = np.array([r[ITEM_INDEX] for r in collected], dtype=np.int64)
        ratings = np.array([r[RATING] for r in collected], dtype=np.float64)
        index_of_user = {r[E.USER_ID]: r[USER_INDEX] for r in split.users.collect()}
        order = np.argsort(users, kind="stable")
        by_user = users[order]
        starts = np.searchsorted(by_user, np.arange(by_user.max() + 2 if by_user.size else 1))
        wanted = sorted(split.relevant)
        histories = []
        for user in wanted:
            at = index_of_user.get(user)
            if at is None or at + 1 >= len(starts):
                histories.append((np.empty(0, dtype=np.int64), np.empty(0)))
            else:
                span = order[starts[at] : starts[at + 1]]
                histories.append((items[span], ratings[span]))
        return cls((users, items, ratings), wanted, histories, _item_ids(split))


def ease_params(cfg: BatchConfig) -> dict[str, Any]:
    return {"family": "ease", "ease_l2": cfg.ease_l2, "ease_binary": cfg.ease_binary}


def ranking_from_ease(
    split: Split, data: EaseInputs, matrix: np.ndarray, binary: bool, k: int
) -> RankingMetrics:
    """Top-k of ``matrix`` (EASE's Bᵀ over the split's item indexes) for the users with relevant
    items, from their training histories."""
    vectors = history_vectors(data.histories, split.item_count, binary)
    lists: list[list[str]] = [[] for _ in data.users]
    personal = [(row, vector) for row, vector in enumerate(vectors) if vector is not None]
    if personal:
        stacked = np.stack([vector for _, vector in personal])
        seen = [data.histories[row][0].tolist() for row, _ in personal]
        for (row, _), (best, _) in zip(personal, top_n(stacked, matrix, seen, k), strict=True):
            lists[row] = [data.item_ids[i] for i in best]
    relevant = [split.relevant[u] for u in data.users]
    return ranking_metrics(lists, relevant, k, split.item_count)


def score_model(split: Split, cfg: BatchConfig, k: int, parallelism: int) -> ModelScore:
    """The family ``cfg`` names, trained on the split and scored: what ranks production lists."""
    if cfg.family == "ease" and cfg.implicit:
        return score_ease(split, cfg, k)
    return score_als(split, cfg, k, parallelism)


def score_bayes(split: Split, params: BayesParams, k: int, partitions: int) -> ModelScore:
    """Bayesian ALS (explicit ratings): RMSE from the posterior mean of every sweep after the
    burn-in, lists from the kept samples."""
    t = time.monotonic()
    known = split.test_known.select(USER_INDEX, ITEM_INDEX, RATING).collect()
    pairs = (
        np.array([r[USER_INDEX] for r in known], dtype=np.int64),
        np.array([r[ITEM_INDEX] for r in known], dtype=np.int64),
    )
    fit = fit_bayes(split.train, USER_INDEX, ITEM_INDEX, RATING, params, pairs, partitions)
    train_s = time.monotonic() - t
    t = time.monotonic()
    item_ids = _item_ids(split)
    spark = split.train.sparkSession
    rows = [
        (r[E.USER_ID], fit.users[r[USER_INDEX]].astype(float).tolist())
        for r in split.users.collect()
    ]
    # Slices of about 256 KiB each: the concatenated samples make wide rows.
    slices = max(2, fit.users.nbytes // 262_144)
    vectors = spark.createDataFrame(
        spark.sparkContext.parallelize(rows, slices),
        f"{E.USER_ID} string, {FEATURES} array<double>",
    ).join(_seen(split), E.USER_ID)
    ranking = _ranking_of(rank_users(vectors, item_ids, fit.items.astype(np.float32), k), split, k)
    assert fit.predictions is not None
    error = (
        rmse(fit.predictions, np.array([r[RATING] for r in known], dtype=float)) if known else None
    )
    params_out = {
        "rank": params.rank,
        "sweeps": params.sweeps,
        "burn_in": params.burn_in,
        "keep": params.keep,
        "seed": params.seed,
        "alpha_mean": float(np.mean(fit.alphas[params.burn_in :])),
    }
    return ModelScore("bayes-explicit", params_out, ranking, error, train_s, time.monotonic() - t)


def score_popularity(split: Split, k: int) -> ModelScore:
    """Items by number of training users, each user's own training items removed."""
    t = time.monotonic()
    counts = split.train.groupBy(E.ITEM_ID).agg(F.countDistinct(E.USER_ID).alias("n"))
    ranked_items = [r[E.ITEM_ID] for r in counts.orderBy(F.desc("n"), E.ITEM_ID).collect()]
    seen: dict[str, set[str]] = {}
    for r in split.train.select(E.USER_ID, E.ITEM_ID).collect():
        seen.setdefault(r[E.USER_ID], set()).add(r[E.ITEM_ID])
    users = sorted(split.relevant)
    lists = []
    for u in users:
        own = seen.get(u, set())
        lists.append(list(itertools.islice((i for i in ranked_items if i not in own), k)))
    ranking = ranking_metrics(lists, [split.relevant[u] for u in users], k, split.item_count)
    return ModelScore("popularity", {}, ranking, None, 0.0, time.monotonic() - t)
