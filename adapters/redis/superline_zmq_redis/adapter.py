"""The Redis adapter: channels over Redis pub/sub, presence in Redis keys with a TTL.

Make one with :func:`redis_adapter` and hand it to the server::

    adapter = await redis_adapter("redis://127.0.0.1:6379/0", prefix="chat", presence_ttl=90.0)
    srv = create_socket_server(api, adapter=adapter)

**Connections.** One dedicated connection in subscribe mode carries everything this node
receives; a redis-py connection pool carries every command (publishes, presence writes,
reads, heartbeats). Both come from one :func:`redis.asyncio.from_url`, so
``redis://user:pass@host:port/db``, ``rediss://`` (TLS, with redis-py's ``ssl_*`` query
options) and ``unix://`` URLs work as they do in redis-py. ``redis_options`` are passed to
``from_url`` as keyword arguments.

**Channels** (Redis pub/sub names, ``p`` the prefix)::

    p:ch:<channel>   rooms r:…, topics t:…, users u:… (held while a local member/listener exists)
    p:n:<node>       direct messages to one node (every node holds its own from start to close)
    p:cluster        join/leave announcements (every node holds it)
    p:presence       every presence change, numbered per node (held only by nodes with presence
                     listeners: see :mod:`superline_zmq_redis._mirror`)

Every message is framed ``kind (1 byte) + len(sender) (1 byte) + sender node id + data``;
``kind`` is ``P`` (publication), ``D`` (direct), ``J``/``L`` (join/leave). Redis echoes a
publication to the publishing connection's node too; the adapter drops it by its sender,
so a node never receives its own publications, and ``on_channel`` gets exactly the bytes
that were published.

**Subscribing.** :meth:`RedisAdapter.subscribe` sends ``SUBSCRIBE`` on the subscriber
connection and returns when Redis acknowledges it: Redis runs commands one at a time, so
any ``PUBLISH`` it runs after that reaches this node. Acknowledgements are matched to
requests in order (one connection, FIFO).

**Publishing.** :meth:`RedisAdapter.publish` and :meth:`RedisAdapter.send` never block:
they append to a bounded queue (``max_queue`` messages, ``max_queue_bytes`` bytes; over
either, the message is dropped and counted) and wake a writer task, which sends
everything queued so far as one pipeline (one round trip), then the next batch. So
publishes made in one event-loop tick go out together, and one node's messages reach
Redis in the order they were made (channels and direct messages alike).

**Presence.** See :mod:`superline_zmq_redis._scripts` for the keys. Each change of this
node's connections is one Lua script call (atomic, one round trip) sent by the writer
task in order; changes not yet sent are coalesced per connection, so a burst costs at
most one write per connection. A heartbeat task renews this node's ``alive`` key every
``heartbeat_interval`` (``presence_ttl / 3`` by default); reads run one Lua script each
and skip nodes whose key has expired, so a crashed node leaves every answer within
``presence_ttl``. :meth:`RedisAdapter.close` removes this node's entries at once and
announces the leave. Presence events (``srv.cluster.on_user``/``on_room``) come from a
local mirror fed by the ``p:presence`` announce channel, which the node subscribes only
once it has a listener (:mod:`superline_zmq_redis._mirror`).

**Liveness.** ``is_alive`` reads a local set of live nodes, refreshed every
``liveness_poll`` seconds (one script call, which also forgets nodes dead for
``forget_after``) and updated at once by join/leave announcements, so ``send`` (which
is synchronous) refuses a node that left or died.

**Faults.** When the subscriber connection drops, or a command fails on a connection
error or a timeout (``command_timeout``), the adapter is *down*: queued messages are
dropped and counted, later ``publish``/``send`` calls fail at once (counted, never
blocking, never raising), ``subscribe`` records the channel and returns, and presence
changes are kept locally. A supervisor task reconnects with exponential backoff
(``reconnect_backoff``), re-subscribes every channel held, and rewrites this node's
whole presence slice from its local copy in one transaction. Every ``heartbeat_interval``
the subscriber connection is also pinged, so a silent, half-open connection is noticed
within ``heartbeat_interval + command_timeout``.

Counters (:meth:`RedisAdapter.statistics`): ``published`` / ``publish_failed`` /
``publish_dropped_queue_full``; ``direct_sent`` / ``direct_failed`` /
``direct_dropped_queue_full`` / ``dropped_unknown_node`` / ``direct_received``;
``delivered`` / ``channel_not_held``; ``bad_messages``; ``handler_errors``;
``pipelines`` (batches written); ``reconnects`` / ``connection_lost`` / ``resubscribed``;
``subscribe_unconfirmed`` / ``subscribe_deferred``; ``presence_writes`` /
``presence_write_failed`` / ``presence_resyncs`` / ``presence_read_failed``;
``nodes_forgotten``; once presence events are watched, the mirror's ``mirror_reads``
(slices read), ``mirror_gaps``, ``mirror_bad``, ``mirror_watcher_errors``; and the gauges
``channels``, ``members``, ``queue``, ``queue_bytes``, ``up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from superline_zmq.adapter import ChannelHandler, DirectHandler
from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import ConnDescriptor, NodeInfo, PresenceChange, UserPresence
from superline_zmq_redis import _resp, _scripts
from superline_zmq_redis._mirror import PresenceMirror

log = logging.getLogger("superline_zmq.redis")

KIND_PUB = b"P"
KIND_DIRECT = b"D"
KIND_JOIN = b"J"
KIND_LEAVE = b"L"
_PUB = KIND_PUB[0]
_DIRECT = KIND_DIRECT[0]
#: The subscriber loop yields to the event loop after this many messages in a row.
_READ_BATCH = 256
_SHA_PUT = _scripts.SHAS["put"].encode()
_SHA_DELETE = _scripts.SHAS["delete"].encode()
#: Most bytes of publications in one pipeline.
_BATCH_BYTES = 8 * 1024 * 1024
#: Node ids that left recently, never taken back as alive by a poll that started earlier.
_LEFT_MEMORY = 4096

#: ``redis_options`` that configure the ``Redis`` client object, not its connections.
_CLIENT_ONLY_OPTIONS = frozenset({"single_connection_client", "auto_close_connection_pool"})

# What a failing connection raises: redis-py's errors, OS errors, and our deadlines.
_CONN_ERRORS = (RedisError, OSError, TimeoutError, EOFError)

_encode_desc = msgspec.msgpack.Encoder().encode
_decode_desc = msgspec.msgpack.Decoder(ConnDescriptor).decode


class RedisPresenceError(ConnectionError):
    """A presence read could not be answered: Redis is unreachable or did not answer in time."""


async def redis_adapter(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    prefix: str = "superline",
    presence_ttl: float = 90.0,
    heartbeat_interval: float | None = None,
    liveness_poll: float = 1.0,
    forget_after: float | None = None,
    command_timeout: float = 5.0,
    subscribe_timeout: float = 5.0,
    max_queue: int = 100_000,
    max_queue_bytes: int = 64 * 1024 * 1024,
    max_batch: int = 1024,
    reconnect_backoff: tuple[float, float] = (0.05, 2.0),
    redis_options: Mapping[str, Any] | None = None,
) -> RedisAdapter:
    """A new, un-started Redis adapter whose connection has been checked (see the module docstring).

    - ``url``: any redis-py URL (``redis://[user:pass@]host:port/db``, ``rediss://…``, ``unix://…``).
    - ``prefix``: every key and channel starts with ``prefix + ":"``; clusters sharing one
      Redis stay apart with different prefixes (neither a ``":"``-extension of the other).
    - ``presence_ttl``: a node that stops renewing its liveness key for this long (a crash)
      drops out of presence and ``is_alive``; must exceed ``heartbeat_interval``
      (default ``presence_ttl / 3``).
    - ``liveness_poll``: how often the local view of live nodes is refreshed (seconds).
    - ``forget_after``: entries of a dead node are deleted this long after its last
      heartbeat (default ``2 * presence_ttl``; until then ``topology`` lists it as dead).
    - ``command_timeout``: deadline of every Redis command; a miss counts as a lost connection.
    - ``subscribe_timeout``: ``subscribe`` gives up waiting for Redis's acknowledgement after
      this long (the channel stays held; counted in ``subscribe_unconfirmed``).
    - ``max_queue`` / ``max_queue_bytes``: bounds of the outgoing queue (drops are counted).
    - ``max_batch``: most messages per pipeline.
    - ``reconnect_backoff``: first and longest delay between reconnection attempts.
    - ``redis_options``: keyword arguments for :func:`redis.asyncio.from_url`.

    Raises ``ValueError`` on bad arguments and redis-py's ``ConnectionError`` /
    ``AuthenticationError`` (or ``TimeoutError``) if Redis cannot be reached.
    """
    adapter = RedisAdapter(
        url,
        prefix=prefix,
        presence_ttl=presence_ttl,
        heartbeat_interval=heartbeat_interval,
        liveness_poll=liveness_poll,
        forget_after=forget_after,
        command_timeout=command_timeout,
        subscribe_timeout=subscribe_timeout,
        max_queue=max_queue,
        max_queue_bytes=max_queue_bytes,
        max_batch=max_batch,
        reconnect_backoff=reconnect_backoff,
        redis_options=redis_options,
    )
    try:
        await adapter.connect()
    except BaseException:
        await adapter.close()
        raise
    return adapter


class _Outgoing:
    """The writer's queue: (Redis channel, framed bytes, is_direct) in publish order."""

    __slots__ = ("bytes", "items")

    def __init__(self) -> None:
        self.items: deque[tuple[bytes, bytes, bool]] = deque()
        self.bytes = 0


class RedisAdapter:
    """An :class:`~superline_zmq.adapter.Adapter` over Redis; make it with :func:`redis_adapter`.

    The constructor only validates and prepares (no I/O); :meth:`connect` checks the
    connection and :meth:`start` (called by the server) joins the cluster.
    """

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "superline",
        presence_ttl: float = 90.0,
        heartbeat_interval: float | None = None,
        liveness_poll: float = 1.0,
        forget_after: float | None = None,
        command_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
        max_queue: int = 100_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_batch: int = 1024,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        redis_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"prefix must be a non-empty string without whitespace, got {prefix!r}")
        if not presence_ttl > 0:
            raise ValueError(f"presence_ttl must be positive, got {presence_ttl}")
        hb = presence_ttl / 3 if heartbeat_interval is None else heartbeat_interval
        if not 0 < hb < presence_ttl:
            raise ValueError(
                f"presence_ttl ({presence_ttl}) must exceed the heartbeat interval ({hb}), "
                "or a live node would expire between two heartbeats"
            )
        forget = 2 * presence_ttl if forget_after is None else forget_after
        if forget < presence_ttl:
            raise ValueError(f"forget_after ({forget}) must be at least presence_ttl ({presence_ttl})")
        for what, value in (
            ("liveness_poll", liveness_poll),
            ("command_timeout", command_timeout),
            ("subscribe_timeout", subscribe_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{what} must be positive, got {value}")
        if max_queue < 1 or max_queue_bytes < 1 or max_batch < 1:
            raise ValueError("max_queue, max_queue_bytes and max_batch must be at least 1")
        lo, hi = reconnect_backoff
        if not 0 < lo <= hi:
            raise ValueError(f"reconnect_backoff must be (first, longest) with 0 < first <= longest, got {lo}, {hi}")
        self.prefix = prefix
        self.presence_ttl = float(presence_ttl)
        self.heartbeat_interval = float(hb)
        self.liveness_poll = float(liveness_poll)
        self.forget_after = float(forget)
        self.command_timeout = float(command_timeout)
        self.subscribe_timeout = float(subscribe_timeout)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_batch = max_batch
        self._backoff = (float(lo), float(hi))
        options = dict(redis_options or {})
        options["decode_responses"] = False
        from_url = cast(Callable[..., aioredis.Redis], aioredis.from_url)  # untyped in redis-py
        self._redis = from_url(url, **options)
        kwargs = self._redis.connection_pool.connection_kwargs
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis URL must not set decode_responses: the adapter carries bytes")
        # The subscriber and writer connections come from a pool of their own, built from the
        # same URL and options: RESP2 (the bulk reader parses it), and reads that block forever
        # (deadlines are ours: command_timeout, pings). Copying the command pool's
        # connection_kwargs instead broke on redis-py 7+, whose pools carry RESP3-only settings.
        dedicated = {k: v for k, v in options.items() if k not in _CLIENT_ONLY_OPTIONS}
        dedicated.update(protocol=2, socket_timeout=None, health_check_interval=0)
        self._dedicated_pool = aioredis.ConnectionPool.from_url(url, **dedicated)
        self.url = url

        self.node: NodeId | None = None
        #: Presence in Redis (available once started).
        self.presence: RedisPresence | None = None
        self._node_b = b""
        self._on_channel: ChannelHandler | None = None
        self._on_direct: DirectHandler | None = None
        p = prefix.encode()
        self._ch_prefix = p + b":ch:"
        self._direct_prefix = p + b":n:"
        self._cluster_ch = p + b":cluster"
        self._presence_ch = p + b":presence"
        self._mirror: PresenceMirror | None = None
        self._direct_ch = b""
        self._pub_head = b""
        self._direct_head = b""

        # channel state: what the server holds, and what the subscriber connection holds
        self._channels: dict[str, bytes] = {}  # held channel -> Redis channel
        self._by_rch: dict[bytes, str] = {}  # Redis channel -> held channel
        self._on_conn: set[bytes] = set()  # Redis channels subscribed on the current connection
        self._acks: deque[tuple[bytes, bytes, asyncio.Future[bool] | None]] = deque()
        self._pongs: deque[asyncio.Future[None]] = deque()

        # liveness
        self._alive: set[str] = set()
        self._left: dict[str, None] = {}  # nodes that announced their leave (recent ones)
        self._joins: list[set[str]] = []  # nodes announced while a poll is in flight, per poll

        # writer
        self._out = _Outgoing()
        self._wake = asyncio.Event()
        self._pending_presence: dict[str, ConnDescriptor | None] = {}
        self._local: dict[str, ConnDescriptor] = {}
        self._resync_wanted = False
        self._idle = asyncio.Event()
        self._idle.set()

        # lifecycle
        self._sub: AbstractConnection | None = None
        self._wconn: AbstractConnection | None = None
        self._w_replies: _resp.Replies | None = None
        self._sub_bulk = False
        self._prefix_b = prefix.encode()
        self._connected = False
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self._up = False
        self._up_event = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rlog = RateLimitedLog(log)
        self._stats: dict[str, int] = {
            "published": 0,
            "publish_failed": 0,
            "publish_dropped_queue_full": 0,
            "direct_sent": 0,
            "direct_failed": 0,
            "direct_dropped_queue_full": 0,
            "dropped_unknown_node": 0,
            "direct_received": 0,
            "delivered": 0,
            "channel_not_held": 0,
            "bad_messages": 0,
            "handler_errors": 0,
            "pipelines": 0,
            "reconnects": 0,
            "writer_reopened": 0,
            "connection_lost": 0,
            "resubscribed": 0,
            "subscribe_unconfirmed": 0,
            "subscribe_deferred": 0,
            "presence_writes": 0,
            "presence_write_failed": 0,
            "presence_resyncs": 0,
            "presence_read_failed": 0,
            "nodes_forgotten": 0,
        }

    # ------------------------------------------------------------------ introspection
    def statistics(self) -> Mapping[str, int]:
        stats = dict(self._stats)
        stats["channels"] = len(self._channels)
        stats["members"] = len(self._alive - {self.node}) if self.node is not None else len(self._alive)
        stats["members_alive"] = stats["members"]  # the live-node view holds live nodes only
        stats["queue"] = len(self._out.items)
        stats["queue_bytes"] = self._out.bytes
        stats["up"] = int(self._up)
        if self._mirror is not None:
            stats.update(self._mirror.stats)
        # 1 while both dedicated connections are read in bulk (the fast path), 0 when a
        # redis-py without a reachable stream reader made them fall back to read_response
        replies = self._w_replies
        stats["bulk_reads"] = int(replies is not None and replies.bulk and self._sub_bulk)
        return stats

    @property
    def channels(self) -> frozenset[str]:
        """Channels this node holds right now."""
        return frozenset(self._channels)

    def readiness(self) -> str | None:
        """None while started and connected to Redis, else why not (``/readyz`` answers 503 with it)."""
        if self.node is None:
            return "the Redis adapter is not started"
        if self._closing:
            return "the Redis adapter is closing"
        if not self._up:
            return "not connected to Redis (reconnecting)"
        return None

    @property
    def queued(self) -> int:
        """Messages waiting for the writer right now."""
        return len(self._out.items)

    @property
    def up(self) -> bool:
        """Whether the adapter is connected to Redis (False while it reconnects)."""
        return self._up

    def members(self) -> set[str]:
        """The other nodes this node currently believes alive."""
        return set(self._alive) - ({self.node} if self.node is not None else set())

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Check that Redis answers (and the credentials work) and load the scripts; idempotent."""
        if self._connected:
            return
        async with asyncio.timeout(self.command_timeout):
            await self._redis.ping()
            await self._load_scripts()
        self._connected = True

    async def start(self, node: NodeId, on_channel: ChannelHandler, on_direct: DirectHandler) -> None:
        if self.node is not None:
            raise RuntimeError("this adapter is already started; make one adapter per server")
        if self._closing:
            raise RuntimeError("this adapter is closed; make a new one")
        if not node or len(node.encode()) > 255:
            raise ValueError(f"node ids must be 1..255 bytes, got {node!r}")
        await self.connect()
        self.node = node
        self._node_b = node.encode()
        self._on_channel = on_channel
        self._on_direct = on_direct
        n = bytes([len(self._node_b)]) + self._node_b
        self._pub_head = KIND_PUB + n
        self._direct_head = KIND_DIRECT + n
        self._direct_ch = self._direct_prefix + self._node_b
        self._mirror = PresenceMirror(self, node, self._presence_ch)
        self.presence = RedisPresence(self)
        self._started = True
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._open_writer()
                await self._open_subscriber()
                await self._register()
                await self._poll_liveness()
        except BaseException:
            self._closing = True
            try:
                await self._teardown()
            finally:
                self._closed.set()
            raise
        self._set_up()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._writer_loop()),
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._liveness_loop()),
            loop.create_task(self._supervisor()),
        ]

    async def close(self) -> None:
        """Leave the cluster: flush what is queued, remove this node's presence, announce the leave; idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._started and self._up:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.command_timeout):
                        await self._wait_flushed()
                # no heartbeat or resync may register this node again after it left
                await self._stop_tasks()
                try:
                    async with asyncio.timeout(self.command_timeout):
                        await self._leave()
                except _CONN_ERRORS as exc:
                    self._rlog.log(
                        logging.WARNING,
                        "leave",
                        "node %s could not remove its presence on close (%r); it expires after %.1f s",
                        self.node,
                        exc,
                        self.presence_ttl,
                    )
            await self._teardown()
        finally:
            self._closed.set()

    async def simulate_crash(self) -> None:
        """For tests: stop every task and drop every connection without a leave, as a killed process would.

        Peers keep this node (and its connections in presence) until ``presence_ttl``
        passes without a heartbeat.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._teardown()
        finally:
            self._closed.set()

    async def _stop_tasks(self) -> None:
        if self._mirror is not None:
            await self._mirror.stop()
        current = asyncio.current_task()
        tasks = [t for t in (*self._tasks, self._reader) if t is not None and t is not current]
        self._tasks = []
        self._reader = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _teardown(self) -> None:
        self._up = False
        await self._stop_tasks()
        self._release_waiters()
        self._on_channel = self._on_direct = None
        self._out.items.clear()
        self._out.bytes = 0
        self._idle.set()
        for conn in (self._sub, self._wconn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
        self._sub = self._wconn = None
        self._w_replies = None
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        with contextlib.suppress(Exception):
            await self._dedicated_pool.disconnect()

    async def _wait_flushed(self) -> None:
        """Until the writer has sent everything queued (the caller bounds the wait)."""
        while self._up and (
            self._out.items or self._pending_presence or self._resync_wanted or not self._idle.is_set()
        ):
            self._wake.set()
            await asyncio.sleep(0.001)

    async def _leave(self) -> None:
        assert self.node is not None
        pipe = self._redis.pipeline(transaction=True)
        pipe.execute_command("EVALSHA", _scripts.SHAS["leave"], 0, self.prefix, self.node)
        pipe.publish(self._cluster_ch, KIND_LEAVE + self._pub_head[1:])
        await pipe.execute()

    # ------------------------------------------------------------------ scripts
    async def _load_scripts(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for src in _scripts.ALL.values():
            pipe.script_load(src)
        shas = await pipe.execute()
        for name, sha in zip(_scripts.ALL, shas, strict=True):
            got = sha.decode() if isinstance(sha, bytes) else str(sha)
            if got != _scripts.SHAS[name]:  # pragma: no cover - a Redis that hashes differently
                raise RuntimeError(f"Redis gave script {name!r} the SHA {got}, expected {_scripts.SHAS[name]}")

    async def _script(self, name: str, *args: str | bytes | int) -> Any:
        """Run a script with the pool (one round trip; reloads the scripts once if Redis lost them)."""
        run = cast(Callable[..., Awaitable[Any]], self._redis.execute_command)  # untyped in redis-py
        try:
            return await run("EVALSHA", _scripts.SHAS[name], 0, self.prefix, *args)
        except NoScriptError:
            await self._load_scripts()
            return await run("EVALSHA", _scripts.SHAS[name], 0, self.prefix, *args)

    # ------------------------------------------------------------------ subscriber connection
    async def _dedicated_connection(self) -> AbstractConnection:
        """A connection of our own (never returned to a pool), opened and authenticated by redis-py."""
        make = cast(Callable[[], AbstractConnection], self._dedicated_pool.make_connection)  # untyped in redis-py
        conn = make()
        try:
            await cast(Any, conn).connect()  # untyped in redis-py
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        return conn

    async def _open_writer(self) -> None:
        old, self._wconn = self._wconn, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.disconnect(nowait=True)
        conn = await self._dedicated_connection()
        self._wconn = conn
        self._w_replies = _resp.Replies(conn)

    async def _open_subscriber(self, *, poll: bool = False) -> None:
        """Connect the subscriber connection, start its reader, subscribe what this node holds.

        With ``poll``, the view of live nodes is refreshed once the cluster channel is held:
        a node that registers after that announces itself to us, one that registered before
        is in the poll's answer, so none is missed.
        """
        self._on_conn = set()
        self._acks.clear()
        conn = await self._dedicated_connection()
        self._sub = conn
        sub_replies = _resp.Replies(conn)
        self._sub_bulk = sub_replies.bulk
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(conn, sub_replies))
        base = [self._direct_ch, self._cluster_ch]
        if self._mirror is not None and self._mirror.active:
            base.append(self._presence_ch)
        futs = await self._sub_command(b"SUBSCRIBE", base, wait=True)
        if not all(await asyncio.gather(*futs)):
            raise ConnectionError("the subscriber connection dropped while subscribing")
        if poll:
            await self._poll_liveness()
        await self._sync_subscriptions()

    async def _sync_subscriptions(self) -> int:
        """Make the connection hold exactly the channels this node holds; returns channels subscribed."""
        added = 0
        while True:
            want = set(self._channels.values())
            extra = self._on_conn - want - {self._direct_ch, self._cluster_ch, self._presence_ch}
            missing = want - self._on_conn
            if not extra and not missing:
                return added
            if extra:
                await self._sub_command(b"UNSUBSCRIBE", sorted(extra), wait=False)
            if missing:
                futs = await self._sub_command(b"SUBSCRIBE", sorted(missing), wait=True)
                if not all(await asyncio.gather(*futs)):
                    raise ConnectionError("the subscriber connection dropped while subscribing")
                added += len(missing)

    async def _sub_command(self, cmd: bytes, channels: Sequence[bytes], *, wait: bool) -> list[asyncio.Future[bool]]:
        """Send SUBSCRIBE/UNSUBSCRIBE for ``channels``; the futures resolve on Redis's acknowledgements."""
        conn = self._sub
        if conn is None or not conn.is_connected:
            raise ConnectionError("the subscriber connection is down")
        loop = asyncio.get_running_loop()
        kind = b"subscribe" if cmd == b"SUBSCRIBE" else b"unsubscribe"
        futs: list[asyncio.Future[bool]] = []
        for ch in channels:
            fut: asyncio.Future[bool] | None = loop.create_future() if wait else None
            self._acks.append((kind, ch, fut))
            if fut is not None:
                futs.append(fut)
            if kind == b"subscribe":
                self._on_conn.add(ch)
            else:
                self._on_conn.discard(ch)
        # no await between queueing the acks and writing: the order on the wire is the order here
        await conn.send_packed_command(conn.pack_command(cmd, *channels), check_health=False)
        return futs

    async def _read_loop(self, conn: AbstractConnection, replies: _resp.Replies) -> None:
        n = 0
        handle = self._on_sub_message
        try:
            if not replies.bulk:  # a redis-py whose connections hide their stream reader
                while True:
                    self._handle(handle, await replies.next())
                    n += 1
                    if n % _READ_BATCH == 0:
                        await asyncio.sleep(0)
            take, incomplete = replies.take, _resp.INCOMPLETE
            while True:
                await replies.fill()
                while (msg := take()) is not incomplete:
                    self._handle(handle, msg)
                    n += 1
                    if n % _READ_BATCH == 0:
                        await asyncio.sleep(0)  # a busy connection must not starve the loop
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if conn is self._sub:
                self._lost(exc, "subscriber connection")

    def _handle(self, handle: Callable[[Any], None], msg: Any) -> None:
        try:
            handle(msg)
        except Exception as exc:
            self._stats["handler_errors"] += 1
            self._rlog.log(logging.ERROR, "handler", "handling a Redis message failed: %r", exc)

    def _on_sub_message(self, msg: Any) -> None:
        if type(msg) is not list or not msg:
            self._bad("reply", "dropped an unexpected reply on the subscriber connection: %r", _short(msg))
            return
        kind = msg[0]
        if kind == b"message" and len(msg) == 3:
            rch, data = msg[1], msg[2]
            channel = self._by_rch.get(rch)
            if channel is not None:
                self._deliver(channel, data)
            elif rch == self._direct_ch:
                self._on_direct_message(data)
            elif rch == self._cluster_ch:
                self._on_cluster_message(data)
            elif rch == self._presence_ch:
                if self._mirror is not None and self._mirror.active:
                    self._mirror.on_message(data)
            else:
                self._stats["channel_not_held"] += 1  # in flight when we unsubscribed
        elif kind in (b"subscribe", b"unsubscribe") and len(msg) == 3:
            self._on_ack(kind, msg[1])
        elif kind == b"pong":
            if self._pongs:
                fut = self._pongs.popleft()
                if not fut.done():
                    fut.set_result(None)
        else:
            self._bad("reply", "dropped an unexpected reply on the subscriber connection: %r", _short(msg))

    def _on_ack(self, kind: bytes, channel: bytes) -> None:
        while self._acks:
            want_kind, want_ch, fut = self._acks.popleft()
            if want_kind == kind and want_ch == channel:
                if fut is not None and not fut.done():
                    fut.set_result(True)
                return
            # an acknowledgement we never saw: should not happen on one FIFO connection
            if fut is not None and not fut.done():
                fut.set_result(False)
            self._bad("ack", "acknowledgement mismatch: expected %s %r, got %s %r", want_kind, want_ch, kind, channel)

    def _deliver(self, channel: str, data: bytes) -> None:
        if not data.startswith(self._pub_head):
            if len(data) < 3 or data[0] != _PUB or data[1] == 0 or len(data) < 2 + data[1]:
                self._bad("frame", "dropped a malformed publication on %r (%d bytes)", channel, len(data))
                return
            on_channel = self._on_channel
            if on_channel is not None:
                self._stats["delivered"] += 1
                on_channel(channel, data[2 + data[1] :])
        # else: our own publication, echoed by Redis; the server delivered it locally

    def _on_direct_message(self, data: bytes) -> None:
        if len(data) < 3 or data[0] != _DIRECT or len(data) < 2 + data[1] or data[1] == 0:
            self._bad("direct", "dropped a malformed direct message (%d bytes)", len(data))
            return
        n = data[1]
        try:
            sender = NodeId(data[2 : 2 + n].decode())
        except UnicodeDecodeError:
            self._bad("direct", "dropped a direct message with an undecodable sender")
            return
        on_direct = self._on_direct
        if on_direct is not None:
            self._stats["direct_received"] += 1
            on_direct(sender, data[2 + n :])

    def _on_cluster_message(self, data: bytes) -> None:
        if len(data) < 3 or data[:1] not in (KIND_JOIN, KIND_LEAVE) or len(data) != 2 + data[1]:
            self._bad("cluster", "dropped a malformed cluster announcement (%d bytes)", len(data))
            return
        try:
            node = data[2:].decode()
        except UnicodeDecodeError:
            self._bad("cluster", "dropped a cluster announcement with an undecodable node id")
            return
        if node == self.node:
            return
        if data[:1] == KIND_JOIN:
            self._left.pop(node, None)  # a node id back (a node that re-registered with a fixed id)
            self._alive.add(node)
            for joined in self._joins:
                joined.add(node)
        else:
            self._forget_left(node)
        if self._mirror is not None:
            self._mirror.sync_liveness()

    def _forget_left(self, node: str) -> None:
        self._alive.discard(node)
        self._left[node] = None
        if len(self._left) > _LEFT_MEMORY:
            self._left.pop(next(iter(self._left)))

    def _bad(self, key: str, msg: str, *args: object) -> None:
        self._stats["bad_messages"] += 1
        self._rlog.log(logging.WARNING, f"bad_{key}", msg, *args)

    # ------------------------------------------------------------------ channels
    async def subscribe(self, channel: str) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        if self._closing:
            return
        rch = self._ch_prefix + channel.encode()
        self._channels[channel] = rch
        self._by_rch[rch] = channel
        if not self._up:
            # held: the reconnection subscribes it; meanwhile nothing arrives from anywhere
            self._stats["subscribe_deferred"] += 1
            return
        try:
            futs = await self._sub_command(b"SUBSCRIBE", [rch], wait=True)
            async with asyncio.timeout(self.subscribe_timeout):
                acknowledged = await futs[0]
            if not acknowledged:  # the connection dropped meanwhile: the reconnection subscribes it
                self._stats["subscribe_deferred"] += 1
        except asyncio.CancelledError:
            # cancelled: do not hold a channel the caller thinks was not subscribed
            if self._channels.get(channel) == rch:
                await self.unsubscribe(channel)
            raise
        except TimeoutError:
            self._stats["subscribe_unconfirmed"] += 1
            self._rlog.log(
                logging.WARNING,
                "subscribe",
                "Redis did not acknowledge SUBSCRIBE %r within %.1f s; the channel stays held",
                channel,
                self.subscribe_timeout,
            )
        except _CONN_ERRORS as exc:
            self._stats["subscribe_deferred"] += 1
            self._lost(exc, "subscribe")

    async def unsubscribe(self, channel: str) -> None:
        rch = self._channels.pop(channel, None)
        if rch is None:
            return
        self._by_rch.pop(rch, None)
        if self._up and not self._closing:
            try:
                await self._sub_command(b"UNSUBSCRIBE", [rch], wait=False)
            except _CONN_ERRORS as exc:
                self._lost(exc, "unsubscribe")

    def publish(self, channel: str, data: bytes) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        if self._closing:
            return
        if not self._up:
            self._stats["publish_failed"] += 1
            self._rlog.log(
                logging.WARNING, "publish_down", "dropped a publication on %r: Redis is unreachable", channel
            )
            return
        out = self._out
        framed = self._pub_head + data
        if len(out.items) >= self.max_queue or out.bytes + len(framed) > self.max_queue_bytes:
            self._stats["publish_dropped_queue_full"] += 1
            self._rlog.log(
                logging.WARNING, "publish_full", "dropped a publication on %r: the outgoing queue is full", channel
            )
            return
        out.items.append((self._ch_prefix + channel.encode(), framed, False))
        out.bytes += len(framed)
        if not self._wake.is_set():
            self._wake.set()

    def send(self, node: NodeId, data: bytes) -> bool:
        if self.node is None or self._closing or (node != self.node and node not in self._alive):
            self._stats["dropped_unknown_node"] += 1
            self._rlog.log(logging.WARNING, "direct_unknown", "dropped a direct message to unknown node %s", node)
            return False
        if node == self.node:  # to ourselves: delivered from the event loop, like any other
            asyncio.get_running_loop().call_soon(self._deliver_self, data)
            self._stats["direct_sent"] += 1
            return True
        if not self._up:
            self._stats["direct_failed"] += 1
            self._rlog.log(logging.WARNING, "direct_down", "dropped a direct message to %s: Redis is unreachable", node)
            return False
        out = self._out
        framed = self._direct_head + data
        if len(out.items) >= self.max_queue or out.bytes + len(framed) > self.max_queue_bytes:
            self._stats["direct_dropped_queue_full"] += 1
            self._rlog.log(logging.WARNING, "direct_full", "dropped a direct message to %s: the queue is full", node)
            return False
        out.items.append((self._direct_prefix + node.encode(), framed, True))
        out.bytes += len(framed)
        self._stats["direct_sent"] += 1
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _deliver_self(self, data: bytes) -> None:
        on_direct = self._on_direct
        if on_direct is not None and self.node is not None:
            self._stats["direct_received"] += 1
            on_direct(self.node, data)

    def is_alive(self, node: NodeId) -> bool:
        if self.node is None or self._closing:
            return False
        return node == self.node or node in self._alive

    # ------------------------------------------------------------------ the writer
    async def _writer_loop(self) -> None:
        out = self._out
        while True:
            if not (out.items or self._pending_presence or self._resync_wanted):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            self._idle.clear()
            if not self._up:
                await self._up_event.wait()
                continue
            if self._resync_wanted:
                await self._resync()
                continue
            await self._write_batch()

    async def _write_batch(self) -> None:
        """Everything queued (up to max_batch), written as one pipeline on the writer connection."""
        out = self._out
        chunks: list[bytes] = []
        presence = list(self._pending_presence.items())
        self._pending_presence.clear()
        for conn_id, desc in presence:
            chunks.append(_resp.command(*self._presence_args(conn_id, desc)))
        sent: list[bool] = []
        size = 0
        items = out.items
        pack = _resp.publish
        while items and len(sent) < self.max_batch and size < _BATCH_BYTES:
            rch, data, direct = items.popleft()
            chunks.extend(pack(rch, data))
            sent.append(direct)
            size += len(data)
        out.bytes -= size
        results = []
        try:
            async with asyncio.timeout(self.command_timeout):
                if self._w_replies is None or self._w_replies.closed_by_server():
                    # closed while idle (a CLIENT KILL, a server timeout): open it again before writing
                    await self._open_writer()
                    self._stats["writer_reopened"] += 1
                conn, replies = self._wconn, self._w_replies
                if conn is None or replies is None or not conn.is_connected:
                    raise ConnectionError("the writer connection is down")
                await conn.send_packed_command(chunks, check_health=False)
                for _ in range(len(presence) + len(sent)):
                    results.append(await replies.next())
        except asyncio.CancelledError:
            raise
        except _CONN_ERRORS as exc:
            self._count_failed(sent)
            if presence:
                self._stats["presence_write_failed"] += len(presence)
                self._resync_wanted = True
            self._lost(exc, "writer")
            return
        self._stats["pipelines"] += 1
        for result in results[: len(presence)]:
            if isinstance(result, BaseException):
                self._stats["presence_write_failed"] += 1
                self._resync_wanted = True  # NOSCRIPT (SCRIPT FLUSH) included: the resync reloads them
                self._rlog.log(logging.ERROR, "presence_write", "a presence write failed: %r", result)
            else:
                self._stats["presence_writes"] += 1
        failed = [
            direct for direct, result in zip(sent, results[len(presence) :], strict=True) if type(result) is not int
        ]
        if failed:
            self._count_failed(failed)
            self._rlog.log(logging.WARNING, "publish_error", "Redis refused %d PUBLISH(es)", len(failed))
        self._stats["published"] += len(sent) - sum(sent) - (len(failed) - sum(failed))

    def _count_failed(self, sent: list[bool]) -> None:
        direct = sum(sent)
        self._stats["direct_failed"] += direct
        self._stats["publish_failed"] += len(sent) - direct

    def _presence_args(self, conn_id: str, desc: ConnDescriptor | None) -> list[bytes]:
        """EVALSHA put/delete for one connection, as command arguments."""
        assert self.node is not None
        head = [b"EVALSHA", _SHA_DELETE if desc is None else _SHA_PUT, b"0", self._prefix_b, self._node_b]
        if desc is None:
            return [*head, conn_id.encode()]
        user = desc.user_id
        rooms = json.dumps(sorted(set(desc.rooms)), ensure_ascii=False).encode()
        flag, name = (b"0", b"") if user is None else (b"1", user.encode())
        return [*head, conn_id.encode(), _encode_desc(desc), flag, name, rooms]

    async def _register(self) -> None:
        """Replace this node's slice in Redis with the local copy, mark it alive, announce it (one transaction)."""
        assert self.node is not None
        self._pending_presence.clear()
        self._resync_wanted = False
        pipe = self._redis.pipeline(transaction=True)
        ttl_ms = max(1, round(self.presence_ttl * 1000))
        pipe.execute_command("EVALSHA", _scripts.SHAS["register"], 0, self.prefix, self.node, ttl_ms)
        local = list(self._local.items())
        for conn_id, desc in local:
            pipe.execute_command(*self._presence_args(conn_id, desc))
        pipe.publish(self._cluster_ch, KIND_JOIN + self._pub_head[1:])
        await pipe.execute()
        self._stats["presence_writes"] += len(local)

    async def _resync(self) -> None:
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._register()
            self._stats["presence_resyncs"] += 1
        except asyncio.CancelledError:
            raise
        except NoScriptError:  # someone ran SCRIPT FLUSH: load them again and retry
            self._resync_wanted = True
            try:
                async with asyncio.timeout(self.command_timeout):
                    await self._load_scripts()
            except _CONN_ERRORS as exc:
                self._lost(exc, "presence resync")
        except ResponseError as exc:  # Redis refused (out of memory, ...): retry a little later
            self._resync_wanted = True
            self._stats["presence_write_failed"] += 1
            self._rlog.log(logging.ERROR, "resync", "node %s: Redis refused the presence resync: %r", self.node, exc)
            await asyncio.sleep(min(1.0, self.heartbeat_interval))
        except _CONN_ERRORS as exc:
            self._resync_wanted = True
            self._stats["presence_write_failed"] += 1
            self._lost(exc, "presence resync")

    # ------------------------------------------------------------------ heartbeat and liveness
    async def _heartbeat_loop(self) -> None:
        assert self.node is not None
        ttl_ms = max(1, round(self.presence_ttl * 1000))
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if not self._up:
                continue
            try:
                async with asyncio.timeout(self.command_timeout):
                    ok = await self._script("beat", self.node, ttl_ms)
                    if not ok:
                        # our alive key expired (a pause, or Redis lost its data): register again
                        self._resync_wanted = True
                        self._wake.set()
                    await self._ping_subscriber()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:  # Redis refused (out of memory, ...): not a lost connection
                self._rlog.log(logging.ERROR, "heartbeat", "node %s: Redis refused the heartbeat: %r", self.node, exc)
            except _CONN_ERRORS as exc:
                self._lost(exc, "heartbeat")

    async def _ping_subscriber(self) -> None:
        conn = self._sub
        if conn is None or not conn.is_connected:
            raise ConnectionError("the subscriber connection is down")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        await conn.send_packed_command(conn.pack_command(b"PING"), check_health=False)
        await fut

    async def _liveness_loop(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_poll)
            if not self._up:
                continue
            try:
                async with asyncio.timeout(self.command_timeout):
                    await self._poll_liveness()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                self._rlog.log(logging.ERROR, "poll", "node %s: Redis refused the liveness poll: %r", self.node, exc)
            except _CONN_ERRORS as exc:
                self._lost(exc, "liveness poll")

    async def _poll_liveness(self) -> None:
        joined: set[str] = set()
        self._joins.append(joined)
        try:
            live, gone = await self._script("scan_nodes", max(1, round(self.forget_after * 1000)))
        finally:
            self._joins.remove(joined)
        # announcements that arrived while the poll was in flight win over its answer
        self._alive = ({_text(n) for n in live} | joined) - self._left.keys()
        if gone:
            self._stats["nodes_forgotten"] += int(gone)
        if self._mirror is not None:
            self._mirror.sync_liveness()

    # ------------------------------------------------------------------ faults
    def _set_up(self) -> None:
        self._up = True
        self._up_event.set()
        self._wake.set()

    def _lost(self, exc: BaseException, where: str) -> None:
        """A connection failed: go down (fail fast from now on) and let the supervisor reconnect."""
        if self._closing:
            return
        self._release_waiters()  # whoever waits on the subscriber connection stops waiting
        if not self._up:
            return  # already down: the supervisor is at work
        self._up = False
        self._up_event.clear()
        self._stats["connection_lost"] += 1
        self._rlog.log(
            logging.WARNING, "lost", "node %s lost Redis (%s: %r); reconnecting, publishes fail meanwhile", self.node,
            where, exc,
        )  # fmt: skip
        sent = [direct for _, _, direct in self._out.items]
        self._out.items.clear()
        self._out.bytes = 0
        self._count_failed(sent)
        self._resync_wanted = True
        self._reconnect.set()

    def _release_waiters(self) -> None:
        for _, _, fut in self._acks:
            if fut is not None and not fut.done():
                fut.set_result(False)
        self._acks.clear()
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(ConnectionError("the subscriber connection is down"))
        self._pongs.clear()

    async def _supervisor(self) -> None:
        while True:
            await self._reconnect.wait()
            self._reconnect.clear()
            delay = self._backoff[0]
            while not self._closing:
                try:
                    await self._reopen()
                except asyncio.CancelledError:
                    raise
                except _CONN_ERRORS as exc:
                    self._rlog.log(logging.WARNING, "reconnect", "node %s: reconnecting to Redis failed: %r", self.node,
                                   exc)  # fmt: skip
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))
                    delay = min(delay * 2, self._backoff[1])
                    continue
                self._stats["reconnects"] += 1
                log.info("node %s reconnected to Redis; %d channel(s) re-subscribed", self.node, len(self._channels))
                break

    async def _reopen(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.disconnect(nowait=True)
        self._release_waiters()
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._redis.ping()
                await self._load_scripts()
                await self._open_writer()
                # last: it ends with the held channels subscribed and no await after that check,
                # so a subscribe() made meanwhile (deferred) is not missed
                await self._open_subscriber(poll=True)
                held = len(self._channels)
        except BaseException:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.disconnect(nowait=True)
            raise
        self._stats["resubscribed"] += held
        self._resync_wanted = True
        self._set_up()
        if self._mirror is not None:
            self._mirror.resync_all()  # announcements were lost while it was away


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


class RedisPresence:
    """The cluster's connections as Redis holds them (see :mod:`superline_zmq_redis._scripts`).

    ``put`` and ``remove`` never block: they update this node's local copy and queue one
    script call for the writer. Reads are one script call each and raise
    :class:`RedisPresenceError` when Redis cannot answer within ``command_timeout``.

    It is also a :class:`~superline_zmq.adapter.PresenceEvents`: the first ``watch``
    starts the node's mirror of every slice (:mod:`superline_zmq_redis._mirror`);
    ``online`` and ``members`` answer from that mirror.
    """

    def __init__(self, adapter: RedisAdapter) -> None:
        self._a = adapter

    def put(self, desc: ConnDescriptor) -> None:
        a = self._a
        if desc.node_id != a.node:
            raise ValueError(f"descriptor {desc.id} names node {desc.node_id}, not this node {a.node}")
        if a._closing:
            return
        a._local[desc.id] = desc
        a._pending_presence[desc.id] = desc
        if not a._wake.is_set():
            a._wake.set()

    def remove(self, conn_id: str) -> None:
        a = self._a
        if a._local.pop(conn_id, None) is None or a._closing:
            return
        a._pending_presence[conn_id] = None
        if not a._wake.is_set():
            a._wake.set()

    async def _read(self, name: str, *args: str | int) -> Any:
        a = self._a
        try:
            async with asyncio.timeout(a.command_timeout):
                return await a._script(name, *args)
        except asyncio.CancelledError:
            raise
        except _CONN_ERRORS as exc:
            a._stats["presence_read_failed"] += 1
            raise RedisPresenceError(f"presence read {name!r} failed: Redis did not answer ({exc!r})") from exc

    async def count(self) -> int:
        return int(await self._read("count"))

    async def connections(self) -> list[ConnDescriptor]:
        return _decode_all(await self._read("connections"))

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        return _decode_all(await self._read("select", "user", user_id, 0))

    async def room(self, name: str) -> list[ConnDescriptor]:
        return _decode_all(await self._read("select", "room", name, 0))

    async def is_online(self, user_id: str) -> bool:
        return bool(await self._read("select", "user", user_id, 1))

    def _mirror(self) -> PresenceMirror:
        mirror = self._a._mirror
        assert mirror is not None, "the adapter is started before its presence exists"
        return mirror

    def watch(self, listener: Callable[[PresenceChange], None]) -> Callable[[], None]:
        return self._mirror().watch(listener)

    async def watching(self) -> None:
        await self._mirror().watching()

    def online(self) -> list[UserPresence]:
        return self._mirror().online()

    def members(self, room: str) -> list[ConnDescriptor]:
        return self._mirror().members(room)

    async def topology(self) -> list[NodeInfo]:
        rows = await self._read("topology")
        out = []
        for node, alive, conns, rooms in rows:
            out.append(
                NodeInfo(
                    node_id=_text(node),
                    connections=int(conns),
                    rooms=tuple(sorted(_text(r) for r in rooms)),
                    alive=bool(int(alive)),
                )
            )
        out.sort(key=lambda n: n.node_id)
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_all(blobs: list[bytes]) -> list[ConnDescriptor]:
    out = []
    for blob in blobs:
        try:
            out.append(_decode_desc(blob))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("skipped an undecodable presence descriptor (%d bytes)", len(blob))
    out.sort(key=lambda d: (d.connected_at, d.id))
    return out
