"""A cluster of N nodes for the fan-out tests, behind an interface other transports can provide.

What a test sees of a cluster (the interface a ZeroMQ cluster must provide too):

- ``cluster.nodes[k]``: node ``k``'s :class:`~superline_zmq.SocketServer` (rooms,
  ``publish``, ``for_role``, the bus, ``statistics()``);
- ``await cluster.connect(k, role="user", **params)``: a :class:`Member`, i.e. our Python
  client connected to node ``k`` plus the server-side ``Conn`` it got;
- ``cluster.channels(k)``: the channels node ``k`` holds on its adapter right now;
- ``cluster.errors[k]``: what node ``k`` reported to ``on_error``;
- ``await cluster.settle(origin)``: a barrier: returns once every member has received
  everything node ``origin`` (every node when ``None``) sent before the call;
- ``await cluster.close()``: closes every client, then every node.

:class:`MemoryCluster` is N servers sharing one :class:`~superline_zmq.adapters.memory.MemoryBus`
in this process. A later issue adds a ZeroMQ cluster under the same interface and
registers it in :data:`CLUSTERS`; every test using the ``make_cluster`` / ``cluster``
fixtures then runs against both.

How "nothing arrived" is asserted: never by sleeping. :meth:`Cluster.settle` broadcasts a
sentinel ``sync`` event from the origin node to :data:`SYNC_ROOM`, which every member
joins on connect, and waits until every member has it. Frames from one node reach one
connection in the order that node sent them (one adapter publisher, FIFO on each
connection), so once the sentinel arrived, anything sent before it would have too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import pytest
from fanout_app import Me, api, build_server
from helpers import DEFAULT_TIMEOUT, eventually

from superline_zmq import Backoff, Client, Conn, SocketServer, Subscription, connect
from superline_zmq.adapters.memory import MemoryBus
from superline_zmq.adapters.zeromq import zeromq_adapter

#: The room every member joins on connect; :meth:`Cluster.settle` broadcasts through it.
SYNC_ROOM = "__sync__"

#: Fast reconnects (reconnect is off for members anyway; kept for symmetry with conftest).
FAST_BACKOFF = Backoff(base=0.01, factor=2.0, cap=0.05)


class Member:
    """Our client connected to one node, recording every event and publication it gets.

    ``got`` holds ``(name, payload)`` in arrival order for every event of the role's
    surface (``sync`` sentinels excepted) and every topic :meth:`subscribe` d to.
    """

    def __init__(self, cluster: Cluster, node: int, client: Client, me: Me, conn: Conn | None) -> None:
        self.cluster = cluster
        self.node = node
        self.client = client
        self.id = me.id
        self.role = me.role
        #: The server-side connection (None on a cluster whose nodes live in other processes).
        self._conn = conn
        self.got: list[tuple[str, Any]] = []
        self.syncs: set[int] = set()
        self.closed = False
        for name in client.surface.events:
            if name == "sync":
                client.on(name, self.syncs.add)
            else:
                client.on(name, lambda payload, name=name: self.got.append((name, payload)))

    def __repr__(self) -> str:
        return f"<Member {self.id} role={self.role} node={self.node}>"

    @property
    def conn(self) -> Conn:
        """The server-side :class:`~superline_zmq.Conn` of this member."""
        assert self._conn is not None, "this cluster does not expose server-side connections"
        return self._conn

    def received(self, name: str) -> list[Any]:
        """Payloads of ``name`` received so far, in order."""
        return [p for n, p in self.got if n == name]

    async def expect(self, name: str, payload: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until ``(name, payload)`` has arrived."""
        await eventually(
            lambda: (name, payload) in self.got,
            timeout,
            message=lambda: f"{self!r} never got {name}={payload!r}; got {self.got!r}",
        )

    async def subscribe(self, topic: str) -> Subscription:
        """Subscribe to ``topic`` (recording into ``got``) and wait for the server's ack."""
        sub = self.client.subscribe(topic, lambda payload: self.got.append((topic, payload)))
        await asyncio.wait_for(sub.ready, DEFAULT_TIMEOUT)
        return sub

    async def close(self) -> None:
        """Close the client (the server then drops the connection)."""
        self.closed = True
        await asyncio.wait_for(self.client.close(), DEFAULT_TIMEOUT)


class Cluster:
    """N nodes of one cluster; subclasses say how nodes are built and linked."""

    kind = "abstract"

    def __init__(self) -> None:
        self.nodes: list[SocketServer] = []
        self.errors: list[list[BaseException]] = []
        self.members: list[Member] = []
        self._sync_seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self.nodes)

    def channels(self, k: int) -> frozenset[str]:
        """The channels node ``k`` holds on its adapter right now."""
        raise NotImplementedError

    def on_error(self, k: int) -> Callable[[BaseException, Conn | None], None]:
        """The ``on_error`` hook for node ``k``: records into ``errors[k]``."""
        errors = self.errors[k]
        return lambda exc, conn: errors.append(exc)

    async def connect(self, k: int, role: str = "user", *, sync: bool = True, **params: str) -> Member:
        """Connect our client to node ``k`` as ``role`` (extra query ``params``).

        The member joins :data:`SYNC_ROOM` unless ``sync=False`` (then :meth:`settle`
        cannot vouch for it).
        """
        node = self.nodes[k]
        client = await connect(
            api,
            node.url,
            role=role,
            params=params,
            reconnect=False,
            backoff=FAST_BACKOFF,
            open_timeout=DEFAULT_TIMEOUT,
            timeout=DEFAULT_TIMEOUT,
        )
        try:
            me: Me = await client.call("whoami")
        except BaseException:
            await client.close()
            raise
        member = Member(self, k, client, me, node.get(me.id))
        self.members.append(member)
        if sync:
            await node.room(SYNC_ROOM).add(member.conn)
        return member

    async def settle(self, origin: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Return once every open member has received all that ``origin`` sent before now."""
        origins = range(len(self.nodes)) if origin is None else (origin,)
        for k in origins:
            seq = next(self._sync_seq)
            self.nodes[k].room(SYNC_ROOM).broadcast("sync", seq)
            await eventually(
                lambda seq=seq: all(seq in m.syncs for m in self.members if not m.closed),
                timeout,
                message=lambda seq=seq, k=k: (
                    f"sentinel {seq} from node {k} missing at "
                    f"{[m for m in self.members if not m.closed and seq not in m.syncs]!r}"
                ),
            )

    async def close(self) -> None:
        """Close every client, then every node."""
        for member in self.members:
            if not member.closed:
                await member.close()
        for srv in reversed(self.nodes):
            await asyncio.wait_for(srv.close(), 10)


class MemoryCluster(Cluster):
    """N servers in this process sharing one :class:`MemoryBus`."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.bus = MemoryBus()

    def channels(self, k: int) -> frozenset[str]:
        return self.nodes[k].adapter.channels  # type: ignore[attr-defined, no-any-return]


async def start_memory_cluster(n: int, **options: Any) -> MemoryCluster:
    """Start ``n`` fan-out servers (``fanout_app.build_server(**options)``) on one bus."""
    cluster = MemoryCluster()
    try:
        for k in range(n):
            cluster.errors.append([])
            srv = build_server(adapter=cluster.bus.adapter(), on_error=cluster.on_error(k), **options)
            cluster.nodes.append(srv)
            await srv.listen("127.0.0.1", 0)
    except BaseException:
        await cluster.close()
        raise
    return cluster


class ZeroMQCluster(Cluster):
    """N servers in this process, each with its own ZeroMQ adapter, joined over 127.0.0.1."""

    kind = "zeromq"

    def channels(self, k: int) -> frozenset[str]:
        return self.nodes[k].adapter.channels  # type: ignore[attr-defined, no-any-return]


async def start_zeromq_cluster(n: int, **options: Any) -> ZeroMQCluster:
    """Start ``n`` fan-out servers whose ZeroMQ adapters all seed with the first node's router."""
    cluster = ZeroMQCluster()
    seeds: list[str] = []
    try:
        for k in range(n):
            cluster.errors.append([])
            adapter = await zeromq_adapter("tcp://127.0.0.1:0", seeds, heartbeat_interval=0.2, ttl=2.0)
            seeds = seeds or [adapter.endpoints["router"]]
            srv = build_server(adapter=adapter, on_error=cluster.on_error(k), **options)
            cluster.nodes.append(srv)
            await srv.listen("127.0.0.1", 0)
        await eventually(
            lambda: all(sum(s.adapter.members().values()) == n - 1 for s in cluster.nodes),  # type: ignore[attr-defined]
            DEFAULT_TIMEOUT,
            message="the ZeroMQ nodes never all saw each other",
        )
    except BaseException:
        await cluster.close()
        raise
    return cluster


StartCluster = Callable[..., Awaitable[Cluster]]

#: Cluster kinds the fan-out fixtures run against: in-process bus, and real ZeroMQ sockets.
CLUSTERS: dict[str, StartCluster] = {"memory": start_memory_cluster, "zeromq": start_zeromq_cluster}


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@contextlib.asynccontextmanager
async def closing_all(start: Callable[..., Awaitable[C]]) -> AsyncIterator[Callable[..., Awaitable[C]]]:
    """Yield ``start`` wrapped so that every cluster it makes is closed on exit."""
    clusters: list[C] = []

    async def make(n: int, **options: Any) -> C:
        cluster = await start(n, **options)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.close()


@pytest.fixture(params=sorted(CLUSTERS))
async def make_cluster(request: pytest.FixtureRequest) -> AsyncIterator[StartCluster]:
    """``await make_cluster(n, **server_options)``: a started cluster, closed after the test."""
    async with closing_all(CLUSTERS[request.param]) as make:
        yield make


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n}node")
async def cluster(request: pytest.FixtureRequest, make_cluster: StartCluster) -> Cluster:
    """A lone server, and clusters of 2 and 3 nodes (default options)."""
    return await make_cluster(request.param)


def sizes(cluster: Cluster, room: str) -> Sequence[int]:
    """``room``'s local size on every node."""
    return [srv.room(room).size for srv in cluster.nodes]
