"""Self-tuning retrains: the batch job chooses rank, regParam and alpha on its own data.

The choice is made on a validation split carved from the training events by time: of the
events before the promotion holdout (all events when the holdout is off), the newest
``batch.holdout_share`` (0.1 when off) are the validation set and the rest train. The holdout
the job reports is never looked at, so its figures stay an honest test of the choice.

The search is successive halving: ``tune_candidates`` settings (the current model's first, then
a seeded sample of the grid) train at a quarter of ``max_iter``; the best third go on with twice
the iterations, and so on until one is left (at ``max_iter``, only the best one is kept).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from pyspark.sql import DataFrame

from streamrec.batch.evaluate import score_als, score_popularity
from streamrec.batch.holdout import before, time_cut, time_split
from streamrec.batch.search import Trial, candidates, successive_halving
from streamrec.schemas.config import BatchConfig, Config

log = logging.getLogger(__name__)

# The validation share when the promotion holdout is off.
DEFAULT_VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class Tuning:
    """The outcome of a run's tuning decision, as meta.json keeps it."""

    chosen: BatchConfig
    record: dict[str, Any]


def should_tune(batch: BatchConfig, current_meta: dict[str, Any] | None) -> bool:
    """Tune on every ``tune_every``-th run; always when there is no tuned model yet."""
    if batch.tune_every <= 0:
        return False
    tuning = (current_meta or {}).get("tuning")
    if not tuning or not tuning.get("tuned_params"):
        return True
    return int(tuning.get("runs_since", 0)) + 1 >= batch.tune_every


def _params_of(batch: BatchConfig, meta: dict[str, Any] | None) -> BatchConfig:
    """``batch`` with the setting a model was trained with, when it says."""
    params = (meta or {}).get("params") or {}
    try:
        return replace(
            batch,
            rank=int(params["rank"]),
            reg_param=float(params["reg_param"]),
            alpha=float(params["alpha"]),
        )
    except (KeyError, TypeError, ValueError):
        return batch


def choose_parameters(
    events: DataFrame, cfg: Config, current_meta: dict[str, Any] | None
) -> Tuning:
    """The setting this run trains with, and the record of how it was chosen."""
    batch = cfg.batch
    if batch.tune_every <= 0:
        return Tuning(batch, {"tuned": False, "reason": "tuning off (batch.tune_every = 0)"})
    start = _params_of(batch, current_meta if (current_meta or {}).get("tuning") else None)
    if not should_tune(batch, current_meta):
        runs = int((current_meta or {}).get("tuning", {}).get("runs_since", 0)) + 1
        return Tuning(
            start,
            {
                "tuned": False,
                "reason": f"the current model's setting, tuned {runs} run(s) ago",
                "tuned_params": (current_meta or {}).get("tuning", {}).get("tuned_params"),
                "runs_since": runs,
            },
        )
    started = time.monotonic()
    outcome = _search(events, cfg, start)
    seconds = time.monotonic() - started
    if outcome is None:
        return Tuning(start, {"tuned": False, "reason": "too few events to carve a validation"})
    chosen, trials, validation = outcome
    tuned = {"rank": chosen.rank, "reg_param": chosen.reg_param, "alpha": chosen.alpha}
    best = validation["best_ndcg"]
    log.info(
        "tune: chose rank %d regParam %g alpha %g (validation ndcg@%d %s, popularity %.4f, "
        "%d users; %d trials in %.1f s)",
        chosen.rank,
        chosen.reg_param,
        chosen.alpha,
        batch.eval_k,
        "-" if best is None else f"{best:.4f}",
        validation["popularity_ndcg"],
        validation["users"],
        len(trials),
        seconds,
    )
    record = {
        "tuned": True,
        "tuned_params": tuned,
        "runs_since": 0,
        "seconds": round(seconds, 3),
        "validation": validation,
        "trials": [trial.as_dict() for trial in trials],
    }
    return Tuning(chosen, record)


def _search(
    events: DataFrame, cfg: Config, start: BatchConfig
) -> tuple[BatchConfig, list[Trial], dict[str, Any]] | None:
    batch = cfg.batch
    # Never the promotion holdout: only the events before it.
    pool, share = events, DEFAULT_VALIDATION_SHARE
    if batch.holdout_share > 0:
        pool, share = before(events, time_cut(events, batch.holdout_share)), batch.holdout_share
    cut = time_cut(pool, share)
    split = time_split(pool, cfg.feedback, cut, "tune")
    if split is None:
        return None
    k, parallelism = batch.eval_k, cfg.spark.shuffle_partitions

    def score(setting: BatchConfig) -> float:
        ndcg = score_als(split, setting, k, parallelism).ranking.ndcg
        log.info(
            "tune: rank %d regParam %g alpha %g, %d iterations: ndcg@%d %.4f",
            setting.rank,
            setting.reg_param,
            setting.alpha,
            setting.max_iter,
            k,
            ndcg,
        )
        return ndcg

    settings = candidates(batch, start, batch.seed)
    chosen, trials = successive_halving(settings, score, batch.max_iter)
    last_round = max((t.round for t in trials), default=0)
    best = max((t.ndcg for t in trials if t.round == last_round), default=None)
    validation = {
        "split_ms": cut,
        "share": share,
        "users": len(split.relevant),
        "best_ndcg": best,
        "popularity_ndcg": score_popularity(split, k).ranking.ndcg,
    }
    return chosen, trials, validation
