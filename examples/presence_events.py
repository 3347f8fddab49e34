"""Presence events: who came online, who left, and who is in the lobby, as it happens, on every node.

Three servers share one MemoryBus, so they form a three-node cluster in this process.
Node A subscribes before anyone connects:

- ``srv.cluster.on_user(listener)`` gets one ``UserPresence`` when a user's first
  connection appears anywhere in the cluster and one when its last one is gone;
- ``srv.cluster.on_room("lobby", listener)`` gets one ``RoomDiff`` per change of the
  lobby's members, on any node.

Then Alice connects on node B, and again on node C (a second device: no event); Bob on
node C. Alice's laptop goes, then her phone (offline now). Finally node C crashes
without a word: A hears Bob go offline, and the lobby lose him, a TTL and a beat later.
A late listener with ``initial=True`` is told the state as it is first.

Run it with ``python3 examples/presence_events.py``. It stays on 127.0.0.1 and exits by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec

from superline_zmq import (
    Auth,
    Client,
    ClusterTiming,
    Conn,
    Handshake,
    RoomDiff,
    SocketServer,
    UserPresence,
    connect,
    create_socket_server,
    define_contract,
    event,
)
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus


class Notice(msgspec.Struct):
    text: str


api = define_contract(shared={"server_to_client": {"notice": event(Notice)}}, roles={"user": {}})
started = time.monotonic()
lobby_leaves: list[str] = []


def authenticate(hs: Handshake) -> Auth:
    # A real app checks a token here; the demo trusts the query string.
    return Auth("user", {"user_id": hs.query["user"], "device": hs.query["device"]})


def build_node(bus: MemoryBus) -> SocketServer:
    async def on_connection(conn: Conn) -> None:
        await srv.room("lobby").add(conn)  # before the presence snapshot: every node sees it

    srv = create_socket_server(
        api,
        adapter=bus.adapter(),
        authenticate=authenticate,
        on_connection=on_connection,
        identify=lambda conn: conn.ctx["user_id"],  # what on_user reports
        describe_conn=lambda conn: {"device": conn.ctx["device"]},
    )
    return srv


def on_user(up: UserPresence) -> None:
    state = "online" if up.online else "offline"
    print(f"  [{time.monotonic() - started:4.1f}s] {up.user_id} is {state} (node {up.node_id[:6]}, {up.connections})")


async def on_lobby(diff: RoomDiff) -> None:  # listeners may be async too
    joins = [f"{d.user_id}/{d.extra['device']}" for d in diff.joins]
    leaves = [f"{d.user_id}/{d.extra['device']}" for d in diff.leaves]
    lobby_leaves.extend(d.user_id or "" for d in diff.leaves)
    print(f"  [{time.monotonic() - started:4.1f}s] lobby: +{joins} -{leaves}")


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check()`` until true (bounded: fails after ``timeout`` seconds)."""
    for _ in range(int(timeout / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"still not true after {timeout} s")


async def main() -> None:
    global started
    started = time.monotonic()
    bus = MemoryBus(timing=ClusterTiming.local())  # beat 0.2 s, dead after 1 s
    a, b, c = build_node(bus), build_node(bus), build_node(bus)
    users = a.cluster.on_user(on_user)  # before the server starts: fine
    a.cluster.on_room("lobby", on_lobby)
    for srv in (a, b, c):
        await srv.listen("127.0.0.1", 0)
    await users.ready

    async def join(srv: SocketServer, user: str, device: str) -> Client:
        return await connect(api, srv.url, role="user", params={"user": user, "device": device})

    print("alice connects on B, then on C (a second device: no event), bob on C:")
    laptop = await join(b, "alice", "laptop")
    phone = await join(c, "alice", "phone")
    bob = await join(c, "bob", "desktop")
    await until(lambda: _room_size(a, 3))

    late: list[str] = []
    a.cluster.on_user(lambda up: late.append(up.user_id))  # initial=True: told who is online now
    print("a late listener is told who is online:", sorted(late))

    print("alice's laptop goes (she is still on her phone), then her phone:")
    await laptop.close()
    await phone.close()
    await until(lambda: _offline(a, "alice"))

    print("node C crashes (no goodbye): bob goes offline a ttl and a beat later:")
    adapter = c.adapter
    assert isinstance(adapter, MemoryAdapter)
    await adapter.simulate_crash()
    await until(lambda: _offline(a, "bob"))
    await until(lambda: _true("bob" in lobby_leaves))  # the async lobby listener had its turn
    await bob.close()
    for srv in (a, b, c):
        await srv.close()


async def _room_size(srv: SocketServer, n: int) -> bool:
    return len(await srv.cluster.room("lobby")) == n


async def _true(value: bool) -> bool:
    return value


async def _offline(srv: SocketServer, user: str) -> bool:
    return not await srv.is_online(user)


if __name__ == "__main__":
    asyncio.run(main())
