"""The search behind self-tuning retrains, on known objectives."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamrec.batch.search import candidates, successive_halving
from streamrec.batch.tuning import should_tune
from streamrec.schemas.config import BatchConfig

pytestmark = pytest.mark.unit

BASE = BatchConfig(
    max_iter=12,
    tune_candidates=9,
    tune_ranks=(8, 16, 32),
    tune_reg_params=(0.01, 0.1, 1.0),
    tune_alphas=(1.0, 10.0),
)


def _objective(setting: BatchConfig) -> float:
    # Best at rank 16, reg 0.1, alpha 10; more iterations help everyone equally.
    distance = abs(setting.rank - 16) / 8 + abs(setting.reg_param - 0.1) + abs(setting.alpha - 10)
    return setting.max_iter / 100 - distance


def test_candidates_start_from_the_warm_setting_and_are_distinct_and_seeded() -> None:
    start = replace(BASE, rank=32, reg_param=1.0, alpha=1.0)
    settings = candidates(BASE, start, seed=7)
    keys = [(s.rank, s.reg_param, s.alpha) for s in settings]
    assert keys[0] == (32, 1.0, 1.0) and len(keys) == len(set(keys)) == 9
    assert keys == [(s.rank, s.reg_param, s.alpha) for s in candidates(BASE, start, seed=7)]
    assert keys != [(s.rank, s.reg_param, s.alpha) for s in candidates(BASE, start, seed=8)]
    # A warm start outside the grid is still tried first.
    odd = candidates(BASE, replace(BASE, rank=5, reg_param=0.3, alpha=2.0), seed=7)
    assert (odd[0].rank, odd[0].reg_param, odd[0].alpha) == (5, 0.3, 2.0)


def test_successive_halving_finds_the_best_and_spends_iterations_on_the_survivors() -> None:
    grid = candidates(replace(BASE, tune_candidates=18), BASE, seed=1)
    best, trials = successive_halving(grid, _objective, max_iter=12)
    assert (best.rank, best.reg_param, best.alpha, best.max_iter) == (16, 0.1, 10.0, 12)
    rounds = {}
    for trial in trials:
        rounds.setdefault(trial.round, []).append(trial)
    # 18 at 3 iterations, the best 6 at 6, the best 2 at 12 (of which the better is kept, not
    # trained again): every setting tried once at first.
    assert [len(rounds[r]) for r in sorted(rounds)] == [18, 6, 2]
    assert [rounds[r][0].max_iter for r in sorted(rounds)] == [3, 6, 12]
    assert {(t.rank, t.reg_param, t.alpha) for t in rounds[1]} == {
        (s.rank, s.reg_param, s.alpha) for s in grid
    }


def test_a_single_candidate_is_not_trained_for_nothing() -> None:
    calls: list[int] = []

    def score(setting: BatchConfig) -> float:
        calls.append(setting.max_iter)
        return 0.5

    best, trials = successive_halving([BASE], score, max_iter=12)
    assert calls == [] and best.max_iter == 12 and trials == []
    two = candidates(replace(BASE, tune_candidates=2), BASE, seed=0)
    successive_halving(two, score, max_iter=12)
    assert calls == [3, 3]  # the better of two is left after one round


def test_ties_keep_the_warm_start() -> None:
    grid = candidates(BASE, replace(BASE, rank=32), seed=3)
    best, _ = successive_halving(grid, lambda setting: 1.0, max_iter=12)
    assert best.rank == 32 and (best.reg_param, best.alpha) == (grid[0].reg_param, grid[0].alpha)


def test_tuning_runs_every_n_runs_and_always_without_a_tuned_model() -> None:
    every_two = replace(BASE, tune_every=2)
    tuned = {"tuning": {"tuned_params": {"rank": 8}, "runs_since": 0}}
    kept_once = {"tuning": {"tuned_params": {"rank": 8}, "runs_since": 1}}
    assert should_tune(every_two, None)
    assert should_tune(every_two, {"params": {"rank": 8}})  # a model from before tuning
    assert not should_tune(every_two, tuned)
    assert should_tune(every_two, kept_once)
    assert should_tune(replace(BASE, tune_every=1), tuned)
    assert not should_tune(replace(BASE, tune_every=0), None)
