"""A CURVE cluster as real processes: members route as before, outsiders stay out, keys rotate live.

Every node is ``superline-zmq run presence_app:app --curve-cert ... --curve-allow ...``
(``LocalCluster(curve=True)``: throwaway keys, one allow directory shared by the nodes,
which a test edits like an operator and then SIGHUPs the nodes). Behaviour is checked
through each node's admin role: topology, presence, room broadcasts, targeted sends,
server requests and the adapter's counters. Timings are ``ClusterTiming.local()`` (beat
0.2 s, dead after 1 s). "Nothing arrived" is asserted only once a marker sent later on the
same path has arrived, or from counters that would have moved. Sync tests driving
``asyncio.run``: they run once, not once per event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from helpers import eventually
from presence_cluster import Admin, ProcessPresenceCluster, User

from superline_zmq import ClusterTiming
from superline_zmq.testing import LocalCluster, Node

TESTS = Path(__file__).resolve().parent
TIMING = ClusterTiming.local()
BEAT = TIMING.heartbeat_interval
#: Scheduling slack on a loaded 2-core machine (member polls every 50 ms, stdout pipes).
SLACK = 1.0


def run(scenario: Callable[[ProcessPresenceCluster], Awaitable[None]], n: int = 3) -> None:
    async def main() -> None:
        local = LocalCluster("presence_app:app", n, timing=TIMING, cwd=str(TESTS), curve=True)
        await local.start()
        cluster = ProcessPresenceCluster(local)
        try:
            await scenario(cluster)
        finally:
            await cluster.close()
        assert local.keys is not None and not local.keys.root.exists()  # the throwaway keys are gone

    asyncio.run(main())


async def add(cluster: ProcessPresenceCluster, **options: Any) -> tuple[int, Node]:
    """A node seeded with node 0 that is not expected to join (``wait=False``)."""
    node = await cluster.local.add_node(0, wait=False, **options)
    cluster.urls.append(node.url)
    return node.index, node


async def stats(admin: Admin) -> dict[str, int]:
    got: dict[str, int] = await admin.call("stats")
    return got


async def topology(admin: Admin) -> set[str]:
    return {t.node_id for t in await admin.call("topology") if t.alive}


async def everyone_reaches_everyone(cluster: ProcessPresenceCluster, nodes: list[int], tag: str) -> None:
    """A user on each node; every node emits to each of them, asks each a question, and broadcasts to a room."""
    users = {k: await cluster.user(k, f"{tag}{k}", rooms=f"room-{tag}") for k in nodes}
    for k in nodes:
        admin = await cluster.admin(k)
        assert await topology(admin) == {cluster.node_id(j) for j in nodes}
        for j, u in users.items():
            await eventually(
                lambda admin=admin, j=j: admin.call("is_online", f"{tag}{j}"),
                message=f"node {k} never saw user {tag}{j} (on node {j}) online",
            )
            await admin.call("emit_to", {"id": u.id, "text": f"{k}->{j}"})
            assert (await admin.call("ask", {"id": u.id, "q": "ready?"})).ok is True
        await admin.call("broadcast", {"room": f"room-{tag}", "text": f"room from {k}"})
    for j, u in users.items():
        for k in nodes:
            await u.expect(f"{k}->{j}")
            await u.expect(f"room from {k}")
        assert len(u.notices) == 2 * len(nodes)  # nothing lost, nothing doubled


def test_curve_members_route_as_before_and_outsiders_stay_out_until_their_key_is_added() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        local = cluster.local
        assert local.keys is not None
        await everyone_reaches_everyone(cluster, [0, 1, 2], "c")

        # a fourth node with a key nobody lists, and a fifth speaking plain ZMTP, both seeded with node 0
        intruder_k, intruder = await add(cluster, cert=local.keys.cert("intruder", allow=False))
        plain_k, plain = await add(cluster, plain=True)
        members = [0, 1, 2]
        admins = {k: await cluster.admin(k) for k in [*members, intruder_k, plain_k]}

        def refusals() -> str:
            return local.nodes[0].stderr(200)

        await eventually(lambda: f"refused a node with key {intruder.key} from 127.0.0.1" in refusals(), timeout=10)
        await eventually(lambda: "refused a peer speaking plain ZMTP" in refusals(), timeout=10)
        assert (await stats(admins[0]))["adapter_auth_refused"] >= 2
        outsiders = {intruder_k: intruder, plain_k: plain}
        member_ids = {cluster.node_id(k) for k in members}

        # from the members' side: not in any view, not in presence, unreachable
        out_users = {k: await cluster.user(k, f"out{k}", rooms="room-c") for k in outsiders}
        inside = await cluster.user(1, "inside", rooms="room-c")
        for k in members:
            assert await topology(admins[k]) == member_ids
            assert local.nodes[k].alive_members == member_ids - {cluster.node_id(k)}
            for o in outsiders:
                assert await admins[k].call("is_online", f"out{o}") is False
        before = (await stats(admins[0]))["dropped_unknown_node"]
        for u in out_users.values():
            await admins[0].call("emit_to", {"id": u.id, "text": "to an outsider"})
        assert (await stats(admins[0]))["dropped_unknown_node"] == before + 2  # refused at once, counted
        # from the outsiders' side: alone, blind and mute
        for o in outsiders:
            assert await topology(admins[o]) == {cluster.node_id(o)}
            assert await admins[o].call("is_online", "inside") is False
            await admins[o].call("emit_to", {"id": inside.id, "text": f"injected by {o}"})
            await admins[o].call("broadcast", {"room": "room-c", "text": f"room injected by {o}"})
            assert (await stats(admins[o]))["dropped_unknown_node"] == 1
        await admins[0].call("broadcast", {"room": "room-c", "text": "marker"})
        await inside.expect("marker")  # sent after the injections, over the same kind of path
        assert not [t for t in inside.notices if "injected" in t], inside.notices
        for o, u in out_users.items():
            st = await stats(admins[o])
            assert (st["adapter_members"], st["adapter_delivered"], st["adapter_direct_received"]) == (0, 0, 0), st
            assert u.notices == [f"room injected by {o}"]  # only its own node's local broadcast

        # the intruder's key is added everywhere: at its next hello it is a full member
        local.keys.allow("intruder")
        reloads = await local.reload_all()  # the CURVE nodes only; the plain one has no allow list
        assert all(r["added"] == [intruder.key] for r in reloads), reloads
        await local.wait_converged(timeout=15, nodes=[*members, intruder_k])
        await everyone_reaches_everyone(cluster, [*members, intruder_k], "a")
        assert await topology(admins[plain_k]) == {cluster.node_id(plain_k)}  # still outside

    run(scenario)


def test_a_revoked_key_drops_its_node_within_a_beat_or_two_and_restoring_it_brings_it_back() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        local = cluster.local
        assert local.keys is not None
        admins = [await cluster.admin(k) for k in range(3)]
        u0: User = await cluster.user(0, "u0", rooms="r")
        await cluster.user(2, "u2", rooms="r")
        for admin in admins[:2]:
            await eventually(lambda admin=admin: admin.call("is_online", "u2"))
        refused_before = (await stats(admins[0]))["adapter_auth_refused"]
        node2 = cluster.node_id(2)

        local.keys.revoke("node2")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reloads = await asyncio.gather(local.reload(0), local.reload(1))
        assert all(r["evicted"] == [node2] and r["removed"] == [local.nodes[2].key] for r in reloads), reloads
        for k in (0, 1):
            await local.wait_members(k, 1, timeout=2 * BEAT + SLACK)
            assert node2 not in await topology(admins[k])
            assert await admins[k].call("is_online", "u2") is False
        assert loop.time() - t0 < 2 * BEAT + SLACK
        # its existing connections into node 0 are gone: both (ROUTER and PUB) came back and were refused
        await eventually(lambda: _grew(admins[0], "adapter_auth_refused", refused_before + 1), timeout=5)
        # so node 2 cannot deliver anything any more: not to a connection, not to a room
        before = await stats(admins[0])
        await admins[2].call("emit_to", {"id": u0.id, "text": "from the revoked node"})
        await admins[2].call("broadcast", {"room": "r", "text": "room from the revoked node"})
        # node 1's marker (node 0 may still be re-subscribing to node 1's re-created PUB: bounded retries)
        for _ in range(50):
            await admins[1].call("broadcast", {"room": "r", "text": "marker"})
            if await _heard(u0, "marker", 0.2):
                break
        assert "marker" in u0.notices and not [t for t in u0.notices if "revoked" in t], u0.notices
        after = await stats(admins[0])
        assert after["adapter_direct_received"] == before["adapter_direct_received"]

        # restored: it is refused no more, finds the others again and is a full member
        local.keys.allow("node2")
        await asyncio.gather(local.reload(0), local.reload(1))
        await local.wait_converged(timeout=15)
        await links_in_force(cluster, [0, 1, 2])
        await everyone_reaches_everyone(cluster, [0, 1, 2], "b")

    run(scenario)


async def links_in_force(cluster: ProcessPresenceCluster, nodes: list[int]) -> None:
    """Wait (bounded) until every node's room broadcasts reach a user on every node.

    After a key is restored the node that was refused reconnects its SUBs (when a member
    calls it, or on its own with backoff), and the others reconnect to it; a publication
    sent before a new SUB's subscriptions reach the publisher is lost, as on any new PUB/SUB
    connection. So "nothing lost" is asserted only once every path has carried a marker.
    """
    users = [await cluster.user(j, f"sync{j}", rooms="sync") for j in nodes]
    for k in nodes:
        admin = await cluster.admin(k)
        for attempt in range(50):
            text = f"sync from {k} #{attempt}"
            await admin.call("broadcast", {"room": "sync", "text": text})
            if all([await _heard(u, text, 0.2) for u in users]):
                break
        else:
            nodes_ = enumerate(cluster.local.nodes)
            logs = "\n".join(f"node {n} ({cluster.node_id(n)}):\n{node.stderr(30)}" for n, node in nodes_)
            last = [u.notices[-1:] for u in users]
            raise AssertionError(f"node {k}'s broadcasts never reached every node: {last}\n{logs}")


async def _grew(admin: Admin, key: str, before: int) -> bool:
    return (await stats(admin))[key] > before


async def _heard(user: User, text: str, timeout: float) -> bool:
    try:
        await user.expect(text, timeout)
    except AssertionError:
        return False
    return True
