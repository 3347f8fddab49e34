"""A single-node chat: one server and two clients talking, printed to the terminal.

Run it with ``python3 examples/chat_demo.py``. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import msgspec

from superline_zmq import (
    Auth,
    Conn,
    Handshake,
    SocketError,
    connect,
    create_socket_server,
    define_contract,
    event,
    request,
    topic,
)


class Say(msgspec.Struct):
    text: str


class Said(msgspec.Struct):
    sender: str
    text: str


class Sent(msgspec.Struct):
    delivered_to: int


class Welcome(msgspec.Struct):
    text: str


SAY = request(Say, Sent)

api = define_contract(
    shared={
        "client_to_server": {"say": SAY},
        "server_to_client": {"welcome": event(Welcome), "chat": topic(Said)},
    },
    roles={"user": {}},
)


def authenticate(hs: Handshake) -> Auth:
    """Trust the ``name`` query parameter (a demo: real apps check a token here)."""
    name = hs.query.get("name", "")
    if not name.isalnum():
        raise SocketError("UNAUTHORIZED", "a name made of letters and digits is required")
    return Auth("user", {"name": name})


async def on_connection(conn: Conn) -> None:
    conn.emit("welcome", Welcome(f"hello {conn.ctx['name']}, you are {conn.id}"))


async def main() -> None:
    srv = create_socket_server(api, authenticate=authenticate, on_connection=on_connection)

    async def say(msg: Say, ctx: dict[str, str], conn: Conn) -> Sent:
        if not msg.text.strip():
            raise SocketError("BAD_REQUEST", "empty message", {"field": "text"})
        srv.publish("chat", Said(ctx["name"], msg.text))
        return Sent(delivered_to=len(srv.connections))

    srv.implement({"shared": {"say": say}})
    async with srv:
        await srv.listen("127.0.0.1", 0)
        print(f"server listening on {srv.url}")
        everyone_heard = asyncio.Event()
        heard: dict[str, list[str]] = {"alice": [], "bob": []}

        async def join(name: str) -> None:
            client = await connect(api, srv.url, role="user", params={"name": name})
            client.on("welcome", lambda w: print(f"  [{name}] server says: {w.text}"))

            def hear(m: Said) -> None:
                heard[name].append(m.text)
                print(f"  [{name}] {m.sender}: {m.text}")
                if all(len(v) == 4 for v in heard.values()):
                    everyone_heard.set()

            await client.subscribe("chat", hear).ready
            clients[name] = client

        clients: dict[str, object] = {}
        await asyncio.gather(join("alice"), join("bob"))
        alice, bob = clients["alice"], clients["bob"]
        script = [(alice, "hi bob!"), (bob, "hey alice, over the wire"), (alice, "typed end to end"), (bob, "bye")]
        for who, text in script:
            sent = await who.call(SAY, Say(text))  # type: ignore[attr-defined]
            assert sent.delivered_to == 2
        try:
            await alice.call(SAY, Say("   "))  # type: ignore[attr-defined]
        except SocketError as exc:
            print(f"  [alice] typed error: {exc.code} {exc.message} {exc.data}")
        await asyncio.wait_for(everyone_heard.wait(), 5)
        for c in (alice, bob):
            await c.close()  # type: ignore[attr-defined]
        print(f"server stats: {srv.statistics()}")


if __name__ == "__main__":
    asyncio.run(main())
