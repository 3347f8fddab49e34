"""``srv.metrics()``: the typed snapshot, its recorders, and its Prometheus exposition."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from contract_app import Answer, Confirm, Greet, api, build_server
from helpers import DEFAULT_TIMEOUT, eventually

from superline_zmq import SocketError, connect
from superline_zmq.adapters.memory import MemoryBus
from superline_zmq.metrics import (
    LATENCY_BUCKETS,
    MAX_OUTCOMES,
    OTHER_OUTCOME,
    Histogram,
    LatencyHistogram,
    Metrics,
    RequestOutcomes,
    split_adapter_stats,
)


# ---------------------------------------------------------------- recorders (pure)
def test_latency_buckets_are_upper_bounds_inclusive() -> None:
    h = LatencyHistogram((0.001, 0.01, 0.1))
    for v in (0.0, 0.001, 0.0011, 0.01, 0.5, 100.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap.counts == (2, 2, 0, 2)
    assert snap.count == 6 and snap.sum == pytest.approx(100.5121)
    assert snap.cumulative() == [(0.001, 2), (0.01, 4), (0.1, 4), (float("inf"), 6)]


def test_bucket_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LatencyHistogram((0.1, 0.01))


def test_quantile_interpolates_like_histogram_quantile() -> None:
    h = Histogram(bounds=(1.0, 2.0), counts=(0, 4, 1), count=5, sum=9.0)
    assert h.quantile(0.5) == pytest.approx(1.625)  # rank 2.5 of 4 in (1, 2]
    assert h.quantile(1.0) == 2.0  # in +Inf: the last bound
    assert Histogram(bounds=(1.0,), counts=(0, 0), count=0, sum=0.0).quantile(0.9) is None
    with pytest.raises(ValueError):
        h.quantile(1.5)


def test_outcomes_are_bounded_and_nothing_is_lost() -> None:
    r = RequestOutcomes()
    r.ok(0.001)
    for k in range(MAX_OUTCOMES + 10):
        r.error(f"E{k}", 0.002)
    r.error("E0")  # a known code keeps its own count
    counts = r.counts()
    assert len(counts) == MAX_OUTCOMES
    assert counts["ok"] == 1 and counts["E0"] == 2
    assert counts[OTHER_OUTCOME] == 12  # E62 .. E73: past the bound ("ok" and OTHER take two slots)
    assert sum(counts.values()) == 1 + MAX_OUTCOMES + 10 + 1
    assert r.latency.snapshot().count == 1 + MAX_OUTCOMES + 10


def test_adapter_stats_split_into_counters_and_gauges() -> None:
    counters, gauges = split_adapter_stats({"published": 3, "channels": 2, "members": 1, "queue": 0, "x": 1})
    assert counters == {"published": 3, "x": 1}
    assert gauges == {"channels": 2, "members": 1, "queue": 0}
    counters, gauges = split_adapter_stats({"x": 1}, frozenset({"x"}))
    assert (counters, gauges) == ({}, {"x": 1})


# ---------------------------------------------------------------- the server's snapshot
async def test_metrics_move_with_traffic(make_server: Any, make_client: Any, open_raw: Any) -> None:
    srv = await make_server()
    before = srv.metrics()
    assert isinstance(before, Metrics)
    assert before.adapter == "memory" and before.node_id == srv.node_id
    assert before.gauges.connections == {"user": 0, "agent": 0}
    assert before.gauges.ready and not before.gauges.draining
    assert before.gauges.cluster_members_alive == 1  # itself
    client = await make_client(srv)
    await client.call("greet", Greet("a"))
    for name in ("fail", "boom"):
        with pytest.raises(SocketError):
            await client.call(name)
    raw = await open_raw(srv)  # our client would refuse the bad input itself
    assert (await raw.call(1, "echo", {"id": "not an int"}))["code"] == "VALIDATION"
    with pytest.raises(SocketError):
        await client.call("unimplemented")
    m = srv.metrics()
    c = m.counters
    assert c.connections_accepted == 2 and c.requests == 5
    assert c.request_outcomes == {"ok": 1, "CONFLICT": 1, "INTERNAL": 1, "VALIDATION": 1, "NOT_FOUND": 1}
    assert c.frames_received >= 5 and c.frames_sent >= 7  # 2 env + 5 replies
    assert c.bytes_sent > c.frames_sent
    assert c.internal_errors == 1
    assert set(c.drops) == {"backpressure", "closed", "no_channel", "unknown_node", "unknown_conn"}
    assert m.request_latency.count == 4  # NOT_FOUND never reached a handler
    assert m.request_latency.bounds == LATENCY_BUCKETS and m.request_latency.sum > 0
    assert m.gauges.connections == {"user": 2, "agent": 0}
    assert m.gauges.requests_in_flight == 0
    assert "published" in c.adapter and "channels" in m.gauges.adapter


async def test_requests_in_flight_and_rooms_are_gauges(make_server: Any, make_client: Any) -> None:
    srv = await make_server()
    client = await make_client(srv)
    conn = srv.connections[0]
    await srv.room("lobby").add(conn)
    blocked = asyncio.ensure_future(client.call("block", timeout=DEFAULT_TIMEOUT))
    await eventually(lambda: srv.metrics().gauges.requests_in_flight == 1)
    assert srv.metrics().gauges.rooms == 1
    srv.app.release.set()
    await blocked
    await eventually(lambda: srv.metrics().gauges.requests_in_flight == 0)


async def test_ask_latency_counts_cross_node_server_requests() -> None:
    bus = MemoryBus()
    a, b = build_server(adapter=bus.adapter()), build_server(adapter=bus.adapter())
    await a.listen()
    await b.listen()
    client = await connect(api, b.url, role="user", open_timeout=DEFAULT_TIMEOUT)
    try:
        client.implement({"confirm": lambda q: Answer(ok=q.q == "yes")})
        await eventually(lambda: len(b.connections) == 1)
        answer = await a.to_conn(b.connections[0].id).request("confirm", Confirm("yes"), timeout=DEFAULT_TIMEOUT)
        assert answer == Answer(ok=True)
        m = a.metrics()
        assert m.ask_latency.count == 1 and m.counters.remote_requests == 1
        assert m.gauges.cluster_members_alive == 2
        assert b.metrics().ask_latency.count == 0
    finally:
        await client.close()
        await a.close()
        await b.close()


# ---------------------------------------------------------------- Prometheus
async def test_prometheus_exposition_parses_and_follows_the_conventions(make_server: Any, make_client: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from superline_zmq.prometheus import exposition, registry_for

    srv = await make_server()
    registry = registry_for(srv)
    client = await make_client(srv)
    await client.call("greet", Greet("a"))
    with pytest.raises(SocketError):
        await client.call("fail")
    text, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert all(name.startswith("superline_") for name in fams)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("superline_requests_total", (("outcome", "ok"),))] == 1
    assert samples[("superline_requests_total", (("outcome", "CONFLICT"),))] == 1
    assert samples[("superline_connections", (("role", "user"),))] == 1
    assert samples[("superline_request_duration_seconds_count", ())] == 2
    assert samples[("superline_request_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("superline_frames_dropped_total", (("reason", "backpressure"),))] == 0
    assert samples[("superline_adapter_published_total", (("adapter", "memory"),))] >= 0
    assert samples[("superline_adapter_channels", (("adapter", "memory"),))] >= 0
    assert samples[("superline_ready", ())] == 1
    info = [s for f in fams.values() for s in f.samples if s.name == "superline_node_info"]
    assert info[0].labels["node_id"] == srv.node_id and info[0].value == 1
    for fam in fams.values():
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
    assert fams["superline_request_duration_seconds"].type == "histogram"


async def test_a_scrape_from_another_thread_reads_on_the_loop(make_server: Any) -> None:
    from superline_zmq.prometheus import SuperlineCollector

    srv = await make_server()
    collector = SuperlineCollector(srv)
    names = await asyncio.to_thread(lambda: [f.name for f in collector.collect()])
    assert "superline_requests" in names and "superline_connections" in names


def test_the_core_does_not_import_prometheus_client() -> None:
    code = (
        "import asyncio, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from contract_app import build_server\n"
        "async def main():\n"
        "    srv = build_server()\n"
        "    await srv.listen()\n"
        "    srv.metrics()\n"
        "    await srv.close()\n"
        "asyncio.run(main())\n"
        "assert 'prometheus_client' not in sys.modules, sorted(m for m in sys.modules if 'prom' in m)\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
