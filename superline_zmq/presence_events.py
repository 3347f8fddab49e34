"""Presence events: the server side of ``srv.cluster.on_user`` and ``srv.cluster.on_room``.

The adapter's presence says what changed (:class:`~superline_zmq.adapter.PresenceEvents`:
one :class:`~superline_zmq.presence.PresenceChange` per replica update, each change
exactly once, in order). :class:`PresenceHub` turns those into calls of the app's
listeners:

- ``on_user`` listeners get one :class:`~superline_zmq.presence.UserPresence` per user
  that came online (its first connection anywhere) or went offline (its last one gone);
  ``on_room(name)`` listeners one :class:`~superline_zmq.presence.RoomDiff` per update
  that changed room ``name`` (its joins and leaves together).
- With ``initial=True`` (the default) a listener first gets the current state as if it
  had just happened (every online user; the room's members as joins), and the changes
  the node records while it joins; with ``initial=False`` it gets neither, only what
  changes from then on.
- A sync listener is called in the adapter's turn of the event loop (keep it short); an
  async one is awaited one event at a time, in order, as a task the server owns (at most
  :data:`LISTENER_BACKLOG` events wait per listener; beyond that new ones are dropped,
  counted in ``presence_events_dropped`` and logged). Whatever a listener raises goes to
  ``on_error`` and never stops the others or the replica.
- Changes are queued, never dispatched re-entrantly: a listener that changes presence
  itself (joins a room, closes a connection) sees the consequence after the current
  event has reached every listener.

Listeners may be added before the server starts (in the app factory, say): they are
attached when it starts, and their handle's ``ready`` resolves then.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from superline_zmq.adapter import Presence, PresenceEvents
from superline_zmq.errors import SuperlineError
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import PresenceChange, RoomDiff, UserPresence
from superline_zmq.session import ServerStats
from superline_zmq.tasks import Report

log = logging.getLogger("superline_zmq.server")

#: Events waiting for one async listener, at most; beyond that new ones are dropped (counted).
LISTENER_BACKLOG = 10_000

T = TypeVar("T", UserPresence, RoomDiff)

#: ``on_user``'s listener: sync or async.
UserListener = Callable[[UserPresence], Any]
#: ``on_room``'s listener: sync or async.
RoomListener = Callable[[RoomDiff], Any]


class _Ready:
    """Awaitable once the subscription is live (or raises why it cannot be). Needs no event
    loop until awaited, so listeners can be added before there is one."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._error: BaseException | None = None

    def set(self, error: BaseException | None = None) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def __await__(self) -> Generator[Any, None, None]:
        yield from self._event.wait().__await__()
        if self._error is not None:
            raise self._error


class _Sub(Generic[T]):
    __slots__ = ("active", "backlog", "fn", "initial", "ready", "room", "runner")

    def __init__(self, fn: Callable[[T], Any], initial: bool, room: str | None) -> None:
        self.fn: Callable[[T], Any] = fn
        self.initial = initial
        self.room = room
        self.active = False  # attached: changes reach it
        self.ready = _Ready()
        self.backlog: deque[Awaitable[Any]] = deque()
        self.runner: asyncio.Task[None] | None = None


class PresenceSubscription:
    """A presence listener's handle: call it to unsubscribe; ``await .ready`` for liveness.

    ``ready`` resolves once changes from every node reach the listener (and, with
    ``initial=True``, it has been given the current state); it raises
    :class:`~superline_zmq.SuperlineError` if the adapter's presence reports no changes.
    """

    __slots__ = ("_hub", "_sub", "ready")

    def __init__(self, hub: PresenceHub, sub: _Sub[Any]) -> None:
        self._hub = hub
        self._sub = sub
        #: Awaitable: resolves once the listener is live.
        self.ready: Awaitable[None] = sub.ready

    def __call__(self) -> None:
        """Stop: the listener is called no more (an async one finishes the event it is on)."""
        self._hub.remove(self._sub)

    @property
    def active(self) -> bool:
        """Whether the listener is attached and subscribed."""
        return self._sub.active


class PresenceHub:
    """The server's presence listeners and the dispatch of changes to them (see the module docstring)."""

    def __init__(
        self,
        *,
        report: Report,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
        stats: ServerStats,
    ) -> None:
        self._report = report
        self._spawn = spawn
        self._stats = stats
        self._users: list[_Sub[UserPresence]] = []
        self._rooms: dict[str, list[_Sub[RoomDiff]]] = {}
        self._presence: Presence | None = None
        self._events: PresenceEvents | None = None
        self._off: Callable[[], None] | None = None
        self._error: SuperlineError | None = None
        self._attached = False
        self._closed = False
        self._queue: deque[tuple[_Sub[Any] | None, Any]] = deque()
        self._dispatching = False
        self._rlog = RateLimitedLog(log)

    # ------------------------------------------------------------------ subscribing
    def on_user(self, fn: UserListener, *, initial: bool = True) -> PresenceSubscription:
        sub: _Sub[UserPresence] = _Sub(fn, initial, None)
        self._users.append(sub)
        return self._added(sub)

    def on_room(self, room: str, fn: RoomListener, *, initial: bool = True) -> PresenceSubscription:
        sub: _Sub[RoomDiff] = _Sub(fn, initial, room)
        self._rooms.setdefault(room, []).append(sub)
        return self._added(sub)

    def _added(self, sub: _Sub[Any]) -> PresenceSubscription:
        handle = PresenceSubscription(self, sub)
        if self._error is not None:
            self.remove(sub)
            raise self._error
        if self._closed:
            self.remove(sub)
            raise SuperlineError("the server is closed; presence listeners can no longer be added")
        if self._attached:
            self._activate(sub)
        return handle

    def remove(self, sub: _Sub[Any]) -> None:
        sub.active = False
        if sub.room is None:
            if sub in self._users:
                self._users.remove(sub)
        else:
            subs = self._rooms.get(sub.room)
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._rooms[sub.room]
        _drop_backlog(sub)

    # ------------------------------------------------------------------ lifecycle
    def attach(self, presence: Presence | None, adapter_name: str) -> None:
        """The server started: listen to ``presence``'s changes and activate every listener.

        Without events the listeners fail: each one's error goes to ``on_error`` and its
        ``ready`` raises it; later ``on_user``/``on_room`` calls raise it at once.
        """
        if self._attached or self._closed:
            return
        self._attached = True
        if not isinstance(presence, PresenceEvents):
            what = "no presence" if presence is None else "a presence that reports no changes"
            self._error = SuperlineError(
                f"the {adapter_name!r} adapter has {what}, so srv.cluster.on_user and on_room are "
                "unavailable; use an adapter whose presence implements PresenceEvents (memory, zeromq or redis)"
            )
            for sub in self._all():
                self.remove(sub)
                sub.ready.set(self._error)
                self._report(self._error, None)
            return
        self._presence = presence
        self._events = presence
        if self._all():
            self._watch()
        for sub in self._all():
            self._activate(sub)

    def close(self) -> None:
        """Stop dispatching (the server is closing): no listener is called from now on."""
        self._closed = True
        if self._off is not None:
            self._off()
            self._off = None
        self._queue.clear()
        for sub in self._all():
            sub.active = False
            _drop_backlog(sub)
            sub.ready.set(SuperlineError("the server closed"))

    def _all(self) -> list[_Sub[Any]]:
        return [*self._users, *(s for subs in self._rooms.values() for s in subs)]

    def _watch(self) -> None:
        # the first listener starts the stream (for Redis: its mirror); it runs until close
        if self._off is None and self._events is not None:
            self._off = self._events.watch(self._on_change)

    def _activate(self, sub: _Sub[Any]) -> None:
        events = self._events
        assert events is not None
        self._watch()
        if sub.initial:
            # the current state first, as if it had just happened; read synchronously, so no
            # change can fall between it and the changes that follow
            if sub.room is None:
                for up in events.online():
                    self._queue.append((sub, up))
            else:
                members = events.members(sub.room)
                if members:
                    self._queue.append((sub, RoomDiff(sub.room, tuple(members), ())))
        sub.active = True
        self._drain()
        if not sub.ready.done:
            self._spawn(self._ready(sub, events))

    async def _ready(self, sub: _Sub[Any], events: PresenceEvents) -> None:
        try:
            await events.watching()
        except Exception as exc:
            sub.ready.set(exc)
            raise  # to on_error, through the task owner
        sub.ready.set()

    # ------------------------------------------------------------------ dispatch
    def _on_change(self, change: PresenceChange) -> None:
        if not self._closed:
            self._queue.append((None, change))
            self._drain()

    def _drain(self) -> None:
        if self._dispatching:
            return  # a listener changed presence: its change waits for the current one to finish
        self._dispatching = True
        try:
            while self._queue:
                target, item = self._queue.popleft()
                if target is not None:
                    if target.active:
                        self._call(target, item)
                    continue
                change: PresenceChange = item
                for up in change.diff.users:
                    for sub in list(self._users):
                        if sub.active and (sub.initial or not change.initial):
                            self._call(sub, up)
                for rd in change.diff.rooms:
                    for rsub in list(self._rooms.get(rd.room, ())):
                        if rsub.active and (rsub.initial or not change.initial):
                            self._call(rsub, rd)
        finally:
            self._dispatching = False

    def _call(self, sub: _Sub[Any], value: Any) -> None:
        try:
            result = sub.fn(value)
        except Exception as exc:
            self._report(exc, None)
            return
        if not inspect.isawaitable(result):
            return
        if len(sub.backlog) >= LISTENER_BACKLOG:
            _close(result)
            self._stats.presence_events_dropped += 1
            self._rlog.log(
                logging.WARNING,
                "presence_backlog",
                "dropped a presence event: %d are already waiting for an async listener",
                LISTENER_BACKLOG,
            )
            return
        sub.backlog.append(result)
        if sub.runner is None or sub.runner.done():
            sub.runner = self._spawn(self._run(sub))

    async def _run(self, sub: _Sub[Any]) -> None:
        """Await an async listener's events one at a time, in order."""
        try:
            while sub.backlog:
                pending = sub.backlog.popleft()
                try:
                    await pending
                except Exception as exc:
                    self._report(exc, None)
        finally:
            _drop_backlog(sub)  # cancelled (the server closes): the rest never runs


def _close(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)  # a coroutine never awaited must be closed, or it warns
    if callable(close):
        close()


def _drop_backlog(sub: _Sub[Any]) -> None:
    while sub.backlog:
        _close(sub.backlog.popleft())


__all__ = ["LISTENER_BACKLOG", "PresenceHub", "PresenceSubscription", "RoomListener", "UserListener"]
