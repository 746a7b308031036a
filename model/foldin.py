"""The exact implicit-ALS fold-in of one user, with Spark ML's conventions.

Spark's ALS (implicit mode) solves, for a user u with ratings r_ui on items i:

    (YᵀY + Σ_i c1_ui y_i y_iᵀ + λ n_u I) x_u = Σ_{i: r_ui > 0} (1 + c1_ui) y_i
    where c1_ui = alpha |r_ui|, and n_u = number of items with r_ui > 0

(``ALS.computeFactors``: confidence ``1 + alpha|r|``, preference ``r > 0``, and λ scaled by the
count of positive ratings, as in ALS-WR). Using the same equation here makes a folded-in vector
equal the batch one for the same history.
"""

from __future__ import annotations

import numpy as np


def fold_in(
    item_factors: np.ndarray,
    gram: np.ndarray,
    item_indices: np.ndarray,
    ratings: np.ndarray,
    reg_param: float,
    alpha: float,
) -> np.ndarray | None:
    """The user vector for ``ratings`` on ``item_indices``; None when no rating is positive
    (Spark's solver returns the zero vector then, which ranks nothing)."""
    ratings = np.asarray(ratings, dtype=np.float64)
    positive = ratings > 0
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    y = item_factors[item_indices].astype(np.float64)
    c1 = alpha * np.abs(ratings)
    a = gram + (y.T * c1) @ y + reg_param * n_pos * np.eye(gram.shape[0])
    b = ((1.0 + c1)[positive, None] * y[positive]).sum(axis=0)
    solved: np.ndarray = np.linalg.solve(a, b)
    return solved
