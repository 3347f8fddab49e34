"""Bounded waits for tests: poll a condition until it holds, fail clearly at a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 5.0,
    *,
    interval: float = 0.005,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that value.

    Fails with ``AssertionError`` naming ``message`` (or the predicate) and its last value once
    ``timeout`` seconds have passed. Use it instead of sleeping "long enough".
    """
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
