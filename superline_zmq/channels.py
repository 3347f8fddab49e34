"""Local channel membership, and holding each channel on the adapter only while it is used.

Rooms, topics and the cluster bus all ride channels. A channel exists here while it has
a local member (a connection) or listener (a server-side bus callback); the first one
subscribes it on the adapter and the last one unsubscribes it. Adapter operations on
one channel run strictly in order, so a quick leave-then-join never ends unsubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

from superline_zmq.adapter import Adapter

M = TypeVar("M")


class Channel(Generic[M]):
    """One channel's local members and listeners, and its subscription on the adapter."""

    __slots__ = ("listeners", "live", "members", "name")

    def __init__(self, name: str, live: asyncio.Task[None]) -> None:
        self.name = name
        self.members: set[M] = set()
        self.listeners: list[Any] = []
        #: Completes once the adapter delivers this channel from every node.
        self.live = live


class ChannelTable(Generic[M]):
    """The channels this node holds, keyed by name."""

    def __init__(self, adapter: Adapter, spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]]) -> None:
        self._adapter = adapter
        self._spawn = spawn
        self._channels: dict[str, Channel[M]] = {}
        self._ops: dict[str, asyncio.Task[None]] = {}

    def get(self, name: str) -> Channel[M] | None:
        """The channel if this node holds it."""
        return self._channels.get(name)

    def __iter__(self) -> Iterator[Channel[M]]:
        return iter(list(self._channels.values()))

    def __len__(self) -> int:
        return len(self._channels)

    def add_member(self, name: str, member: M) -> Channel[M]:
        """Add a member (subscribing the channel if new); await ``.live`` to know it is live."""
        ch = self._acquire(name)
        ch.members.add(member)
        return ch

    def remove_member(self, name: str, member: M) -> None:
        """Remove a member; the channel is released when nothing holds it."""
        ch = self._channels.get(name)
        if ch is not None:
            ch.members.discard(member)
            self._release_if_unused(ch)

    def add_listener(self, name: str, listener: Any) -> Channel[M]:
        """Add a server-side listener (subscribing the channel if new)."""
        ch = self._acquire(name)
        ch.listeners.append(listener)
        return ch

    def remove_listener(self, name: str, listener: Any) -> None:
        """Remove a listener; the channel is released when nothing holds it."""
        ch = self._channels.get(name)
        if ch is not None:
            with contextlib.suppress(ValueError):
                ch.listeners.remove(listener)
            self._release_if_unused(ch)

    def _acquire(self, name: str) -> Channel[M]:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(name, self._op(name, self._adapter.subscribe))
        elif ch.live.done() and (ch.live.cancelled() or ch.live.exception() is not None):
            ch.live = self._op(name, self._adapter.subscribe)  # the last subscribe failed: retry
        return ch

    def _release_if_unused(self, ch: Channel[M]) -> None:
        if ch.members or ch.listeners or self._channels.get(ch.name) is not ch:
            return
        del self._channels[ch.name]
        self._op(ch.name, self._adapter.unsubscribe)

    def _op(self, name: str, fn: Callable[[str], Awaitable[None]]) -> asyncio.Task[None]:
        prev = self._ops.get(name)

        async def run() -> None:
            if prev is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await prev
            await fn(name)

        task: asyncio.Task[None] = self._spawn(run())
        self._ops[name] = task
        task.add_done_callback(lambda t: self._ops.pop(name) if self._ops.get(name) is t else None)
        return task

    async def drain(self) -> None:
        """Wait for every pending adapter operation (used at shutdown)."""
        while self._ops:
            ops = list(self._ops.items())
            await asyncio.gather(*(task for _, task in ops), return_exceptions=True)
            # Since 3.12 gathering done tasks does not yield, so their done callbacks (which pop
            # them) may not have run yet: pop them here or this loop never ends.
            for name, task in ops:
                if task.done() and self._ops.get(name) is task:
                    del self._ops[name]
