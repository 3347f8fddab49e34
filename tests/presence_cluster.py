"""A cluster of N nodes running ``presence_app``, driven only through WebSockets.

The introspection, presence, targeted-send and server-request tests are written against
:class:`PresenceCluster`, so the same tests run on nodes in this process (a shared
``MemoryBus``) and on nodes in separate OS processes joined over ZeroMQ. A test sees:

- ``cluster.nodes``: how many nodes there are; ``cluster.node_id(k)``;
- ``await cluster.admin(k)``: an :class:`Admin` client on node ``k`` whose requests call the
  server API under test there (``count``, ``by_user``, ``ask``, ...);
- ``await cluster.user(k, user="u1", plan=..., rooms=...)``: a :class:`User` (our client)
  connected to node ``k``, recording every ``notice`` it receives and answering
  ``confirm`` server requests with its ``answer`` function;
- ``await cluster.crash(k)`` (vanish without telling anyone) and ``await cluster.stop(k)``
  (graceful close);
- ``cluster.ttl``: how long a silent node stays in queries.

Kinds live in :data:`KINDS`; the ZeroMQ issue registers its multi-process kind there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import closing_all
from helpers import DEFAULT_TIMEOUT, eventually
from presence_app import Confirmed, Me, Question, Text, api, build_server

from superline_zmq import Client, SocketError, SocketServer, connect
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus
from superline_zmq.testing import LocalCluster

#: Liveness settings of test clusters: fast, so crash tests take well under a second or two.
HEARTBEAT_INTERVAL = 0.1
TTL = 0.6


class User:
    """Our client on one node, as user ``user``."""

    def __init__(self, node: int, client: Client, me: Me, *, implement: bool = True) -> None:
        self.node = node
        self.client = client
        self.id = me.id
        self.user = me.user
        self.notices: list[str] = []
        self.asked: list[str] = []
        self.closed = False
        self.answer: Callable[[Question], Awaitable[Confirmed]] = self._default_answer
        client.on("notice", lambda t: self.notices.append(t.text))
        if implement:
            client.implement({"confirm": self._confirm, "bad_confirm": self._bad_confirm})

    async def _default_answer(self, q: Question) -> Confirmed:
        return Confirmed(ok=q.q == "ready?")

    async def _confirm(self, q: Question) -> Confirmed:
        self.asked.append(q.q)
        return await self.answer(q)

    async def _bad_confirm(self, q: Question) -> Any:
        return {"ok": "not a bool"}

    async def expect(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await eventually(lambda: text in self.notices, timeout, message=lambda: f"{self.id} got {self.notices}")

    async def close(self) -> None:
        self.closed = True
        await asyncio.wait_for(self.client.close(), DEFAULT_TIMEOUT)


class Admin:
    """An admin client on one node: each method is one request to that node."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, name: str, payload: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return await self.client.call(name, payload, timeout=timeout)


class PresenceCluster:
    """N nodes of one cluster running ``presence_app``; subclasses say how nodes are run."""

    kind = "abstract"
    ttl = TTL

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.clients: list[Client] = []
        self._admins: dict[int, Admin] = {}
        self._users: list[User] = []

    @property
    def nodes(self) -> int:
        return len(self.urls)

    def node_id(self, k: int) -> str:
        raise NotImplementedError

    async def admin(self, k: int) -> Admin:
        if k not in self._admins:
            self._admins[k] = Admin(await self._connect(k, role="admin"))
        return self._admins[k]

    async def user(
        self, k: int, user: str | None = None, *, plan: str | None = None, rooms: str = "", implement: bool = True
    ) -> User:
        params = {"rooms": rooms} if rooms else {}
        if user is not None:
            params["user"] = user
        if plan is not None:
            params["plan"] = plan
        client = await self._connect(k, role="user", **params)
        me: Me = await client.call("whoami")
        u = User(k, client, me, implement=implement)
        self._users.append(u)
        return u

    async def _connect(self, k: int, role: str, **params: str) -> Client:
        client = await connect(
            api, self.urls[k], role=role, params=params, reconnect=False, open_timeout=DEFAULT_TIMEOUT
        )
        self.clients.append(client)
        return client

    async def count_everywhere(self, n: int, nodes: list[int] | None = None) -> None:
        """Wait until ``srv.cluster.count()`` is ``n`` plus the admin connections, on every node listed."""
        nodes = list(nodes if nodes is not None else range(self.nodes))
        for k in nodes:
            await self.admin(k)
        for k in nodes:
            admin = self._admins[k]

            async def check(admin: Admin = admin) -> bool:
                return bool(await admin.call("count") == n + len(self._admins))

            await eventually(check, message=f"node {k}: cluster count never became {n}")

    async def crash(self, k: int) -> None:
        raise NotImplementedError

    async def stop(self, k: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        for client in self.clients:
            try:
                await asyncio.wait_for(client.close(), DEFAULT_TIMEOUT)
            except (TimeoutError, SocketError, OSError):
                pass


class MemoryPresenceCluster(PresenceCluster):
    """N servers in this process on one :class:`MemoryBus`."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.bus = MemoryBus(heartbeat_interval=HEARTBEAT_INTERVAL, ttl=TTL)
        self.servers: list[SocketServer] = []

    def node_id(self, k: int) -> str:
        return self.servers[k].node_id

    async def crash(self, k: int) -> None:
        adapter = self.servers[k].adapter
        assert isinstance(adapter, MemoryAdapter)
        await adapter.simulate_crash()

    async def stop(self, k: int) -> None:
        await asyncio.wait_for(self.servers[k].close(), DEFAULT_TIMEOUT)

    async def close(self) -> None:
        await super().close()
        for srv in reversed(self.servers):
            await asyncio.wait_for(srv.close(), DEFAULT_TIMEOUT)


async def start_memory(n: int, **options: Any) -> PresenceCluster:
    cluster = MemoryPresenceCluster()
    try:
        for _ in range(n):
            srv = build_server(adapter=cluster.bus.adapter(), **options)
            cluster.servers.append(srv)
            await srv.listen("127.0.0.1", 0)
            cluster.urls.append(srv.url)
    except BaseException:
        await cluster.close()
        raise
    # every node knows every other before the test starts
    await eventually(lambda: all(len(_peers(s)) == n - 1 for s in cluster.servers), DEFAULT_TIMEOUT)
    return cluster


def _peers(srv: SocketServer) -> dict[Any, bool]:
    adapter = srv.adapter
    assert isinstance(adapter, MemoryAdapter)
    return adapter.members()


class ProcessPresenceCluster(PresenceCluster):
    """N node processes (``superline-zmq run presence_app:app``) joined over ZeroMQ on 127.0.0.1."""

    kind = "zeromq"

    def __init__(self, local: LocalCluster) -> None:
        super().__init__()
        self.local = local
        self.urls = local.urls

    def node_id(self, k: int) -> str:
        return self.local.nodes[k].node_id

    async def crash(self, k: int) -> None:
        await self.local.kill(k)  # SIGKILL: no leave, no goodbye

    async def stop(self, k: int) -> None:
        await self.local.stop(k)  # SIGTERM: srv.close() announces the leave

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.local.close()


async def start_processes(n: int, **options: Any) -> PresenceCluster:
    if options:
        raise ValueError(f"process clusters take no server options, got {sorted(options)}")
    local = LocalCluster(
        "presence_app:app", n, heartbeat_interval=HEARTBEAT_INTERVAL, ttl=TTL, cwd=str(Path(__file__).parent)
    )
    await local.start()
    return ProcessPresenceCluster(local)


StartCluster = Callable[..., Awaitable[PresenceCluster]]

#: Cluster kinds the presence tests run on: servers in this process on a MemoryBus, and
#: real node processes joined over ZeroMQ.
KINDS: dict[str, StartCluster] = {"memory": start_memory, "zeromq": start_processes}


@pytest.fixture(params=sorted(KINDS))
async def make_presence_cluster(request: pytest.FixtureRequest) -> AsyncIterator[StartCluster]:
    """``await make_presence_cluster(n)``: a started presence cluster, closed after the test."""
    async with closing_all(KINDS[request.param]) as make:
        yield make


@pytest.fixture(params=[1, 3], ids=lambda n: f"{n}node")
async def pcluster(request: pytest.FixtureRequest, make_presence_cluster: StartCluster) -> PresenceCluster:
    """A lone server and a 3-node cluster."""
    return await make_presence_cluster(request.param)


@pytest.fixture(params=[2, 3], ids=lambda n: f"{n}node")
async def multi(request: pytest.FixtureRequest, make_presence_cluster: StartCluster) -> PresenceCluster:
    """Clusters of 2 and 3 nodes (for behaviour that needs another node)."""
    return await make_presence_cluster(request.param)


__all__ = ["Admin", "PresenceCluster", "Text", "User"]
