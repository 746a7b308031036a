"""The lookup benchmark's pure parts: the ramp's stopping rule, a response head's length, and
cores from CPU-time snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from streamrec.bench.cpu import CpuSnapshot, cores_used
from streamrec.bench.loadgen import content_length
from streamrec.bench.lookup import LookupParams
from streamrec.bench.lookup_http import _ramps


def _steps(p99_by_rate: dict[float, float], share: float = 1.0) -> Any:
    def run(rate: float) -> dict[str, Any]:
        calls.append(rate)
        return {"p99_ms": p99_by_rate[rate], "errors": 0, "rate_achieved": share * rate}

    calls: list[float] = []
    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_ramps_go_past_one_miss_stop_at_two_in_a_row_and_interleave() -> None:
    params = LookupParams(ramp_rates=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), p99_limit_ms=10.0)
    new = _steps({1.0: 1, 2.0: 50, 3.0: 2, 4.0: 60, 5.0: 70, 6.0: 1})
    old = _steps({1.0: 1, 2.0: 60, 3.0: 70, 4.0: 1, 5.0: 1, 6.0: 1})
    order: list[str] = []

    def runs(name: str, run: Any) -> Any:
        return lambda rate: order.append(name) or run(rate)

    result = _ramps({"new": runs("new", new), "old": runs("old", old)}, params)
    (new_ramp, new_held), (old_ramp, old_held) = result["new"], result["old"]
    assert [step["held"] for step in new_ramp] == [True, False, True, False, False]
    assert (new_held, new.calls) == (3.0, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert [step["held"] for step in old_ramp] == [True, False, False]
    assert (old_held, old.calls) == (1.0, [1.0, 2.0, 3.0])
    assert order == ["new", "old", "old", "new", "new", "old", "new", "new"]


def test_ramp_counts_a_short_rate_as_not_held() -> None:
    params = LookupParams(ramp_rates=(100.0,), ramp_misses=1)
    ((ramp, held),) = _ramps({"only": _steps({100.0: 1.0}, share=0.9)}, params).values()
    assert (len(ramp), ramp[0]["held"], held) == (1, False, 0.0)


def test_content_length_of_a_response_head() -> None:
    head = b"http/1.1 200 ok\r\ndate: x\r\ncontent-length: 479\r\ncontent-type: a/b"
    assert content_length(head) == 479
    assert content_length(b"http/1.1 200 ok\r\ncontent-type: a/b") is None


def test_cores_used_splits_the_machine_between_groups_and_others() -> None:
    before = CpuSnapshot({"server": 10.0, "redis": 1.0}, busy_s=100.0, total_s=400.0)
    after = CpuSnapshot({"server": 13.0, "redis": 1.5}, busy_s=106.0, total_s=404.0)
    used = cores_used(before, after, wall_s=2.0)
    assert used == pytest.approx({"server": 1.5, "redis": 0.25, "machine": 3.0, "others": 1.25})
