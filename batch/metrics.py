"""Ranking and rating metrics, pure numpy, over full rankings.

Conventions (those of most recommender papers and of Spark's RankingMetrics):
- ``recommended[u]`` is user u's ranked list (training items already removed), ``relevant[u]``
  the set of their relevant test items; users with no relevant item are left out of averages;
- precision@k divides hits by k, recall@k by |relevant|;
- NDCG@k uses binary gains, DCG = Σ 1/log2(rank + 1), normalised by the ideal DCG of
  min(|relevant|, k) hits;
- MAP@k averages precision@i over the hit ranks i, divided by min(|relevant|, k);
- coverage is the share of the catalogue that appears in at least one top-k list.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RankingMetrics:
    k: int
    users: int
    precision: float
    recall: float
    ndcg: float
    map: float
    coverage: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def ranking_metrics(
    recommended: Sequence[Sequence[object]],
    relevant: Sequence[Set[object]],
    k: int,
    catalogue_size: int,
) -> RankingMetrics:
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must have one entry per user")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, ap = [], [], [], []
    shown: set[object] = set()
    for recs, rel in zip(recommended, relevant, strict=True):
        top = list(recs)[:k]
        shown.update(top)
        if not rel:
            continue
        hits = np.array([item in rel for item in top], dtype=bool)
        n_hits = int(hits.sum())
        precision.append(n_hits / k)
        recall.append(n_hits / len(rel))
        ideal = discounts[: min(len(rel), k)].sum()
        ndcg.append(float(discounts[: len(top)][hits].sum() / ideal))
        if n_hits:
            ranks = np.flatnonzero(hits) + 1
            precisions_at_hits = np.arange(1, n_hits + 1) / ranks
            ap.append(float(precisions_at_hits.sum() / min(len(rel), k)))
        else:
            ap.append(0.0)
    n = len(precision)

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    return RankingMetrics(
        k=k,
        users=n,
        precision=mean(precision),
        recall=mean(recall),
        ndcg=mean(ndcg),
        map=mean(ap),
        coverage=len(shown) / catalogue_size if catalogue_size else 0.0,
    )


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if predicted.shape != actual.shape or predicted.size == 0:
        raise ValueError("rmse needs two non-empty arrays of the same shape")
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))
