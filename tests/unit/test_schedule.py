"""The retraining schedule, with a fake clock."""

from __future__ import annotations

import pytest

from streamrec.batch.schedule import parse_duration, run_every

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0.5h", 1800)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "5x", "1h 2x", "0s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_runs_start_every_period_and_failures_do_not_stop_the_schedule() -> None:
    now = [0.0]
    starts: list[float] = []
    sleeps: list[float] = []

    def run() -> None:
        starts.append(now[0])
        now[0] += 25.0  # each run takes 25 s
        if len(starts) == 2:
            raise RuntimeError("broker down")

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    failures = run_every(60.0, run, clock=lambda: now[0], sleep=sleep, max_runs=3)
    assert failures == 1
    assert starts == [0.0, 60.0, 120.0]
    assert sleeps == [35.0, 35.0]
