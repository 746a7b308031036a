"""Bayesian ALS for explicit ratings: a Gibbs sampler for Gaussian matrix factorization.

This is BPMF (Salakhutdinov & Mnih, "Bayesian Probabilistic Matrix Factorization using MCMC",
2008), laid out like Spark's ALS: each sweep treats one side's blocks on the executors against
the other side's factors, broadcast. It differs from an ALS sweep in three ways:

- each user's vector is *drawn* from its Gaussian conditional, N(P⁻¹b, P⁻¹) with
  P = Λ + α·ΣYᵀY and b = α·ΣYr + Λμ, instead of being set to the mean P⁻¹b;
- the prior of the user vectors (mean μ, precision Λ) is drawn from its Normal-Wishart
  conditional, and the noise precision α from its Gamma conditional, so there is no
  regularization or confidence to tune;
- predictions average x_u·y_i over every sweep after the burn-in.

The average over the posterior is what beats a single ALS fit: on MovieLens 100K ua.test it
takes RMSE from 0.935 (ALS on bias residuals) to about 0.914 at rank 30 (README, bench quality).
Lists need all items scored, so the model keeps ``keep`` evenly spaced samples and ranks with
their concatenation: [x¹…xˢ]·[y¹…yˢ]/s is the same average.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from pyspark import RDD, SparkContext
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

# Hyperpriors, as in the paper: μ₀ = 0, β₀ = 2, W₀ = I, ν₀ = rank; Gamma(1, 1) on α.
BETA0 = 2.0
NOISE_SHAPE0 = 1.0
NOISE_RATE0 = 1.0
USERS, ITEMS = 0, 1  # side numbers in the random streams


@dataclass(frozen=True)
class BayesParams:
    rank: int = 30
    sweeps: int = 400
    burn_in: int = 60
    keep: int = 20  # samples kept for ranking all items (RMSE averages every sweep)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.rank < 1 or self.sweeps < 1 or self.keep < 1:
            raise ValueError("bayes: rank, sweeps and keep must be positive")
        if not 0 <= self.burn_in < self.sweeps:
            raise ValueError(f"bayes: burn_in must be in [0, sweeps), got {self.burn_in}")


@dataclass(frozen=True)
class Block:
    """One partition's entities with their ratings in CSR form: entity ``entities[k]`` rated
    ``others[ptr[k]:ptr[k+1]]`` with centred ratings ``values[ptr[k]:ptr[k+1]]``."""

    entities: np.ndarray
    ptr: np.ndarray
    others: np.ndarray
    values: np.ndarray


def block_of(entity: np.ndarray, other: np.ndarray, value: np.ndarray) -> Block:
    order = np.argsort(entity, kind="stable")
    entity, other, value = entity[order], other[order], value[order]
    entities, counts = np.unique(entity, return_counts=True)
    ptr = np.zeros(len(entities) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return Block(entities, ptr, other.astype(np.int64), value.astype(np.float64))


def draw_prior(factors: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Λ) from their Normal-Wishart conditional given one side's vectors."""
    n, d = factors.shape
    mean = factors.mean(axis=0)
    scatter = np.cov(factors.T, bias=True).reshape(d, d) * n
    w_inv = np.eye(d) + scatter + BETA0 * n / (BETA0 + n) * np.outer(mean, mean)
    w = np.linalg.inv(w_inv)
    chol = np.linalg.cholesky((w + w.T) / 2)
    # Bartlett: Λ = (LA)(LA)ᵀ with A lower triangular, chi on the diagonal, normals below.
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(d + n - np.arange(d)))
    la = chol @ a
    precision = la @ la.T
    mu_cov = np.linalg.inv((BETA0 + n) * precision)
    mu = rng.multivariate_normal(n * mean / (BETA0 + n), (mu_cov + mu_cov.T) / 2)
    return mu, precision


def draw_noise_precision(sse: float, n_ratings: int, rng: np.random.Generator) -> float:
    """α from its Gamma conditional given the squared error of the current fit."""
    return float(rng.gamma(NOISE_SHAPE0 + n_ratings / 2, 1.0 / (NOISE_RATE0 + sse / 2)))


def draw_block(
    block: Block,
    other: np.ndarray,
    mu: np.ndarray,
    precision: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One vector per entity of ``block``, drawn from N(P⁻¹b, P⁻¹)."""
    n, d = len(block.entities), other.shape[1]
    rated = other[block.others]
    gram = np.empty((n, d, d))
    for k in range(n):  # one small BLAS product per entity beats a batched einsum here
        rows = rated[block.ptr[k] : block.ptr[k + 1]]
        gram[k] = rows.T @ rows
    rhs = np.add.reduceat(rated * block.values[:, None], block.ptr[:-1], axis=0)
    p = precision[None] + alpha * gram
    b = alpha * rhs + (precision @ mu)[None]
    chol = np.linalg.cholesky(p)
    mean = np.linalg.solve(p, b[..., None])[..., 0]
    # x = mean + L⁻ᵀz has covariance (LLᵀ)⁻¹ = P⁻¹
    z = rng.standard_normal((n, d))
    return mean + np.linalg.solve(np.swapaxes(chol, 1, 2), z[..., None])[..., 0]


def squared_error(block: Block, own: np.ndarray, other: np.ndarray) -> float:
    """Σ(r - x·y)² over the block's ratings, ``own`` holding the block's vectors in order."""
    owner = np.repeat(np.arange(len(block.entities)), np.diff(block.ptr))
    fitted = np.einsum("ij,ij->i", own[owner], other[block.others])
    return float(((block.values - fitted) ** 2).sum())


@dataclass
class BayesFit:
    mean: float  # a rating is predicted as mean + users[u]·items[i]
    users: np.ndarray  # (n_users, rank * kept) concatenated samples, scaled by 1/kept
    items: np.ndarray  # (n_items, rank * kept)
    predictions: np.ndarray | None  # posterior mean for the pairs asked, clipped to the range
    alphas: list[float] = field(default_factory=list)


def _blocks(
    ratings: DataFrame, key: str, other: str, rating: str, mean: float, partitions: int
) -> RDD:
    """One Block per partition, each entity's ratings all in one partition, cached."""

    def build(index: int, rows: Iterable[Row]) -> Iterator[tuple[int, Block]]:
        data = np.array([(r[0], r[1], r[2]) for r in rows], dtype=np.float64).reshape(-1, 3)
        if len(data):
            yield (
                index,
                block_of(
                    data[:, 0].astype(np.int64), data[:, 1].astype(np.int64), data[:, 2] - mean
                ),
            )

    picked = ratings.select(F.col(key), F.col(other), F.col(rating).cast("double"))
    return picked.repartition(partitions, key).rdd.mapPartitionsWithIndex(build).cache()


def fit_bayes(
    ratings: DataFrame,
    user: str,
    item: str,
    rating: str,
    params: BayesParams,
    predict: tuple[np.ndarray, np.ndarray] | None = None,
    partitions: int = 2,
) -> BayesFit:
    """Sample the posterior of r ≈ mean + x_u·y_i; ``user``/``item`` are dense indexes
    (0..n-1) and ``predict`` optional (user, item) index arrays to average predictions for."""
    started = time.monotonic()
    sc = ratings.sparkSession.sparkContext
    stats = ratings.agg(
        F.avg(rating), F.min(rating), F.max(rating), F.count("*"), F.max(user), F.max(item)
    ).first()
    assert stats is not None
    mean, low, high, n_ratings = float(stats[0]), float(stats[1]), float(stats[2]), int(stats[3])
    n_users, n_items = int(stats[4]) + 1, int(stats[5]) + 1
    by_user = _blocks(ratings, user, item, rating, mean, partitions)
    by_item = _blocks(ratings, item, user, rating, mean, partitions)
    d, seed = params.rank, params.seed
    init = np.random.default_rng([seed, 2**20])
    users = init.normal(0.0, 0.1, (n_users, d))
    items = init.normal(0.0, 0.1, (n_items, d))
    alpha = 2.0
    after = params.sweeps - params.burn_in
    kept_at = set(params.burn_in + np.linspace(0, after - 1, min(params.keep, after)).astype(int))
    kept_users, kept_items, alphas = [], [], []
    total = None if predict is None else np.zeros(len(predict[0]))
    for sweep in range(params.sweeps):
        driver = np.random.default_rng([seed, sweep, 2**20])
        users, sse = _sweep(
            sc, by_user, items, draw_prior(users, driver), alpha, n_users, (seed, sweep, USERS)
        )
        alpha = draw_noise_precision(sse, n_ratings, driver)
        alphas.append(alpha)
        items, _ = _sweep(
            sc, by_item, users, draw_prior(items, driver), alpha, n_items, (seed, sweep, ITEMS)
        )
        if sweep >= params.burn_in:
            if total is not None and predict is not None:
                total += np.clip(
                    np.einsum("ij,ij->i", users[predict[0]], items[predict[1]]) + mean, low, high
                )
            if sweep in kept_at:
                kept_users.append(users)
                kept_items.append(items)
        if sweep % 50 == 0 or sweep == params.sweeps - 1:
            log.info(
                "bayes: sweep %d/%d, alpha %.3f, train rmse %.4f, %.0f s",
                sweep + 1,
                params.sweeps,
                alpha,
                np.sqrt(sse / n_ratings),
                time.monotonic() - started,
            )
    by_user.unpersist()
    by_item.unpersist()
    s = len(kept_users)
    return BayesFit(
        mean=mean,
        users=np.hstack(kept_users) / s,
        items=np.hstack(kept_items),
        predictions=None if total is None else total / after,
        alphas=alphas,
    )


def _sweep(
    sc: SparkContext,
    blocks: RDD,
    other: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    alpha: float,
    n: int,
    stream: tuple[int, int, int],
) -> tuple[np.ndarray, float]:
    """Draw every vector of one side on the executors; returns them and Σ(r - x·y)²."""
    shared = sc.broadcast((other, prior[0], prior[1], alpha))

    def draw(item: tuple[int, Block]) -> tuple[np.ndarray, np.ndarray, float]:
        index, block = item
        y, mu, precision, a = shared.value
        rng = np.random.default_rng([*stream, index])
        own = draw_block(block, y, mu, precision, a, rng)
        return block.entities, own, squared_error(block, own, y)

    drawn = blocks.map(draw).collect()
    shared.destroy()
    factors = np.zeros((n, other.shape[1]))
    sse = 0.0
    for entities, own, error in drawn:
        factors[entities] = own
        sse += error
    return factors, sse
