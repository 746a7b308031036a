"""Top-N scoring of user vectors against item factors, with already-seen items removed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_n(
    user_vectors: np.ndarray,
    item_factors: np.ndarray,
    exclude: Sequence[Sequence[int]],
    n: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of ``user_vectors``: (item indices, scores) of its ``n`` best items, best
    first, skipping the indices in ``exclude[row]``. Ties break by the lower item index."""
    scores = user_vectors @ item_factors.T  # (users, items)
    out = []
    n_items = item_factors.shape[0]
    for row, seen in enumerate(exclude):
        s = scores[row].copy()
        if len(seen):
            s[np.asarray(seen, dtype=np.int64)] = -np.inf
        k = min(n, n_items - len(set(seen)))
        if k <= 0:
            out.append((np.empty(0, dtype=np.int64), np.empty(0)))
            continue
        # argpartition then a stable sort on (-score, index) of the k candidates only.
        cand = np.argpartition(-s, k - 1)[:k]
        order = np.lexsort((cand, -s[cand]))
        best = cand[order]
        out.append((best, s[best]))
    return out
