"""Fan-out: events, rooms, topics, the cluster event bus, and the adapter seam.

Every test runs on a ``Cluster`` (tests/cluster.py): a lone server and clusters of 2 and 3
nodes where that means something. Absence is asserted after :meth:`Cluster.settle`, never
after a sleep: a sentinel sent later by the same node has arrived, so the thing under test
would have too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from cluster import SYNC_ROOM, Cluster, Member, sizes
from fanout_app import Alert, Text, Tick, api
from helpers import DEFAULT_TIMEOUT, eventually

from superline_zmq import ErrorCode, SocketError, SocketServer
from superline_zmq.server import BusMeta

# ---------------------------------------------------------------------------- helpers


def last(cluster: Cluster) -> int:
    """The index of the last node (0 on a lone server)."""
    return len(cluster.nodes) - 1


async def one_per_node(cluster: Cluster, role: str = "user") -> list[Member]:
    return [await cluster.connect(k, role) for k in range(len(cluster.nodes))]


class BusLog:
    """Records what one bus listener was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, BusMeta]] = []

    def __call__(self, payload: Any, meta: BusMeta) -> None:
        self.calls.append((payload, meta))

    @property
    def payloads(self) -> list[Any]:
        return [p for p, _ in self.calls]


# ---------------------------------------------------------------------------- conn.emit


async def test_emit_reaches_that_connection_only(cluster: Cluster) -> None:
    a = await cluster.connect(0)
    b = await cluster.connect(0)
    c = await cluster.connect(last(cluster))
    a.conn.emit("notice", Text("for a"))
    a.conn.emit(api.shared.events["notice"], Text("for a, by entry"))
    await a.expect("notice", Text("for a, by entry"))
    await cluster.settle()
    assert a.received("notice") == [Text("for a"), Text("for a, by entry")]
    assert b.got == [] and c.got == []


async def test_emit_outside_the_role_surface_raises(make_cluster: Any) -> None:
    cluster = await make_cluster(1)
    user = await cluster.connect(0, "user")
    agent = await cluster.connect(0, "agent")
    with pytest.raises(ValueError, match="alert"):
        agent.conn.emit("alert", Alert(1))
    with pytest.raises(ValueError, match="nope"):
        user.conn.emit("nope", None)
    user.conn.emit("alert", Alert(2))  # a role-only event of the user role
    await user.expect("alert", Alert(2))
    await cluster.settle()
    assert agent.got == []
    assert type(user.received("alert")[0]) is Alert


async def test_emit_to_a_closed_connection_is_dropped_and_counted(make_cluster: Any) -> None:
    cluster = await make_cluster(1)
    srv = cluster.nodes[0]
    member = await cluster.connect(0)
    conn = member.conn
    await member.close()
    await eventually(lambda: not conn.open and srv.get(conn.id) is None)
    before = srv.statistics()["dropped_closed"]
    conn.emit("notice", Text("too late"))  # never raises
    assert srv.statistics()["dropped_closed"] == before + 1


# ---------------------------------------------------------------------------- rooms


async def test_room_add_resolves_once_the_channel_is_live(cluster: Cluster) -> None:
    members = await one_per_node(cluster)
    for k, m in enumerate(members):
        await cluster.nodes[k].room("lobby").add(m.conn)
        assert "r:lobby" in cluster.channels(k)
        assert m.conn.rooms == {"lobby", SYNC_ROOM}
    # No wait between add() and broadcast(): add() returning means every node's
    # broadcast reaches the new member.
    for k, srv in enumerate(cluster.nodes):
        srv.room("lobby").broadcast("notice", Text(f"from {k}"))
    for m in members:
        for k in range(len(cluster.nodes)):
            await m.expect("notice", Text(f"from {k}"))


async def test_broadcast_reaches_members_on_all_nodes_and_not_non_members(cluster: Cluster) -> None:
    members = await one_per_node(cluster)
    outsiders = [await cluster.connect(k, "agent") for k in range(len(cluster.nodes))]
    for m in members:
        await cluster.nodes[m.node].room("lobby").add(m.conn)
    for k, srv in enumerate(cluster.nodes):
        srv.room("lobby").broadcast("notice", Text(f"from {k}"))
    expected = [Text(f"from {k}") for k in range(len(cluster.nodes))]
    for m in members:
        await m.expect("notice", expected[-1])
    await cluster.settle()
    for m in members:
        # one copy of each; per-publisher order only, so compare as sorted lists
        assert sorted(m.received("notice"), key=lambda t: t.text) == expected
        assert all(type(p) is Text for p in m.received("notice"))
    for o in outsiders:
        assert o.got == []


async def test_broadcast_to_a_room_with_no_members_anywhere_is_a_no_op(cluster: Cluster) -> None:
    member = await cluster.connect(0)
    cluster.nodes[last(cluster)].room("empty").broadcast("notice", Text("nobody"))
    await cluster.settle()
    assert member.got == []
    assert all(srv.statistics()["dropped_no_channel"] == 0 for srv in cluster.nodes)


async def test_room_remove_stops_delivery_and_releases_the_channel(cluster: Cluster) -> None:
    members = await one_per_node(cluster)
    rooms = [srv.room("lobby") for srv in cluster.nodes]
    for m in members:
        await rooms[m.node].add(m.conn)
    gone = members[last(cluster)]
    rooms[gone.node].remove(gone.conn)
    rooms[gone.node].remove(gone.conn)  # removing a non-member is a no-op
    assert gone.conn.rooms == {SYNC_ROOM}
    assert rooms[gone.node].size == 0
    # it was the node's only member: the node lets go of the channel
    await eventually(lambda: "r:lobby" not in cluster.channels(gone.node))
    for k, room in enumerate(rooms):
        room.broadcast("notice", Text(f"from {k}"))
    await cluster.settle()
    assert gone.got == []
    for m in members[:-1]:
        assert len(m.received("notice")) == len(cluster.nodes)


async def test_broadcast_of_a_role_only_event_raises_and_sends_nothing(cluster: Cluster) -> None:
    member = await cluster.connect(0, "user")  # "alert" is in this member's surface
    srv = cluster.nodes[0]
    room = srv.room("lobby")
    await room.add(member.conn)
    published = srv.adapter.statistics()["published"]
    with pytest.raises(ValueError, match="shared event"):
        room.broadcast("alert", Alert(1))
    with pytest.raises(ValueError, match="shared event"):
        room.broadcast("nope", None)
    with pytest.raises(ValueError, match="shared event"):
        room.broadcast("ticks", Tick(1))  # a topic is not an event
    assert srv.adapter.statistics()["published"] == published
    await cluster.settle()
    assert member.got == []


@pytest.mark.parametrize("n", [2, 3])
async def test_size_and_connections_count_this_node_only(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    a = await cluster.connect(0)
    b = await cluster.connect(0, "agent")  # rooms mix roles
    c = await cluster.connect(1)
    for m in (a, b, c):
        await cluster.nodes[m.node].room("lobby").add(m.conn)
    assert sizes(cluster, "lobby") == [2, 1, 0][:n]
    assert set(cluster.nodes[0].room("lobby").connections) == {a.conn, b.conn}
    assert cluster.nodes[1].room("lobby").connections == [c.conn]
    if n == 3:
        assert cluster.nodes[2].room("lobby").connections == []
    assert sizes(cluster, "never-used") == [0] * n


async def test_a_closed_connection_leaves_all_its_rooms(cluster: Cluster) -> None:
    k = last(cluster)
    stays = await cluster.connect(0)
    leaves = await cluster.connect(k)
    await cluster.nodes[0].room("a").add(stays.conn)
    for name in ("a", "b", "c"):
        await cluster.nodes[k].room(name).add(leaves.conn)
    conn = leaves.conn
    assert conn.rooms == {"a", "b", "c", SYNC_ROOM}
    await leaves.close()
    await eventually(lambda: cluster.nodes[k].get(conn.id) is None)
    assert conn.rooms == frozenset()
    srv = cluster.nodes[k]
    assert srv.room("b").size == 0 and srv.room("c").size == 0
    assert srv.room("a").size == (1 if k == 0 else 0)
    # the node no longer holds the channels nobody else on it uses
    await eventually(lambda: not {"r:b", "r:c"} & cluster.channels(k))
    assert ("r:a" in cluster.channels(k)) == (k == 0)
    with pytest.raises(ValueError, match="not an open connection"):
        await srv.room("a").add(conn)
    # the room still works for the member that stayed
    srv.room("a").broadcast("notice", Text("still here"))
    await stays.expect("notice", Text("still here"))


async def test_adding_a_connection_twice_is_harmless(cluster: Cluster) -> None:
    member = await cluster.connect(last(cluster))
    room = cluster.nodes[member.node].room("lobby")
    await room.add(member.conn)
    await room.add(member.conn)
    assert room.size == 1 and room.connections == [member.conn]
    for k, srv in enumerate(cluster.nodes):
        srv.room("lobby").broadcast("notice", Text(f"from {k}"))
    await cluster.settle()
    assert len(member.received("notice")) == len(cluster.nodes)  # one copy each, not two
    room.remove(member.conn)  # one remove undoes both adds
    assert room.size == 0 and "lobby" not in member.conn.rooms


async def test_leaving_and_rejoining_at_once_ends_subscribed(cluster: Cluster) -> None:
    k = last(cluster)
    member = await cluster.connect(k)
    room = cluster.nodes[k].room("lobby")
    await room.add(member.conn)
    room.remove(member.conn)  # the adapter unsubscribe is queued ...
    await room.add(member.conn)  # ... and this subscribe runs after it
    assert "r:lobby" in cluster.channels(k)
    cluster.nodes[0].room("lobby").broadcast("notice", Text("back"))
    await member.expect("notice", Text("back"))


@pytest.mark.parametrize("n", [2])
async def test_room_add_refuses_another_nodes_connection(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    member = await cluster.connect(0)
    with pytest.raises(ValueError, match="not an open connection of this server"):
        await cluster.nodes[1].room("lobby").add(member.conn)
    assert cluster.nodes[1].room("lobby").size == 0
    assert "r:lobby" not in cluster.channels(1)


# ---------------------------------------------------------------------------- topics


async def test_publish_on_any_node_reaches_subscribers_on_every_node(cluster: Cluster) -> None:
    subscribers = await one_per_node(cluster)
    for s in subscribers:
        await s.subscribe("ticks")
    outsider = await cluster.connect(0)
    for k, srv in enumerate(cluster.nodes):
        srv.publish("ticks", Tick(k))
    await cluster.settle()
    for s in subscribers:
        assert sorted(t.n for t in s.received("ticks")) == list(range(len(cluster.nodes)))
        assert all(type(t) is Tick for t in s.received("ticks"))
    assert outsider.got == []


async def test_for_role_publish_reaches_only_that_roles_subscribers(cluster: Cluster) -> None:
    users = await one_per_node(cluster, "user")
    agents = await one_per_node(cluster, "agent")
    for m in users + agents:
        await m.subscribe("alerts")  # same name, two role topics: t:user:alerts, t:agent:alerts
    for k in range(len(cluster.nodes)):
        assert {"t:user:alerts", "t:agent:alerts"} <= cluster.channels(k)
    cluster.nodes[0].for_role("user").publish("alerts", Alert(1))
    cluster.nodes[last(cluster)].for_role("agent").publish(api.own["agent"].topics["alerts"], Alert(2))
    await cluster.settle()
    for u in users:
        assert u.received("alerts") == [Alert(1)]
    for a in agents:
        assert a.received("alerts") == [Alert(2)]


async def test_shared_topic_through_the_for_role_lens_reaches_every_subscriber(cluster: Cluster) -> None:
    subscribers = await one_per_node(cluster, "user") + await one_per_node(cluster, "agent")
    for s in subscribers:
        await s.subscribe("ticks")
    cluster.nodes[last(cluster)].for_role("agent").publish("ticks", Tick(7))
    await cluster.settle()
    for s in subscribers:
        assert s.received("ticks") == [Tick(7)]


async def test_publish_scoping_errors(make_cluster: Any) -> None:
    cluster = await make_cluster(1)
    srv: SocketServer = cluster.nodes[0]
    with pytest.raises(ValueError, match="not a shared topic"):
        srv.publish("alerts", Alert(1))  # a role topic needs for_role
    with pytest.raises(ValueError, match="not a shared topic"):
        srv.publish("notice", Text("x"))  # an event, not a topic
    with pytest.raises(ValueError, match="unknown role"):
        srv.for_role("admin")
    with pytest.raises(ValueError, match="not a topic of role"):
        srv.for_role("agent").publish("notice", Text("x"))
    with pytest.raises(ValueError, match="not a topic of role"):
        srv.for_role("user").publish("nope", None)
    assert srv.adapter.statistics()["published"] == 0


async def test_unsubscribe_stops_delivery_and_releases_the_last_local_subscription(cluster: Cluster) -> None:
    k = last(cluster)
    a = await cluster.connect(k)
    b = await cluster.connect(k)
    far = await cluster.connect(0) if k != 0 else None
    sub_a = await a.subscribe("ticks")
    sub_b = await b.subscribe("ticks")
    if far is not None:
        await far.subscribe("ticks")
    sub_a.unsubscribe()
    # b still holds the channel on node k: it stays subscribed there
    await eventually(lambda: "ticks" not in a.conn.topics)
    assert "t:shared:ticks" in cluster.channels(k)
    cluster.nodes[0].publish("ticks", Tick(1))
    await b.expect("ticks", Tick(1))
    await cluster.settle()
    assert a.got == []
    sub_b.unsubscribe()
    # the last local subscriber left: node k releases the channel
    await eventually(lambda: "t:shared:ticks" not in cluster.channels(k))
    cluster.nodes[0].publish("ticks", Tick(2))
    await cluster.settle()
    assert a.got == [] and b.received("ticks") == [Tick(1)]
    if far is not None:
        assert far.received("ticks") == [Tick(1), Tick(2)]
        assert "t:shared:ticks" in cluster.channels(0)


# ---------------------------------------------------------------------------- the cluster bus


async def test_bus_fires_on_every_node_for_publishes_from_any_node(cluster: Cluster) -> None:
    logs = [BusLog() for _ in cluster.nodes]
    for k, (srv, lg) in enumerate(zip(cluster.nodes, logs, strict=True)):
        off = srv.subscribe("ticks", lg)
        await off.ready
        assert "t:shared:ticks" in cluster.channels(k)
    for k, srv in enumerate(cluster.nodes):
        srv.publish("ticks", Tick(k))
    n = len(cluster.nodes)
    for lg in logs:
        await eventually(lambda lg=lg: len(lg.calls) == n, message=lambda lg=lg: repr(lg.calls))
    for k, (srv, lg) in enumerate(zip(cluster.nodes, logs, strict=True)):
        origins = {p.n: meta.origin for p, meta in lg.calls}
        # local echo says this node; remote ones name the publisher
        assert origins == {j: cluster.nodes[j].node_id for j in range(n)}
        assert origins[k] == srv.node_id
        assert all(type(p) is Tick for p in lg.payloads)
    assert all(errors == [] for errors in cluster.errors)


async def test_bus_accepts_the_topic_entry_and_async_listeners(cluster: Cluster) -> None:
    srv = cluster.nodes[last(cluster)]
    got: list[Tick] = []

    async def listener(payload: Tick, meta: BusMeta) -> None:
        got.append(payload)

    off = srv.subscribe(api.shared.topics["ticks"], listener)
    await off.ready
    cluster.nodes[0].publish("ticks", Tick(3))
    await eventually(lambda: got == [Tick(3)])
    off()


async def test_bus_only_carries_shared_topics(make_cluster: Any) -> None:
    cluster = await make_cluster(1)
    srv = cluster.nodes[0]
    for name in ("alerts", "notice", "nope"):
        with pytest.raises(ValueError, match="not a shared topic"):
            srv.subscribe(name, BusLog())
    assert cluster.channels(0) == frozenset()


@pytest.mark.parametrize("n", [2, 3])
async def test_bus_off_stops_that_listener_only(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    k = n - 1
    srv = cluster.nodes[k]
    stopped, kept, sentinel = BusLog(), BusLog(), BusLog()
    off_stopped = srv.subscribe("ticks", stopped)
    off_kept = srv.subscribe("ticks", kept)
    off_sentinel = srv.subscribe("news", sentinel)
    for handle in (off_stopped, off_kept, off_sentinel):
        await handle.ready
    off_stopped()
    off_stopped()  # idempotent
    cluster.nodes[0].publish("ticks", Tick(1))
    cluster.nodes[0].publish("news", Text("sentinel"))  # same publisher, sent after
    await eventually(lambda: sentinel.payloads == [Text("sentinel")])
    assert stopped.calls == []
    assert kept.payloads == [Tick(1)]
    # the last listener goes: the node lets go of the channel, and publishes stop arriving
    off_kept()
    await eventually(lambda: "t:shared:ticks" not in cluster.channels(k))
    cluster.nodes[0].publish("ticks", Tick(2))
    cluster.nodes[0].publish("news", Text("sentinel 2"))
    await eventually(lambda: len(sentinel.calls) == 2)
    assert kept.payloads == [Tick(1)]
    assert srv.statistics()["dropped_no_channel"] == 0
    off_sentinel()


@pytest.mark.parametrize("n", [2])
async def test_clients_and_bus_listeners_share_one_channel(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    srv = cluster.nodes[1]
    member = await cluster.connect(1)
    sub = await member.subscribe("ticks")
    log = BusLog()
    off = srv.subscribe("ticks", log)
    await off.ready
    cluster.nodes[0].publish("ticks", Tick(1))
    await member.expect("ticks", Tick(1))
    await eventually(lambda: log.payloads == [Tick(1)])
    off()  # the client still holds the channel
    assert "t:shared:ticks" in cluster.channels(1)
    cluster.nodes[0].publish("ticks", Tick(2))
    await member.expect("ticks", Tick(2))
    sub.unsubscribe()  # now nothing does
    await eventually(lambda: "t:shared:ticks" not in cluster.channels(1))
    assert log.payloads == [Tick(1)]


@pytest.mark.parametrize("n", [2])
async def test_bus_off_stops_delivery_at_once_even_before_the_adapter_lets_go(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    srv = cluster.nodes[1]
    stopped, sentinel = BusLog(), BusLog()
    off = srv.subscribe("ticks", stopped)
    await off.ready
    await srv.subscribe("news", sentinel).ready
    off()  # the adapter unsubscribe is still pending: a publication may still come in
    cluster.nodes[0].publish("ticks", Tick(1))
    cluster.nodes[0].publish("news", Text("sentinel"))
    await eventually(lambda: sentinel.calls)
    assert stopped.calls == []


async def test_a_raising_listener_goes_to_on_error_and_others_still_get_the_message(cluster: Cluster) -> None:
    k = last(cluster)
    srv = cluster.nodes[k]
    before, after = BusLog(), BusLog()

    def raising(payload: Any, meta: BusMeta) -> None:
        raise RuntimeError(f"listener failed on {payload.n}")

    for listener in (before, raising, after):
        await srv.subscribe("ticks", listener).ready
    cluster.nodes[0].publish("ticks", Tick(1))  # remote on a cluster
    srv.publish("ticks", Tick(2))  # local echo
    await eventually(lambda: len(after.calls) == 2)
    assert sorted(t.n for t in before.payloads) == [1, 2]
    assert sorted(t.n for t in after.payloads) == [1, 2]
    errors = cluster.errors[k]
    assert sorted(str(e) for e in errors) == ["listener failed on 1", "listener failed on 2"]
    assert all(type(e) is RuntimeError for e in errors)


@pytest.mark.parametrize("n", [1, 2])
async def test_a_raising_async_listener_goes_to_on_error(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    k = n - 1
    ran = asyncio.Event()

    async def raising(payload: Any, meta: BusMeta) -> None:
        ran.set()
        raise RuntimeError(f"async listener failed on {payload.n}")

    await cluster.nodes[k].subscribe("ticks", raising).ready
    cluster.nodes[0].publish("ticks", Tick(1))  # local echo on a lone server, remote otherwise
    await asyncio.wait_for(ran.wait(), DEFAULT_TIMEOUT)
    # the task has finished by now; reporting it takes a loop turn or two, not 0.2 s
    await eventually(lambda: cluster.errors[k], timeout=0.2)
    assert [str(e) for e in cluster.errors[k]] == ["async listener failed on 1"]


@pytest.mark.parametrize("n", [2])
async def test_bus_listeners_get_the_same_typed_payload_from_every_origin(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    logs = [BusLog() for _ in cluster.nodes]
    for srv, lg in zip(cluster.nodes, logs, strict=True):
        await srv.subscribe("ticks", lg).ready
    cluster.nodes[0].publish("ticks", {"n": 1})  # publish accepts a dict, as for clients
    await eventually(lambda: all(lg.calls for lg in logs))
    assert logs[1].payloads == [Tick(1)]  # remote: validated and decoded
    assert logs[0].payloads == [Tick(1)]  # local echo: should be the same


@pytest.mark.parametrize("n", [2, 3])
async def test_an_invalid_payload_from_another_node_is_a_validation_error(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    k = n - 1
    other = cluster.nodes[0]
    log, other_log = BusLog(), BusLog()
    await cluster.nodes[k].subscribe("ticks", log).ready
    await cluster.nodes[k].subscribe("ticks", other_log).ready
    other.adapter.publish("t:shared:ticks", b'{"t":"pub","c":"ticks","d":{"n":"x"},"nd":"zz"}')
    other.publish("ticks", Tick(1))  # the receive path goes on
    await eventually(lambda: log.payloads == [Tick(1)])
    assert other_log.payloads == [Tick(1)]
    [err] = cluster.errors[k]
    assert isinstance(err, SocketError) and err.code == ErrorCode.VALIDATION
    assert "t:shared:ticks" in err.message and "zz" in err.message
    assert err.data == [{"message": "Expected `int`, got `str`", "path": ["n"]}]
    assert isinstance(err.__cause__, msgspec.ValidationError)


@pytest.mark.parametrize("n", [2])
async def test_undecodable_bytes_from_another_node_are_reported_and_counted(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    other, srv = cluster.nodes
    log = BusLog()
    await srv.subscribe("ticks", log).ready
    other.adapter.publish("t:shared:ticks", b"\xff not a frame")
    other.adapter.publish("t:shared:ticks", b'{"t":"evt","e":"notice","d":{"text":"wrong frame"}}')
    other.publish("ticks", Tick(1))
    await eventually(lambda: log.payloads == [Tick(1)])
    assert srv.statistics()["bad_cluster_messages"] == 2
    assert len(cluster.errors[1]) == 2
    assert all(isinstance(e, ValueError) and "t:shared:ticks" in str(e) for e in cluster.errors[1])


# ---------------------------------------------------------------------------- nodes without members


@pytest.mark.parametrize("n", [3])
async def test_a_node_without_members_for_a_channel_receives_nothing(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    a = await cluster.connect(0)
    b = await cluster.connect(1)
    # node 2 has no connection at all, and no bus listener
    await cluster.nodes[0].room("lobby").add(a.conn)
    await cluster.nodes[1].room("lobby").add(b.conn)
    await a.subscribe("ticks")
    bus = BusLog()
    await cluster.nodes[1].subscribe("news", bus).ready

    stats = [srv.adapter.statistics() for srv in cluster.nodes]
    cluster.nodes[0].room("lobby").broadcast("notice", Text("lobby"))
    cluster.nodes[1].publish("ticks", Tick(1))
    cluster.nodes[0].publish("news", Text("bus"))
    await cluster.settle()
    await eventually(lambda: bus.payloads == [Text("bus")])
    assert b.received("notice") == [Text("lobby")] and a.received("ticks") == [Tick(1)]
    assert cluster.channels(2) == frozenset()
    assert cluster.nodes[2].statistics()["dropped_no_channel"] == 0
    if cluster.kind == "memory":  # the memory bus counts the nodes each publish reached
        after = [srv.adapter.statistics() for srv in cluster.nodes]
        # node 0: lobby -> node 1, news -> node 1, its settle sentinel -> node 1
        assert after[0]["delivered"] - stats[0]["delivered"] == 3
        # node 1: ticks -> node 0, its settle sentinel -> node 0
        assert after[1]["delivered"] - stats[1]["delivered"] == 2
        # node 2: only its settle sentinel, to nodes 0 and 1
        assert after[2]["delivered"] - stats[2]["delivered"] == 2


@pytest.mark.parametrize("n", [2, 3])
async def test_a_node_leaving_does_not_disturb_the_others(make_cluster: Any, n: int) -> None:
    cluster = await make_cluster(n)
    members = await one_per_node(cluster)
    for m in members:
        await cluster.nodes[m.node].room("lobby").add(m.conn)
        await m.subscribe("ticks")
    log = BusLog()
    await cluster.nodes[0].subscribe("news", log).ready
    gone = cluster.nodes[-1]
    await gone.close()
    await eventually(lambda: members[-1].client.connected is False)
    await members[-1].close()  # its node closed it; settle() stops waiting for it
    assert not any(cluster.channels(n - 1))  # the closed node let go of everything
    for k, srv in enumerate(cluster.nodes[:-1]):
        srv.room("lobby").broadcast("notice", Text(f"from {k}"))
        srv.publish("ticks", Tick(k))
        srv.publish("news", Text(f"bus {k}"))
    for k in range(n - 1):
        await cluster.settle(k)
    for m in members[:-1]:
        assert len(m.received("notice")) == n - 1 and len(m.received("ticks")) == n - 1
    await eventually(lambda: len(log.calls) == n - 1)
    assert all(errors == [] for errors in cluster.errors)


# ---------------------------------------------------------------------------- validate_outgoing


async def test_validate_outgoing_refuses_payloads_that_do_not_fit(make_cluster: Any) -> None:
    cluster = await make_cluster(2, validate_outgoing=True)
    srv = cluster.nodes[0]
    member = await cluster.connect(1)
    await member.subscribe("ticks")
    await member.subscribe("alerts")
    await cluster.nodes[1].room("lobby").add(member.conn)
    published = srv.adapter.statistics()["published"]
    with pytest.raises(ValueError, match="validate_outgoing"):
        srv.publish("ticks", {"n": "x"})
    with pytest.raises(ValueError, match="validate_outgoing"):
        srv.publish("ticks", Tick("x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="validate_outgoing"):
        srv.for_role("user").publish("alerts", {"level": "high"})
    with pytest.raises(ValueError, match="validate_outgoing"):
        srv.room("lobby").broadcast("notice", {"txt": "missing field"})
    with pytest.raises(ValueError, match="validate_outgoing"):
        member.conn.emit("alert", {"level": None})
    assert srv.adapter.statistics()["published"] == published  # nothing left the node
    # payloads that fit go through, dicts included
    srv.publish("ticks", {"n": 1})
    srv.for_role("user").publish("alerts", Alert(2))
    srv.room("lobby").broadcast("notice", Text("ok"))
    member.conn.emit("alert", {"level": 3})
    await cluster.settle()
    expected = [("ticks", Tick(1)), ("alerts", Alert(2)), ("notice", Text("ok")), ("alert", Alert(3))]
    assert sorted(member.got, key=repr) == sorted(expected, key=repr)  # the emit is local: no order


async def test_outgoing_payloads_are_not_validated_by_default(make_cluster: Any) -> None:
    cluster = await make_cluster(2)
    srv = cluster.nodes[0]
    member = await cluster.connect(1)
    await member.subscribe("ticks")
    published = srv.adapter.statistics()["published"]
    srv.publish("ticks", {"n": "x"})  # does not fit: sent anyway, nothing raised
    srv.publish("ticks", Tick(2))
    assert srv.adapter.statistics()["published"] == published + 2
    await member.expect("ticks", Tick(2))
    # our client validates on receipt and drops what does not fit
    assert member.got == [("ticks", Tick(2))]


# ---------------------------------------------------------------------------- encode once


async def test_fanout_encodes_once_for_every_member_on_every_node(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [await cluster.connect(k) for k in range(len(cluster.nodes)) for _ in range(5)]
    for m in members:
        await cluster.nodes[m.node].room("five").add(m.conn)
        await m.subscribe("ticks")
    assert sizes(cluster, "five") == [5] * len(cluster.nodes)
    encoded: list[Any] = []
    for srv in cluster.nodes:

        def counting(frame: Any, encode: Any = srv._core.encode) -> bytes:
            encoded.append(frame)
            return encode(frame)  # type: ignore[no-any-return]

        monkeypatch.setattr(srv._core, "encode", counting)

    cluster.nodes[0].room("five").broadcast("notice", Text("once"))
    for m in members:
        await m.expect("notice", Text("once"))
    assert len(encoded) == 1, encoded

    cluster.nodes[last(cluster)].publish("ticks", Tick(5))
    for m in members:
        await m.expect("ticks", Tick(5))
    assert len(encoded) == 2, encoded
