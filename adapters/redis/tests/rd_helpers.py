"""Bounded waits for the Redis adapter's tests (nothing here sleeps to "give something time")."""

from __future__ import annotations

from superline_zmq.testing.wait import eventually

DEFAULT_TIMEOUT = 5.0

__all__ = ["DEFAULT_TIMEOUT", "eventually"]


