"""`streamrec batch run --every DURATION`: retrain on a fixed cadence in one process."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' or '1h30m' -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 1d, 1h30m)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def run_every(
    every_s: float,
    run_once: Callable[[], object],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    max_runs: int | None = None,
) -> int:
    """Call ``run_once`` every ``every_s`` seconds (start to start; a run longer than the
    period starts the next at once). A failed run is logged with its cause and the schedule
    goes on: the next run may succeed. Returns the number of failed runs."""
    failures = runs = 0
    while max_runs is None or runs < max_runs:
        started = clock()
        try:
            run_once()
        except Exception:  # a scheduler must outlive one bad run; the cause is logged in full
            failures += 1
            log.exception("batch: scheduled run %d failed (%d failures so far)", runs + 1, failures)
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        sleep(max(0.0, every_s - (clock() - started)))
    return failures
