"""EASE, an item-item model with a closed form (Steck, "Embarrassingly Shallow Autoencoders for
Sparse Data", WWW 2019).

With X the users x items feedback matrix and G = XᵀX, the item-item weights are

    P = (G + λI)⁻¹,   B = I - P / diag(P)   (so diag(B) = 0)

and a user's scores are their feedback row times B: s_u = x_u B. A user's list needs only their
own history and B, so the stream scores a user exactly as the batch job does, with no solve.

The matrix is stored transposed (``item_matrix = Bᵀ``): row j holds item j's weight on each
history item, so scoring is ``x_u @ item_matrix.T``, the same product as ALS's user vector times
item factors, and one top-N routine serves both families.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse


def feedback_values(ratings: np.ndarray, binary: bool) -> np.ndarray:
    """What EASE learns from a user-item rating (summed event weights): 1 for any positive one
    when ``binary``, else the positive rating itself; a negative sum (skips) is no feedback."""
    ratings = np.asarray(ratings, dtype=np.float64)
    positive = ratings > 0
    return positive.astype(np.float64) if binary else np.where(positive, ratings, 0.0)


def gram_matrix(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_items: int, binary: bool
) -> np.ndarray:
    """G = XᵀX (float64, items x items) from one (user, item, rating) triple per pair; user
    numbers only need to be distinct, item numbers are positions 0..n_items-1."""
    values = feedback_values(ratings, binary)
    keep = values != 0
    _, rows = np.unique(np.asarray(users)[keep], return_inverse=True)
    x = sparse.csr_matrix(
        (values[keep], (rows, np.asarray(items, dtype=np.int64)[keep])),
        shape=(int(rows.max()) + 1 if rows.size else 0, n_items),
    )
    gram: np.ndarray = (x.T @ x).toarray()
    return gram


def fit_ease(gram: np.ndarray, l2: float) -> np.ndarray:
    """``item_matrix`` (Bᵀ, float32, items x items) for the Gram matrix ``gram`` and penalty
    ``l2`` (> 0, which also keeps the inverse defined for items nobody shares)."""
    if l2 <= 0:
        raise ValueError(f"EASE needs a positive L2 penalty, got {l2}")
    regularised = np.array(gram, dtype=np.float64, copy=True)
    np.fill_diagonal(regularised, regularised.diagonal() + l2)
    precision = np.linalg.inv(regularised)
    weights = -precision / precision.diagonal()[None, :]
    np.fill_diagonal(weights, 0.0)
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def history_vectors(
    histories: Sequence[tuple[np.ndarray, np.ndarray]], n_items: int, binary: bool
) -> list[np.ndarray | None]:
    """Each user's feedback row x_u (float32, dense over the items) from their (item positions,
    ratings); None when no rating is positive, as the ALS fold-in."""
    out: list[np.ndarray | None] = []
    for items, ratings in histories:
        values = feedback_values(ratings, binary)
        if not np.any(values > 0):
            out.append(None)
            continue
        row = np.zeros(n_items, dtype=np.float32)
        np.add.at(row, np.asarray(items, dtype=np.int64), values.astype(np.float32))
        out.append(row)
    return out
