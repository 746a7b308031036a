"""Successive halving over ALS settings: pure, scored by whatever the caller passes in, so
the batch job's tuning (batch/tuning.py) and `streamrec evaluate` search the same way."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from streamrec.schemas.config import BatchConfig

# The first round's iterations, as a share of max_iter; each round doubles them.
FIRST_ROUND_SHARE = 0.25
KEPT_PER_ROUND = 1 / 3


@dataclass(frozen=True)
class Trial:
    """One candidate trained and scored in one round."""

    round: int
    rank: int
    reg_param: float
    alpha: float
    max_iter: int
    ndcg: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "rank": self.rank,
            "reg_param": self.reg_param,
            "alpha": self.alpha,
            "max_iter": self.max_iter,
            "ndcg": self.ndcg,
        }


def candidates(batch: BatchConfig, start: BatchConfig, seed: int) -> list[BatchConfig]:
    """``start`` first (the warm start: the current model's setting), then distinct settings
    of the grid in a seeded order, ``batch.tune_candidates`` in all."""
    grid = [
        (rank, reg, alpha)
        for rank in batch.tune_ranks
        for reg in batch.tune_reg_params
        for alpha in batch.tune_alphas
    ]
    random.Random(seed).shuffle(grid)
    first = (start.rank, start.reg_param, start.alpha)
    chosen = [first] + [setting for setting in grid if setting != first]
    return [
        replace(batch, rank=rank, reg_param=reg, alpha=alpha)
        for rank, reg, alpha in chosen[: batch.tune_candidates]
    ]


def successive_halving(
    settings: list[BatchConfig], score: Callable[[BatchConfig], float], max_iter: int
) -> tuple[BatchConfig, list[Trial]]:
    """The setting left when the others have been halved away, and every trial made on the
    way. ``score`` trains and scores one setting (higher is better); ties keep the earlier
    setting, so the warm start wins a tie."""
    alive = list(settings)
    iterations = max(1, math.ceil(max_iter * FIRST_ROUND_SHARE))
    trials: list[Trial] = []
    round_no = 1
    while len(alive) > 1:
        scores = [score(replace(setting, max_iter=iterations)) for setting in alive]
        trials += [
            Trial(round_no, s.rank, s.reg_param, s.alpha, iterations, value)
            for s, value in zip(alive, scores, strict=True)
        ]
        order = sorted(range(len(alive)), key=lambda i: (-scores[i], i))
        keep = 1 if iterations >= max_iter else max(1, math.ceil(len(alive) * KEPT_PER_ROUND))
        alive = [alive[i] for i in order[:keep]]
        iterations = min(max_iter, iterations * 2)
        round_no += 1
    # The one left is not scored again: the holdout and the final fit train it at max_iter.
    return replace(alive[0], max_iter=max_iter), trials


def choose_family(
    als: BatchConfig, als_ndcg: float | None, ease_trials: list[dict[str, Any]]
) -> BatchConfig:
    """``als`` (the ALS setting the search kept, scoring ``als_ndcg`` on validation), turned
    into the best EASE trial's setting when that scores higher. ALS's parameters stay in the
    setting either way: segments are assigned from its factors."""
    best = max(ease_trials, key=lambda trial: trial["ndcg"], default=None)
    if best is None or (als_ndcg is not None and best["ndcg"] <= als_ndcg):
        return replace(als, family="als")
    return replace(
        als, family="ease", ease_l2=float(best["ease_l2"]), ease_binary=bool(best["ease_binary"])
    )
