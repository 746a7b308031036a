"""Top-N scoring of user vectors against item factors, with already-seen items removed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Scores are computed a block of users at a time: at most this many floats in memory at once
# (64 MiB of float32), whatever the Arrow batch size and catalogue size.
SCORE_BLOCK_ELEMENTS = 16 * 1024 * 1024


def top_n(
    user_vectors: np.ndarray,
    item_factors: np.ndarray,
    exclude: Sequence[Sequence[int]],
    n: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of ``user_vectors``: (item indices, scores) of its ``n`` best items, best
    first, skipping the indices in ``exclude[row]``. Ties break by the lower item index."""
    n_users, n_items = user_vectors.shape[0], item_factors.shape[0]
    if n_items == 0 or n <= 0:
        return [(np.empty(0, dtype=np.int64), np.empty(0)) for _ in range(n_users)]
    k = min(n, n_items)
    block = max(1, SCORE_BLOCK_ELEMENTS // n_items)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        scores = user_vectors[start:stop] @ item_factors.T
        for row in range(stop - start):
            seen = exclude[start + row]
            if len(seen):
                scores[row, np.asarray(seen, dtype=np.int64)] = -np.inf
        # argpartition finds the k best per row; then a sort of those k by (-score, index).
        cand = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        cand_scores = np.take_along_axis(scores, cand, axis=1)
        order = np.lexsort((cand, -cand_scores), axis=1)
        best = np.take_along_axis(cand, order, axis=1)
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
        for row in range(stop - start):
            keep = np.isfinite(best_scores[row])  # fewer unseen items than n
            out.append((best[row][keep].astype(np.int64), best_scores[row][keep]))
    return out
