"""``/healthz`` and ``/readyz``: on the WebSocket port (``health_paths``) and on the operations port."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from contract_app import build_server
from helpers import eventually, http_get

from superline_zmq import HealthPaths
from superline_zmq.adapters.zeromq import zeromq_adapter
from superline_zmq.health import answer, health_paths
from superline_zmq.ids import new_node_id
from superline_zmq.ops_http import serve_ops
from superline_zmq.testing.cluster import free_port
from superline_zmq.timing import ClusterTiming


# ---------------------------------------------------------------- the decision (pure)
def test_answers_and_paths() -> None:
    paths = HealthPaths()
    live = answer(paths, "/healthz", lambda: "never asked")
    assert live is not None and (live.status, json.loads(live.body)) == (200, {"status": "ok"}) and live.quiet
    ready = answer(paths, "/readyz", lambda: None)
    assert ready is not None and (ready.status, json.loads(ready.body)) == (200, {"status": "ready"})
    busy = answer(paths, "/readyz", lambda: "draining")
    assert busy is not None and busy.status == 503
    assert json.loads(busy.body) == {"status": "not ready", "reason": "draining"}
    assert ("Content-Type", "application/json") in busy.headers
    assert answer(paths, "/other", lambda: None) is None
    assert health_paths(True) == paths and health_paths(False) is None
    assert answer(HealthPaths("/live", "/ready"), "/live", lambda: None) is not None
    with pytest.raises(ValueError):
        HealthPaths("live")
    with pytest.raises(ValueError):
        HealthPaths("/x", "/x")


# ---------------------------------------------------------------- the WebSocket port
def _refuse_everyone(hs: Any) -> Any:
    raise PermissionError("nobody gets in")


#: What a plain GET of a non-health path gets: the upgrade decision's refusal behind a socket
#: transport (as behind websockets' process_request), 404 from an ASGI app's http scope.
def _plain_refusal(transport: str) -> tuple[int, ...]:
    return (404,) if transport == "asgi" else (401,)


async def test_health_on_the_websocket_port_skips_authentication(make_server: Any, server_transport: str) -> None:
    srv = await make_server(health_paths=True, authenticate=_refuse_everyone, path="/ws")
    status, headers, body = await http_get("127.0.0.1", srv.port, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    status, _, body = await http_get("127.0.0.1", srv.port, "/readyz?verbose=1")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    status, _, _ = await http_get("127.0.0.1", srv.port, "/ws")  # not an upgrade, and refused anyway
    assert status in (400, 426, *_plain_refusal(server_transport))
    assert srv.statistics()["connections_rejected"] <= 1


async def test_health_is_off_by_default_for_library_servers(make_server: Any, server_transport: str) -> None:
    srv = await make_server()
    assert srv.health_paths is None
    status, _, _ = await http_get("127.0.0.1", srv.port, "/healthz")
    assert status in _plain_refusal(server_transport)  # an upgrade request like any other: no role, refused


async def test_probes_leave_no_log_lines(
    make_server: Any, caplog: pytest.LogCaptureFixture, server_transport: str
) -> None:
    srv = await make_server(health_paths=True)
    # the access-log level of each transport (DEBUG traces everything)
    with caplog.at_level(logging.INFO, logger="websockets"), caplog.at_level(logging.INFO, "superline_zmq.transport"):
        start = len(caplog.records)  # "server listening" may be there already
        for path in ("/healthz", "/readyz"):
            assert (await http_get("127.0.0.1", srv.port, path))[0] == 200
        probes = [r for r in caplog.records[start:] if r.name.startswith(("websockets", "superline_zmq.transport"))]
        assert probes == [], [r.getMessage() for r in probes]
        status = (await http_get("127.0.0.1", srv.port, "/nope"))[0]
        assert status in _plain_refusal(server_transport)
        if server_transport == "asgi":
            return  # a 404 from the app's http scope is the ASGI server's to log
        await eventually(  # a real refusal is still logged
            lambda: any(w in r.getMessage() for r in caplog.records for w in ("rejected", "sent", "refused"))
        )


async def test_readiness_of_a_server_not_started() -> None:
    srv = build_server()
    assert srv.readiness() == "not started: the adapter has not joined yet"
    await srv.start()  # started for embedding: the endpoint is made on first use
    assert srv.readiness() == "not listening"
    srv.process_request  # noqa: B018 - embedding in your own websockets.serve
    assert srv.readiness() is None
    await srv.close()
    assert srv.readiness() == "shutting down"


# ---------------------------------------------------------------- the operations port
async def test_operations_port_serves_metrics_and_health(make_server: Any, make_client: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    srv = await make_server()
    async with await serve_ops(srv, "127.0.0.1", 0) as ops:
        assert ops.url == f"http://127.0.0.1:{ops.port}"
        status, headers, body = await http_get("127.0.0.1", ops.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        before = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        client = await make_client(srv)
        await client.call("greet", {"name": "x"})
        _, _, body = await http_get("127.0.0.1", ops.port, "/metrics")
        after = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        assert after["superline_frames_received_total"] > before["superline_frames_received_total"]
        assert after["superline_connections_accepted_total"] == before["superline_connections_accepted_total"] + 1
        assert (await http_get("127.0.0.1", ops.port, "/healthz"))[0] == 200
        assert (await http_get("127.0.0.1", ops.port, "/readyz"))[0] == 200
        assert (await http_get("127.0.0.1", ops.port, "/nope"))[0] == 404
        assert (await http_get("127.0.0.1", ops.port, "/metrics", method="POST"))[0] == 405
        status, headers, body = await http_get("127.0.0.1", ops.port, "/healthz", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        # a client that never finishes its request does not keep close() waiting
        _, stuck = await asyncio.open_connection("127.0.0.1", ops.port)
        await eventually(lambda: len(ops._tasks) == 1)
    assert ops._tasks == set()
    stuck.close()


async def test_operations_port_without_metrics(make_server: Any) -> None:
    srv = await make_server()
    async with await serve_ops(srv, metrics=False) as ops:
        assert (await http_get("127.0.0.1", ops.port, "/metrics"))[0] == 404
        assert (await http_get("127.0.0.1", ops.port, "/healthz"))[0] == 200


# ---------------------------------------------------------------- adapters' readiness
async def test_a_zeromq_node_is_ready_once_a_seed_answered() -> None:
    timing = ClusterTiming.local()
    seed = f"tcp://127.0.0.1:{free_port()}"
    late = await zeromq_adapter(seeds=[seed], timing=timing)
    assert late.readiness() == "the ZeroMQ adapter is not started"
    first = None
    try:
        await late.start(new_node_id(), lambda c, d: None, lambda n, d: None)  # no seed answers: runs alone
        reason = late.readiness()
        assert reason is not None and reason.startswith("no seed has answered yet")
        first = await zeromq_adapter(bind=seed, timing=timing)
        await first.start(new_node_id(), lambda c, d: None, lambda n, d: None)
        assert first.readiness() is None  # no seeds: ready once started
        await eventually(lambda: late.readiness() is None, timeout=10)
    finally:
        await late.close()
        if first is not None:
            await first.close()
    assert late.readiness() == "the ZeroMQ adapter is closed"
