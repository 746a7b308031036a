"""The Gibbs sampler's conditionals (batch/bayes.py) against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.batch.bayes import (
    BayesParams,
    block_of,
    draw_block,
    draw_noise_precision,
    draw_prior,
    squared_error,
)


def test_block_of_groups_each_entitys_ratings_in_csr_order() -> None:
    block = block_of(
        np.array([7, 2, 7, 2, 5]), np.array([0, 1, 2, 3, 4]), np.array([0.5, -1.0, 1.5, 2.0, 0.0])
    )
    assert block.entities.tolist() == [2, 5, 7]
    assert block.ptr.tolist() == [0, 2, 3, 5]
    assert block.others.tolist() == [1, 3, 4, 0, 2]
    assert block.values.tolist() == [-1.0, 2.0, 0.0, 0.5, 1.5]


def test_squared_error_by_hand() -> None:
    block = block_of(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0]))
    own = np.array([[1.0, 0.0], [0.0, 2.0]])  # entity 0, entity 1
    other = np.array([[1.0, 1.0], [2.0, 1.0]])
    # fits: 0·0 -> 1, 0·1 -> 2, 1·1 -> 2; errors 0, 0, 1
    assert squared_error(block, own, other) == pytest.approx(1.0)


def test_draw_block_matches_the_gaussian_conditional() -> None:
    """Many copies of one entity: the draws' mean is P⁻¹b and their covariance P⁻¹."""
    rng = np.random.default_rng(1)
    d, rated, copies = 3, 12, 40_000
    other = rng.normal(size=(rated, d))
    ratings = rng.normal(size=rated)
    mu, precision, alpha = np.array([0.2, -0.1, 0.0]), np.diag([2.0, 1.0, 0.5]), 1.7
    block = block_of(
        np.repeat(np.arange(copies), rated),
        np.tile(np.arange(rated), copies),
        np.tile(ratings, copies),
    )
    draws = draw_block(block, other, mu, precision, alpha, rng)
    p = precision + alpha * other.T @ other
    mean = np.linalg.solve(p, alpha * other.T @ ratings + precision @ mu)
    cov = np.linalg.inv(p)
    assert draws.shape == (copies, d)
    se = np.sqrt(np.diag(cov) / copies)
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * se)
    assert np.allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())


def test_draw_prior_concentrates_on_the_vectors_mean_and_precision() -> None:
    rng = np.random.default_rng(2)
    true_mean = np.array([1.0, -2.0])
    true_cov = np.array([[0.5, 0.2], [0.2, 0.3]])
    vectors = rng.multivariate_normal(true_mean, true_cov, size=50_000)
    draws = [draw_prior(vectors, rng) for _ in range(20)]
    mu = np.mean([m for m, _ in draws], axis=0)
    precision = np.mean([p for _, p in draws], axis=0)
    assert np.allclose(mu, true_mean, atol=0.02)
    assert np.allclose(precision, np.linalg.inv(true_cov), rtol=0.05, atol=0.05)
    assert all(np.all(np.linalg.eigvalsh(p) > 0) for _, p in draws)


def test_draw_noise_precision_follows_the_fit() -> None:
    rng = np.random.default_rng(3)
    n, noise_sd = 100_000, 0.5
    sse = n * noise_sd**2
    draws = [draw_noise_precision(sse, n, rng) for _ in range(200)]
    # Gamma(1 + n/2, rate 1 + sse/2): mean close to 1/σ² = 4, spread about 4·sqrt(2/n)
    assert np.mean(draws) == pytest.approx(4.0, rel=0.01)
    assert np.std(draws) == pytest.approx(4.0 * np.sqrt(2 / n), rel=0.3)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="burn_in"):
        BayesParams(sweeps=10, burn_in=10)
    with pytest.raises(ValueError, match="positive"):
        BayesParams(rank=0)
