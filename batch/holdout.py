"""Judge a retrain before it is promoted: train on all but the newest events, rank for the
users of the newest events, compare with popularity on the same split, and with the metrics the
current model recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.batch.evaluate import make_split, score_als, score_popularity
from streamrec.batch.interactions import to_interactions
from streamrec.schemas import events as E
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)

# Only a positive summed weight in the held-out events makes an item relevant.
RELEVANT_MIN = 1e-9


def holdout_metrics(events: DataFrame, cfg: Config) -> dict[str, Any] | None:
    """Metrics of this run's parameters on a time split of ``events`` (the newest
    ``batch.holdout_share`` of them held out); None when evaluation is off or impossible."""
    share, k = cfg.batch.holdout_share, cfg.batch.eval_k
    if share <= 0:
        return None
    cut = int(events.approxQuantile(E.EVENT_TIME, [1.0 - share], 0.0001)[0])
    earlier = events.where(F.col(E.EVENT_TIME) < cut)
    later = events.where(F.col(E.EVENT_TIME) >= cut)
    train_ref = earlier.agg(F.max(E.EVENT_TIME)).collect()[0][0]
    if train_ref is None:
        log.warning("holdout: no events before the split time %d; not evaluated", cut)
        return None
    train = to_interactions(earlier, cfg.feedback, int(train_ref))
    test = to_interactions(later, cfg.feedback, cut)
    split = make_split(train, test, RELEVANT_MIN, known_users_only=True)
    if not split.relevant:
        log.warning("holdout: no user of the newest events has new items; not evaluated")
        return None
    als = score_als(split, cfg.batch, k, cfg.spark.shuffle_partitions)
    popularity = score_popularity(split, k)
    log.info("holdout@%d: ALS ndcg %.4f precision %.4f; popularity ndcg %.4f (%d users)",
             k, als.ranking.ndcg, als.ranking.precision, popularity.ranking.ndcg,
             als.ranking.users)  # fmt: skip
    return {
        "split_ms": cut,
        "share": share,
        "als": als.ranking.as_dict(),
        "popularity": popularity.ranking.as_dict(),
    }


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def promotion_decision(
    new: dict[str, Any] | None, current: dict[str, Any] | None, margin: float
) -> Decision:
    """Promote unless both runs were evaluated and the new NDCG falls below the current one's by
    more than ``margin`` (absolute)."""
    if new is None:
        return Decision(True, "promoted without evaluation (holdout off or empty)")
    if current is None:
        return Decision(True, "promoted: no current model metrics to compare with")
    new_ndcg, old_ndcg = float(new["als"]["ndcg"]), float(current["als"]["ndcg"])
    if new_ndcg < old_ndcg - margin:
        return Decision(False, f"not promoted: holdout NDCG {new_ndcg:.4f} is below the current "
                               f"model's {old_ndcg:.4f} by more than {margin}")  # fmt: skip
    return Decision(True, f"promoted: holdout NDCG {new_ndcg:.4f} (current {old_ndcg:.4f})")
