"""Graceful drain: ``srv.close(drain=S)`` and SIGTERM on a CLI node.

Refuse new connections (503, ``/readyz`` too), let requests and server requests in flight
finish up to the deadline, then close the connections with 1001.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from contract_app import Greet, Greeting, api
from helpers import DEFAULT_TIMEOUT, eventually, http_get

from superline_zmq import ErrorCode, SocketError, connect

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


async def test_a_request_in_flight_finishes_and_new_connections_get_503(make_server: Any, make_client: Any) -> None:
    srv = await make_server(health_paths=True)
    client = await make_client(srv, reconnect=False)
    blocked = asyncio.ensure_future(client.call("block", timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.app.blocked == 1)
    closing = asyncio.ensure_future(srv.close(drain=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.draining)
    with pytest.raises(SocketError, match="refused the WebSocket upgrade with HTTP 503"):
        await connect(api, srv.url, role="user", reconnect=False, open_timeout=DEFAULT_TIMEOUT)
    status, _, body = await http_get("127.0.0.1", srv.port, "/readyz")
    assert (status, json.loads(body)["reason"]) == (503, "draining")
    assert (await http_get("127.0.0.1", srv.port, "/healthz"))[0] == 200
    assert srv.metrics().gauges.draining and not srv.metrics().gauges.ready
    # the open connection is still served meanwhile
    assert await client.call("greet", Greet("still here"), timeout=DEFAULT_TIMEOUT) == Greeting("hello still here")
    assert not closing.done() and srv.in_flight() == 1
    srv.app.release.set()
    assert await blocked is None  # the handler finished and its reply arrived
    await asyncio.wait_for(closing, DEFAULT_TIMEOUT)
    await eventually(lambda: not client.connected)
    assert srv.connections == []


async def test_a_server_request_in_flight_is_answered_before_the_close(make_server: Any, make_client: Any) -> None:
    from contract_app import Answer, Confirm

    srv = await make_server()
    client = await make_client(srv, reconnect=False)
    release = asyncio.Event()

    async def confirm(q: Confirm) -> Answer:
        await release.wait()
        return Answer(ok=True)

    client.implement({"confirm": confirm})
    conn = srv.connections[0]
    asked = asyncio.ensure_future(conn.request("confirm", Confirm("sure?"), timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.in_flight() == 1)
    closing = asyncio.ensure_future(srv.close(drain=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.draining)
    assert not closing.done()
    release.set()
    assert await asyncio.wait_for(asked, DEFAULT_TIMEOUT) == Answer(ok=True)
    await asyncio.wait_for(closing, DEFAULT_TIMEOUT)


async def test_the_drain_deadline_closes_anyway(make_server: Any, make_client: Any) -> None:
    srv = await make_server()
    client = await make_client(srv, reconnect=False)
    blocked = asyncio.ensure_future(client.call("block", timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.app.blocked == 1)
    start = time.monotonic()
    await asyncio.wait_for(srv.close(drain=0.2), DEFAULT_TIMEOUT)
    assert 0.2 <= time.monotonic() - start < DEFAULT_TIMEOUT
    with pytest.raises(SocketError) as info:
        await blocked
    assert info.value.code == ErrorCode.DISCONNECTED


async def test_a_second_close_ends_the_drain(make_server: Any, make_client: Any) -> None:
    srv = await make_server()
    client = await make_client(srv, reconnect=False)
    blocked = asyncio.ensure_future(client.call("block", timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.app.blocked == 1)
    draining = asyncio.ensure_future(srv.close(drain=60))
    await eventually(lambda: srv.draining)
    await asyncio.wait_for(srv.close(), DEFAULT_TIMEOUT)
    assert draining.done()
    with pytest.raises(SocketError):
        await blocked


async def test_close_without_drain_is_as_before(make_server: Any, make_client: Any) -> None:
    srv = await make_server()
    client = await make_client(srv, reconnect=False)
    blocked = asyncio.ensure_future(client.call("block", timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.app.blocked == 1)
    await asyncio.wait_for(srv.close(), DEFAULT_TIMEOUT)
    assert not srv.draining
    with pytest.raises(SocketError):
        await blocked


# ---------------------------------------------------------------- SIGTERM on a CLI node
@pytest.mark.one_loop
def test_sigterm_drains_a_node() -> None:
    """A request (here: a server request it waits on) in flight at SIGTERM completes; a new connection is refused."""
    from presence_app import Confirmed, Question
    from presence_app import api as papi

    async def scenario() -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(TESTS), env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "superline_zmq.cli", "run", "presence_app:app", "--json", "--drain", "20",
            cwd=TESTS, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        clients = []
        try:
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            user = await connect(papi, ready["ws"], role="user", params={"user": "u"}, reconnect=False, open_timeout=5)
            admin = await connect(papi, ready["ws"], role="admin", reconnect=False, open_timeout=5)
            clients += [user, admin]
            release, asked = asyncio.Event(), asyncio.Event()

            async def confirm(q: Question) -> Confirmed:
                asked.set()
                await release.wait()
                return Confirmed(ok=True)

            user.implement({"confirm": confirm})
            me = await user.call("whoami", timeout=5)
            asking = asyncio.ensure_future(admin.call("ask", {"id": me.id, "q": "ready?"}, timeout=20))
            await asyncio.wait_for(asked.wait(), 10)  # the node's handler now waits on the user's answer
            proc.send_signal(signal.SIGTERM)
            stopping = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            assert stopping["event"] == "stopping" and stopping["drain"] == 20
            assert stopping["in_flight"] >= 1 and stopping["connections"] == 2
            with pytest.raises(SocketError, match="refused the WebSocket upgrade with HTTP 503"):
                await connect(papi, ready["ws"], role="admin", reconnect=False, open_timeout=5)
            release.set()
            assert await asyncio.wait_for(asking, 10) == Confirmed(ok=True)
            out, err = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, err.decode()
            assert [json.loads(x)["event"] for x in out.decode().splitlines()] == ["stopped"]
            await eventually(lambda: not admin.connected)
        finally:
            for c in clients:
                await c.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    asyncio.run(scenario())
