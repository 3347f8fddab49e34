"""Running a server in production: metrics, health endpoints and a graceful drain, in one script.

Run it with ``python3 examples/operations.py`` (``pip install 'superline-zmq[metrics]'`` for the
Prometheus part). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import msgspec

from superline_zmq import Conn, connect, create_socket_server, define_contract, request
from superline_zmq.ops_http import serve_ops
from superline_zmq.testing.wait import eventually


class Work(msgspec.Struct):
    seconds: float


api = define_contract(shared={"client_to_server": {"work": request(Work, str)}}, roles={"user": {}})


async def work(input: Work, ctx: Any, conn: Conn) -> str:
    await asyncio.sleep(input.seconds)  # a slow handler, still running when the drain starts
    return "done"


async def http_get(port: int, path: str) -> str:
    """The status line and body of one plain HTTP GET."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return f"{head.splitlines()[0]}  {body.strip()}"


async def main() -> None:
    # health_paths=True: /healthz and /readyz on the WebSocket port too (off by default)
    srv = create_socket_server(api, health_paths=True)
    srv.implement({"shared": {"work": work}})
    await srv.listen("127.0.0.1", 0)
    metrics = importlib.util.find_spec("prometheus_client") is not None
    ops = await serve_ops(srv, "127.0.0.1", 0, metrics=metrics)  # /metrics, /healthz, /readyz
    print("readyz on the WebSocket port:", await http_get(srv.port, "/readyz"))

    client = await connect(api, srv.url, role="user", reconnect=False)
    await client.call("work", Work(0.0))
    m = srv.metrics()  # a typed snapshot: counters and gauges apart
    print("requests by outcome:", m.counters.request_outcomes, "connections:", m.gauges.connections)
    print("handler latency: count", m.request_latency.count, "p99 <=", m.request_latency.quantile(0.99), "s")
    if metrics:
        text = (await http_get(ops.port, "/metrics")).split("  ", 1)[1]
        print("scraped:", next(line for line in text.splitlines() if line.startswith("superline_requests_total")))

    # a graceful drain: the request in flight finishes, new connections get 503, then 1001
    slow = asyncio.ensure_future(client.call("work", Work(0.3)))
    await eventually(lambda: srv.in_flight() == 1)  # the request reached its handler
    closing = asyncio.ensure_future(srv.close(drain=5.0))
    await eventually(lambda: srv.draining)
    print("readyz while draining:", await http_get(ops.port, "/readyz"))
    print("the request in flight:", await slow)
    await closing
    await client.close()
    await ops.close()
    print("drained and closed")


if __name__ == "__main__":
    asyncio.run(main())
