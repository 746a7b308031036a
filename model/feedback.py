"""How events become implicit feedback, one definition for both jobs.

weight(event) = type_weight[event_type] * strength(value)
strength(value) = 1 if value is missing, else log1p(value) when log-scaled, else value

A user's rating of an item is the sum of its events' weights. Positive sums are preferences; a
negative sum (e.g. skips) is a confident "no" (Spark's implicit ALS: preference 0, confidence
1 + alpha|r|).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from streamrec.schemas.config import FeedbackConfig


def event_weights(cfg: FeedbackConfig, event_types: pd.Series, values: pd.Series) -> np.ndarray:
    type_weight = event_types.map(cfg.weights).fillna(0.0).to_numpy(dtype=np.float64)
    v = values.astype("float64").to_numpy()
    strength = np.where(np.isnan(v), 1.0, np.log1p(v) if cfg.log_scale_values else v)
    return type_weight * strength


def event_weight_column(cfg: FeedbackConfig, event_type: str, value: str) -> Column:
    type_weight = F.lit(0.0)
    for name, weight in sorted(cfg.weights.items()):
        type_weight = F.when(F.col(event_type) == name, F.lit(weight)).otherwise(type_weight)
    v = F.col(value).cast("double")
    scaled = F.log1p(v) if cfg.log_scale_values else v
    strength = F.when(v.isNull(), F.lit(1.0)).otherwise(scaled)
    return type_weight * strength
