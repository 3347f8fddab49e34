"""This node's side of the cluster: channels, fan-out across nodes, targeted sends, presence writes.

Everything that crosses nodes goes through the :class:`~superline_zmq.adapter.Adapter`
and is decided here:

- **Channels** (:mod:`superline_zmq.names`): a room, a topic or a user is a channel this
  node holds on the adapter while it has a local member or bus listener
  (:class:`~superline_zmq.channels.ChannelTable`). A publish delivers to local members at
  source, then goes to the other nodes once; what arrives from them is forwarded to local
  members byte for byte.
- **Targeted sends**: a connection id names its node (:func:`~superline_zmq.ids.node_of`),
  so ``to_conn`` needs no lookup: an emit, a close or a server request goes straight to
  that node as a direct message (:mod:`superline_zmq.envelope`). A request to another
  node waits in the one pending-request table, owned by that node: it fails at once when
  the node is known to be gone, and is watched while it waits.
- **Presence**: this node's descriptors are written through the adapter's presence after
  ``on_connection``, on every room change, and withdrawn at close.

Every drop (no such node, no such connection, a malformed message) is counted in the
server's statistics and logged with a rate limit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from superline_zmq import envelope, names, wire
from superline_zmq.adapter import Adapter, Presence
from superline_zmq.channels import Channel, ChannelTable
from superline_zmq.errors import ErrorCode, SocketError, SuperlineError
from superline_zmq.ids import ConnId, NodeId, node_of
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import RESERVED_FIELDS, ConnDescriptor
from superline_zmq.presence_events import PresenceHub
from superline_zmq.validation import validation_error

if TYPE_CHECKING:
    from superline_zmq.connection import ConnCore
    from superline_zmq.core import Core
    from superline_zmq.handles import Conn

log = logging.getLogger("superline_zmq.server")

#: How often requests to other nodes are checked for a node that died while they wait.
ASK_WATCH_INTERVAL = 0.1


@dataclass(frozen=True)
class BusMeta:
    """Where a bus message came from."""

    #: The node that published it (this node's own id for the local echo).
    origin: NodeId


BusListener = Callable[[Any, BusMeta], Any]


@dataclass(frozen=True)
class Listener:
    """A server-side bus listener and the decoder of its topic's payload."""

    fn: BusListener
    decoder: wire.Decoder[Any]


class Router:
    """This node's link to the others (see the module docstring)."""

    def __init__(
        self,
        core: Core,
        adapter: Adapter,
        *,
        identify: Callable[[Conn], Any] | None = None,
        describe_conn: Callable[[Conn], Any] | None = None,
        hub: PresenceHub | None = None,
    ) -> None:
        self._core = core
        self.adapter = adapter
        #: The app's presence listeners (the server's; it outlives a router replaced before start).
        self.hub = hub if hub is not None else PresenceHub(report=core.report, spawn=core.tasks.spawn, stats=core.stats)
        self.channels: ChannelTable[ConnCore] = ChannelTable(adapter, core.tasks.spawn)
        self.identify = identify
        self.describe_conn = describe_conn
        self._rlog = RateLimitedLog(log)
        self._ask_watch: asyncio.Task[None] | None = None
        self.started = False

    async def start(self) -> None:
        """Join the cluster through the adapter."""
        self.started = True
        await self.adapter.start(self._core.node_id, self.on_channel, self.on_direct)
        self.hub.attach(self.adapter.presence, self.adapter.name)

    async def close(self) -> None:
        """Let pending channel operations finish, then leave the cluster."""
        await self.channels.drain()
        if self.started:
            await self.adapter.close()

    # ------------------------------------------------------------ publishing
    def broadcast(self, channel: names.Channel, data: bytes) -> None:
        """Deliver ``data`` to this node's members of ``channel``, then to the other nodes once."""
        ch = self.channels.get(channel)
        if ch is not None and ch.members:
            self._core.delivery.fanout(ch.members, data)
        self.adapter.publish(channel, data)

    def publish_topic(self, channel: names.Channel, data: bytes) -> None:
        """Like :meth:`broadcast`, and this node's bus listeners get it too (one loop turn later)."""
        ch = self.channels.get(channel)
        if ch is not None:
            if ch.members:
                self._core.delivery.fanout(ch.members, data)
            if ch.listeners:
                # deferred like a remote delivery: a listener that publishes cannot recurse
                asyncio.get_running_loop().call_soon(self.deliver_to_listeners, channel, ch.listeners, data)
        self.adapter.publish(channel, data)

    def disconnect_user(self, user_id: str, code: int, reason: str) -> None:
        """Close every connection of ``user_id``, here and on every other node."""
        channel = names.user(user_id)
        ch = self.channels.get(channel)
        if ch is not None:
            for conn in list(ch.members):
                self._core.tasks.spawn(conn.close(code, reason))
        self.adapter.publish(channel, envelope.control(envelope.UserControl(code, reason)))

    def listen(self, channel: names.Channel, listener: Listener) -> Channel[ConnCore]:
        """Add a bus listener to ``channel`` (held on the adapter while it has one)."""
        return self.channels.add_listener(channel, listener)

    # ------------------------------------------------------------ rooms
    async def join_room(self, conn: ConnCore, name: str) -> None:
        """Add a local connection to room ``name``; returns once the room's channel is live."""
        rooms = conn.session.rooms
        already = name in rooms
        rooms.add(name)
        ch = self.channels.add_member(names.room(name), conn)
        try:
            await asyncio.shield(ch.live)
        except BaseException:
            self.leave_room(conn, name)
            raise
        if not already and name in rooms:
            self.rooms_changed(conn)

    def leave_room(self, conn: ConnCore, name: str) -> None:
        """Take a connection out of room ``name`` (no-op if it is not a member)."""
        if name in conn.session.rooms:
            conn.session.rooms.discard(name)
            self.channels.remove_member(names.room(name), conn)
            self.rooms_changed(conn)

    # ------------------------------------------------------------ presence
    def presence(self) -> Presence:
        """The adapter's presence directory; :class:`SuperlineError` if it has none."""
        presence = self.adapter.presence
        if presence is None:
            raise SuperlineError(
                f"the {self.adapter.name!r} adapter ({type(self.adapter).__name__}) has no presence, "
                "so srv.cluster and srv.is_online are unavailable; use an adapter that implements "
                "presence (memory, zeromq or redis)"
            )
        return presence

    async def announce(self, conn: ConnCore) -> None:
        """After ``on_connection``: identify the user, join its channel, publish the descriptor."""
        core = self._core
        handle = conn.handle
        extra: dict[str, Any] = {}
        if self.identify is not None:
            try:
                uid = self.identify(handle)
                handle.user_id = None if uid is None else str(uid)
            except Exception as exc:
                core.report(exc, handle)
        if self.describe_conn is not None:
            try:
                extra = dict(self.describe_conn(handle))
                clash = RESERVED_FIELDS.intersection(extra)
                if clash:
                    raise ValueError(f"describe_conn returned reserved field(s) {sorted(clash)} for {conn.id}")
                msgspec.msgpack.encode(extra)
            except Exception as exc:
                core.stats.presence_errors += 1
                core.report(exc, handle)
                extra = {}
        if handle.user_id is not None and conn.session.writable:
            ch = self.channels.add_member(names.user(handle.user_id), conn)
            try:
                await asyncio.shield(ch.live)
            except Exception as exc:
                core.report(exc, handle)
        if not conn.session.writable:
            return
        conn.desc = ConnDescriptor(
            id=conn.id,
            role=conn.session.role,
            node_id=core.node_id,
            connected_at=conn.session.connected_at,
            user_id=handle.user_id,
            rooms=tuple(sorted(conn.session.rooms)),
            extra=extra,
        )
        presence = self.adapter.presence
        if presence is not None:
            presence.put(conn.desc)

    def rooms_changed(self, conn: ConnCore) -> None:
        """Republish a connection's descriptor after its rooms changed."""
        desc = conn.desc
        if desc is None or not conn.session.writable:
            return
        conn.desc = msgspec.structs.replace(desc, rooms=tuple(sorted(conn.session.rooms)))
        presence = self.adapter.presence
        if presence is not None:
            presence.put(conn.desc)

    def retract(self, conn: ConnCore) -> None:
        """A connection closed: withdraw its descriptor and leave every channel it held."""
        if conn.desc is not None:
            conn.desc = None
            presence = self.adapter.presence
            if presence is not None:
                presence.remove(conn.id)
        user_id = conn.handle.user_id
        if user_id is not None:
            self.channels.remove_member(names.user(user_id), conn)
        session = conn.session
        for name in list(session.topics):
            leave = session.leave_topic(name)
            if leave is not None:
                self.channels.remove_member(leave.channel, conn)
        for room in list(session.rooms):
            session.rooms.discard(room)
            self.channels.remove_member(names.room(room), conn)

    # ------------------------------------------------------------ targeted sends
    def _dropped(self, reason: str, target: str, what: str) -> None:
        if reason == "node":
            self._core.stats.dropped_unknown_node += 1
        else:
            self._core.stats.dropped_unknown_conn += 1
        self._rlog.log(
            logging.WARNING, f"target_{reason}", "dropped %s to %s: no live %s holds it", what, target, reason
        )

    def emit_to(self, id: ConnId, data: bytes) -> None:
        """Send an encoded event to connection ``id`` wherever it is (dropped and counted if nowhere)."""
        core = self._core
        node = node_of(id)
        if node == core.node_id:
            conn = core.conns.get(id)
            if conn is None:
                self._dropped("connection", id, "an event")
                return
            core.stats.targeted_sent += 1
            conn.send(data)
            return
        if node is None or not self.adapter.is_alive(node):
            self._dropped("node", id, "an event")
            return
        if self.adapter.send(node, envelope.encode(envelope.EmitTo(id, data))):
            core.stats.targeted_sent += 1
        else:
            self._dropped("node", id, "an event")

    def close_to(self, id: ConnId, code: int, reason: str) -> None:
        """Close connection ``id`` wherever it is (does not wait)."""
        core = self._core
        node = node_of(id)
        if node == core.node_id:
            conn = core.conns.get(id)
            if conn is None:
                self._dropped("connection", id, "a close")
                return
            core.tasks.spawn(conn.close(code, reason))
            return
        if (
            node is None
            or not self.adapter.is_alive(node)
            or not self.adapter.send(node, envelope.encode(envelope.CloseConn(id, code, reason)))
        ):
            self._dropped("node", id, "a close")

    async def ask(self, id: ConnId, name: str, payload: Any, timeout: float) -> Any:
        """Ask connection ``id`` (on any node) shared server request ``name``; its validated answer."""
        core = self._core
        entry = core.contract.shared.server_requests.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared server request; to_conn(id).request takes shared ones only")
        node = node_of(id)
        if node == core.node_id:
            conn = core.conns.get(id)
            if conn is None or not conn.session.writable:
                raise SocketError(ErrorCode.TIMEOUT, f"Request '{name}': no live node holds connection {id}")
            return await conn.request(name, payload, timeout)
        if node is None or not self.adapter.is_alive(node):
            raise SocketError(ErrorCode.TIMEOUT, f"Request '{name}': no live node holds connection {id}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        pending = core.table.open(name, fut, owner=node, deadline=loop.time() + timeout)
        core.stats.remote_requests += 1
        start = core.timer()
        try:
            raw_input = core.encode(payload)
            if not self.adapter.send(node, envelope.encode(envelope.Ask(pending.id, id, name, raw_input, timeout))):
                raise SocketError(ErrorCode.TIMEOUT, f"Request '{name}': node {node} is gone")
            core.watch(pending)
            if self._ask_watch is None or self._ask_watch.done():
                self._ask_watch = core.tasks.spawn(self._watch_asks())
            try:
                raw = await fut
            finally:
                if not fut.cancelled():
                    core.asks.observe(core.timer() - start)  # answered, failed or timed out: not cancelled
        finally:
            core.table.cancel(pending.id)
        try:
            return wire.payload(msgspec.Raw(raw), core.decoders.get(entry.output), core.null)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"answer to {name!r}") from exc

    async def _watch_asks(self) -> None:
        """While requests to other nodes are pending, fail those whose node died, at once."""
        core = self._core
        while True:
            nodes = [o for o in core.table.owners() if isinstance(o, str)]
            if not nodes:
                return
            await asyncio.sleep(ASK_WATCH_INTERVAL)
            for node in nodes:
                if not self.adapter.is_alive(NodeId(node)):
                    for entry in core.table.drop_owner(node):
                        core.settle(
                            entry, None, SocketError(ErrorCode.TIMEOUT, f"Request '{entry.name}': node {node} is gone")
                        )

    # ------------------------------------------------------------ inbound from other nodes
    def on_channel(self, channel: str, data: bytes) -> None:
        """A publication from another node on a channel this node holds."""
        ch = self.channels.get(channel)
        if ch is None:
            self._core.stats.dropped_no_channel += 1
            return
        if data[:1] == envelope.CONTROL_MARK:
            self._on_control(channel, ch.members, data)
            return
        if ch.members:
            self._core.delivery.fanout(ch.members, data)
        if ch.listeners:
            self.deliver_to_listeners(channel, ch.listeners, data)

    def _on_control(self, channel: str, members: set[ConnCore], data: bytes) -> None:
        try:
            ctl = envelope.decode_control(data)
        except ValueError as exc:
            self._bad_message(channel, exc)
            return
        for conn in list(members):
            self._core.tasks.spawn(conn.close(ctl.code, ctl.reason))

    def deliver_to_listeners(self, channel: str, listeners: list[Any], data: bytes) -> None:
        """Decode a ``pub`` frame once per listener schema and call the bus listeners.

        The local echo goes through here too, so every listener gets the same validated,
        typed payload whichever node published it.
        """
        core = self._core
        try:
            frame = core.decode_pub(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            core.stats.bad_cluster_messages += 1
            core.report(ValueError(f"malformed publication on {channel}: {exc}"), None)
            return
        meta = BusMeta(NodeId(frame.nd) if isinstance(frame.nd, str) else NodeId("?"))
        for lst in list(listeners):
            try:
                value = wire.payload(frame.d, lst.decoder, core.null)
            except msgspec.ValidationError as exc:
                core.report(validation_error(exc, f"bus payload on {channel} from {meta.origin}"), None)
                return
            try:
                result = lst.fn(value, meta)
                if inspect.isawaitable(result):
                    core.tasks.spawn(result)
            except Exception as exc:
                core.report(exc, None)

    def on_direct(self, sender: NodeId, data: bytes) -> None:
        """A direct message from another node: a targeted emit or close, a request, or an answer."""
        core = self._core
        try:
            msg = envelope.decode_direct(data)
        except ValueError as exc:
            self._bad_message(sender, exc)
            return
        if isinstance(msg, envelope.EmitTo):
            conn = core.conns.get(ConnId(msg.conn))
            if conn is None:
                self._dropped("connection", msg.conn, f"an event from node {sender}")
            else:
                conn.send(msg.frame)
        elif isinstance(msg, envelope.Answer):
            self._on_answer(sender, msg)
        elif isinstance(msg, envelope.Ask):
            self._answer_ask(sender, msg)
        else:
            conn = core.conns.get(ConnId(msg.conn))
            if conn is None:
                self._dropped("connection", msg.conn, f"a close from node {sender}")
            else:
                core.tasks.spawn(conn.close(msg.code, msg.reason))

    def _on_answer(self, sender: NodeId, msg: envelope.Answer) -> None:
        core = self._core
        entry = core.table.resolve(msg.rid, sender)
        if entry is None:
            core.stats.late_replies += 1
            return
        if msg.code is None:
            core.settle(entry, msg.data if msg.data is not None else core.null, None)
            return
        err_data = None
        if msg.data is not None:
            try:
                err_data = core.serializer.decode_any(msg.data)
            except Exception:
                err_data = None
        core.settle(entry, None, SocketError(msg.code, msg.message, err_data))

    def _answer_ask(self, sender: NodeId, ask: envelope.Ask) -> None:
        """Ask a local client for another node; its raw answer goes back from a callback.

        No task per request: the pending entry's waiter sends the answer, and the table's
        one timer enforces the deadline (this path carries every cross-node request).
        """
        core = self._core
        conn = core.conns.get(ConnId(ask.conn))
        if conn is None or not conn.session.writable:
            self._reply(sender, envelope.Answer(ask.rid, ErrorCode.TIMEOUT, f"no live node holds {ask.conn}"))
            return
        if ask.name not in conn.session.surface.server_requests:
            message = f"{ask.name!r} is not a server request of {conn.session.role!r}"
            self._reply(sender, envelope.Answer(ask.rid, ErrorCode.NOT_FOUND, message))
            return

        def answer(value: Any, error: BaseException | None) -> None:
            if error is None:
                self._reply(sender, envelope.Answer(ask.rid, None, "", bytes(value)))
            else:
                self._reply(sender, self._error_answer(ask.rid, error))

        conn.forward_request(ask.name, ask.input, ask.timeout, answer)

    def _error_answer(self, rid: int, exc: BaseException) -> envelope.Answer:
        if not isinstance(exc, SocketError):
            return envelope.Answer(rid, ErrorCode.INTERNAL, "Internal server error")
        data = None
        if exc.data is not None:
            try:
                data = self._core.encode(exc.data)
            except (TypeError, ValueError):
                data = None
        return envelope.Answer(rid, exc.code, exc.message, data)

    def _reply(self, sender: NodeId, answer: envelope.Answer) -> None:
        if not self.adapter.send(sender, envelope.encode(answer)):
            self._rlog.log(logging.WARNING, "answer", "could not return an answer to node %s: it is gone", sender)

    def _bad_message(self, sender: str, exc: Exception) -> None:
        self._core.stats.bad_cluster_messages += 1
        self._rlog.log(logging.WARNING, "bad_cluster", "dropped a malformed message from node %s: %s", sender, exc)
