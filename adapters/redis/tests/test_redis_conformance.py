"""The adapter seam's conformance suite, unchanged, against the Redis adapter on a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from rd_server import RedisServer
from superline_zmq_redis import redis_adapter

from superline_zmq.adapter import Adapter
from superline_zmq.testing.conformance import AdapterConformance


class TestRedisAdapter(AdapterConformance):
    url = ""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_server: RedisServer, request: pytest.FixtureRequest) -> None:
        request.cls.url = redis_server.url

    def cluster_factory(self) -> Callable[[], Adapter | Awaitable[Adapter]]:
        url = type(self).url
        prefix = f"conf{uuid.uuid4().hex[:12]}"  # one cluster per test, alone on the shared server

        async def make() -> Adapter:
            return await redis_adapter(url, prefix=prefix, presence_ttl=10.0)

        return make
