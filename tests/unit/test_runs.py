"""Checkpoint runs: a reset checkpoint gets a new epoch, so its fences outrank every earlier
run's; a restart from the same checkpoint keeps its epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.runs import (
    BATCHES_PER_RUN,
    fence_id,
    is_new_checkpoint,
    run_epoch,
    spark_query_id,
)

pytestmark = pytest.mark.unit


def _cfg(tmp_path: Path) -> Config:
    return with_overrides(Config(), paths=dict(stream_checkpoint=str(tmp_path / "ckpt")))


def _spark_metadata(cfg: Config, query: str, query_id: str) -> None:
    folder = Path(cfg.paths.stream_checkpoint) / query
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata").write_text(json.dumps({"id": query_id}) + "\n")


def test_a_reset_checkpoint_starts_a_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    assert is_new_checkpoint(cfg, "lists") and spark_query_id(cfg, "lists") is None
    with pytest.raises(RuntimeError):
        run_epoch(cfg, "lists")
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.5)
    _spark_metadata(cfg, "lists", "q1")
    first = run_epoch(cfg, "lists")
    assert first == 1_800_000_000 and not is_new_checkpoint(cfg, "lists")
    monkeypatch.setattr("time.time", lambda: 1_800_000_100.0)
    assert run_epoch(cfg, "lists") == first  # a restart: same checkpoint, same run
    _spark_metadata(cfg, "lists", "q2")  # the checkpoint was deleted and made again
    second = run_epoch(cfg, "lists")
    assert second == 1_800_000_100
    # Any micro-batch of the later run outranks every micro-batch of the earlier one.
    assert fence_id(second, 0) > fence_id(first, BATCHES_PER_RUN - 1)
    assert fence_id(first, 7) == first * BATCHES_PER_RUN + 7


def test_a_new_run_resumes_after_the_event_stores_newest_offsets() -> None:
    from streamrec.streaming.runs import resume_offsets

    bounds = {0: (0, 120), 1: (50, 90), 2: (0, 10), 3: (0, 40)}
    stored_next = {0: 101, 1: 20, 3: 55}
    assert resume_offsets(stored_next, bounds, "earliest") == {
        0: 101,  # right after the newest stored event: nothing skipped, nothing twice
        1: 50,  # retention removed what came next: from the oldest offset still there
        2: -2,  # never stored: the configured start
        3: -2,  # stored past the end: the topic was recreated
    }
    assert resume_offsets({}, {0: (0, 5)}, "latest") == {0: -1}
