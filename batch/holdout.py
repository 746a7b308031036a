"""Judge a retrain before it is promoted, on one time split of the event store: train on all but
the newest events, rank for the users of the newest events, and score on that same holdout the
candidate's parameters, popularity, and the current model (its users folded in from the same
training events). A candidate below popularity, or below the current model by more than the
margin, is not promoted."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.batch.interactions import RATING, to_interactions
from streamrec.batch.metrics import RankingMetrics, ranking_metrics
from streamrec.batch.scores import Split, make_split, score_model, score_popularity
from streamrec.errors import ModelStoreError
from streamrec.model.lists import rank_histories
from streamrec.model.store import FoldInParams, ItemModel, check_foldable, trained_setting
from streamrec.schemas import events as E
from streamrec.schemas.config import Config, FeedbackConfig

log = logging.getLogger(__name__)

# Only a positive summed weight in the held-out events makes an item relevant.
RELEVANT_MIN = 1e-9


def time_cut(events: DataFrame, share: float) -> int:
    """The event time before which ``1 - share`` of ``events`` fall."""
    return int(events.approxQuantile(E.EVENT_TIME, [1.0 - share], 0.0001)[0])


def before(events: DataFrame, cut: int) -> DataFrame:
    return events.where(F.col(E.EVENT_TIME) < cut)


def time_split(events: DataFrame, feedback: FeedbackConfig, cut: int, what: str) -> Split | None:
    """Events before ``cut`` as training confidences, the users' new items from ``cut`` on as
    what to find; None (logged, naming ``what``) when either side is empty."""
    earlier = before(events, cut)
    later = events.where(F.col(E.EVENT_TIME) >= cut)
    train_ref = earlier.agg(F.max(E.EVENT_TIME)).collect()[0][0]
    if train_ref is None:
        log.warning("%s: no events before the split time %d; not evaluated", what, cut)
        return None
    train = to_interactions(earlier, feedback, int(train_ref))
    test = to_interactions(later, feedback, cut)
    split = make_split(train, test, RELEVANT_MIN, known_users_only=True)
    if not split.relevant:
        log.warning("%s: no user of the newest events has new items; not evaluated", what)
        return None
    return split


def holdout_metrics(
    events: DataFrame, cfg: Config, current: ItemModel | None = None
) -> dict[str, Any] | None:
    """Metrics of this run's parameters on a time split of ``events`` (the newest
    ``batch.holdout_share`` of them held out), of popularity, and of ``current`` when given;
    None when evaluation is off or impossible."""
    share, k = cfg.batch.holdout_share, cfg.batch.eval_k
    if share <= 0:
        return None
    cut = time_cut(events, share)
    split = time_split(events, cfg.feedback, cut, "holdout")
    if split is None:
        return None
    als = score_model(split, cfg.batch, k, cfg.spark.shuffle_partitions)
    popularity = score_popularity(split, k)
    log.info(
        "holdout@%d: candidate ndcg %.4f precision %.4f; popularity ndcg %.4f (%d users)",
        k,
        als.ranking.ndcg,
        als.ranking.precision,
        popularity.ranking.ndcg,
        als.ranking.users,
    )
    metrics: dict[str, Any] = {
        "split_ms": cut,
        "share": share,
        "als": als.ranking.as_dict(),
        "popularity": popularity.ranking.as_dict(),
        "current": None,
    }
    if current is not None:
        metrics["current"] = _current_metrics(split, current, cfg, cut, als.ranking)
    return metrics


# How the current model was scored on a holdout (the "method" of its metrics).
FOLDED_IN = "folded_in"
RETRAINED_ON_SPLIT = "retrained_on_split"
SAME_PARAMETERS = "same_parameters"


def _current_metrics(
    split: Split, model: ItemModel, cfg: Config, cut: int, candidate: RankingMetrics
) -> dict[str, Any] | None:
    """The current model on this run's holdout. When it was trained before the split time, the
    model itself: each user folded in from their training events of the split, as the stream
    would, and ranked over its items. When it was trained past the split time, its item factors
    have seen the held-out events, an edge no candidate can match: then its parameters are
    trained on the split's training events instead, like the candidate's (and when they are the
    candidate's own, the candidate's score is the current one's)."""
    k = cfg.batch.eval_k
    try:
        params = check_foldable(model, asdict(cfg.feedback))
        if int(model.meta.get("data_cut_ms") or 0) < cut:
            method = FOLDED_IN
            ranking = score_folded_in(split, model, params, k)
        else:
            batch = trained_setting(cfg.batch, model.meta)
            if batch == cfg.batch:
                method, ranking = SAME_PARAMETERS, candidate
            else:
                method = RETRAINED_ON_SPLIT
                ranking = score_model(split, batch, k, cfg.spark.shuffle_partitions).ranking
    except (ModelStoreError, KeyError, TypeError, ValueError) as exc:
        log.warning("holdout: the current model %s is not compared: %r", model.version, exc)
        return None
    log.info("holdout@%d: current model %s (%s) ndcg %.4f", k, model.version, method, ranking.ndcg)
    return {"version": model.version, "method": method, **ranking.as_dict()}


def score_folded_in(split: Split, model: ItemModel, params: FoldInParams, k: int) -> RankingMetrics:
    """Top-k lists of ``model`` for the split's users with relevant items, each user's list
    built from their training ratings as the stream builds it (model/lists.py), their training
    items left out."""
    users = sorted(split.relevant)
    spark = split.train.sparkSession
    wanted = spark.createDataFrame([(u,) for u in users], f"{E.USER_ID} string")
    rows = split.train.join(wanted, E.USER_ID).select(E.USER_ID, E.ITEM_ID, RATING).collect()
    index = model.index_of()
    known: dict[str, list[tuple[int, float]]] = {u: [] for u in users}
    for row in rows:
        position = index.get(row[E.ITEM_ID])
        if position is not None:
            known[row[E.USER_ID]].append((position, float(row[RATING])))
    histories = [
        (
            np.array([p for p, _ in sorted(known[u])], dtype=np.int64),
            np.array([r for _, r in sorted(known[u])], dtype=np.float64),
        )
        for u in users
    ]
    lists: list[list[str]] = [[] for _ in users]
    for at, best in enumerate(rank_histories(model, params, histories, k)):
        if best is not None:
            lists[at] = [model.item_ids[i] for i in best[0]]
    return ranking_metrics(lists, [split.relevant[u] for u in users], k, split.item_count)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    # Why a candidate is refused: BELOW_POPULARITY, BELOW_CURRENT or SUPERSEDED; "" when
    # promoted.
    refusal: str = ""


BELOW_POPULARITY = "below_popularity"
BELOW_CURRENT = "below_current"
# Promoted by the gate, but a newer version went live meanwhile (batch/job.py).
SUPERSEDED = "superseded"


def promotion_decision(holdout: dict[str, Any] | None, margin: float) -> Decision:
    """Promote unless, on this run's holdout, the candidate ranks below popularity, or below
    the current model by more than ``margin`` (absolute NDCG)."""
    if holdout is None:
        return Decision(True, "promoted without evaluation (holdout off or empty)")
    new, popular = float(holdout["als"]["ndcg"]), float(holdout["popularity"]["ndcg"])
    if new < popular:
        return Decision(
            False,
            f"not promoted: holdout NDCG {new:.4f} is below popularity's {popular:.4f} on the "
            "same holdout",
            BELOW_POPULARITY,
        )
    current = holdout.get("current")
    if not current:
        return Decision(
            True,
            f"promoted: holdout NDCG {new:.4f} (popularity {popular:.4f}; no current model "
            "to compare with)",
        )
    old = float(current["ndcg"])
    if new < old - margin:
        return Decision(
            False,
            f"not promoted: holdout NDCG {new:.4f} is below the current model "
            f"{current['version']}'s {old:.4f} on the same holdout by more than {margin}",
            BELOW_CURRENT,
        )
    return Decision(
        True,
        f"promoted: holdout NDCG {new:.4f} (current {current['version']} {old:.4f}, "
        f"popularity {popular:.4f})",
    )
