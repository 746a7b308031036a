"""Send at a steady rate: record ``n`` is due ``n / rate`` seconds after the start.

Scheduling against the start, rather than sleeping ``1 / rate`` after each send, keeps the
average rate exact however long each send takes: a slow send is caught up by not sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Sleeps shorter than this are skipped (the OS cannot honour them); the schedule catches up.
MIN_SLEEP_S = 0.001


def due_in(sent: int, rate: float, elapsed_s: float) -> float:
    """Seconds to wait before sending record number ``sent`` (0-based); 0 when due or late.

    ``rate`` is records per second; 0 (or less) means unthrottled.
    """
    if rate <= 0:
        return 0.0
    return max(0.0, sent / rate - elapsed_s)


class Pacer:
    """Blocks in ``wait()`` until the next record is due at ``rate`` records per second."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._count = 0

    def wait(self) -> float:
        """Wait for the next record's turn; returns the seconds slept."""
        if self._start is None:
            self._start = self._clock()
        delay = due_in(self._count, self.rate, self._clock() - self._start)
        self._count += 1
        if delay < MIN_SLEEP_S:
            return 0.0
        self._sleep(delay)
        return delay
