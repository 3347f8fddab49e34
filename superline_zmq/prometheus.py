"""Prometheus exposition of a server's metrics (extra ``superline-zmq[metrics]``).

::

    from prometheus_client import CollectorRegistry, generate_latest
    from superline_zmq.prometheus import SuperlineCollector

    registry = CollectorRegistry()
    registry.register(SuperlineCollector(srv))
    text = generate_latest(registry)          # or serve it: superline-zmq run --metrics HOST:PORT

:class:`SuperlineCollector` is a custom collector: each scrape reads one
:meth:`SocketServer.metrics() <superline_zmq.server.SocketServer.metrics>` snapshot and
turns it into metric families named by Prometheus conventions (prefix ``superline_``,
counters end in ``_total``, durations in seconds, sizes in bytes, no node id in labels:
the scrape target names the node, and ``superline_node_info`` carries it):

- ``superline_node_info{node_id, adapter, version}`` (info);
- counters: ``superline_connections_accepted_total``, ``superline_auth_refusals_total``,
  ``superline_frames_received_total``, ``superline_frames_sent_total``,
  ``superline_sent_bytes_total``, ``superline_requests_total{outcome}`` (``ok`` or the error
  code), ``superline_frames_dropped_total{reason}``, ``superline_backpressure_closes_total``,
  ``superline_connections_reaped_total``, ``superline_bad_frames_total``,
  ``superline_internal_errors_total``, ``superline_late_replies_total``,
  ``superline_bad_cluster_messages_total``, ``superline_targeted_sent_total``,
  ``superline_remote_requests_total``, ``superline_server_requests_total``,
  ``superline_server_requests_timed_out_total``, ``superline_presence_errors_total``, and
  ``superline_adapter_<key>_total{adapter}`` for every counter of ``adapter.statistics()``;
- gauges: ``superline_connections{role}``, ``superline_rooms``, ``superline_topics``,
  ``superline_requests_in_flight``, ``superline_pending_requests``,
  ``superline_cluster_members_alive`` and ``superline_presence_connections`` (when the
  adapter can tell without a round trip), ``superline_ready`` and ``superline_draining``
  (1 or 0), and ``superline_adapter_<key>{adapter}`` for the adapter's other gauges;
- histograms: ``superline_request_duration_seconds`` (handler latency) and
  ``superline_ask_duration_seconds`` (server requests to connections on other nodes).

Threads: a scrape on the event loop's thread (``superline-zmq run --metrics``, or your own
asyncio HTTP handler) reads the server directly. A scrape from another thread, such as
prometheus_client's own ``start_http_server``, is handed to the event loop the collector
was created on and waits for it (at most :data:`THREAD_TIMEOUT` seconds), so it never reads
the server while the loop changes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("superline_zmq.prometheus needs prometheus_client: pip install 'superline-zmq[metrics]'") from exc

from superline_zmq._version import __version__
from superline_zmq.metrics import Histogram, Metrics

if TYPE_CHECKING:
    from superline_zmq.server import SocketServer

#: Longest a scrape from another thread waits for the event loop.
THREAD_TIMEOUT = 5.0
#: The content type of :func:`exposition`'s text (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")

#: ``(metric suffix, help)`` of the plain counters, by :class:`~superline_zmq.metrics.Counters` field.
_COUNTERS: dict[str, tuple[str, str]] = {
    "connections_accepted": ("connections_accepted", "WebSocket connections accepted."),
    "auth_refusals": ("auth_refusals", "Upgrades refused by authentication or a role check (HTTP 401)."),
    "frames_received": ("frames_received", "WebSocket messages received from clients."),
    "frames_sent": ("frames_sent", "WebSocket messages written to clients, pings included."),
    "bytes_sent": ("sent_bytes", "Bytes of the WebSocket messages written to clients."),
    "bad_frames": ("bad_frames", "Client frames that could not be decoded."),
    "internal_errors": ("internal_errors", "Unexpected exceptions in the app (answered INTERNAL)."),
    "backpressure_closes": ("backpressure_closes", "Connections closed with 1013 over the backpressure limit."),
    "reaped": ("connections_reaped", "Connections cut off by the heartbeat (pings unanswered)."),
    "late_replies": ("late_replies", "Answers to server requests that had timed out or were unknown."),
    "bad_cluster_messages": ("bad_cluster_messages", "Malformed messages from other nodes."),
    "targeted_sent": ("targeted_sent", "Targeted sends (to_conn) handed on."),
    "remote_requests": ("remote_requests", "Server requests asked of connections on other nodes."),
    "server_requests": ("server_requests", "Server requests sent to this node's clients."),
    "server_requests_timed_out": ("server_requests_timed_out", "Server requests that timed out."),
    "asks_timed_out": ("asks_timed_out", "Requests to connections on other nodes that timed out."),
    "presence_errors": ("presence_errors", "Presence descriptors that could not be built (describe_conn)."),
}


class SuperlineCollector:
    """A prometheus_client collector for one :class:`~superline_zmq.server.SocketServer`.

    Register it on a ``CollectorRegistry`` (one server per registry: two would expose the
    same series twice). ``loop``: the event loop the server runs on, for scrapes from
    other threads (default: the loop running when the collector is created, if any).
    """

    def __init__(self, server: SocketServer, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.server = server
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else None

    def snapshot(self) -> Metrics:
        """The server's metrics, read on its event loop's thread."""
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident() or loop.is_closed():
            return self.server.metrics()
        result: concurrent.futures.Future[Metrics] = concurrent.futures.Future()

        def read() -> None:
            try:
                result.set_result(self.server.metrics())
            except BaseException as exc:  # handed to the scraping thread
                result.set_exception(exc)

        loop.call_soon_threadsafe(read)
        return result.result(timeout=THREAD_TIMEOUT)

    def collect(self) -> Iterator[Metric]:
        """The metric families of one snapshot (prometheus_client calls this on every scrape)."""
        return iter(families(self.snapshot()))


def families(m: Metrics) -> list[Metric]:
    """A :class:`~superline_zmq.metrics.Metrics` snapshot as Prometheus metric families."""
    out: list[Metric] = []
    info = InfoMetricFamily("superline_node", "This node: its id, adapter and superline_zmq version.")
    info.add_metric([], {"node_id": m.node_id, "adapter": m.adapter, "version": __version__})
    out.append(info)
    c = m.counters
    for field, (suffix, doc) in _COUNTERS.items():
        out.append(CounterMetricFamily(f"superline_{suffix}", doc, value=getattr(c, field)))
    requests = CounterMetricFamily(
        "superline_requests", "Requests answered, by outcome: ok or the error code.", labels=["outcome"]
    )
    for outcome, n in c.request_outcomes.items():
        requests.add_metric([outcome], n)
    out.append(requests)
    drops = CounterMetricFamily("superline_frames_dropped", "Frames not delivered, by reason.", labels=["reason"])
    for reason, n in c.drops.items():
        drops.add_metric([reason], n)
    out.append(drops)
    for key, n in sorted(c.adapter.items()):
        fam = CounterMetricFamily(
            f"superline_adapter_{_name(key)}", f"The adapter's {key!r} counter.", labels=["adapter"]
        )
        fam.add_metric([m.adapter], n)
        out.append(fam)

    g = m.gauges
    conns = GaugeMetricFamily("superline_connections", "Open connections on this node, by role.", labels=["role"])
    for role, n in g.connections.items():
        conns.add_metric([role], n)
    out.append(conns)
    plain: tuple[tuple[str, str, float | None], ...] = (
        ("superline_rooms", "Rooms with a member on this node.", g.rooms),
        ("superline_topics", "Topics with a subscriber on this node.", g.topics),
        ("superline_requests_in_flight", "Request handlers running now.", g.requests_in_flight),
        (
            "superline_pending_requests",
            "Requests awaiting an answer (server requests, asks to other nodes).",
            g.pending_requests,
        ),
        # None without a cluster adapter (no presence): left out rather than reported as 0
        (
            "superline_cluster_members_alive",
            "Live cluster members as this node sees them, itself included.",
            g.cluster_members_alive,
        ),
        (
            "superline_presence_connections",
            "Connections in the cluster-wide presence, on live nodes.",
            g.presence_connections,
        ),
        ("superline_ready", "1 when /readyz answers 200.", int(g.ready)),
        ("superline_draining", "1 while draining or closing.", int(g.draining)),
    )
    out.extend(GaugeMetricFamily(name, doc, value=value) for name, doc, value in plain if value is not None)
    for key, n in sorted(g.adapter.items()):
        if key in ("members_alive", "presence_connections"):
            continue  # exposed above under their own names
        level = GaugeMetricFamily(
            f"superline_adapter_{_name(key)}", f"The adapter's {key!r} gauge.", labels=["adapter"]
        )
        level.add_metric([m.adapter], n)
        out.append(level)

    out.append(
        _histogram(
            "superline_request_duration_seconds",
            "Request handling time: middleware, validation, handler, encoding the reply.",
            m.request_latency,
        )
    )
    out.append(
        _histogram(
            "superline_ask_duration_seconds",
            "Round trip of server requests asked of connections on other nodes.",
            m.ask_latency,
        )
    )
    return out


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if le == float("inf") else repr(le), float(n)) for le, n in h.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


def _name(key: str) -> str:
    return _NOT_NAME.sub("_", key)


def registry_for(server: SocketServer) -> CollectorRegistry:
    """A new registry holding only a :class:`SuperlineCollector` of ``server``."""
    registry = CollectorRegistry()
    registry.register(SuperlineCollector(server))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry's metrics in the Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE


def renderer(server: SocketServer) -> Callable[[], tuple[bytes, str]]:
    """A function returning ``server``'s metrics in the text format and its content type, per call."""
    registry = registry_for(server)
    return lambda: exposition(registry)


__all__ = [
    "CONTENT_TYPE",
    "THREAD_TIMEOUT",
    "SuperlineCollector",
    "exposition",
    "families",
    "registry_for",
    "renderer",
]
