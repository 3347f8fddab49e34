"""Rate-limited logging: every drop is logged, without letting a flood drown the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs at most ``burst`` records per ``key`` every ``period`` seconds, then one summary.

    Suppressed records are counted and reported with the next record that gets through,
    so nothing is silent and a hostile peer cannot flood the log.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        period: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._period = period
        self._burst = burst
        self._clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` under ``key`` unless that key is over its budget this period."""
        now = self._clock()
        start, sent, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self._period:
            start, sent = now, 0
        if sent < self._burst:
            if suppressed:
                msg = f"{msg} (+{suppressed} similar suppressed)"
                suppressed = 0
            self._logger.log(level, msg, *args)
            sent += 1
        else:
            suppressed += 1
        self._windows[key] = (start, sent, suppressed)
        if len(self._windows) > 1024:  # keys are a few fixed reasons; bound it anyway
            self._windows.pop(next(iter(self._windows)))
