"""`streamrec evaluate`: train on one file, score on another, against a popularity baseline.

Ranking metrics are full-ranking: every user with a relevant test item gets a top-k over all
training items, their own training items removed (batch/metrics.py). Explicit mode also reports
RMSE on the test ratings that both sides know (cold users and items dropped, as Spark's
``coldStartStrategy='drop'`` does). Tuning searches rank, regParam and alpha on a validation
split carved from the training data only, never from the test file.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from streamrec.batch.bayes import BayesParams, fit_bayes
from streamrec.batch.biases import ITEM_BIAS, USER_BIAS, fit_biases
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.metrics import RankingMetrics, ranking_metrics, rmse
from streamrec.batch.rating_files import (
    DEFAULT_EVENT_TYPES,
    RATING,
    file_interactions,
    read_ratings,
)
from streamrec.batch.scoring import FEATURES, ITEMS, SEEN, dense_item_factors, rank_users
from streamrec.batch.search import candidates, choose_family, successive_halving
from streamrec.batch.train import train_als
from streamrec.model.ease import fit_ease, gram_matrix, history_vectors
from streamrec.model.scoring import top_n
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    train: str
    test: str
    fmt: str = "movielens"
    sep: str = ","
    header: bool = False
    mode: str = "implicit"
    estimator: str = "als"  # explicit mode: "als" (on bias residuals) or "bayes" (batch/bayes.py)
    relevant_min: float = 4.0
    k: int = 10
    # None: tune as the batch job does (when batch.tune_every > 0); True/False: always/never.
    tune: bool | None = None
    validation_share: float = 0.1
    bayes: BayesParams = field(default_factory=BayesParams)
    # What a row of the files is (implicit mode): None = the format's default event type.
    event_type: str | None = None

    @property
    def events_of(self) -> str:
        return self.event_type or DEFAULT_EVENT_TYPES.get(self.fmt, "play")

    def __post_init__(self) -> None:
        if self.estimator not in ("als", "bayes"):
            raise ValueError(f"evaluate: unknown estimator {self.estimator!r} (als or bayes)")
        if self.estimator == "bayes" and self.mode != "explicit":
            raise ValueError(
                "evaluate: --estimator bayes models explicit ratings; use it with --mode explicit"
            )
        if self.event_type is not None and self.mode != "implicit":
            raise ValueError(
                "evaluate: --event-type says how rows become implicit feedback; "
                "explicit mode fits the ratings themselves"
            )
        if self.event_type is not None and self.event_type not in E.event_contract().event_types:
            raise ValueError(
                f"evaluate: unknown event type {self.event_type!r}: use one of "
                f"{', '.join(E.event_contract().event_types)}"
            )
        if self.estimator == "bayes" and self.tune is True:
            raise ValueError(
                "evaluate: --estimator bayes has nothing to tune (its priors and "
                "noise are sampled); leave out --tune"
            )


@dataclass
class ModelScore:
    name: str
    params: dict[str, Any]
    ranking: RankingMetrics
    rmse: float | None = None
    train_s: float = 0.0
    score_s: float = 0.0


@dataclass
class EvalReport:
    options: dict[str, Any]
    train_rows: int
    test_rows: int
    catalogue: int
    models: list[ModelScore] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    # The trials of a peer tuned by the same search (bench/peers.py), when one was scored.
    peer_tuning: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "catalogue": self.catalogue,
            "models": [
                {
                    "name": m.name,
                    "params": m.params,
                    **m.ranking.as_dict(),
                    "rmse": m.rmse,
                    "train_s": round(m.train_s, 3),
                    "score_s": round(m.score_s, 3),
                }
                for m in self.models
            ],
            "tuning": self.tuning,
            "peer_tuning": self.peer_tuning,
        }

    def table(self) -> str:
        k = self.models[0].ranking.k if self.models else 0
        head = (
            f"{'model':<12} {'P@' + str(k):>8} {'R@' + str(k):>8} {'NDCG@' + str(k):>8} "
            f"{'MAP@' + str(k):>8} {'cover':>7} {'RMSE':>7} {'users':>6} {'train s':>8}"
        )
        lines = [head, "-" * len(head)]
        for m in self.models:
            r = m.ranking
            rm = f"{m.rmse:.4f}" if m.rmse is not None else "-"
            lines.append(
                f"{m.name:<12} {r.precision:8.4f} {r.recall:8.4f} {r.ndcg:8.4f} "
                f"{r.map:8.4f} {r.coverage:7.3f} {rm:>7} {r.users:>6} {m.train_s:8.1f}"
            )
        return "\n".join(lines)


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


def training_input(
    train_raw: DataFrame, opts: EvalOptions, feedback: FeedbackConfig, implicit: bool
) -> DataFrame:
    """What ALS trains on from a file's rows: in implicit mode the confidences the batch job
    would compute from the same rows as events; in explicit mode the ratings themselves."""
    return file_interactions(train_raw, opts.events_of, feedback) if implicit else train_raw


def validation_split(train_raw: DataFrame, share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Each user's newest ``share`` of training rows (at least one, for users with two or more;
    a seeded random order where rows have no time) as validation, the rest to fit on. The test
    file is never looked at."""
    by_user = Window.partitionBy(E.USER_ID)
    newest_first = by_user.orderBy(F.desc_nulls_last(E.EVENT_TIME), F.rand(seed))
    ranked = train_raw.withColumn("_n", F.count(F.lit(1)).over(by_user)).withColumn(
        "_pos", F.row_number().over(newest_first)
    )
    held = (F.col("_n") >= 2) & (
        F.col("_pos") <= F.greatest(F.lit(1), F.floor(F.col("_n") * share))
    )
    ranked = ranked.withColumn("_valid", held).cache()
    fit = ranked.where(~F.col("_valid")).drop("_n", "_pos", "_valid")
    valid = ranked.where(F.col("_valid")).drop("_n", "_pos", "_valid")
    return fit, valid


def tune(
    train_raw: DataFrame,
    opts: EvalOptions,
    base: BatchConfig,
    feedback: FeedbackConfig,
    parallelism: int,
) -> tuple[BatchConfig, list[dict[str, Any]]]:
    """The batch job's own search (batch/tuning.py: successive halving over the config's
    ``batch.tune_*`` space, starting from ``base``), scored on each user's newest training
    rows; relevance there is judged on the rows' own numbers, as in the test file."""
    fit, valid = validation_split(train_raw, opts.validation_share, base.seed)
    fit_input = training_input(fit, opts, feedback, base.implicit)
    inner = make_split(fit_input, valid, opts.relevant_min, known_users_only=True)
    space = base if base.implicit else replace(base, tune_alphas=(base.alpha,))
    scores: dict[tuple[int, float, float, int], ModelScore] = {}

    def objective(setting: BatchConfig) -> float:
        score = score_als(inner, setting, opts.k, parallelism)
        scores[(setting.rank, setting.reg_param, setting.alpha, setting.max_iter)] = score
        log.info(
            "tune: rank %d regParam %g alpha %g, %d iterations: ndcg@%d %.4f rmse %s",
            setting.rank,
            setting.reg_param,
            setting.alpha,
            setting.max_iter,
            opts.k,
            score.ranking.ndcg,
            score.rmse,
        )
        # explicit mode: lowest RMSE wins; implicit: highest NDCG@k
        return -score.rmse if score.rmse is not None else score.ranking.ndcg

    settings = candidates(space, base, base.seed)
    chosen, trials = successive_halving(settings, objective, base.max_iter)
    trace = []
    for trial in trials:
        score = scores[(trial.rank, trial.reg_param, trial.alpha, trial.max_iter)]
        trace.append(
            {"family": "als", **trial.as_dict(), "ndcg": score.ranking.ndcg, "rmse": score.rmse}
        )
    if not base.implicit or "ease" not in base.tune_families:
        return replace(chosen, family="als"), trace
    # The batch job's family choice: EASE ranks the lists when it beats ALS on validation.
    last_round = max((t.round for t in trials), default=0)
    als_ndcg = max((t.ndcg for t in trials if t.round == last_round), default=None)
    ease_trials = search_ease(inner, base, opts.k)
    if ease_trials and als_ndcg is None:
        als_ndcg = objective(chosen)
    return choose_family(chosen, als_ndcg, ease_trials), trace + ease_trials


def evaluate(
    spark: SparkSession,
    opts: EvalOptions,
    base: BatchConfig,
    parallelism: int,
    feedback: FeedbackConfig | None = None,
) -> EvalReport:
    """Train on ``opts.train`` and score on ``opts.test``. In implicit mode the training rows
    become events and then confidences through ``feedback``, the batch job's transform (the
    default config's when None), so the figures are about what production trains."""
    feedback = feedback or FeedbackConfig()
    cfg = replace(base, implicit=opts.mode == "implicit")
    train_raw = read_ratings(spark, opts.train, opts.fmt, opts.sep, opts.header).cache()
    test_raw = read_ratings(spark, opts.test, opts.fmt, opts.sep, opts.header)
    train = training_input(train_raw, opts, feedback, cfg.implicit)
    split = make_split(train, test_raw, opts.relevant_min)
    options = {
        **asdict(opts),
        "event_type": opts.events_of if cfg.implicit else None,
        "feedback": asdict(feedback) if cfg.implicit else None,
    }
    report = EvalReport(options, split.train.count(), test_raw.count(), split.item_count)
    tuning = opts.tune if opts.tune is not None else base.tune_every > 0
    if tuning and opts.estimator == "als":
        cfg, report.tuning = tune(train_raw, opts, cfg, feedback, parallelism)
    if opts.estimator == "bayes":
        report.models.append(score_bayes(split, opts.bayes, opts.k, parallelism))
    else:
        report.models.append(score_model(split, cfg, opts.k, parallelism))
    report.models.append(score_popularity(split, opts.k))
    return report


def write_json(report: EvalReport, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report.to_json(), indent=2))
