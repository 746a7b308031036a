"""Events -> ratings in Spark: type weights, value scaling, age decay and duplicate event ids,
checked against the pandas definition the streaming job uses."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from streamrec.batch.interactions import RATING, dedupe_events, to_interactions
from streamrec.model.feedback import DAY_MS, event_weights
from streamrec.schemas import events as E
from streamrec.schemas.config import VALUE_SCALES, FeedbackConfig

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
ROWS = [
    ("e1", "u1", "a", "play", T, 99.0),
    ("e1", "u1", "a", "play", T, 99.0),  # a replayed duplicate: counted once
    ("e2", "u1", "a", "click", T - 10 * DAY_MS, None),
    ("e3", "u1", "b", "skip", T - 20 * DAY_MS, None),
    ("e4", "u2", "a", "like", T - 5 * DAY_MS, 3.0),
    ("e5", "u2", "c", "view", T, None),
    ("e6", "u2", "c", "skip", T, None),
    ("e7", "u3", "a", "add_to_cart", T - DAY_MS, 2.0),
    ("e8", "u3", "b", "purchase", T - 2 * DAY_MS, 0.0),
    ("e9", "u3", "c", "rating", T - 3 * DAY_MS, 4.0),
    ("e10", "u3", "d", "play", T - 4 * DAY_MS, 3600.0),
    ("e11", "u3", "d", "view", T, 0.5),
]


def test_the_rows_hold_every_event_type() -> None:
    assert {row[3] for row in ROWS} == set(E.event_contract().event_types)


@pytest.mark.parametrize("value_scale", VALUE_SCALES)
@pytest.mark.parametrize("half_life_days", [0.0, 10.0])
def test_spark_ratings_equal_the_pandas_definition(
    spark: SparkSession, half_life_days: float, value_scale: str
) -> None:
    cfg = FeedbackConfig(half_life_days=half_life_days, value_scale=value_scale)
    events = spark.createDataFrame(ROWS, E.spark_event_schema())
    got = {
        (r[E.USER_ID], r[E.ITEM_ID]): r[RATING]
        for r in to_interactions(dedupe_events(events), cfg, reference_ms=T).collect()
    }
    pdf = pd.DataFrame(ROWS[1:], columns=list(E.event_contract().field_names))
    pdf["w"] = event_weights(cfg, pdf[E.EVENT_TYPE], pdf[E.VALUE], pdf[E.EVENT_TIME], T)
    expected = pdf.groupby([E.USER_ID, E.ITEM_ID])["w"].sum().to_dict()
    expected = {k: v for k, v in expected.items() if v != 0}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_decay_halves_weight_per_half_life_and_skips_count_against(spark: SparkSession) -> None:
    import math

    cfg = FeedbackConfig(half_life_days=10.0)
    events = spark.createDataFrame(ROWS, E.spark_event_schema())
    got = {
        (r[E.USER_ID], r[E.ITEM_ID]): r[RATING]
        for r in to_interactions(dedupe_events(events), cfg, reference_ms=T).collect()
    }
    # play of 99 s now (log1p(99) = ln 100) + a click 10 days (one half-life) ago
    assert got[("u1", "a")] == pytest.approx(math.log(100) + 0.5 * 0.5)
    # a lone skip 20 days ago: -0.5 at a quarter
    assert got[("u1", "b")] == pytest.approx(-0.5 * 0.25)
    # a view (0.3) and a skip (-0.5) at the same time: negative overall
    assert got[("u2", "c")] == pytest.approx(-0.2)
