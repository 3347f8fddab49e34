"""Logging helpers: a rate limit (every drop is logged, without letting a flood drown the log),
and a JSON formatter (one object per line, for ``--log-format json``)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime


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


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``
    (arguments applied), ``pid``; ``exc`` (the formatted traceback) and ``stack`` when the
    record has them. Newlines inside values are escaped, so a line is always one record.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
