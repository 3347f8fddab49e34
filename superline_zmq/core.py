"""What one server's connections and handles share: codecs, counters, tasks, the request table.

:class:`Core` is internal: the server builds one, and every other piece of the driver
(:class:`~superline_zmq.connection.ConnCore`, :class:`~superline_zmq.routing.Router`, the
handles in :mod:`superline_zmq.handles`) reaches the others through it, by public
methods only. It also runs the one timer of the pending-request table: requests to
clients and to other nodes expire from :meth:`PendingTable.expire
<superline_zmq.requests.PendingTable.expire>`, not from a timer each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from superline_zmq import wire
from superline_zmq.contract import Contract, Entry
from superline_zmq.delivery import Delivery
from superline_zmq.dispatch import Dispatcher, Middleware
from superline_zmq.errors import ErrorCode, SocketError
from superline_zmq.ids import ConnId, NodeId
from superline_zmq.limits import ConnectionLimits
from superline_zmq.metrics import LatencyHistogram, RequestOutcomes
from superline_zmq.requests import Pending, PendingTable
from superline_zmq.session import Backpressure, Heartbeat, Route, ServerStats
from superline_zmq.tasks import Report, TaskOwner

if TYPE_CHECKING:
    from superline_zmq.connection import ConnCore
    from superline_zmq.handles import Conn


class Core:
    """The shared state and services of one server (see the module docstring)."""

    def __init__(
        self,
        *,
        contract: Contract,
        node_id: NodeId,
        serializer: wire.Serializer,
        clock: Callable[[], float],
        report: Report,
        heartbeat: Heartbeat | None,
        backpressure: Backpressure | None,
        middleware: tuple[Middleware, ...],
        authorize_subscribe: Callable[[str, Any, Conn], Any] | None,
        validate_outgoing: bool,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.contract = contract
        self.node_id = node_id
        self.serializer = serializer
        self.encode = serializer.encode
        self.null = serializer.null()
        self.frame_decoder: wire.Decoder[wire.ClientFrame] = serializer.decoder(wire.ClientFrame)
        self.decoders = wire.DecoderCache(serializer)
        #: Wall-clock time for connection metadata (``connected_at``, ``last_pong_at``).
        self.clock = clock
        self.report = report
        self.heartbeat = heartbeat
        self.stats = ServerStats()
        #: A monotonic high-resolution clock for latencies (``loop.time()`` may tick in milliseconds).
        self.timer: Callable[[], float] = time.perf_counter
        #: Request outcomes and handler latency; latency of asks to other nodes.
        self.requests = RequestOutcomes()
        self.asks = LatencyHistogram()
        #: Request handlers: a graceful drain waits for them; cancelled on shutdown.
        self.calls = TaskOwner(report, eager=True)
        #: Subscribes, closes and the like: cancelled on shutdown.
        self.tasks = TaskOwner(report)
        #: ``on_disconnect`` hooks: waited for on shutdown before anything is cancelled.
        self.hooks = TaskOwner(report)
        #: Requests awaiting answers: to this node's clients (owner: the session) and to
        #: connections on other nodes (owner: the node id).
        self.table: PendingTable[Any] = PendingTable()
        #: This node's open connections.
        self.conns: dict[ConnId, ConnCore] = {}
        #: The connection caps; every open connection is counted in, and out on close.
        self.limits = limits if limits is not None else ConnectionLimits()
        #: Per role, its requests' routes; updated in place so sessions see later ``implement`` calls.
        self.routes: dict[str, dict[str, Route]] = {role: {} for role in contract.roles}
        self.delivery = Delivery(backpressure, stats=self.stats, tasks=self.tasks)
        self.dispatch = Dispatcher(middleware, authorize_subscribe, self.null)
        self.validate_outgoing = validate_outgoing
        self._pub_decoder: wire.Decoder[wire.Pub] = serializer.decoder(wire.Pub)
        self._evt_decoder: wire.Decoder[wire.Evt] = serializer.decoder(wire.Evt)
        #: The app's connection hooks (``on_connection(conn)``, ``on_disconnect(conn)``), sync or async.
        self.on_connection: Callable[[Conn], Any] | None = None
        self.on_disconnect: Callable[[Conn], Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._conn_seq = 0

    def next_conn_seq(self) -> int:
        """A new connection number (per server, from 1)."""
        self._conn_seq += 1
        return self._conn_seq

    # ------------------------------------------------------------ frames
    def event_frame(self, event: Entry | str, payload: Any, where: str) -> bytes:
        """An ``evt`` frame of a *shared* event (rooms, users and targeted sends carry shared events only)."""
        name = self.contract.name_of(event)
        entry = self.contract.shared.events.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared event; {where} takes shared events only")
        data = self.encode(wire.EvtOut(name, payload))
        if self.validate_outgoing:
            self.check_event(name, entry.payload, data)
        return data

    def check_event(self, name: str, schema: Any, frame: bytes) -> None:
        """Debug mode: validate an outgoing event's payload (``validate_outgoing``)."""
        self.check_outgoing(f"event {name!r}", schema, frame, self._evt_decoder)

    def pub_frame(self, name: str, schema: Any, payload: Any) -> bytes:
        """A ``pub`` frame of topic ``name``, stamped with this node's id."""
        data = self.encode(wire.PubOut(name, payload, self.node_id))
        if self.validate_outgoing:
            self.check_outgoing(f"topic {name!r}", schema, data, self._pub_decoder)
        return data

    def check_outgoing(self, what: str, schema: Any, frame: bytes, decoder: wire.Decoder[Any]) -> None:
        """Debug mode: validate an outgoing payload against its schema (never on by default)."""
        raw = decoder.decode(frame).d
        try:
            wire.payload(raw, self.decoders.get(schema), self.null)
        except msgspec.ValidationError as exc:
            raise ValueError(f"validate_outgoing: payload of {what} does not fit its schema: {exc}") from exc

    def decode_pub(self, data: bytes) -> wire.Pub:
        """A ``pub`` frame from the cluster bus (raises msgspec errors on garbage)."""
        return self._pub_decoder.decode(data)

    # ------------------------------------------------------------ pending requests
    def watch(self, entry: Pending[Any]) -> None:
        """Make sure the table's one timer fires by ``entry``'s deadline."""
        if entry.deadline is None:
            return
        timer = self._timer
        if timer is None or entry.deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(entry.deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        for entry in self.table.expire(loop.time()):
            if isinstance(entry.owner, str):  # owned by a node id: an ask to another node
                self.stats.asks_timed_out += 1
            else:
                self.stats.server_requests_timed_out += 1
            self.settle(entry, None, SocketError(ErrorCode.TIMEOUT, f"Request '{entry.name}' timed out"))
        nxt = self.table.next_deadline()
        if nxt is not None:
            self._timer = loop.call_at(nxt, self._expire)

    def settle(self, entry: Pending[Any], value: Any, error: BaseException | None) -> None:
        """Complete an entry's waiter: a future, or a callback ``waiter(value, error)``."""
        waiter = entry.waiter
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                if error is None:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(error)
        else:
            waiter(value, error)

    def fail_all(self, error: SocketError) -> None:
        """Settle every pending request with ``error`` (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self.table.drop_all():
            self.settle(entry, None, error)

    def statistics(self, extra: Mapping[str, int]) -> dict[str, int]:
        """The counters, plus gauges."""
        d = dict(vars(self.stats))
        d["connections"] = len(self.conns)
        d["pending_requests"] = len(self.table)
        d.update(extra)
        return d
