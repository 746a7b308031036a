"""How events become implicit feedback, one definition for both jobs.

weight(event) = type_weight[event_type] * strength(value) * decay(age)
strength(value) = 1 if value is missing, else by ``value_scale``:
                  log1p(value) ("log"), value ("linear"), 1 if value > 0 else 0 ("binary")
decay(age)      = max(0.5 ** (age / half_life), MIN_DECAY), age = reference time - event time
                  (never negative; 1 when decay is off)

Every path from data to ALS's confidence goes through this: the batch job (Spark columns), the
stream's per-user state (numpy), and ``streamrec evaluate``, whose files become events first.

The reference time is the newest event the job has seen (the batch's data cut), so retraining on
the same data gives the same weights whatever the wall clock says. A user's rating of an item is
the sum of its events' weights. Positive sums are preferences; a negative sum (e.g. skips) is a
confident "no" (Spark's implicit ALS: preference 0, confidence 1 + alpha|r|).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from streamrec.schemas.config import FeedbackConfig

DAY_MS = 86_400_000
# An event however old still counts, a little: the decay never underflows to zero (which would
# turn a preference into no feedback at all), for any event time the contract accepts.
MIN_DECAY = 1e-100


def _scaled(values: np.ndarray, value_scale: str) -> np.ndarray:
    """The strengths of present values (NaN stays NaN: the caller replaces it)."""
    if value_scale == "log":
        return np.log1p(values)
    if value_scale == "linear":
        return values
    return np.where(values > 0, 1.0, 0.0)


def event_weights(
    cfg: FeedbackConfig,
    event_types: pd.Series,
    values: pd.Series,
    event_times: pd.Series | None = None,
    reference_ms: int | np.ndarray | None = None,
) -> np.ndarray:
    """Each event's weight; ``reference_ms`` is one time for all or one per event."""
    type_weight = event_types.map(cfg.weights).fillna(0.0).to_numpy(dtype=np.float64)
    v = values.astype("float64").to_numpy()
    strength = np.where(np.isnan(v), 1.0, _scaled(v, cfg.value_scale))
    weights = type_weight * strength
    if cfg.half_life_days > 0 and event_times is not None and reference_ms is not None:
        age_ms = np.maximum(reference_ms - event_times.to_numpy(dtype=np.float64), 0.0)
        decay = np.power(0.5, age_ms / (cfg.half_life_days * DAY_MS))
        weights = weights * np.maximum(decay, MIN_DECAY)
    return weights


def event_weight_column(
    cfg: FeedbackConfig,
    event_type: str,
    value: str,
    event_time: str | None = None,
    reference_ms: int | None = None,
) -> Column:
    type_weight: Column = F.lit(0.0)
    for name, type_w in sorted(cfg.weights.items()):
        type_weight = F.when(F.col(event_type) == name, F.lit(type_w)).otherwise(type_weight)
    v = F.col(value).cast("double")
    scaled = {"log": F.log1p(v), "linear": v, "binary": F.when(v > 0, 1.0).otherwise(0.0)}[
        cfg.value_scale
    ]
    strength = F.when(v.isNull(), F.lit(1.0)).otherwise(scaled)
    weight: Column = type_weight * strength
    if cfg.half_life_days > 0 and event_time is not None and reference_ms is not None:
        age_ms = F.greatest(
            F.lit(float(reference_ms)) - F.col(event_time).cast("double"), F.lit(0.0)
        )
        decay = F.pow(F.lit(0.5), age_ms / F.lit(cfg.half_life_days * DAY_MS))
        weight = weight * F.greatest(decay, F.lit(MIN_DECAY))
    return weight
