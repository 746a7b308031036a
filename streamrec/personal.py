"""What `streamrec serve` computes with the live model itself, beside the lists it reads from
Redis: an anonymous session's list, diversified lists, category filters and explanations.

The model is the model store's copy of the version the lists were scored with (``paths.
model_store``, as the stream reads it), loaded once per worker when first needed and again when
the live version changes. A session is folded in exactly as the stream folds a user in
(model/lists.py), with the version's own training parameters and feedback transform, and
nothing about it is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.errors import ConfigError, InputError
from streamrec.lookup_answers import ItemFilter
from streamrec.model import store
from streamrec.model.feedback import event_weights
from streamrec.model.item_metadata import parse_movielens_items
from streamrec.model.lists import History, score_history
from streamrec.model.rerank import diversify, explain
from streamrec.model.store import FoldInParams, ItemModel
from streamrec.schemas.config import FeedbackConfig

# MMR picks from this many times ``n`` of a session's best items (at least MMR_POOL_MIN).
MMR_POOL_FACTOR, MMR_POOL_MIN = 4, 50


@dataclass
class LiveModel:
    """One version as the server scores with it."""

    model: ItemModel
    params: FoldInParams
    feedback: FeedbackConfig
    index: dict[str, int]
    category_masks: dict[str, np.ndarray] = field(default_factory=dict)

    def allowed_mask(self, allowed: Sequence[str], categories: Mapping[str, frozenset[str]]) -> Any:
        """Which catalogue items are in any of ``allowed`` (computed once per category)."""
        mask = np.zeros(len(self.model.item_ids), dtype=bool)
        for category in allowed:
            if category not in self.category_masks:
                self.category_masks[category] = np.array(
                    [category in categories.get(item, ()) for item in self.model.item_ids]
                )
            mask |= self.category_masks[category]
        return mask


def load_live(model_store: str, version: str, feedback: FeedbackConfig) -> LiveModel:
    """``version`` from the store, with the feedback transform it was trained with (the
    server's own ``feedback`` section for versions that do not record one)."""
    model = store.load_item_model(model_store, version)
    trained = model.meta.get("feedback")
    if trained:
        feedback = FeedbackConfig(
            weights=dict(trained["weights"]),
            value_scale=str(trained["value_scale"]),
            half_life_days=float(trained["half_life_days"]),
        )
    return LiveModel(model, store.fold_in_params(model), feedback, model.index_of())


class LiveModels:
    """The worker's loaded version: one at a time, loaded off the event loop, once even when
    many requests ask for it together."""

    def __init__(self, model_store: str, feedback: FeedbackConfig) -> None:
        self.model_store, self.feedback = model_store, feedback
        self._loaded: LiveModel | None = None
        self._lock = asyncio.Lock()

    async def get(self, version: str) -> LiveModel:
        """``version`` loaded; ModelStoreError when the store cannot give it."""
        loaded = self._loaded
        if loaded is not None and loaded.model.version == version:
            return loaded
        async with self._lock:
            if self._loaded is None or self._loaded.model.version != version:
                self._loaded = await asyncio.to_thread(
                    load_live, self.model_store, version, self.feedback
                )
            return self._loaded


def read_item_categories(path: str) -> dict[str, frozenset[str]]:
    """Item id -> categories from ``serve.item_categories``: JSON lines
    ``{"item_id": "...", "categories": ["...", ...]}``, or MovieLens ``u.item`` (genres)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"serve.item_categories: no file {path}")
    raw = file.read_bytes()
    if raw.lstrip().startswith(b"{"):
        return _json_lines_categories(raw.decode("utf-8"), path)
    meta = parse_movielens_items(raw.decode("latin-1"), path)
    return {item: frozenset(names) for item, names in meta.categories.items()}


def _json_lines_categories(text: str, path: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item, names = row["item_id"], row["categories"]
            if not isinstance(item, str) or not all(isinstance(c, str) for c in names):
                raise TypeError("item_id and categories must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f'{path}:{number}: expected {{"item_id": "...", "categories": ["..."]}}: {exc}'
            ) from None
        out[item] = frozenset(names)
    return out


@dataclass(frozen=True)
class SessionItem:
    """One item of an anonymous session: a plain item counts 1, an event its weight under
    the version's feedback transform."""

    item_id: str
    event_type: str | None = None
    value: float | None = None


def session_history(live: LiveModel, items: Sequence[SessionItem]) -> tuple[History, list[str]]:
    """The session's (item positions, ratings) under the model, each item's weights summed,
    and the items the model does not know, in the order given. Pure."""
    typed = [i for i, item in enumerate(items) if item.event_type is not None]
    weights = np.ones(len(items))
    if typed:
        weights[typed] = event_weights(
            live.feedback,
            pd.Series([items[i].event_type for i in typed]),
            pd.Series([np.nan if items[i].value is None else items[i].value for i in typed]),
        )
    ratings: dict[int, float] = {}
    unknown: dict[str, None] = {}
    for item, weight in zip(items, weights, strict=True):
        position = live.index.get(item.item_id)
        if position is None:
            unknown[item.item_id] = None
        else:
            ratings[position] = ratings.get(position, 0.0) + float(weight)
    positions = np.array(sorted(ratings), dtype=np.int64)
    history = (positions, np.array([ratings[p] for p in positions.tolist()], dtype=np.float64))
    return history, list(unknown)


def rank_session(
    live: LiveModel,
    history: History,
    n: int,
    blocked: ItemFilter,
    categories: Mapping[str, frozenset[str]],
    diversity: float,
) -> list[tuple[int, float]] | None:
    """The session's ``n`` best (position, score) over the whole catalogue: its own items and
    ``blocked`` ones left out, diversified when asked; None when no rating is positive."""
    scores = score_history(live.model, live.params, history)
    if scores is None:
        return None
    scores = scores.astype(np.float64)
    scores[history[0]] = -np.inf
    for item in blocked.excluded:
        if item in live.index:
            scores[live.index[item]] = -np.inf
    if blocked.allowed is not None:
        scores[~live.allowed_mask(sorted(blocked.allowed), categories)] = -np.inf
    finite = int(np.isfinite(scores).sum())
    pool = min(finite, n if diversity == 0 else max(MMR_POOL_FACTOR * n, MMR_POOL_MIN))
    if pool == 0:
        return []
    best = np.argpartition(-scores, pool - 1)[:pool]
    best = best[np.lexsort((best, -scores[best]))]
    ranked = [(int(p), float(scores[p])) for p in best]
    if diversity > 0:
        positions, relevance = [p for p, _ in ranked], [s for _, s in ranked]
        rows = diversify(positions, relevance, live.model.item_factors, n, diversity)
        ranked = [ranked[row] for row in rows]
    return ranked[:n]


def diversified(
    live: LiveModel, items: Sequence[tuple[str, float]], n: int, diversity: float
) -> list[tuple[str, float]]:
    """A stored list's first ``n`` items as MMR picks them from the whole list. Pure."""
    positions = [live.index.get(item, -1) for item, _ in items]
    rows = diversify(positions, [s for _, s in items], live.model.item_factors, n, diversity)
    return [items[row] for row in rows]


def explanations(
    live: LiveModel, history: History, items: Sequence[str], top: int
) -> dict[str, dict[str, Any]]:
    """For each item the model knows: its score for the history and the history items that
    made it, largest share first (empty when the history has no positive rating)."""
    known = [item for item in items if item in live.index]
    found = explain(live.model, live.params, history, [live.index[i] for i in known], top)
    if not found:
        return {}
    ids = live.model.item_ids
    return {
        item: {
            "model_score": e.score,
            "because": [{"item_id": ids[p], "share": share} for p, share in e.because],
        }
        for item, e in zip(known, found, strict=True)
    }
