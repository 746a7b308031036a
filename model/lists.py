"""A user's list from their history under a model version, whatever its family: the one path the
stream, the promotion gate's fold-in and the replay benchmark share.

- ALS: the user's vector is folded in (model/foldin.py) and scored against the item factors;
- EASE: the user's vector is their feedback row, scored against the item-item matrix
  (model/ease.py); nothing is solved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.model.ease import feedback_values, history_vectors
from streamrec.model.foldin import fold_in_many
from streamrec.model.scoring import top_n
from streamrec.model.store import FoldInParams, ItemModel

History = tuple[np.ndarray, np.ndarray]  # item positions in the model, ratings


def als_vectors(
    model: ItemModel, params: FoldInParams, histories: Sequence[History]
) -> list[np.ndarray | None]:
    """Each user folded into the version's ALS factors (what segments are assigned from)."""
    return fold_in_many(
        model.item_factors, model.gram, list(histories), params.reg_param, params.alpha
    )


def rank_histories(
    model: ItemModel,
    params: FoldInParams,
    histories: Sequence[History],
    n: int,
    folded: Sequence[np.ndarray | None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Each user's ``n`` best (item positions, scores), their history left out; None for a user
    with no positive feedback. ``folded``: the users' ALS vectors when the caller has them."""
    if model.item_matrix is not None:
        vectors = history_vectors(histories, len(model.item_ids), params.ease_binary)
        matrix = model.item_matrix
    else:
        vectors = list(folded) if folded is not None else als_vectors(model, params, histories)
        matrix = model.item_factors
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(histories)
    personal = [(row, vector) for row, vector in enumerate(vectors) if vector is not None]
    if personal:
        stacked = np.stack([vector for _, vector in personal]).astype(np.float32)
        seen = [np.asarray(histories[row][0]).tolist() for row, _ in personal]
        for (row, _), best in zip(personal, top_n(stacked, matrix, seen, n), strict=True):
            out[row] = best
    return out


def score_history(model: ItemModel, params: FoldInParams, history: History) -> np.ndarray | None:
    """One history's score of every item in the catalogue (its own items included): the scores
    ``rank_histories`` ranks with, to float32 rounding; None when no rating is positive."""
    if model.item_matrix is not None:
        # x_u B over the history's items only: the columns of Bᵀ those items weigh, not the
        # whole items x items matrix (a request touches h columns, not every weight).
        items = np.asarray(history[0], dtype=np.int64)
        values = feedback_values(history[1], params.ease_binary)
        if not np.any(values > 0):
            return None
        ease_scores: np.ndarray = model.item_matrix[:, items] @ values.astype(np.float32)
        return ease_scores
    vector = als_vectors(model, params, [history])[0]
    if vector is None:
        return None
    scores: np.ndarray = model.item_factors @ np.asarray(vector, dtype=np.float32)
    return scores
