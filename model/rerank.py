"""What a lookup does to a ranked list on request: diversify it, and explain it.

- ``diversify``: maximal marginal relevance (Carbonell and Goldstein, SIGIR 1998) over the
  cosine of the ALS item factors: each next item maximises
  ``(1 - diversity) * relevance - diversity * (its highest cosine to an item already chosen)``,
  relevance being the list's own scores scaled to [0, 1]. ``diversity`` 0 keeps the list's order.
- ``explain``: for each recommended item, the user's items that made its score, exactly. The
  score is linear in the user's history under both families, so it splits into one share per
  history item that sums to the score:
  - implicit ALS (Hu, Koren and Volinsky 2008, section 5): the folded-in vector is
    ``x = A⁻¹ Σ_i (1 + c_i) y_i`` over the positive items (model/foldin.py), so the score of item
    j is ``Σ_i (1 + c_i) y_jᵀ A⁻¹ y_i``: item i's share is its term;
  - EASE: the score is ``Σ_i x_i B[i, j]`` (model/ease.py): item i's share is ``x_i B[i, j]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.model.ease import feedback_values
from streamrec.model.store import FoldInParams, ItemModel


def diversify(
    positions: Sequence[int],
    scores: Sequence[float],
    factors: np.ndarray,
    n: int,
    diversity: float,
) -> list[int]:
    """The rows (indices into ``positions``) of the ``n`` items MMR picks, in pick order.
    ``positions`` are the candidates' rows of ``factors`` (-1 for an item the model does not
    know: similar to nothing), best first with their ``scores``. Ties go to the earlier
    candidate, so ``diversity`` 0 returns the first ``n`` in order."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be from 0 to 1, got {diversity}")
    count = len(positions)
    if count == 0 or n < 1:
        return []
    relevance = np.asarray(scores, dtype=np.float64)
    spread = float(relevance.max() - relevance.min())
    relevance = (relevance - relevance.min()) / spread if spread > 0 else np.ones(count)
    known = np.asarray(positions, dtype=np.int64)
    vectors = np.zeros((count, factors.shape[1]), dtype=np.float64)
    vectors[known >= 0] = factors[known[known >= 0]]
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    cosine = unit @ unit.T
    closest = np.full(count, -np.inf)  # each candidate's highest cosine to the chosen ones
    free = np.ones(count, dtype=bool)
    chosen: list[int] = []
    for _ in range(min(n, count)):
        redundancy = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(free, (1.0 - diversity) * relevance - diversity * redundancy, -np.inf)
        pick = int(np.argmax(value))  # the first of equal values
        chosen.append(pick)
        free[pick] = False
        closest = np.maximum(closest, cosine[pick])
    return chosen


@dataclass(frozen=True)
class Explanation:
    """Item ``position``'s score under the model for a history, and the history items' shares
    of it, largest first (only positive shares, at most the ``top`` asked for)."""

    position: int
    score: float
    because: tuple[tuple[int, float], ...]


def explain(
    model: ItemModel,
    params: FoldInParams,
    history: tuple[np.ndarray, np.ndarray],
    targets: Sequence[int],
    top: int = 3,
) -> list[Explanation] | None:
    """Each target item's score for the history (item positions, ratings) and the history
    items that contributed most to it; None when the history has no positive rating (the
    model gives such a user no score)."""
    items = np.asarray(history[0], dtype=np.int64)
    ratings = np.asarray(history[1], dtype=np.float64)
    target = np.asarray(targets, dtype=np.int64)
    if model.item_matrix is not None:
        values = feedback_values(ratings, params.ease_binary)
        if not np.any(values > 0):
            return None
        shares = values[None, :] * model.item_matrix[target][:, items].astype(np.float64)
    else:
        shares_or_none = _als_shares(model, params, items, ratings, target)
        if shares_or_none is None:
            return None
        shares = shares_or_none
    out = []
    for row, position in enumerate(target.tolist()):
        order = np.argsort(-shares[row], kind="stable")[:top]
        because = tuple((int(items[i]), float(shares[row, i])) for i in order if shares[row, i] > 0)
        out.append(Explanation(position, float(shares[row].sum()), because))
    return out


def _als_shares(
    model: ItemModel,
    params: FoldInParams,
    items: np.ndarray,
    ratings: np.ndarray,
    target: np.ndarray,
) -> np.ndarray | None:
    """targets x history: ``(1 + c_i) y_jᵀ A⁻¹ y_i`` for positive ratings, 0 otherwise, with
    A exactly as model/foldin.py builds it."""
    positive = ratings > 0
    if not np.any(positive):
        return None
    y = model.item_factors[items].astype(np.float64)
    c1 = params.alpha * np.abs(ratings)
    a = (
        model.gram
        + (y.T * c1) @ y
        + params.reg_param * int(positive.sum()) * np.eye(model.gram.shape[0])
    )
    solved = np.linalg.solve(a, y.T)  # A⁻¹ y_i, one column per history item
    weights = np.where(positive, 1.0 + c1, 0.0)
    shares: np.ndarray = (model.item_factors[target].astype(np.float64) @ solved) * weights
    return shares
