"""Items like an item: each item's nearest others by the cosine of their ALS factor vectors,
what the batch job publishes per version for ``GET /similar/{item_id}``."""

from __future__ import annotations

import numpy as np


def similar_items(factors: np.ndarray, n: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores), each items x ``n``: every item's ``n`` most similar other items by
    cosine, best first. Rows are padded with position -1 (score 0) where fewer exist, and an
    item whose vector is zero has none. Computed ``chunk`` items at a time, so memory stays at
    ``chunk`` x items whatever the catalogue."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    vectors = np.asarray(factors, dtype=np.float32)
    items = vectors.shape[0]
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    keep = min(n, max(items - 1, 0))
    positions = np.full((items, n), -1, dtype=np.int64)
    scores = np.zeros((items, n), dtype=np.float32)
    if keep == 0:
        return positions, scores
    for start in range(0, items, chunk):
        stop = min(start + chunk, items)
        sims = unit[start:stop] @ unit.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = -np.inf  # never the item itself
        sims[:, norms == 0] = -np.inf  # nor an item with no vector
        best = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
        order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(sims, best, axis=1)
        valid = np.isfinite(best_scores) & (norms[start:stop, None] > 0)
        positions[start:stop, :keep] = np.where(valid, best, -1)
        scores[start:stop, :keep] = np.where(valid, best_scores, 0.0)
    return positions, scores
