"""A pytest plugin: real local clusters as a fixture.

Enable it in a ``conftest.py`` (pytest-asyncio required)::

    pytest_plugins = ["superline_zmq.testing.fixtures"]

then::

    async def test_failover(superline_cluster):
        cluster = await superline_cluster("myapp:app", nodes=3)
        await cluster.kill(1)
        await cluster.wait_members(0, 1, timeout=3)

Every cluster the factory started is torn down (every process SIGKILLed, by PID) after
the test, whether it passed, failed or was cancelled. Options are those of
:class:`~superline_zmq.testing.LocalCluster` (``cwd``, ``env``, ``seeds``, ``ttl``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from superline_zmq.testing.cluster import LocalCluster

MakeCluster = Callable[..., Awaitable[LocalCluster]]

__all__ = ["MakeCluster", "superline_cluster"]


@pytest_asyncio.fixture
async def superline_cluster() -> AsyncIterator[MakeCluster]:
    """Factory: ``await superline_cluster("module:app", nodes=3, **options)`` -> a started cluster."""
    clusters: list[LocalCluster] = []

    async def make(app: str, nodes: int = 3, **options: Any) -> LocalCluster:
        cluster = LocalCluster(app, nodes, **options)
        clusters.append(cluster)
        await cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(clusters):
            await cluster.close()
