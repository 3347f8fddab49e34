"""A fault-injecting TCP link: an asyncio proxy a test can cut, delay or blackhole, per direction.

:class:`FaultProxy` listens on a loopback port and forwards every connection to a
target (a node's bound endpoint). Point peers at the proxy (the ZeroMQ adapter's
``advertise=``/``advertise_pub=``, which :class:`~superline_zmq.testing.LocalCluster`
does with ``faults=True``) and the test controls the link:

- :meth:`FaultProxy.cut`: every connection is reset and new ones are closed as soon as
  they are accepted, as when a host becomes unreachable and refuses. A TCP connection
  cannot be cut one way, so a cut is both ways; for one-way loss use ``blackhole``.
- :meth:`FaultProxy.blackhole`: bytes in that direction vanish; connections stay open
  (a silent network: only heartbeats can tell).
- :meth:`FaultProxy.delay`: bytes in that direction arrive ``seconds`` late, in order.
- :meth:`FaultProxy.heal`: undo all of that (for one direction, or some peers).

``"in"`` is towards the target (what a peer sends the node), ``"out"`` back from it.
Each fault can be limited to some *peers*: clients the proxy tells apart with its
``identify`` callback (given the client's address, it returns a key, such as the index
of the node process that opened the connection; see :func:`client_pid`). Without
``peers`` a fault applies to every client, present and future.

Nothing leaks: :meth:`FaultProxy.statistics` counts connections accepted, refused,
closed and open (``active``) and the bytes forwarded and dropped each way, and
:meth:`FaultProxy.close` closes every connection and the listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Direction", "FaultProxy", "client_pid"]

#: ``"in"``: towards the target; ``"out"``: back from it to the client; ``"both"``.
Direction = Literal["in", "out", "both"]
#: The client's address as ``socket.getpeername()`` gives it.
Peername = tuple[str, int] | tuple[str, int, int, int]

_CHUNK = 64 * 1024


@dataclass
class _Faults:
    """What is wrong with the link for one set of clients."""

    cut: bool = False
    blackhole: set[str] = field(default_factory=set)  # directions
    delay: dict[str, float] = field(default_factory=dict)  # direction -> seconds

    def __bool__(self) -> bool:
        return self.cut or bool(self.blackhole) or bool(self.delay)


class _Conn:
    __slots__ = ("client", "key", "tasks", "upstream")

    def __init__(self, key: Hashable | None, client: asyncio.StreamWriter) -> None:
        self.key = key
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    """A TCP proxy from ``host:port`` (port 0: a free one) to ``target``, with faults on demand.

    ``target`` may be set later (:meth:`retarget`): a connection accepted before waits up
    to ``connect_timeout`` for it. ``identify(peername)`` names the client of each new
    connection (None: anonymous) for faults limited to ``peers``. Call :meth:`start` in a
    running loop (or use ``async with``), and :meth:`close` when done.
    """

    def __init__(
        self,
        target: tuple[str, int] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        identify: Callable[[Peername], Hashable | None] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.identify = identify
        self.connect_timeout = connect_timeout
        self._target = target
        self._target_set = asyncio.Event()
        if target is not None:
            self._target_set.set()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._all = _Faults()
        self._by_peer: dict[Hashable, _Faults] = {}
        self._closed = False
        self._stats = {
            "accepted": 0,
            "refused": 0,
            "closed": 0,
            "upstream_failed": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "dropped_in": 0,
            "dropped_out": 0,
        }

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FaultProxy:
        """Listen (the port is known once this returns)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        tasks = [t for conn in list(self._conns) for t in conn.tasks]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def endpoint(self) -> str:
        """``tcp://host:port`` of the proxy, for ZeroMQ."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def target(self) -> tuple[str, int] | None:
        return self._target

    def retarget(self, host: str, port: int) -> None:
        """Forward new connections to ``host:port`` (open ones stay where they are)."""
        self._target = (host, port)
        self._target_set.set()

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    def statistics(self) -> dict[str, int]:
        """``accepted``, ``refused`` (closed at once by a cut), ``closed``, ``upstream_failed``,
        ``bytes_in``/``bytes_out`` forwarded, ``dropped_in``/``dropped_out`` (blackholed), ``active``."""
        return {**self._stats, "active": len(self._conns)}

    # ------------------------------------------------------------------ faults
    def cut(self, *, peers: Iterable[Hashable] | None = None) -> None:
        """Reset every connection (of ``peers``) and close new ones at once, until :meth:`heal`."""
        for f in self._faults_for(peers):
            f.cut = True
        for conn in list(self._conns):
            if self._state(conn.key).cut:
                conn.abort()

    def blackhole(self, direction: Direction = "both", *, peers: Iterable[Hashable] | None = None) -> None:
        """Drop every byte going ``direction`` (for ``peers``); connections stay open."""
        for f in self._faults_for(peers):
            f.blackhole.update(_directions(direction))

    def delay(self, seconds: float, direction: Direction = "both", *, peers: Iterable[Hashable] | None = None) -> None:
        """Deliver every byte going ``direction`` (for ``peers``) ``seconds`` late, in order."""
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative, got {seconds}")
        for f in self._faults_for(peers):
            for d in _directions(direction):
                f.delay[d] = seconds

    def heal(self, direction: Direction = "both", *, peers: Iterable[Hashable] | None = None) -> None:
        """Undo the faults going ``direction`` (a cut is undone by ``"both"`` only), for ``peers``
        (None: for everyone, limited faults included)."""
        targets = [self._all, *self._by_peer.values()] if peers is None else self._faults_for(peers)
        dirs = _directions(direction)
        for f in targets:
            if direction == "both":
                f.cut = False
            f.blackhole.difference_update(dirs)
            for d in dirs:
                f.delay.pop(d, None)
        self._by_peer = {k: f for k, f in self._by_peer.items() if f}

    def faulty(self) -> bool:
        """Whether any fault is in place."""
        return bool(self._all) or any(self._by_peer.values())

    def _faults_for(self, peers: Iterable[Hashable] | None) -> list[_Faults]:
        if peers is None:
            return [self._all]
        return [self._by_peer.setdefault(p, _Faults()) for p in peers]

    def _state(self, key: Hashable | None) -> _Faults:
        """The faults a client lives with: everyone's, plus its own."""
        own = self._by_peer.get(key) if key is not None else None
        if own is None:
            return self._all
        return _Faults(
            cut=self._all.cut or own.cut,
            blackhole=self._all.blackhole | own.blackhole,
            delay={**self._all.delay, **own.delay},
        )

    # ------------------------------------------------------------------ forwarding
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        key: Hashable | None = None
        if self.identify is not None and peer is not None:
            try:
                key = self.identify(peer)
            except Exception:
                key = None
        if self._closed or self._state(key).cut:
            self._stats["refused"] += 1
            writer.transport.abort()
            return
        self._stats["accepted"] += 1
        conn = _Conn(key, writer)
        self._conns.add(conn)
        try:
            try:
                await asyncio.wait_for(self._target_set.wait(), self.connect_timeout)
                assert self._target is not None
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self._target), self.connect_timeout
                )
            except (OSError, TimeoutError):
                self._stats["upstream_failed"] += 1
                return
            conn.upstream = up_writer
            if self._closed or self._state(key).cut:  # cut while we connected
                return
            loop = asyncio.get_running_loop()
            conn.tasks = [
                loop.create_task(self._pump(conn, reader, up_writer, "in")),
                loop.create_task(self._pump(conn, up_reader, writer, "out")),
            ]
            # either side ending (or a cut) ends both
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.abort()
            for t in conn.tasks:
                t.cancel()
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            self._conns.discard(conn)
            self._stats["closed"] += 1

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, d: str) -> None:
        """Read one direction, apply its faults, write in order (a delayed chunk keeps its place)."""
        queue: deque[tuple[float, bytes | None]] = deque()  # (due, data); None: end of stream
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def write() -> None:
            while True:
                while not queue:
                    wake.clear()
                    await wake.wait()
                due, data = queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                queue.popleft()
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
                self._stats[f"bytes_{d}"] += len(data)

        writer_task = loop.create_task(write())
        read: asyncio.Task[bytes] | None = None
        try:
            while True:
                read = loop.create_task(reader.read(_CHUNK))
                finished, _ = await asyncio.wait({read, writer_task}, return_when=asyncio.FIRST_COMPLETED)
                if read not in finished:  # the writer failed: the other end is gone
                    return
                data = read.result()
                state = self._state(conn.key)
                if state.cut:
                    return
                if not data:
                    queue.append((loop.time() + state.delay.get(d, 0.0), None))
                    wake.set()
                    await writer_task  # flush what is queued, then the connection ends
                    return
                if d in state.blackhole:
                    self._stats[f"dropped_{d}"] += len(data)
                    continue
                queue.append((loop.time() + state.delay.get(d, 0.0), data))
                wake.set()
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            for t in (read, writer_task):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(*(t for t in (read, writer_task) if t is not None), return_exceptions=True)


def _directions(direction: Direction) -> set[str]:
    if direction not in ("in", "out", "both"):
        raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}")
    return {"in", "out"} if direction == "both" else {direction}


def client_pid(peer: Peername, server: tuple[str, int], pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the client end of the loopback TCP connection from ``peer`` to
    ``server`` (Linux: /proc), or None. This is how a :class:`FaultProxy` in front of node
    processes tells which node opened a connection (they all connect from 127.0.0.1)."""
    inode = _client_inode(peer[1], server[1])
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") == link:
                    return pid
    return None


def _client_inode(local_port: int, remote_port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    lport = int(parts[1].rpartition(":")[2], 16)
                    rport = int(parts[2].rpartition(":")[2], 16)
                    if lport == local_port and rport == remote_port:
                        return int(parts[9])
        except OSError:
            continue
    return None
