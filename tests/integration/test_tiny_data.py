"""Data too small to train on: the batch job says so, names the setting to change, and leaves
the model store and Redis as they were."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.errors import InputError
from streamrec.model import store
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
SHAPES = {
    # Eight events, only skips: no user or item has positive feedback.
    "only_skips": [(f"e{n}", f"u{n % 3}", f"i{n % 4}", "skip", T + n, None) for n in range(8)],
    # Two users and two items, some of each with only skips.
    "mostly_skips": [
        (f"e{n}", f"u{n % 2}", f"i{n % 2}", "skip" if n % 3 else "play", T + n, None)
        for n in range(8)
    ],
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_tiny_event_store_gets_a_clear_error(
    spark: SparkSession, isolated_cfg: Config, shape: str
) -> None:
    frame = spark.createDataFrame(SHAPES[shape], E.spark_event_schema())
    write_batch(frame, isolated_cfg.paths.event_store, 0)
    cfg = with_overrides(isolated_cfg, batch=dict(rank=32, tune_every=1, tune_candidates=2))
    with pytest.raises(InputError, match=r"too little data to train ALS at rank 32") as caught:
        run_batch(cfg, spark=spark)
    assert "lower batch.rank" in str(caught.value)
    assert store.current_version(cfg.paths.model_store) is None
