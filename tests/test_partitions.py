"""Partitions heal themselves: three node processes behind fault proxies (``faults=True``).

Node 2 is cut off from nodes 0 and 1 (every link broken both ways, every process alive)
for longer than the forget time, under light traffic; then the links return. Without a
restart and without listing a seed twice, the two sides must find each other again and
converge: topology, presence both ways, presence events (offline during the cut, online
again after), emits and server requests between every pair. Then the link flaps (cut and
heal every 0.5 s for 10 s): the cluster must end whole, with no proxied connection, ZeroMQ
socket or file descriptor left over.

The nodes run ``presence_app`` with local timings (beat 0.2 s, dead after 1 s, forgotten
after 2 s, re-probed within 0.2 s to 2 s). Linux only (the proxies tell nodes apart
through /proc).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually
from presence_app import PresenceEvent
from presence_cluster import ProcessPresenceCluster, User

from superline_zmq import ClusterTiming
from superline_zmq.testing import LocalCluster

TESTS = Path(__file__).resolve().parent
TIMING = ClusterTiming.local()
#: How long the cluster may take to heal once the links are back: the longest re-probe
#: backoff, plus a join and its pulls, with room for a busy machine.
HEAL_TIMEOUT = TIMING.reprobe_max + 8.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fault proxies read /proc")


def run(scenario: Callable[[ProcessPresenceCluster], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        local = LocalCluster("presence_app:app", 3, timing=TIMING, cwd=str(TESTS), faults=True, **options)
        await local.start()
        cluster = ProcessPresenceCluster(local)
        try:
            await scenario(cluster)
        finally:
            await cluster.close()

    asyncio.run(main())


async def events(cluster: ProcessPresenceCluster, k: int) -> list[PresenceEvent]:
    admin = await cluster.admin(k)
    got: list[PresenceEvent] = await admin.call("events")
    return got


def online_now(evs: list[PresenceEvent]) -> set[str]:
    """The users a node's listener believes online: its events added up (strict about order)."""
    online: set[str] = set()
    for e in evs:
        if e.user is None:
            continue
        if e.online:
            assert e.user not in online, f"{e.user} online twice"
            online.add(e.user)
        else:
            assert e.user in online, f"{e.user} offline, never online"
            online.discard(e.user)
    return online


async def sees_users(cluster: ProcessPresenceCluster, k: int, users: set[str]) -> bool:
    """Node ``k``'s queries and its listener both show exactly ``users`` online (admins aside)."""
    admin = await cluster.admin(k)
    conns = await admin.call("connections")
    queried = {d.user_id for d in conns if d.user_id is not None}
    return queried == users and online_now(await events(cluster, k)) == users


async def everyone_reaches_everyone(cluster: ProcessPresenceCluster, users: dict[int, User], tag: str) -> None:
    """Every node emits to every user and asks each a question (server requests), across every pair."""
    for k in range(3):
        admin = await cluster.admin(k)
        for j, u in users.items():
            await admin.call("emit_to", {"id": u.id, "text": f"{tag}{k}->{j}"})
            assert (await admin.call("ask", {"id": u.id, "q": "ready?", "timeout": 5.0})).ok is True
    for j, u in users.items():
        for k in range(3):
            await u.expect(f"{tag}{k}->{j}")


async def topology_whole(cluster: ProcessPresenceCluster) -> bool:
    for k in range(3):
        admin = await cluster.admin(k)
        topo = await admin.call("topology")
        if sorted(t.node_id for t in topo if t.alive) != sorted(cluster.node_id(j) for j in range(3)):
            return False
    return True


async def light_traffic(cluster: ProcessPresenceCluster, users: dict[int, User], stop: asyncio.Event) -> int:
    """Node 0 emits to every user and broadcasts to the room every 0.1 s until ``stop`` (at most 600 rounds)."""
    admin = await cluster.admin(0)
    rounds = 0
    while not stop.is_set() and rounds < 600:
        for u in users.values():
            await admin.call("emit_to", {"id": u.id, "text": "tick"})
        await admin.call("broadcast", {"room": "watched", "text": "tick"})
        rounds += 1
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass
    return rounds


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_node_cut_off_past_the_forget_time_rejoins_by_itself() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        local: LocalCluster = cluster.local
        names = {k: f"p{k}" for k in range(3)}
        users = {k: await cluster.user(k, names[k], rooms="watched") for k in range(3)}
        for k in range(3):
            await eventually(lambda k=k: sees_users(cluster, k, set(names.values())))
        stop = asyncio.Event()
        traffic = asyncio.create_task(light_traffic(cluster, users, stop))
        ids = [local.nodes[k].node_id for k in range(3)]

        cut_at = time.monotonic()
        local.partition([2])
        # each side sees the other dead, then forgets it (past forget_after), processes alive
        await local.wait_until(
            lambda: not ({ids[2]} & set(local.nodes[0].members) | {ids[2]} & set(local.nodes[1].members))
            and not local.nodes[2].members,
            TIMING.forget_time + 5.0,
            "both sides to forget each other",
        )
        assert time.monotonic() - cut_at > TIMING.forget_time
        assert all(n.running for n in local.nodes)
        await eventually(lambda: sees_users(cluster, 0, {"p0", "p1"}))
        await eventually(lambda: sees_users(cluster, 2, {"p2"}))

        healed_at = time.monotonic()
        local.heal()
        await local.wait_converged(HEAL_TIMEOUT)
        for k in range(3):
            await eventually(lambda k=k: sees_users(cluster, k, set(names.values())), HEAL_TIMEOUT)
        heal_time = time.monotonic() - healed_at
        stop.set()
        assert await traffic > 0
        await eventually(lambda: topology_whole(cluster))
        for k in range(3):  # presence both ways: every user's descriptor is in every node's answers
            admin = await cluster.admin(k)
            for j, u in users.items():
                assert [d.id for d in await admin.call("by_user", names[j])] == [u.id]
            assert {d.id for d in await admin.call("room", "watched")} == {u.id for u in users.values()}
        # the events tell the story: online, offline while cut off, online again
        for k, other in ((0, 2), (1, 2), (2, 0), (2, 1)):
            evs = [(e.online, e.node) for e in await events(cluster, k) if e.user == names[other]]
            assert evs == [(True, ids[other]), (False, ids[other]), (True, ids[other])], (k, other, evs)
        await everyone_reaches_everyone(cluster, users, "after ")
        print(f"healed in {heal_time:.2f} s")

    run(scenario)


def test_a_flapping_link_leaves_the_cluster_whole_and_leaks_nothing() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        local: LocalCluster = cluster.local
        names = {k: f"f{k}" for k in range(3)}
        users = {k: await cluster.user(k, names[k], rooms="watched") for k in range(3)}
        for k in range(3):
            await eventually(lambda k=k: sees_users(cluster, k, set(names.values())))
        steady: dict[str, Any] = {}

        async def snapshot() -> dict[str, Any]:
            stats = [await (await cluster.admin(k)).call("stats") for k in range(3)]
            return {
                "proxied": local.proxy_statistics()["active"],
                "sockets": [s["adapter_sockets"] for s in stats],
                "fds": [fd_count(n.pid) for n in local.nodes],
            }

        steady = await snapshot()
        flaps = 0
        for _ in range(10):  # cut and heal every 0.5 s, for 10 s: a schedule, not a wait
            local.partition([2])
            await asyncio.sleep(0.5)
            local.heal()
            await asyncio.sleep(0.5)
            flaps += 1
        assert flaps == 10
        assert local.proxy_statistics()["refused"] > 0  # the cuts were real
        await local.wait_converged(HEAL_TIMEOUT)
        for k in range(3):
            await eventually(lambda k=k: sees_users(cluster, k, set(names.values())), HEAL_TIMEOUT)
        await eventually(lambda: topology_whole(cluster))

        async def settled() -> bool:
            now = await snapshot()
            return (
                now["proxied"] == steady["proxied"]
                and now["sockets"] == steady["sockets"]
                and all(a <= b for a, b in zip(now["fds"], steady["fds"], strict=True))
            )

        await eventually(settled, HEAL_TIMEOUT, message=lambda: f"steady {steady}")
        await everyone_reaches_everyone(cluster, users, "flap ")

    run(scenario, start_order="reversed")  # (and the seeds, proxies too, are known before any node starts)
