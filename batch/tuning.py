"""Self-tuning retrains: the batch job chooses the model family (ALS or EASE) and its
parameters on its own data.

The choice is made on a validation split carved from the training events by time: of the
events before the promotion holdout (all events when the holdout is off), the newest
``batch.holdout_share`` (0.1 when off) are the validation set and the rest train. The holdout
the job reports is never looked at, so its figures stay an honest test of the choice.

The search is successive halving: ``tune_candidates`` settings (the current model's first, then
a seeded sample of the grid) train at a quarter of ``max_iter``; the best third go on with twice
the iterations, and so on until one is left (at ``max_iter``, only the best one is kept).
EASE has a closed form, so each of its settings (``tune_ease_l2s``, feedback binarised or not)
is fitted once; it replaces ALS as what ranks the lists when it scores higher on validation.
ALS's chosen setting is kept either way (segments use its factors).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from streamrec.batch.holdout import before, time_cut, time_split
from streamrec.batch.scores import score_als, score_popularity, search_ease
from streamrec.batch.search import Trial, candidates, choose_family, successive_halving
from streamrec.errors import InputError
from streamrec.model.store import trained_setting, training_record
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


def choose_parameters(
    events: DataFrame, cfg: Config, current_meta: dict[str, Any] | None
) -> Tuning:
    """The setting this run trains with, and the record of how it was chosen."""
    batch = cfg.batch
    if batch.tune_every <= 0:
        return Tuning(batch, {"tuned": False, "reason": "tuning off (batch.tune_every = 0)"})
    start = trained_setting(batch, current_meta if (current_meta or {}).get("tuning") else None)
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
    chosen, trials, ease_trials, validation = outcome
    tuned = training_record(chosen, cfg.feedback)["params"]
    best = validation["best_ndcg"]
    log.info(
        "tune: chose %s, ALS rank %d regParam %g alpha %g (validation ndcg@%d %s, popularity "
        "%.4f, %d users; %d trials in %.1f s)",
        describe_family(chosen),
        chosen.rank,
        chosen.reg_param,
        chosen.alpha,
        batch.eval_k,
        "-" if best is None else f"{best:.4f}",
        validation["popularity_ndcg"],
        validation["users"],
        len(trials) + len(ease_trials),
        seconds,
    )
    record = {
        "tuned": True,
        "tuned_params": tuned,
        "runs_since": 0,
        "seconds": round(seconds, 3),
        "validation": validation,
        "trials": [trial.as_dict() for trial in trials],
        "ease_trials": ease_trials,
    }
    return Tuning(chosen, record)


def describe_family(setting: BatchConfig) -> str:
    if setting.family == "ease":
        how = "binarised" if setting.ease_binary else "weighted"
        return f"EASE l2 {setting.ease_l2:g} ({how} feedback)"
    return "ALS"


def _search(
    events: DataFrame, cfg: Config, start: BatchConfig
) -> tuple[BatchConfig, list[Trial], list[dict[str, Any]], dict[str, Any]] | None:
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
        try:
            ndcg = score_als(split, setting, k, parallelism).ranking.ndcg
        except InputError as exc:  # this setting cannot be trained on the split: it loses
            log.warning(
                "tune: rank %d regParam %g alpha %g skipped: %s",
                setting.rank,
                setting.reg_param,
                setting.alpha,
                exc,
            )
            return float("-inf")
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

    als, als_ndcg = start, None
    trials: list[Trial] = []
    if "als" in batch.tune_families:
        als, trials = successive_halving(
            candidates(batch, start, batch.seed), score, batch.max_iter
        )
        last_round = max((t.round for t in trials), default=0)
        als_ndcg = max((t.ndcg for t in trials if t.round == last_round), default=None)
    ease_trials = search_ease(split, batch, k) if "ease" in batch.tune_families else []
    if ease_trials and "als" in batch.tune_families and als_ndcg is None:
        als_ndcg = score(als)  # one ALS candidate: no halving round scored it
    chosen = choose_family(als, als_ndcg, ease_trials)
    validation = {
        "split_ms": cut,
        "share": share,
        "users": len(split.relevant),
        "best_ndcg": max([als_ndcg or 0.0] + [t["ndcg"] for t in ease_trials])
        if (als_ndcg is not None or ease_trials)
        else None,
        "als_ndcg": als_ndcg,
        "popularity_ndcg": score_popularity(split, k).ranking.ndcg,
    }
    return chosen, trials, ease_trials, validation
