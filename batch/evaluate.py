"""`streamrec evaluate`: train on one file, score on another, against a popularity baseline.

Ranking metrics are full-ranking: every user with a relevant test item gets a top-k over all
training items, their own training items removed (batch/metrics.py). Explicit mode also reports
RMSE on the test ratings that both sides know (cold users and items dropped, as Spark's
``coldStartStrategy='drop'`` does). Tuning searches rank, regParam and alpha on a validation
split carved from the training data only, never from the test file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from streamrec.batch.bayes import BayesParams
from streamrec.batch.rating_files import (
    DEFAULT_EVENT_TYPES,
    file_interactions,
    read_ratings,
)
from streamrec.batch.scores import (
    ModelScore,
    make_split,
    score_als,
    score_bayes,
    score_model,
    score_popularity,
    search_ease,
)
from streamrec.batch.search import candidates, choose_family, successive_halving
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
