"""Presence events: ``srv.cluster.on_user`` and ``srv.cluster.on_room`` on every node.

The first tests run on every cluster kind (servers on a MemoryBus in this process, and
node processes over ZeroMQ; see tests/presence_cluster.py): each node of
``presence_app`` records its events from the start, and the admin request ``events``
reads them. The rest use servers in this process, to reach the listener API itself:
sync and async listeners, ``initial``, ``off()``, ``ready``, errors, re-entrancy, and an
adapter whose presence reports no changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import DEFAULT_TIMEOUT, eventually
from presence_app import PresenceEvent, api, build_server
from presence_cluster import HEARTBEAT_INTERVAL, TTL, PresenceCluster, StartCluster

from superline_zmq import (
    Client,
    PresenceSubscription,
    RoomDiff,
    SocketServer,
    SuperlineError,
    UserPresence,
    connect,
)
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus


async def events(cluster: PresenceCluster, k: int) -> list[PresenceEvent]:
    admin = await cluster.admin(k)
    got: list[PresenceEvent] = await admin.call("events")
    return got


def user_events(evs: list[PresenceEvent], user: str) -> list[tuple[bool, str, int]]:
    return [(e.online, e.node, e.connections) for e in evs if e.user == user]


def room_events(evs: list[PresenceEvent], room: str) -> list[tuple[list[str], list[str]]]:
    return [(e.joins, e.leaves) for e in evs if e.room == room]


async def until_every_node(
    cluster: PresenceCluster, nodes: list[int], pred: Callable[[list[PresenceEvent]], bool], what: str
) -> None:
    for k in nodes:

        async def check(k: int = k) -> bool:
            return pred(await events(cluster, k))

        await eventually(check, message=f"node {k}: {what}")


# ---------------------------------------------------------------- every kind of cluster
async def test_online_offline_and_rooms_fire_once_on_every_node(make_presence_cluster: StartCluster) -> None:
    cluster = await make_presence_cluster(3)
    every = list(range(3))
    laptop = await cluster.user(1, "ann", rooms="lobby")
    n1 = cluster.node_id(1)
    await until_every_node(cluster, every, lambda e: user_events(e, "ann") == [(True, n1, 1)], "ann online")
    await until_every_node(cluster, every, lambda e: room_events(e, "lobby") == [([laptop.id], [])], "lobby join")
    phone = await cluster.user(2, "ann")  # a second device, then the laptop goes: a move that overlaps
    await until_every_node(cluster, every, lambda e: len(room_events(e, "lobby")) == 1, "")
    await eventually(lambda: _count(cluster, 0, "by_user", "ann", 2))
    await laptop.close()
    await until_every_node(cluster, every, lambda e: room_events(e, "lobby")[1:] == [([], [laptop.id])], "lobby leave")
    await phone.close()
    n2 = cluster.node_id(2)
    await until_every_node(
        cluster, every, lambda e: user_events(e, "ann") == [(True, n1, 1), (False, n2, 0)], "ann online, then offline"
    )


async def _count(cluster: PresenceCluster, k: int, name: str, arg: Any, n: int) -> bool:
    admin = await cluster.admin(k)
    return len(await admin.call(name, arg)) == n


async def test_a_crashed_nodes_users_go_offline_within_ttl_and_a_beat(make_presence_cluster: StartCluster) -> None:
    cluster = await make_presence_cluster(3)
    await cluster.user(2, "bob", rooms="watched")
    await cluster.user(1, "carol")
    await until_every_node(cluster, [0, 1, 2], lambda e: {"bob", "carol"} <= {x.user for x in e}, "both online")
    crashed_at = time.monotonic()
    await cluster.crash(2)
    n2 = cluster.node_id(2)
    await until_every_node(cluster, [0, 1], lambda e: (False, n2, 0) in user_events(e, "bob"), "bob offline")
    for k in (0, 1):
        evs = await events(cluster, k)
        assert user_events(evs, "bob") == [(True, n2, 1), (False, n2, 0)]
        [left] = [e for e in evs if e.room == "watched" and e.leaves]
        assert left.at - crashed_at <= TTL + HEARTBEAT_INTERVAL + 0.5  # ttl + one beat, and slack for a busy box
    # a graceful stop: the survivor hears at once, not a ttl later
    stopped_at = time.monotonic()
    await cluster.stop(1)
    await until_every_node(cluster, [0], lambda e: (False, cluster.node_id(1), 0) in user_events(e, "carol"), "")
    [off] = [e for e in await events(cluster, 0) if e.user == "carol" and not e.online]
    assert off.at - stopped_at < TTL


# ---------------------------------------------------------------- the listener API (in this process)
@pytest.fixture
async def bus_cluster() -> AsyncIterator[Callable[..., Any]]:
    bus = MemoryBus(heartbeat_interval=HEARTBEAT_INTERVAL, ttl=TTL)
    servers: list[SocketServer] = []
    clients: list[Client] = []

    async def node(start: bool = True, **options: Any) -> SocketServer:
        srv = build_server(adapter=bus.adapter(), **options)
        servers.append(srv)
        if start:
            await srv.listen("127.0.0.1", 0)
        return srv

    async def user(srv: SocketServer, user: str, rooms: str = "") -> Client:
        params = {"user": user, **({"rooms": rooms} if rooms else {})}
        c = await connect(api, srv.url, role="user", params=params, reconnect=False, open_timeout=DEFAULT_TIMEOUT)
        clients.append(c)
        return c

    node.user = user  # type: ignore[attr-defined]
    node.bus = bus  # type: ignore[attr-defined]
    yield node
    for c in clients:
        await asyncio.wait_for(c.close(), DEFAULT_TIMEOUT)
    for srv in reversed(servers):
        await asyncio.wait_for(srv.close(), DEFAULT_TIMEOUT)


def online(ups: list[UserPresence]) -> list[tuple[str, bool]]:
    return [(u.user_id, u.online) for u in ups]


async def test_sync_and_async_listeners_and_the_initial_state(bus_cluster: Any) -> None:
    a = await bus_cluster()
    b = await bus_cluster()
    await bus_cluster.user(b, "ann", rooms="lobby")
    await eventually(lambda: a.is_online("ann"))
    got_sync: list[UserPresence] = []
    got_async: list[UserPresence] = []
    rooms: list[RoomDiff] = []

    async def slow(up: UserPresence) -> None:
        await asyncio.sleep(0)
        got_async.append(up)

    sub = a.cluster.on_user(got_sync.append)
    a.cluster.on_user(slow)
    a.cluster.on_room("lobby", rooms.append)
    late = a.cluster.on_user(lambda up: None, initial=False)
    await sub.ready
    await late.ready
    assert online(got_sync) == [("ann", True)]  # the state as it was, at once
    assert got_sync[0].node_id == b.node_id and got_sync[0].connections == 1
    assert [[d.user_id for d in r.joins] for r in rooms] == [["ann"]]
    await bus_cluster.user(a, "bob")
    await eventually(lambda: online(got_async) == [("ann", True), ("bob", True)])
    assert online(got_sync) == [("ann", True), ("bob", True)]
    assert isinstance(sub, PresenceSubscription) and sub.active


async def test_initial_false_skips_the_state_and_what_a_newcomer_learns(bus_cluster: Any) -> None:
    a = await bus_cluster()
    await bus_cluster.user(a, "ann")
    c = await bus_cluster(start=False)  # a newcomer, listening before it starts
    everything: list[UserPresence] = []
    news: list[UserPresence] = []
    sub = c.cluster.on_user(everything.append)
    c.cluster.on_user(news.append, initial=False)
    await c.listen("127.0.0.1", 0)
    await asyncio.wait_for(sub.ready, DEFAULT_TIMEOUT)
    await eventually(lambda: online(everything) == [("ann", True)])
    await bus_cluster.user(a, "bob")
    await eventually(lambda: online(news) == [("bob", True)])
    assert online(everything) == [("ann", True), ("bob", True)]


async def test_off_stops_a_listener(bus_cluster: Any) -> None:
    a = await bus_cluster()
    got: list[UserPresence] = []
    off = a.cluster.on_user(got.append)
    ann = await bus_cluster.user(a, "ann")
    await eventually(lambda: len(got) == 1)
    off()
    assert not off.active
    await ann.close()
    await eventually(lambda: _not(a.is_online("ann")))
    assert online(got) == [("ann", True)]


async def _not(aw: Any) -> bool:
    return not await aw


async def test_a_raising_listener_goes_to_on_error_and_stops_nothing(bus_cluster: Any) -> None:
    errors: list[BaseException] = []
    a = await bus_cluster(on_error=lambda exc, conn: errors.append(exc))
    got: list[UserPresence] = []

    def bad(up: UserPresence) -> None:
        raise RuntimeError(f"boom {up.user_id}")

    async def bad_async(up: UserPresence) -> None:
        raise ValueError(f"async boom {up.user_id}")

    a.cluster.on_user(bad)
    a.cluster.on_user(bad_async)
    a.cluster.on_user(got.append)
    await bus_cluster.user(a, "ann")
    await bus_cluster.user(a, "bob")
    await eventually(lambda: len(errors) == 4)
    assert sorted(str(e) for e in errors) == ["async boom ann", "async boom bob", "boom ann", "boom bob"]
    assert online(got) == [("ann", True), ("bob", True)]


async def test_a_listener_that_changes_presence_sees_the_change_after_the_current_event(bus_cluster: Any) -> None:
    a = await bus_cluster()
    seen: list[str] = []
    kicked: list[str] = []

    def first(up: UserPresence) -> None:
        seen.append(f"first {up.user_id} {up.online}")
        if up.online and up.user_id == "intruder":
            conns = [c for c in a.local.connections if c.user_id == "intruder"]
            for conn in conns:  # a sync kick: the descriptor goes at once, from inside the listener
                kicked.append(conn.id)
                a.to_conn(conn.id).close(4000)

    def second(up: UserPresence) -> None:
        seen.append(f"second {up.user_id} {up.online}")

    a.cluster.on_user(first)
    a.cluster.on_user(second)
    await bus_cluster.user(a, "intruder")
    await eventually(lambda: len(seen) == 4)
    assert seen == ["first intruder True", "second intruder True", "first intruder False", "second intruder False"]


async def test_ready_after_start_and_listeners_added_before_it(bus_cluster: Any) -> None:
    srv = await bus_cluster(start=False)
    got: list[UserPresence] = []
    sub = srv.cluster.on_user(got.append)
    assert not sub.active
    waiter = asyncio.ensure_future(sub.ready)
    await asyncio.sleep(0)
    assert not waiter.done()
    await srv.listen("127.0.0.1", 0)
    await asyncio.wait_for(waiter, DEFAULT_TIMEOUT)
    assert sub.active


async def test_a_room_diff_batches_a_crashed_nodes_members(bus_cluster: Any) -> None:
    a = await bus_cluster()
    b = await bus_cluster()
    for name in ("u1", "u2", "u3"):
        await bus_cluster.user(b, name, rooms="lobby")
    diffs: list[RoomDiff] = []
    a.cluster.on_room("lobby", diffs.append, initial=False)
    await eventually(lambda: _count_room(a, "lobby", 3))
    adapter = b.adapter
    assert isinstance(adapter, MemoryAdapter)
    await adapter.simulate_crash()
    await eventually(lambda: len(diffs) == 1, timeout=TTL + 2)
    assert diffs[0].joins == () and sorted(d.user_id or "" for d in diffs[0].leaves) == ["u1", "u2", "u3"]


async def _count_room(srv: SocketServer, room: str, n: int) -> bool:
    return len(await srv.cluster.room(room)) == n


class _NoEventsAdapter(MemoryAdapter):
    """A third-party adapter written before presence events: its presence only answers queries."""

    @property  # type: ignore[override]
    def presence(self) -> Any:
        inner = self.__dict__.get("_inner_presence")
        return None if inner is None else _QueriesOnly(inner)

    @presence.setter
    def presence(self, value: Any) -> None:
        self.__dict__["_inner_presence"] = value


class _QueriesOnly:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def put(self, desc: Any) -> None:
        self._inner.put(desc)

    def remove(self, conn_id: str) -> None:
        self._inner.remove(conn_id)

    async def count(self) -> int:
        return int(await self._inner.count())


async def test_an_adapter_without_presence_events_fails_clearly() -> None:
    errors: list[BaseException] = []
    srv = build_server(adapter=_NoEventsAdapter(), on_error=lambda exc, conn: errors.append(exc))
    sub = srv.cluster.on_user(lambda up: None)  # before start: its ready fails, on_error hears of it
    try:
        await srv.listen("127.0.0.1", 0)
        with pytest.raises(SuperlineError, match="PresenceEvents"):
            await sub.ready
        # one per listener: presence_app's three and this one
        assert len(errors) == 4 and all(isinstance(e, SuperlineError) for e in errors)
        with pytest.raises(SuperlineError, match="on_user and on_room are unavailable"):
            srv.cluster.on_room("lobby", lambda diff: None)
        assert await srv.adapter.presence.count() == 0  # queries still work
    finally:
        await srv.close()


async def test_listeners_stop_when_the_server_closes(bus_cluster: Any) -> None:
    a = await bus_cluster()
    b = await bus_cluster()
    got: list[UserPresence] = []
    release = asyncio.Event()

    async def stuck(up: UserPresence) -> None:
        got.append(up)
        await release.wait()

    a.cluster.on_user(stuck)
    for name in ("ann", "bob", "cat"):
        await bus_cluster.user(b, name)
    await eventually(lambda: len(got) == 1)  # one running, two waiting
    await asyncio.wait_for(a.close(), DEFAULT_TIMEOUT)  # cancels the running one, drops the rest
    assert len(got) == 1
    with pytest.raises(SuperlineError):
        a.cluster.on_user(lambda up: None)
