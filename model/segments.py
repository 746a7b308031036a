"""User segments, shared by both jobs: the one feature function and a numpy segment assigner.

``user_features`` turns one user's events (and ALS factor) into the feature vector the segment
pipeline was trained on. The batch job applies it to every user on the executors
(``groupBy().applyInPandas``); the streaming job applies it to one user's current state. One
function, so both give the same vector for the same user.

``SegmentAssigner`` holds plain arrays exported from the trained Spark ``PipelineModel``
(StandardScaler -> PCA -> KMeans or GaussianMixture) and assigns segments with numpy alone,
exactly as ``PipelineModel.transform`` would, without a SparkSession. Its bytes are a small
``.npz``; where they are stored is the caller's business.

Features, in ``FeatureSpec.names()`` order:

    activity        log1p(number of events)
    recency         log1p(days from the user's last event to the reference time)
    type:<t>        share of the user's events of type t, for each type of the spec
    category:<c>    share of the user's events on items of category c (an item of n
                    categories gives 1/n to each)
    factor:<i>      the user's ALS factor, scaled to unit length (zeros when unknown)
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
import pandas as pd

from streamrec.schemas import events as E
from streamrec.schemas.config import SegmentsConfig

DAY_MS = 86_400_000

KMEANS = "kmeans"
GMM = "gmm"
METHODS = (KMEANS, GMM)

# Spark's MLUtils.EPSILON (machine epsilon): the GMM adds it to every component's density and
# uses it to decide which covariance eigenvalues count as zero.
_SPARK_EPSILON = float(np.finfo(np.float64).eps)
_FORMAT = "streamrec.segments/1"


@dataclass(frozen=True)
class FeatureSpec:
    """Which behaviour features a user's vector holds, and in which order."""

    activity: bool = True
    recency: bool = True
    event_types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    factor_dim: int = 0
    # The factor's direction is the user's taste; its length mostly restates activity, which is
    # a feature of its own, and would make KMeans split heavy from light users of one taste.
    normalize_factor: bool = True

    def names(self) -> tuple[str, ...]:
        return (
            *(("activity",) if self.activity else ()),
            *(("recency",) if self.recency else ()),
            *(f"type:{t}" for t in self.event_types),
            *(f"category:{c}" for c in self.categories),
            *(f"factor:{i}" for i in range(self.factor_dim)),
        )

    @property
    def size(self) -> int:
        return len(self.names())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(
            activity=bool(data["activity"]),
            recency=bool(data["recency"]),
            event_types=tuple(data["event_types"]),
            categories=tuple(data["categories"]),
            factor_dim=int(data["factor_dim"]),
            normalize_factor=bool(data["normalize_factor"]),
        )


def feature_weights(names: tuple[str, ...], behaviour_weight: float) -> np.ndarray:
    """The weight of every standardised feature: 1 for the ALS factor's dimensions,
    ``behaviour_weight`` for the behaviour features (see segments.behaviour_weight)."""
    return np.array([1.0 if n.startswith("factor:") else behaviour_weight for n in names])


def feature_spec(
    cfg: SegmentsConfig,
    factor_dim: int,
    event_types: tuple[str, ...] | None = None,
    categories: tuple[str, ...] = (),
) -> FeatureSpec:
    """The spec the config asks for: ``event_types`` defaults to the event contract's types;
    ``categories`` are the category names of the item metadata, if any."""
    if event_types is None:
        event_types = E.event_contract().event_types
    return FeatureSpec(
        activity=cfg.activity,
        recency=cfg.recency,
        event_types=event_types if cfg.event_mix else (),
        categories=categories if cfg.categories else (),
        factor_dim=factor_dim if cfg.factors else 0,
        normalize_factor=cfg.normalize_factors,
    )


@dataclass(frozen=True)
class BehaviourSummary:
    """What the behaviour features are made of; the streaming job keeps it per user
    (model/user_state.py), the batch job computes it from all of a user's events."""

    events: int
    last_ms: int | None  # newest event time; None when no event has one
    type_counts: dict[str, int]


def summarize(events: pd.DataFrame) -> BehaviourSummary:
    times = events[E.EVENT_TIME].dropna()
    counts = events[E.EVENT_TYPE].value_counts()
    return BehaviourSummary(
        events=len(events),
        last_ms=None if times.empty else int(times.max()),
        type_counts={str(t): int(c) for t, c in counts.items()},
    )


def user_features(
    events: pd.DataFrame,
    factor: np.ndarray | None,
    reference_ms: int,
    spec: FeatureSpec,
    item_categories: dict[str, tuple[str, ...]] | None = None,
) -> np.ndarray:
    """The feature vector of one user from their events (columns event_type, item_id,
    event_time, value) and ALS factor (None when the model does not know the user)."""
    if spec.categories and item_categories is None:
        raise ValueError("the spec has category features but no item -> categories mapping")
    # A fixed order makes every floating-point sum the same whatever order the rows came in.
    events = events.sort_values([E.EVENT_TIME, E.ITEM_ID, E.EVENT_TYPE], kind="stable")
    categories = None
    if spec.categories:
        assert item_categories is not None
        categories = _category_shares(events[E.ITEM_ID], item_categories, spec.categories)
    return summary_features(summarize(events), factor, reference_ms, spec, categories)


def summary_features(
    summary: BehaviourSummary,
    factor: np.ndarray | None,
    reference_ms: int,
    spec: FeatureSpec,
    category_shares: np.ndarray | None = None,
) -> np.ndarray:
    """The feature vector from a behaviour summary: what ``user_features`` computes from the
    events, and the streaming job from a user's state."""
    n = summary.events
    parts: list[np.ndarray] = []
    if spec.activity:
        parts.append(np.array([np.log1p(n)]))
    if spec.recency:
        parts.append(np.array([_recency(summary.last_ms, reference_ms)]))
    if spec.event_types:
        shares = [summary.type_counts.get(t, 0) / n if n else 0.0 for t in spec.event_types]
        parts.append(np.array(shares, dtype=np.float64))
    if spec.categories:
        if category_shares is None:
            raise ValueError("the spec has category features but no category shares were given")
        parts.append(category_shares)
    if spec.factor_dim:
        parts.append(_factor_part(factor, spec))
    return np.concatenate(parts) if parts else np.zeros(0)


def _recency(last_ms: int | None, reference_ms: int) -> float:
    if last_ms is None:
        return 0.0  # no event time (a ratings file without timestamps): no recency signal
    days = max(reference_ms - float(last_ms), 0.0) / DAY_MS
    return float(np.log1p(days))


def _category_shares(
    items: pd.Series, item_categories: dict[str, tuple[str, ...]], names: tuple[str, ...]
) -> np.ndarray:
    position = {name: i for i, name in enumerate(names)}
    totals = np.zeros(len(names))
    for item in items:
        cats = [position[c] for c in item_categories.get(item, ()) if c in position]
        for c in cats:
            totals[c] += 1.0 / len(cats)
    return totals / len(items) if len(items) else totals


def _factor_part(factor: np.ndarray | None, spec: FeatureSpec) -> np.ndarray:
    if factor is None:
        return np.zeros(spec.factor_dim)
    vec = np.asarray(factor, dtype=np.float64)
    if vec.shape != (spec.factor_dim,):
        raise ValueError(f"factor has shape {vec.shape}, the spec expects ({spec.factor_dim},)")
    norm = float(np.linalg.norm(vec))
    if spec.normalize_factor:
        return vec / norm if norm > 0 else vec
    return vec


@dataclass(frozen=True, eq=False)  # arrays: no element-wise __eq__
class SegmentAssigner:
    """A trained segment pipeline as plain arrays: scale, project, then nearest center (KMeans)
    or most probable component (Gaussian mixture)."""

    method: str
    feature_names: tuple[str, ...]
    scaler_mean: np.ndarray
    scaler_std: np.ndarray
    with_mean: bool
    with_std: bool
    feature_weights: np.ndarray  # applied after scaling
    pca: np.ndarray  # (features x components)
    centers: np.ndarray  # KMeans: (k x components); GMM: the component means
    weights: np.ndarray | None = None  # GMM only: (k,)
    covariances: np.ndarray | None = None  # GMM only: (k x components x components)
    # How the features were built, for the streaming job to build the same (None: unknown).
    spec: FeatureSpec | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown segment method {self.method!r}: use one of {METHODS}")
        if self.method == GMM and (self.weights is None or self.covariances is None):
            raise ValueError("a Gaussian mixture assigner needs weights and covariances")
        if self.spec is not None and self.spec.names() != tuple(self.feature_names):
            raise ValueError("the feature spec does not give the assigner's feature names")

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """Features (n x d) -> the PCA space the clusters live in, as the pipeline computes it:
        StandardScaler ((x - mean) / std, 0 where std is 0), the feature weights, then the PCA
        matrix (no re-centring, as Spark's PCAModel)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features have {x.shape[1]} columns, the segment model expects "
                f"{len(self.feature_names)} ({', '.join(self.feature_names[:4])}, ...)"
            )
        if self.with_mean:
            x = x - self.scaler_mean
        if self.with_std:
            scale = np.divide(
                1.0, self.scaler_std, out=np.zeros_like(self.scaler_std), where=self.scaler_std != 0
            )
            x = x * scale
        return (x * self.feature_weights) @ self.pca

    def assign(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(segments, membership probabilities or None) for features (n x d)."""
        z = self.reduce(features)
        if self.method == KMEANS:
            dist = ((z[:, None, :] - self.centers[None, :, :]) ** 2).sum(axis=2)
            return dist.argmin(axis=1), None
        probs = self._probabilities(z)
        return probs.argmax(axis=1), probs

    def _probabilities(self, z: np.ndarray) -> np.ndarray:
        assert self.weights is not None and self.covariances is not None
        dens = np.column_stack(
            [
                np.exp(_gaussian_logpdf(z, self.centers[j], self.covariances[j]))
                for j in range(self.k)
            ]
        )
        # As Spark's GaussianMixtureModel: epsilon + weight * density, normalised.
        probs = _SPARK_EPSILON + self.weights[None, :] * dens
        return np.asarray(probs / probs.sum(axis=1, keepdims=True))

    def to_bytes(self) -> bytes:
        meta = {
            "format": _FORMAT,
            "method": self.method,
            "feature_names": self.feature_names,
            "with_mean": self.with_mean,
            "with_std": self.with_std,
            "spec": None if self.spec is None else self.spec.to_json(),
        }
        arrays = {
            "scaler_mean": self.scaler_mean,
            "scaler_std": self.scaler_std,
            "feature_weights": self.feature_weights,
            "pca": self.pca,
            "centers": self.centers,
        }
        if self.weights is not None and self.covariances is not None:
            arrays.update(weights=self.weights, covariances=self.covariances)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentAssigner:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode("utf-8"))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"not a streamrec segment model (format {meta.get('format')!r})")
            has_gmm = "weights" in npz.files
            return cls(
                method=meta["method"],
                feature_names=tuple(meta["feature_names"]),
                scaler_mean=npz["scaler_mean"],
                scaler_std=npz["scaler_std"],
                with_mean=bool(meta["with_mean"]),
                with_std=bool(meta["with_std"]),
                feature_weights=npz["feature_weights"],
                pca=npz["pca"],
                centers=npz["centers"],
                weights=npz["weights"] if has_gmm else None,
                covariances=npz["covariances"] if has_gmm else None,
                spec=None if meta.get("spec") is None else FeatureSpec.from_json(meta["spec"]),
            )


def _gaussian_logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density as Spark's MultivariateGaussian computes it: pseudo-determinant and
    pseudo-inverse over the eigenvalues above a tolerance, so a singular covariance works."""
    eigvals, eigvecs = np.linalg.eigh(cov)
    tol = _SPARK_EPSILON * max(float(eigvals.max()), 0.0) * len(eigvals)
    keep = eigvals > tol
    log_pdet = float(np.log(eigvals[keep]).sum())
    root_inv = eigvecs[:, keep] / np.sqrt(eigvals[keep])
    u = (x - mean) @ root_inv
    const = -0.5 * (len(mean) * np.log(2.0 * np.pi) + log_pdet)
    return np.asarray(const - 0.5 * (u * u).sum(axis=1))


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie) of two labelings of the same items: 1 for the
    same partition whatever the label names, about 0 for chance agreement."""
    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape} vs {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max(initial=-1) + 1, bi.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    pairs = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(comb(int(v), 2) for v in table.sum(axis=0))
    total = comb(len(a), 2)
    if total == 0:
        return 1.0
    expected = rows * cols / total
    best = (rows + cols) / 2
    if best == expected:  # both labelings put everything in one cluster (or all apart)
        return 1.0
    return float((pairs - expected) / (best - expected))
