"""Server → client requests across nodes: ``srv.to_conn(id).request(...)``."""

from __future__ import annotations

import asyncio

import pytest
from helpers import eventually
from presence_app import Confirmed, Question
from presence_cluster import PresenceCluster

from superline_zmq import ErrorCode, SocketError


async def test_answered_from_whichever_node_holds_the_connection(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    for k in range(pcluster.nodes):
        admin = await pcluster.admin(k)
        answer = await admin.call("ask", {"id": target.id, "q": "ready?"})
        assert answer == Confirmed(ok=True)
        assert await admin.call("ask", {"id": target.id, "q": "other"}) == Confirmed(ok=False)
    assert target.asked == ["ready?", "other"] * pcluster.nodes


async def test_many_in_flight_all_answered(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    admin = await pcluster.admin(0)
    answers = await asyncio.gather(*(admin.call("ask", {"id": target.id, "q": "ready?"}) for _ in range(32)))
    assert answers == [Confirmed(ok=True)] * 32


async def test_the_clients_socket_error_comes_back_typed(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")

    async def refuse(q: Question) -> Confirmed:
        raise SocketError("DECLINED", "not now", {"why": q.q})

    target.answer = refuse
    with pytest.raises(SocketError) as info:
        await (await pcluster.admin(0)).call("ask", {"id": target.id, "q": "busy"})
    assert (info.value.code, info.value.message, info.value.data) == ("DECLINED", "not now", {"why": "busy"})


async def test_an_answer_that_does_not_fit_the_output_is_validation(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    with pytest.raises(SocketError) as info:
        await (await pcluster.admin(0)).call("ask", {"id": target.id, "q": "x", "name": "bad_confirm"})
    assert info.value.code == ErrorCode.VALIDATION
    assert "answer to 'bad_confirm'" in info.value.message


async def test_an_unimplemented_request_is_not_found(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t", implement=False)
    with pytest.raises(SocketError) as info:
        await (await pcluster.admin(0)).call("ask", {"id": target.id, "q": "x"})
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_a_client_that_does_not_answer_in_time_is_timeout(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    never = asyncio.Event()

    async def stall(q: Question) -> Confirmed:
        await never.wait()
        return Confirmed(ok=True)

    target.answer = stall
    with pytest.raises(SocketError) as info:
        await (await pcluster.admin(0)).call("ask", {"id": target.id, "q": "x", "timeout": 0.2})
    assert info.value.code == ErrorCode.TIMEOUT
    never.set()


async def test_an_id_no_live_node_holds_is_timeout_at_once(pcluster: PresenceCluster) -> None:
    admin = await pcluster.admin(0)
    gone = await pcluster.user(pcluster.nodes - 1, "g")
    await gone.close()
    await eventually(lambda: _offline(admin, "g"))
    loop = asyncio.get_running_loop()
    for dead in (gone.id, "0123456789abcdef.1", "junk"):
        t0 = loop.time()
        with pytest.raises(SocketError) as info:
            await admin.call("ask", {"id": dead, "q": "x", "timeout": 30.0})
        assert info.value.code == ErrorCode.TIMEOUT
        assert loop.time() - t0 < 5.0, "must not wait for the 30 s timeout"


async def _offline(admin: object, user: str) -> bool:
    return bool(await admin.call("is_online", user) is False)  # type: ignore[attr-defined]


async def test_a_pending_request_fails_fast_when_the_owner_node_crashes(multi: PresenceCluster) -> None:
    last = multi.nodes - 1
    target = await multi.user(last, "t")
    asked = asyncio.Event()

    async def stall(q: Question) -> Confirmed:
        asked.set()
        await asyncio.Event().wait()
        return Confirmed(ok=True)

    target.answer = stall
    admin = await multi.admin(0)
    call = asyncio.ensure_future(admin.call("ask", {"id": target.id, "q": "x", "timeout": 30.0}, timeout=30.0))
    await asyncio.wait_for(asked.wait(), 5)
    await multi.crash(last)
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(call, multi.ttl * 6)
    assert info.value.code == ErrorCode.TIMEOUT
