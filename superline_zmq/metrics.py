"""Metrics as typed values: what ``srv.metrics()`` returns, and the recorders behind it (pure).

Two kinds of number, kept apart as Prometheus keeps them:

- **counters** only go up while the server runs (frames received, requests by outcome,
  drops by reason, ...): :class:`Counters`;
- **gauges** say how things are now (connections by role, rooms, live cluster members,
  requests in flight, ...): :class:`Gauges`.

Latencies are :class:`Histogram` s with fixed buckets in seconds. Recording one is cheap
enough for the request hot path: one binary search over :data:`LATENCY_BUCKETS`, two
increments, no allocation (:class:`LatencyHistogram`). Request outcomes are counted by
:class:`RequestOutcomes`: ``"ok"`` or the error code. Error codes are the app's own
strings, so the number of distinct codes kept is bounded (:data:`MAX_OUTCOMES`); any
further code is counted as :data:`OTHER_OUTCOME`, never dropped.

Nothing here reads a clock: the driver measures durations and hands them in. The
Prometheus exporter (:mod:`superline_zmq.prometheus`, extra ``superline-zmq[metrics]``)
turns a :class:`Metrics` snapshot into metric families.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from superline_zmq.adapter import Adapter
    from superline_zmq.core import Core

#: Upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s; larger values fall in ``+Inf``.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Distinct request outcomes kept (``"ok"`` included); more error codes count as :data:`OTHER_OUTCOME`.
MAX_OUTCOMES: Final = 64
#: The outcome label of error codes beyond :data:`MAX_OUTCOMES`.
OTHER_OUTCOME: Final = "OTHER"

#: Keys of ``adapter.statistics()`` that are gauges (a level now), not counters. An adapter
#: can name more in an attribute ``statistics_gauges`` (a collection of keys).
ADAPTER_GAUGES: Final[frozenset[str]] = frozenset(
    {"channels", "members", "members_alive", "presence_connections", "queue", "queue_bytes", "up", "bulk_reads"}
)


# ---------------------------------------------------------------- snapshots (what users read)
class Histogram(msgspec.Struct, frozen=True):
    """A distribution of durations in seconds, as fixed buckets.

    ``counts[k]`` is how many observations fell in bucket ``k``: at most ``bounds[k]`` and
    above ``bounds[k - 1]``; the last count (one more than there are bounds) is everything
    above ``bounds[-1]``. Prometheus's buckets are cumulative: see :meth:`cumulative`.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    #: Observations in all.
    count: int
    #: Their sum, in seconds.
    sum: float

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` per bucket, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """An estimate of quantile ``q`` (0..1) by linear interpolation in its bucket, as
        Prometheus's ``histogram_quantile`` does; None without observations.

        Past the last bound the estimate is that bound (the histogram knows no more).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        if self.count == 0:
            return None
        rank = q * self.count
        below = 0
        lower = 0.0
        for k, n in enumerate(self.counts):
            if k == len(self.bounds):
                return self.bounds[-1] if self.bounds else 0.0
            upper = self.bounds[k]
            if n and below + n >= rank:
                return lower + (upper - lower) * (rank - below) / n
            below += n
            lower = upper
        return lower  # pragma: no cover - the loop always returns


class Counters(msgspec.Struct, frozen=True):
    """Counts since the server was created; they only go up."""

    connections_accepted: int
    #: Upgrades refused by ``authenticate`` or a role check (401).
    auth_refusals: int
    frames_received: int
    frames_sent: int
    #: Bytes of the frames sent (WebSocket payloads, framing not included).
    bytes_sent: int
    #: Requests received (``req`` frames that decoded).
    requests: int
    #: Requests answered, by outcome: ``"ok"`` or the error code sent
    #: (``NOT_FOUND``, ``VALIDATION``, ``INTERNAL``, the app's own ...).
    request_outcomes: dict[str, int]
    bad_frames: int
    internal_errors: int
    #: Frames not delivered, by reason: ``backpressure``, ``closed`` (the connection was closing),
    #: ``no_channel``, ``unknown_node``, ``unknown_conn`` (targeted sends).
    drops: dict[str, int]
    #: Connections closed with 1013 for exceeding the backpressure limit.
    backpressure_closes: int
    #: Connections cut off by the heartbeat (``max_missed`` pings unanswered).
    reaped: int
    late_replies: int
    bad_cluster_messages: int
    targeted_sent: int
    #: Server requests this node asked of connections on other nodes.
    remote_requests: int
    server_requests: int
    server_requests_timed_out: int
    asks_timed_out: int
    presence_errors: int
    #: The adapter's counters (``adapter.statistics()`` without its gauges).
    adapter: dict[str, int]


class Gauges(msgspec.Struct, frozen=True):
    """Levels now."""

    #: Open connections on this node, per role of the contract (0 for a role with none).
    connections: dict[str, int]
    #: Rooms with a member on this node.
    rooms: int
    #: Topics with a subscriber on this node.
    topics: int
    #: Request handlers running now.
    requests_in_flight: int
    #: Requests awaiting an answer: server requests to clients, asks to other nodes.
    pending_requests: int
    #: Live members of the cluster as this node sees them, itself included (None: the adapter cannot tell).
    cluster_members_alive: int | None
    #: Connections in the cluster-wide presence on live nodes (None: the adapter cannot tell without a round trip).
    presence_connections: int | None
    #: Whether ``/readyz`` would answer 200 (see ``SocketServer.readiness``).
    ready: bool
    #: Whether the server is draining or closing.
    draining: bool
    #: The adapter's gauges (:data:`ADAPTER_GAUGES` of ``adapter.statistics()``).
    adapter: dict[str, int]


class Metrics(msgspec.Struct, frozen=True):
    """One snapshot of a server's metrics: ``srv.metrics()``."""

    node_id: str
    #: The adapter's ``name`` (``"memory"``, ``"zeromq"``, ``"redis"``).
    adapter: str
    counters: Counters
    gauges: Gauges
    #: Time from a request's arrival at its handler task to its encoded reply: middleware,
    #: input validation, the handler, encoding the result (errors included).
    request_latency: Histogram
    #: Round trip of server requests asked of connections on other nodes (``to_conn(id).request``).
    ask_latency: Histogram


# ---------------------------------------------------------------- recorders (the hot path)
class LatencyHistogram:
    """Records durations into fixed buckets: O(log buckets), no allocation."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be strictly increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> Histogram:
        """The histogram so far, as a frozen value."""
        counts = tuple(self.counts)
        return Histogram(self.bounds, counts, sum(counts), self.total)


class RequestOutcomes:
    """Request outcomes and handler latency (one histogram for every outcome)."""

    __slots__ = ("latency", "ok_count", "outcomes")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.latency = LatencyHistogram(bounds)
        self.ok_count = 0
        #: Error code -> count (:data:`MAX_OUTCOMES` - 2 codes at most, then :data:`OTHER_OUTCOME`).
        self.outcomes: dict[str, int] = {}

    def ok(self, seconds: float) -> None:
        """A request answered with a result after ``seconds``."""
        self.ok_count += 1
        self.latency.observe(seconds)

    def error(self, code: str, seconds: float | None = None) -> None:
        """A request answered with error ``code`` (after ``seconds``, when it reached a handler)."""
        outcomes = self.outcomes
        if code not in outcomes and len(outcomes) >= MAX_OUTCOMES - 2:  # room left for "ok" and OTHER
            code = OTHER_OUTCOME
        outcomes[code] = outcomes.get(code, 0) + 1
        if seconds is not None:
            self.latency.observe(seconds)

    def counts(self) -> dict[str, int]:
        """Every outcome with its count, ``"ok"`` first."""
        return {"ok": self.ok_count, **self.outcomes}


def split_adapter_stats(
    stats: Mapping[str, int], extra_gauges: frozenset[str] = frozenset()
) -> tuple[dict[str, int], dict[str, int]]:
    """``adapter.statistics()`` as ``(counters, gauges)`` (see :data:`ADAPTER_GAUGES`)."""
    gauges_keys = ADAPTER_GAUGES | extra_gauges
    counters: dict[str, int] = {}
    gauges: dict[str, int] = {}
    for key, value in stats.items():
        (gauges if key in gauges_keys else counters)[key] = int(value)
    return counters, gauges


__all__ = [
    "ADAPTER_GAUGES",
    "LATENCY_BUCKETS",
    "MAX_OUTCOMES",
    "OTHER_OUTCOME",
    "Counters",
    "Gauges",
    "Histogram",
    "LatencyHistogram",
    "Metrics",
    "RequestOutcomes",
    "split_adapter_stats",
]


def snapshot(
    core: Core,
    adapter: Adapter,
    *,
    roles: Iterable[str],
    rooms: int,
    topics: int,
    started: bool,
    ready: bool,
    draining: bool,
) -> Metrics:
    """A server's :class:`Metrics` from its counters, its connections and its adapter's statistics."""
    st = core.stats
    extra = frozenset(getattr(adapter, "statistics_gauges", ()))
    adapter_counters, adapter_gauges = split_adapter_stats(adapter.statistics(), extra)
    outcomes = core.requests.counts()
    if st.requests_not_found:  # the session answered these NOT_FOUND itself, before any handler
        outcomes["NOT_FOUND"] = outcomes.get("NOT_FOUND", 0) + st.requests_not_found
    counters = Counters(
        connections_accepted=st.connections_accepted,
        auth_refusals=st.connections_rejected,
        frames_received=st.frames_in,
        frames_sent=st.frames_out,
        bytes_sent=st.bytes_out,
        requests=st.requests,
        request_outcomes=outcomes,
        bad_frames=st.bad_frames,
        internal_errors=st.internal_errors,
        drops={
            "backpressure": st.dropped_backpressure,
            "closed": st.dropped_closed,
            "no_channel": st.dropped_no_channel,
            "unknown_node": st.dropped_unknown_node,
            "unknown_conn": st.dropped_unknown_conn,
        },
        backpressure_closes=st.closed_backpressure,
        reaped=st.reaped,
        late_replies=st.late_replies,
        bad_cluster_messages=st.bad_cluster_messages,
        targeted_sent=st.targeted_sent,
        remote_requests=st.remote_requests,
        server_requests=st.server_requests,
        server_requests_timed_out=st.server_requests_timed_out,
        asks_timed_out=st.asks_timed_out,
        presence_errors=st.presence_errors,
        adapter=adapter_counters,
    )
    by_role = dict.fromkeys(roles, 0)
    for conn in list(core.conns.values()):
        by_role[conn.session.role] = by_role.get(conn.session.role, 0) + 1
    alive = adapter_gauges.get("members_alive")
    gauges = Gauges(
        connections=by_role,
        rooms=rooms,
        topics=topics,
        requests_in_flight=len(core.calls),
        pending_requests=len(core.table),
        cluster_members_alive=None if alive is None else alive + (1 if started else 0),
        presence_connections=adapter_gauges.get("presence_connections"),
        ready=ready,
        draining=draining,
        adapter=adapter_gauges,
    )
    return Metrics(
        node_id=core.node_id,
        adapter=adapter.name,
        counters=counters,
        gauges=gauges,
        request_latency=core.requests.latency.snapshot(),
        ask_latency=core.asks.snapshot(),
    )
