"""Bounded waits for the Redis adapter's tests (nothing here sleeps to "give something time")."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_TIMEOUT = 5.0


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    interval: float = 0.005,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy and return its value; fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"condition not met within {timeout} s: {what or name} (last value: {last!r})")
        await asyncio.sleep(interval)
