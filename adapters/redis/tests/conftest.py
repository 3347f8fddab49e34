"""Fixtures of the Redis adapter's suite: real ``redis-server`` processes on loopback.

``redis_server`` is one server for the whole session (tests keep apart by using a
unique key/channel prefix each); ``make_redis`` starts private ones (a restart test
stops and restarts its own, an auth test needs ``--requirepass``). Every server runs
in a temporary directory with persistence off, on a free 127.0.0.1 port, and is stopped
by its PID (SIGTERM, then SIGKILL) whatever the test did.

``redis-server`` missing is a failure, not a skip: install it with
``apt-get install redis-server``.

Every async test runs under the default asyncio loop and under uvloop
(``pytest_asyncio_loop_factories``), except tests marked ``one_loop`` (they drive node
processes, which run their own loop).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rd_server import RedisServer

try:
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None  # type: ignore[assignment]


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    if uvloop is None:
        pytest.skip("uvloop is not installed (pip install uvloop) - uvloop variant skipped")
    return uvloop.new_event_loop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "one_loop: run under the default asyncio loop only (node processes)")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test under asyncio and uvloop; ``one_loop`` tests under asyncio only."""
    if item.get_closest_marker("one_loop") is not None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop_factory}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server shared by the session (use a unique prefix per test)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    """``make_redis(password=..., extra=[...])``: a private redis-server, stopped after the test."""
    servers: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        server = RedisServer(**options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
def prefix() -> str:
    """A key/channel prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"
