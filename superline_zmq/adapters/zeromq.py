"""The ZeroMQ adapter: a brokerless cluster where every node talks straight to every other.

Start one with :func:`zeromq_adapter`; any existing member's ROUTER endpoint is a seed.
A node tells its peers two endpoints, its ROUTER's and its PUB's: the bound ones, or,
where peers must reach it some other way (a container's published ports, NAT, a proxy in
front of it), the ones given as ``advertise=`` and ``advertise_pub=``.
Membership and presence are the same pure gossip machine, run by the same driver, as on
the in-process bus (:class:`~superline_zmq.gossip_driver.GossipDriver` over
:class:`~superline_zmq.gossip.Gossip`: hello/welcome, beats, numbered presence deltas,
pulls on a gap, leave on close). This module keeps only the I/O: the sockets below
implement the driver's link (broadcast on the XPUB, send on a member's DEALER, connect,
disconnect, and probe: a hello to a seed or a forgotten peer's ROUTER), hand it every
gossip message received, and confirm subscriptions. Liveness is read through the driver (``is_alive``, ``members``,
presence), exactly as on the bus.

Timings come from one :class:`~superline_zmq.timing.ClusterTiming` (``timing=``, default
:meth:`~superline_zmq.timing.ClusterTiming.lan`; ``heartbeat_interval=``/``ttl=``
override it): the beat, ``ttl``, ``forget_after``, the subscribe waits and the close linger.

Sockets (one :class:`zmq.asyncio.Context`; the adapter owns and terminates it unless you
pass ``context=``). Every socket has explicit high-water marks (``sndhwm``/``rcvhwm``),
``LINGER`` 0 until close, and ZMTP heartbeats so a half-open TCP connection to a vanished
host is torn down by ZeroMQ on both ends within about ``ttl``: the connecting sockets (SUB,
DEALERs) ping three times per ``ttl`` and give up after a ``ttl`` without an answer, and
their pings tell the listening end to drop the connection after a ``ttl`` without traffic
(``HEARTBEAT_TTL``); the listening sockets ping once per ``ttl``, for peers that do not.

- **XPUB**, bound (``endpoints["pub"]``): channel publications and gossip broadcasts.
  ``XPUB_NODROP=1``: when a subscriber's queue is at its high-water mark a send fails
  with ``zmq.Again`` instead of being silently dropped; the adapter never blocks, it
  counts the drop (``publish_dropped_hwm``) and logs it (rate-limited). As with any
  NODROP publisher, one subscriber that stops reading makes the messages *it* matches
  fail for everyone until its queue drains or its connection dies. XPUB also shows the
  adapter the subscriptions peers send it, which is how ``subscribe`` is confirmed.
- **SUB**, one socket connected to every member's XPUB. A subscription set on it goes to
  every connection (and is re-sent on every reconnect), so :meth:`ZeroMQAdapter.subscribe`
  and :meth:`ZeroMQAdapter.unsubscribe` are one ``setsockopt`` each, and a node receives
  only the channels it holds. It always subscribes the gossip topic.
- **ROUTER**, bound (``endpoints["router"]``): direct messages in.
- **DEALER**, one per member, connected to that member's ROUTER: direct messages out.
  Chosen over a single ``ROUTER_MANDATORY`` socket connecting out because a DEALER
  queues a message from the moment of ``connect``, while ROUTER-to-ROUTER refuses
  (``EHOSTUNREACH``) until the handshake is done, which would lose the welcome and the
  pulls that immediately follow a hello. A send that would block (the member's queue is
  at the high-water mark) is dropped and counted (``direct_dropped_hwm``). Plus a
  short-lived DEALER per probe of a seed or a forgotten peer (it sends one hello and
  closes, lingering one beat to deliver it; a node with no live member probes its seeds
  every beat).

Wire format (frames):

- on PUB/SUB: ``[channel (UTF-8) + b"\\0", data]`` for a publication (ZeroMQ filters by
  prefix, so the terminator keeps ``r:a`` from matching ``r:ab``); ``[b"\\x01g", gossip]``
  for a gossip broadcast; ``[token, node id]`` for a subscription marker (below).
- on DEALER → ROUTER: ``[kind, sender node id, target node id, payload]`` with kind
  ``b"g"`` (gossip; the target is empty on a hello to a seed whose id is not known yet),
  ``b"d"`` (data, handed to ``on_direct(sender, payload)``) or ``b"s"`` (a joining
  node's sync request; the payload is a token, below). The sender travels in a
  frame rather than as the socket identity, so two sockets of one node never collide on
  a ROUTER; the target lets a new process that took over a dead node's address notice
  and drop (``direct_misrouted``) what was meant for its predecessor.

Anything else (a wrong frame count, an unknown kind, undecodable gossip or ids) is
dropped, counted in ``bad_messages`` and logged, rate-limited; no receive loop stops on
anything but cancellation.

**Subscribe confirmation.** ZeroMQ propagates a subscription asynchronously, so after
setting ``SUBSCRIBE channel\\0`` the adapter also subscribes a fresh random *token*
(``b"\\xff"`` + 32 hex digits, last in byte order). Subscriptions travel in order on each connection, and
an XPUB hands a subscription to its application only after adding it to its filter. So
when a member's XPUB reports the token (every adapter watches its XPUB for tokens), the
channel subscription before it is already in force there; the member then publishes
``[token, its node id]``, which reaches only the subscriber. ``subscribe`` returns once
every member current at the call (alive, or known by hearsay and not yet heard from) has
answered, or has died or left. A member that stays silent is retried with a new token
every ``timing.subscribe_retry`` (0.5 s) and given up after
:attr:`ZeroMQAdapter.subscribe_timeout` seconds (``timing.subscribe_timeout``, 2 s),
counted in ``subscribe_unconfirmed`` and logged. Members that join later receive the
subscription when the node connects to them.

**Joining.** :meth:`ZeroMQAdapter.start` sends a hello to every seed (its own endpoint
excepted) and waits up to ``ttl`` for a welcome; if none comes it carries on as a
cluster of one and keeps saying hello every ``heartbeat_interval`` until a seed answers.
It says hello to its seeds every beat whenever it has no live member left, so a node
whose peers all died rejoins through a seed restarted later; and, with capped, jittered
backoff (``timing.reprobe_initial`` to ``timing.reprobe_max``), forever — to its seeds
and to every peer it forgot — so a partition heals by itself once the links return (the
gossip machine decides when: :mod:`superline_zmq.probes`). A node also says hello to every member it
learns of by hearsay, so that member connects back at once rather than at the next
beat. Once welcomed, ``start`` runs the same confirmation the other way round, so the
node's first publications reach channels its members already hold: it sends each
member a sync request carrying a fresh token; the member subscribes the token (its SUB,
now connected to the newcomer, sends it after every subscription it holds), and when
the newcomer's XPUB reports the token, that member's subscriptions are in force there.
The newcomer answers with a marker and the member drops the token. A member silent for
:attr:`ZeroMQAdapter.subscribe_timeout` is given up on (``join_unconfirmed``, logged).

**Leaving.** :meth:`ZeroMQAdapter.close` broadcasts a leave and closes the XPUB and the
DEALERs with a linger (``timing.close_linger``, 200 ms) so it is flushed; peers drop the
node at once. A node that dies without leaving is dead to its peers after ``ttl``.

Ordering: one publisher's messages reach one subscriber in the order published (one
PUB/SUB connection is FIFO), across channels too.

**Security (CURVE).** With ``curve=CurveConfig(...)`` (:mod:`superline_zmq.curve`) every
socket authenticates and encrypts: the ROUTER and the XPUB are CURVE servers whose ZAP
handler (pyzmq's asyncio authenticator, started before the first bind) admits only the
client keys of the allow list; the SUB, the member DEALERs and the probes are CURVE
clients. A client must know the server's public key before connecting, so every node
advertises its key in its gossip address (``{"pub", "router", "key"}``), and a node
connects only to members whose key it allows itself (``peer_key_refused`` otherwise). A
seed's key is not known before it answers: a probe of a seed says hello once with each
allowed key (short-lived sockets; the wrong ones fail the handshake at the seed and are
counted there as ``handshake_failed``), and once the seed is met its own key is used.
A node whose key is not allowed, or that speaks plain ZMTP, is refused at the handshake:
it never becomes a member, hears nothing and delivers nothing; each refusal is counted
(``auth_refused``) and logged, rate-limited, with its key's fingerprint and its address
(from the ZAP request; libzmq does not report the address of a plain-ZMTP peer, and
reports about one plain attempt in five only as a handshake broken off, which counts in
``handshake_failed``: a CURVE peer giving up mid-handshake looks the same).
:meth:`ZeroMQAdapter.reload_allowed` applies a new allow list without a restart; see
it for how removed keys lose their existing connections. A node refused by a member
(its key was removed there) reconnects to it when the member next calls it, and on its
own with the re-probing backoff, so it is back within about ``reprobe_max`` of the key
being restored even if nobody calls it. Without ``curve``, the node
logs a warning at start: anyone who reaches its ports can join.

Counters (:meth:`ZeroMQAdapter.statistics`): ``published`` / ``publish_dropped_hwm``;
``delivered`` (publications handed to ``on_channel``), ``channel_not_held`` (arrived
just after an unsubscribe); ``direct_sent``, ``direct_received``,
``direct_dropped_unknown`` (also as ``dropped_unknown_node``), ``direct_dropped_hwm``,
``direct_dropped_error``, ``direct_misrouted``; ``bad_messages`` (every malformed
message, ``bad_gossip`` among them); ``handler_errors`` (a callback raised);
``link_errors`` / ``tick_errors`` (the gossip driver's: a send or a tick raised);
``control_dropped_hwm`` / ``control_dropped_unknown`` (gossip and markers not sent);
``hellos``; ``subscribe_unconfirmed``, ``join_unconfirmed``; the gauges ``channels``,
``members`` and ``sockets`` (ZeroMQ sockets open, short-lived probes aside); with CURVE:
``auth_admitted`` / ``auth_refused`` (handshakes ZAP admitted
and refused, plus plain-ZMTP peers refused), ``handshake_failed`` (any other failed
handshake: a wrong server key, a peer hanging up mid-handshake, garbage),
``peer_key_refused`` (members not connected to:
key not allowed), ``refused_by_peer`` (a member refused our key), ``refused_retries``
(reconnections to such a member on our own, in case it admits us again),
``evicted_dropped`` (direct messages from a node evicted for its key, read after the
eviction), ``allowed_keys``,
``allow_reloads``, ``listener_rebinds``; and the gossip state machine's own, prefixed
``gossip_``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import random
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from superline_zmq.adapter import ChannelHandler, DirectHandler
from superline_zmq.curve import (
    PUB_DOMAIN,
    ROUTER_DOMAIN,
    AllowedLike,
    AllowList,
    CurveConfig,
    ZapHandler,
    fingerprint,
    resolve_allowed,
)
from superline_zmq.errors import CurveKeyError
from superline_zmq.gossip import Addr, GossipPresence
from superline_zmq.gossip_driver import GossipDriver
from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.membership import ALIVE, HEARSAY
from superline_zmq.timing import ClusterTiming

log = logging.getLogger("superline_zmq.zeromq")

#: The PUB topic of gossip broadcasts (every SUB subscribes it).
GOSSIP_TOPIC = b"\x01g"
#: Subscription-marker tokens: this byte and 32 hex digits (never ends with ``\\0``). 0xFF is never in a
#: channel name (UTF-8) and sorts after every other first byte: a SUB that connects sends its whole
#: subscription set in byte order, so a token subscribed before that connection came up still arrives
#: after every channel it is meant to confirm.
TOKEN_PREFIX = b"\xff"
_TOKEN_LEN = 33
KIND_GOSSIP = b"g"
KIND_DATA = b"d"
KIND_SYNC = b"s"
#: How long close() lets the leave (and queued direct messages) flush, by default
#: (``ClusterTiming.close_linger``).
CLOSE_LINGER_MS = int(ClusterTiming.lan().close_linger * 1000)
#: A silent member is asked again with a fresh token this often while subscribing, by
#: default (``ClusterTiming.subscribe_retry``).
SUBSCRIBE_RETRY = ClusterTiming.lan().subscribe_retry
#: A receive loop yields to the event loop after this many messages in a row.
_BATCH = 256
_WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]", "::", "[::0]")


def _topic(channel: str) -> bytes:
    return channel.encode() + b"\0"


def _new_token() -> bytes:
    return TOKEN_PREFIX + secrets.token_hex(16).encode()


def _is_token(topic: bytes) -> bool:
    return len(topic) == _TOKEN_LEN and topic.startswith(TOKEN_PREFIX)


def _pub_endpoint_for(bind: str) -> str:
    """The PUB endpoint on the same host as ``bind``, with a free port."""
    if not bind.startswith("tcp://"):
        raise ValueError(f"pass pub_bind= when bind is not a tcp:// endpoint (got {bind!r})")
    host, sep, _ = bind[len("tcp://") :].rpartition(":")
    if not sep or not host:
        raise ValueError(f"bind must look like tcp://HOST:PORT, got {bind!r}")
    return f"tcp://{host}:0"


def _check_advertisable(endpoint: str, what: str = "the bound endpoint") -> None:
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rpartition(":")[0]
        if host in _WILDCARD_HOSTS:
            raise ValueError(
                f"{endpoint!r} is a wildcard address: peers are told {what}, so bind an address "
                "they can reach (e.g. tcp://10.0.0.5:7001), or pass advertise= (and advertise_pub=)"
            )


@dataclass(frozen=True)
class AllowChange:
    """What :meth:`ZeroMQAdapter.reload_allowed` changed (keys by :func:`~superline_zmq.curve.fingerprint`)."""

    added: frozenset[str]
    removed: frozenset[str]
    #: Members dropped because they hold a removed key.
    evicted: tuple[NodeId, ...]
    #: Whether the listeners were re-created so every inbound connection re-authenticates.
    rebound: bool
    #: How many keys are allowed now.
    allowed: int


def _advertised(advertise: str | None, advertise_pub: str | None, router_ep: str, pub_ep: str) -> dict[str, str]:
    """The endpoints peers are told: ``advertise``/``advertise_pub``, else the bound ones.

    With ``advertise`` alone, the PUB is advertised on its host with the bound PUB port (a
    container that publishes both ports unchanged, say).
    """
    for name, value in (("advertise", advertise), ("advertise_pub", advertise_pub)):
        if value is not None and (not isinstance(value, str) or "://" not in value):
            raise ValueError(f"{name} must be an endpoint such as tcp://10.0.0.5:7001, got {value!r}")
    router = advertise if advertise is not None else router_ep
    if advertise_pub is not None:
        pub = advertise_pub
    elif advertise is not None and advertise.startswith("tcp://") and pub_ep.startswith("tcp://"):
        host = advertise[len("tcp://") :].rpartition(":")[0]
        port = pub_ep.rpartition(":")[2]
        pub = f"tcp://{host}:{port}"
    else:
        pub = pub_ep
    _check_advertisable(router, "the advertised ROUTER endpoint" if advertise is not None else "the bound endpoint")
    _check_advertisable(pub, "the advertised PUB endpoint" if advertise or advertise_pub else "the bound endpoint")
    if router == pub:
        raise ValueError(f"the ROUTER and the PUB cannot be advertised on one endpoint ({router!r})")
    return {"pub": pub, "router": router}


class _Confirm:
    """One subscribe() waiting for markers: members heard from so far."""

    __slots__ = ("event", "got")

    def __init__(self) -> None:
        self.got: set[NodeId] = set()
        self.event = asyncio.Event()


async def zeromq_adapter(
    bind: str = "tcp://127.0.0.1:0",
    seeds: Iterable[str] = (),
    *,
    pub_bind: str | None = None,
    advertise: str | None = None,
    advertise_pub: str | None = None,
    timing: ClusterTiming | None = None,
    heartbeat_interval: float | None = None,
    ttl: float | None = None,
    sndhwm: int = 100_000,
    rcvhwm: int = 100_000,
    context: zmq.asyncio.Context | None = None,
    curve: CurveConfig | None = None,
) -> ZeroMQAdapter:
    """A new, un-started ZeroMQ adapter with its sockets bound (see the module docstring).

    ``bind`` is the ROUTER endpoint (port 0 picks a free port); the PUB binds on the
    same host with its own free port unless ``pub_bind`` is given. ``seeds`` are ROUTER
    endpoints of any existing members (none: a cluster of one); a seed that is not up
    yet is retried until it answers. ``advertise`` is the ROUTER endpoint peers are told
    to connect to, when it differs from the bound one (Docker, NAT, a proxy: then
    ``bind`` may be a wildcard such as ``tcp://0.0.0.0:7001``); ``advertise_pub`` the
    PUB's (default, with ``advertise``: its host with the bound PUB port). ``timing``
    sets every cluster timing (default :meth:`ClusterTiming.lan`);
    ``heartbeat_interval`` and ``ttl``, if given, override it. ``curve``: this node's CURVE
    keys and allow list; every socket then authenticates and encrypts, and only allowed
    nodes get in (None: no security at all, and a warning at start). ``adapter.endpoints``
    holds the advertised endpoints and ``adapter.bound_endpoints`` the bound ones as
    soon as this returns. Raises ``zmq.ZMQError`` if an endpoint cannot be bound and
    ``ValueError`` on bad arguments (timings included).
    """
    return ZeroMQAdapter(
        bind,
        seeds,
        pub_bind=pub_bind,
        advertise=advertise,
        advertise_pub=advertise_pub,
        timing=timing,
        heartbeat_interval=heartbeat_interval,
        ttl=ttl,
        sndhwm=sndhwm,
        rcvhwm=rcvhwm,
        context=context,
        curve=curve,
    )


class ZeroMQAdapter:
    """An :class:`~superline_zmq.adapter.Adapter` over ZeroMQ sockets; make it with :func:`zeromq_adapter`.

    The constructor takes the same arguments and binds at once (synchronously); call it
    from a running event loop.
    """

    name = "zeromq"

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:0",
        seeds: Iterable[str] = (),
        *,
        pub_bind: str | None = None,
        advertise: str | None = None,
        advertise_pub: str | None = None,
        timing: ClusterTiming | None = None,
        heartbeat_interval: float | None = None,
        ttl: float | None = None,
        sndhwm: int = 100_000,
        rcvhwm: int = 100_000,
        context: zmq.asyncio.Context | None = None,
        curve: CurveConfig | None = None,
    ) -> None:
        base = timing if timing is not None else ClusterTiming.lan()
        timing = base.override(heartbeat_interval=heartbeat_interval, ttl=ttl)  # ValueError if inconsistent
        if sndhwm < 0 or rcvhwm < 0:
            raise ValueError(f"high-water marks must be >= 0 (0: no limit), got {sndhwm} and {rcvhwm}")
        seeds = [s for s in seeds]
        if not all(isinstance(s, str) and s for s in seeds):
            raise ValueError(f"seeds must be endpoint strings, got {seeds!r}")
        #: Every cluster timing this node uses.
        self.timing = timing
        self.heartbeat_interval = timing.heartbeat_interval
        self.ttl = timing.ttl
        #: How long ``subscribe`` waits for a silent member before giving up on it (seconds).
        self.subscribe_timeout = timing.subscribe_timeout
        self._sndhwm = sndhwm
        self._rcvhwm = rcvhwm
        self.node: NodeId | None = None
        #: Presence over gossip (available once started).
        self.presence: GossipPresence | None = None
        self._node_b = b""
        self._on_channel: ChannelHandler | None = None
        self._on_direct: DirectHandler | None = None
        self._driver: GossipDriver | None = None
        self._channels: set[str] = set()
        self._confirming: dict[str, asyncio.Event] = {}
        self._tokens: dict[bytes, _Confirm] = {}  # tokens our SUB holds -> who waits for markers
        self._join_tokens: dict[bytes, tuple[NodeId, _Confirm]] = {}  # tokens we asked members to subscribe
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._dealers: dict[NodeId, zmq.asyncio.Socket] = {}
        self._dealer_sync: dict[NodeId, zmq.Socket[bytes]] = {}  # plain shadows of the member DEALERs
        self._peer_pub: dict[NodeId, str] = {}
        self._pub_refs: dict[str, set[NodeId]] = {}  # pub endpoint -> members reached there
        self._seeds: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._close_done = asyncio.Event()
        self._rlog = RateLimitedLog(log)
        self._stats = {
            "published": 0,
            "publish_dropped_hwm": 0,
            "delivered": 0,
            "channel_not_held": 0,
            "direct_sent": 0,
            "direct_received": 0,
            "direct_dropped_unknown": 0,
            "direct_dropped_hwm": 0,
            "direct_dropped_error": 0,
            "direct_misrouted": 0,
            "bad_messages": 0,
            "bad_gossip": 0,  # the gossip driver's count, once started
            "handler_errors": 0,
            "link_errors": 0,
            "tick_errors": 0,
            "control_dropped_hwm": 0,
            "control_dropped_unknown": 0,
            "hellos": 0,
            "subscribe_unconfirmed": 0,
            "join_unconfirmed": 0,
            # CURVE (all 0 without it; auth_admitted and allowed_keys are read live)
            "auth_refused": 0,
            "handshake_failed": 0,
            "peer_key_refused": 0,
            "allow_reloads": 0,
            "listener_rebinds": 0,
            "refused_by_peer": 0,
            "refused_retries": 0,
            "evicted_dropped": 0,
        }
        #: This node's CURVE keys and allow list (None: the transport is unauthenticated).
        self.curve = curve
        self._allow = AllowList(curve.allowed if curve is not None else frozenset(), self._on_zap_refused)
        self._allow_dir = curve.allow_dir if curve is not None else None
        self._zap: ZapHandler | None = None
        self._monitors: list[tuple[zmq.Socket[Any], zmq.asyncio.Socket, str]] = []  # (socket, its monitor, name)
        self._member_keys: dict[NodeId, str] = {}  # member -> the CURVE key we connected to it with
        self._key_at: dict[str, str] = {}  # ROUTER endpoint -> the key last seen there (probing seeds)
        self._refused_peers: dict[NodeId, Addr] = {}  # members not connected to: key not allowed
        self._evicted: dict[NodeId, Addr] = {}  # members dropped for a removed key, while it stays removed
        self._refused_by: dict[bytes, NodeId] = {}  # members that refused our key: reconnect when they call
        #: ... or on our own, with backoff (a pending retry and the next delay, by member)
        self._refused_retry: dict[NodeId, asyncio.TimerHandle] = {}
        self._refused_delay: dict[NodeId, float] = {}
        self._dealer_monitors: dict[NodeId, zmq.asyncio.Socket] = {}  # with CURVE (see _watch_dealer)
        self._pub_keys: dict[str, str] = {}  # PUB endpoint -> the server key our SUB connected with
        self._own_ctx = context is None
        self._ctx: zmq.asyncio.Context = context if context is not None else zmq.asyncio.Context()
        self._ipv6 = "[" in bind or (pub_bind is not None and "[" in pub_bind)
        self._all: list[zmq.asyncio.Socket] = []
        try:
            if curve is not None:
                # before any bind: a CURVE server with no ZAP handler admits every key
                self._zap = ZapHandler(self._ctx, self._allow, (ROUTER_DOMAIN, PUB_DOMAIN))
                self._zap.start()
            self._router = self._socket(zmq.ROUTER, server=ROUTER_DOMAIN)
            self._router.bind(bind)
            router_ep = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._pub = self._socket(zmq.XPUB, server=PUB_DOMAIN)
            self._pub.setsockopt(zmq.XPUB_NODROP, 1)
            self._pub.bind(pub_bind if pub_bind is not None else _pub_endpoint_for(bind))
            pub_ep = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
            self._sub = self._socket(zmq.SUB)
            self._sub.setsockopt(zmq.SUBSCRIBE, GOSSIP_TOPIC)
            if curve is not None:  # told when a member refuses us (see _on_refused_by)
                monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                self._monitors.append((self._sub, monitor, "sub"))
            self._bound = {"pub": pub_ep, "router": router_ep}
            self._endpoints = _advertised(advertise, advertise_pub, router_ep, pub_ep)
            for seed in dict.fromkeys(seeds):
                if seed in (router_ep, self._endpoints["router"]):
                    continue  # ourselves: nothing to join through
                self._seeds.append(seed)  # said hello to with short-lived sockets (_probe)
        except BaseException:
            self._close_monitors()
            for sock in self._all:
                sock.close(linger=0)
            if self._zap is not None:
                self._zap.stop()
            if self._own_ctx:
                self._ctx.term()
            raise

    # ------------------------------------------------------------------ introspection
    @property
    def endpoints(self) -> dict[str, str]:
        """The ``{"pub": ..., "router": ...}`` endpoints peers are told to reach this node on
        (the advertised ones, else the bound ones)."""
        return dict(self._endpoints)

    @property
    def bound_endpoints(self) -> dict[str, str]:
        """The resolved ``{"pub": ..., "router": ...}`` endpoints this node's sockets are bound to."""
        return dict(self._bound)

    def members(self) -> dict[NodeId, bool]:
        """Members this node knows (itself excluded), each with whether it is alive."""
        driver = self._driver
        if driver is None or self._closed:
            return {}
        return {node: state is ALIVE for node, state in driver.members().items()}

    @property
    def channels(self) -> frozenset[str]:
        """Channels this node holds right now."""
        return frozenset(self._channels)

    def readiness(self) -> str | None:
        """None once this node has joined its cluster, else why not (``/readyz`` answers 503 with it).

        Joined: started, not closed, and, when seeds were given, welcomed by a live member at
        least once (a node whose seeds never answered runs alone and is not ready).
        """
        driver = self._driver
        if driver is None:
            return "the ZeroMQ adapter is not started"
        if self._closed:
            return "the ZeroMQ adapter is closed"
        if self._seeds and not driver.joined:
            return f"no seed has answered yet (seeds: {', '.join(self._seeds)})"
        return None

    def statistics(self) -> Mapping[str, int]:
        stats = dict(self._stats)
        # the conformance suite's name for direct_dropped_unknown
        stats["dropped_unknown_node"] = stats["direct_dropped_unknown"]
        stats["channels"] = len(self._channels)
        stats["auth_admitted"] = self._allow.allowed_count
        stats["allowed_keys"] = len(self._allow.keys)
        stats["sockets"] = len(self._all)
        stats["members"] = 0
        if self._driver is not None:
            stats.update(self._driver.statistics())
        return stats

    # ------------------------------------------------------------------ lifecycle
    async def start(self, node: NodeId, on_channel: ChannelHandler, on_direct: DirectHandler) -> None:
        if self.node is not None:
            raise RuntimeError("this adapter is already started; make one adapter per server")
        if self._closed:
            raise RuntimeError("this adapter is closed; make a new one")
        self.node = node
        self._node_b = node.encode()
        self._on_channel = on_channel
        self._on_direct = on_direct
        addr = self.endpoints
        if self.curve is not None:
            addr["key"] = self.curve.public_key.decode()  # peers connect to us with it
            log.info(
                "node %s: CURVE on (key %s), %d node key(s) allowed%s",
                node,
                self.curve.fingerprint,
                len(self._allow.keys),
                f" from {self._allow_dir}" if self._allow_dir is not None else "",
            )
        else:
            log.warning(
                "node %s: the cluster transport is unauthenticated and unencrypted: anyone who can reach %s or "
                "%s can join, read every room and inject messages; pass curve=CurveConfig(...) "
                "(superline-zmq run --curve-cert/--curve-allow), see docs/security.md",
                node,
                self._endpoints["router"],
                self._endpoints["pub"],
            )
        driver = self._driver = GossipDriver(
            node,
            _ZmqLink(self),
            addr=addr,
            timing=self.timing,
            seeds=[{"router": seed} for seed in self._seeds],
            logger=log,
        )
        self.presence = driver.presence
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._recv_loop(self._router, self._on_router_message, "router")),
            loop.create_task(self._recv_loop(self._sub, self._on_sub_message, "sub")),
            loop.create_task(self._recv_loop(self._pub, self._on_xpub_message, "xpub")),
            *(loop.create_task(self._monitor_loop(mon, name)) for _, mon, name in self._monitors),
        ]
        driver.start()  # the first tick says hello to the seeds (no live member yet)
        try:
            if self._seeds:
                try:
                    await asyncio.wait_for(driver.wait_joined(), self.ttl)
                except TimeoutError:
                    self._rlog.log(
                        logging.WARNING,
                        "join",
                        "node %s: no seed answered within %.1f s; running alone, still saying hello",
                        node,
                        self.ttl,
                    )
                    return
                await self._join_sync()
        finally:
            driver.end_join()  # what this node learns from now on is news, not the state it joined

    async def _join_sync(self) -> None:
        """Wait until every member's subscriptions are in force on our PUB (see the module docstring)."""
        tokens: list[bytes] = []
        conf = _Confirm()

        def ask(waiting: set[NodeId]) -> None:
            for member in waiting:
                dealer = self._dealer_sync.get(member)
                if dealer is None:
                    continue
                token = _new_token()
                self._join_tokens[token] = (member, conf)
                tokens.append(token)
                self._send_control_now(dealer, [KIND_SYNC, self._node_b, member.encode(), token], "sync request")

        try:
            if not await self._await_members(self._awaited_members(), conf, ask):
                self._stats["join_unconfirmed"] += 1
                self._rlog.log(
                    logging.WARNING,
                    "join_sync",
                    "node %s joined without every member subscribed to it after %.1f s; "
                    "its first publications may miss them",
                    self.node,
                    self.subscribe_timeout,
                )
        finally:
            for token in tokens:
                self._join_tokens.pop(token, None)

    async def close(self) -> None:
        """Leave the cluster (peers drop this node at once) and close every socket; idempotent."""
        if self._closed:
            await self._close_done.wait()
            return
        if self._driver is not None:
            await self._driver.close(leave=True)
        await self._shutdown(int(self.timing.close_linger * 1000))

    async def simulate_crash(self) -> None:
        """For tests: stop every task and close every socket without a leave, as a killed process would.

        Peers keep this node (and its connections in presence) until ``ttl`` passes
        without a beat.
        """
        await self._shutdown(0)

    async def _shutdown(self, linger: int) -> None:
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        try:
            if self._driver is not None:
                await self._driver.close(leave=False)  # stops the tick loop (after close()'s leave)
            current = asyncio.current_task()
            tasks = [t for t in (*self._tasks, *self._side_tasks) if t is not current]
            self._tasks = []
            self._side_tasks.clear()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for retry in self._refused_retry.values():
                retry.cancel()
            self._refused_retry.clear()
            for conf in self._tokens.values():
                conf.event.set()
            for _, conf in self._join_tokens.values():
                conf.event.set()
            self._on_channel = self._on_direct = None
            # the leave (PUB) and queued direct messages (member DEALERs) get to flush
            flush = {id(self._pub), *(id(d) for d in self._dealers.values())}
            self._close_monitors()
            for sock in self._all:
                if not sock.closed:
                    sock.close(linger=linger if id(sock) in flush else 0)
            self._all.clear()
            self._dealers.clear()
            self._peer_pub.clear()
            self._pub_refs.clear()
            self._pub_keys.clear()
            self._member_keys.clear()
            if self._zap is not None:  # only now: the server sockets are closed
                await self._zap.aclose()
            if self._own_ctx:
                try:
                    await asyncio.wait_for(asyncio.to_thread(self._ctx.term), 5 + linger / 1000)
                except TimeoutError:  # pragma: no cover - a socket left open; never seen
                    log.error("the ZeroMQ context did not terminate within 5 s")
        finally:
            self._close_done.set()

    # ------------------------------------------------------------------ channels
    async def subscribe(self, channel: str) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        if self._closed:
            return
        if channel in self._channels:
            pending = self._confirming.get(channel)
            if pending is not None:
                await pending.wait()
            return
        self._channels.add(channel)
        self._sub.setsockopt(zmq.SUBSCRIBE, _topic(channel))
        done = self._confirming[channel] = asyncio.Event()
        try:
            await self._confirm(channel)
        except BaseException:
            # cancelled or failed: do not hold a channel the caller thinks was not subscribed
            if not self._closed and channel in self._channels:
                self._channels.discard(channel)
                self._sub.setsockopt(zmq.UNSUBSCRIBE, _topic(channel))
            raise
        finally:
            done.set()
            if self._confirming.get(channel) is done:
                del self._confirming[channel]

    async def _confirm(self, channel: str) -> None:
        """Wait until every current member has the subscription in force (see the module docstring)."""
        tokens: list[bytes] = []
        conf = _Confirm()

        def ask(waiting: set[NodeId]) -> None:
            token = _new_token()
            self._tokens[token] = conf
            tokens.append(token)
            self._sub.setsockopt(zmq.SUBSCRIBE, token)

        try:
            members = self._awaited_members()
            if not await self._await_members(members, conf, ask):
                self._stats["subscribe_unconfirmed"] += 1
                self._rlog.log(
                    logging.WARNING,
                    "subscribe",
                    "subscribed %r without confirmation from %s after %.1f s; their publications "
                    "will arrive once the subscription reaches them",
                    channel,
                    ", ".join(sorted(m for m in members if m not in conf.got and self._awaitable(m))),
                    self.subscribe_timeout,
                )
        finally:
            for token in tokens:
                self._tokens.pop(token, None)
                if not self._closed:
                    self._sub.setsockopt(zmq.UNSUBSCRIBE, token)

    async def _await_members(self, members: set[NodeId], conf: _Confirm, ask: Callable[[set[NodeId]], None]) -> bool:
        """Until each of ``members`` is in ``conf.got`` or gone: ``ask`` the rest now and every retry period.

        False if some were still silent at the deadline (:attr:`subscribe_timeout`).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.subscribe_timeout
        next_ask = loop.time()
        while not self._closed:
            waiting = {m for m in members if m not in conf.got and self._awaitable(m)}
            if not waiting:
                return True
            now = loop.time()
            if now >= deadline:
                return False
            if now >= next_ask:
                ask(waiting)
                next_ask = now + self.timing.subscribe_retry
            conf.event.clear()
            try:
                await asyncio.wait_for(conf.event.wait(), min(next_ask, deadline) - now)
            except TimeoutError:
                pass
        return True

    def _awaitable(self, node: NodeId) -> bool:
        """A member whose marker is worth waiting for: connected, and alive or not yet heard."""
        driver = self._driver
        return driver is not None and node in self._peer_pub and driver.liveness(node) in (ALIVE, HEARSAY)

    def _awaited_members(self) -> set[NodeId]:
        driver = self._driver
        if driver is None:
            return set()
        return {n for n in driver.members() if self._awaitable(n)}

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        if not self._closed:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, _topic(channel))

    def publish(self, channel: str, data: bytes) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        if self._closed:
            return
        err = self._try_send(self._pub, [_topic(channel), data])
        if err is None:
            self._stats["published"] += 1
        else:
            self._stats["publish_dropped_hwm"] += 1
            self._rlog.log(
                logging.WARNING,
                "publish_hwm",
                "dropped a publication on %r: a subscriber's queue is full (%s)",
                channel,
                _why(err),
            )

    # ------------------------------------------------------------------ direct messages
    def send(self, node: NodeId, data: bytes) -> bool:
        if not self.is_alive(node):
            return self._drop_unknown(node)
        if node == self.node:  # to ourselves: delivered from the event loop, like any other
            asyncio.get_running_loop().call_soon(self._deliver_direct, node, data)
            self._stats["direct_sent"] += 1
            return True
        dealer = self._dealer_sync.get(node)
        if dealer is None:
            return self._drop_unknown(node)
        err = _try_send_now(dealer, [KIND_DATA, self._node_b, node.encode(), data])
        if err is None:
            self._stats["direct_sent"] += 1
            return True
        if isinstance(err, zmq.Again):
            self._stats["direct_dropped_hwm"] += 1
            self._rlog.log(logging.WARNING, "direct_hwm", "dropped a direct message to %s: its queue is full", node)
        else:
            self._stats["direct_dropped_error"] += 1
            self._rlog.log(logging.WARNING, "direct_error", "dropped a direct message to %s: %s", node, _why(err))
        return False

    def _drop_unknown(self, node: NodeId) -> bool:
        self._stats["direct_dropped_unknown"] += 1
        self._rlog.log(logging.WARNING, "direct_unknown", "dropped a direct message to unknown node %s", node)
        return False

    def _deliver_direct(self, sender: NodeId, data: bytes) -> None:
        if self._on_direct is not None:
            self._stats["direct_received"] += 1
            self._on_direct(sender, data)

    def is_alive(self, node: NodeId) -> bool:
        driver = self._driver
        return driver is not None and not self._closed and driver.alive(node)

    # ------------------------------------------------------------------ sending
    def _socket(self, kind: int, *, server: str | None = None) -> zmq.asyncio.Socket:
        """A node socket with the adapter's options; with CURVE, a server for ZAP domain
        ``server`` (monitored for failed handshakes) or a client (its peer's key is set
        per connect: :meth:`_connect_to`)."""
        sock = self._ctx.socket(kind)
        self._all.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._sndhwm)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        ttl_ms = max(1, int(self.ttl * 1000))
        if kind in (zmq.SUB, zmq.DEALER):
            # The connecting side pings three times per ttl and asks the listener to drop the
            # connection after a ttl without traffic (HEARTBEAT_TTL, carried in each PING) ...
            sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, ttl_ms // 3))
            sock.setsockopt(zmq.HEARTBEAT_TTL, ttl_ms)
        else:
            # ... so a listener pings only once per ttl: a backstop for a peer that asks nothing.
            # Every socket pinging every beat cost 4 PINGs and 4 PONGs per member a second, more
            # than the gossip itself (ZMTP heartbeats are per connection: 4 per member).
            sock.setsockopt(zmq.HEARTBEAT_IVL, ttl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ttl_ms)
        # a handshake whose bytes were lost (a link that went dark mid-connect) is given up
        # after this, not libzmq's 30 s, so a healed link is used again within a beat or two
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(ttl_ms, 2000))
        if self._ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        self._secure(sock, server=server)
        return sock

    def _secure(self, sock: zmq.Socket[Any], *, server: str | None = None) -> None:
        curve = self.curve
        if curve is None:
            return
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
        if server is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, server.encode())
            events = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            monitor = cast("zmq.asyncio.Socket", sock.get_monitor_socket(events))
            self._monitors.append((sock, monitor, "router" if server == ROUTER_DOMAIN else "pub"))

    def _connect_to(self, sock: zmq.Socket[Any], endpoint: str, key: str | None) -> None:
        """``sock.connect(endpoint)``; with CURVE, to the node holding ``key`` (libzmq copies the
        socket's options into each connection, so one SUB reaches members with different keys)."""
        if self.curve is not None:
            if not key:
                raise ValueError(f"no CURVE key for {endpoint}")
            sock.setsockopt(zmq.CURVE_SERVERKEY, key.encode())
        sock.connect(endpoint)

    def _close_monitors(self) -> None:
        for sock, monitor, _ in self._monitors:
            if not sock.closed:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        for node in list(self._dealer_monitors):
            self._unwatch_dealer(node)

    def _watch_dealer(self, node: NodeId, dealer: zmq.asyncio.Socket) -> None:
        """Watch our DEALER to ``node`` for a ZAP refusal. libzmq tells only the connecting socket
        and never retries it, and the SUB to the same member is not always refused with it (it
        may reconnect at another moment): without this, a member that evicted us and admits us
        again would get no answers from us until the next membership change."""
        monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self._dealer_monitors[node] = monitor
        task = asyncio.get_running_loop().create_task(self._monitor_loop(monitor, f"dealer:{node}"))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _unwatch_dealer(self, node: NodeId) -> None:
        monitor = self._dealer_monitors.pop(node, None)
        if monitor is None:
            return
        dealer = self._dealers.get(node)
        if dealer is not None and not dealer.closed:
            with contextlib.suppress(zmq.ZMQError):
                dealer.disable_monitor()
        monitor.close(linger=0)

    def _try_send(self, sock: zmq.asyncio.Socket, frames: list[bytes]) -> BaseException | None:
        """Send without blocking: None if ZeroMQ took it, else why not (``zmq.Again``: queue full)."""
        try:
            fut = cast("asyncio.Future[Any]", sock.send_multipart(frames, flags=zmq.DONTWAIT))
        except Exception as exc:  # pyzmq reports through the future; be safe anyway
            return exc
        if not fut.done():  # only if a blocking send were queued, which this adapter never does
            fut.add_done_callback(self._late_send_result)
            return None
        if fut.cancelled():
            return asyncio.CancelledError()
        return fut.exception()

    def _late_send_result(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self._stats["control_dropped_hwm"] += 1

    def _send_control_now(self, sock: zmq.Socket[bytes], frames: list[bytes], what: str) -> None:
        err = _try_send_now(sock, frames)
        if err is not None:
            self._stats["control_dropped_hwm"] += 1
            self._rlog.log(logging.WARNING, "control", "dropped a %s: %s", what, _why(err))

    def _send_control(self, sock: zmq.asyncio.Socket, frames: list[bytes], what: str) -> None:
        err = self._try_send(sock, frames)
        if err is not None:
            self._stats["control_dropped_hwm"] += 1
            self._rlog.log(logging.WARNING, "control", "dropped a %s: %s", what, _why(err))

    def _probe(self, addr: Addr, data: bytes) -> None:
        """A hello to whatever listens at ``addr``'s ROUTER (a seed, or a forgotten peer): a DEALER
        that sends once and closes, lingering a beat to deliver (one per key to try, with CURVE).

        A fresh socket each time, never a standing one: libzmq abandons for good a connection
        whose handshake failed (a seed that was briefly something else, a CURVE node refusing
        us), and a standing seed socket would then never say hello again."""
        endpoint = addr.get("router")
        if self._closed or not endpoint or endpoint == self._endpoints["router"]:
            return
        frames = [KIND_GOSSIP, self._node_b, b"", data]  # no target: whoever is there now answers
        self._stats["hellos"] += 1
        for key in self._probe_keys(addr, endpoint):
            self._probe_once(endpoint, key, frames)

    def _probe_keys(self, addr: Addr, endpoint: str) -> list[str | None]:
        """The CURVE keys to probe ``endpoint`` with: the one its address names, else the one last
        seen there, else (unknown, or we are alone and it may have changed) every allowed key."""
        if self.curve is None:
            return [None]
        key = addr.get("key")
        if key:
            if key.encode() in self._allow.keys:
                return [key]
            self._peer_key_refused(None, key, endpoint)
            return []
        known = self._key_at.get(endpoint)
        driver = self._driver
        if known and known.encode() in self._allow.keys and driver is not None and driver.has_live_member():
            return [known]
        # A seed's key is not known before it answers: say hello with each allowed key (the
        # wrong ones fail the handshake there, counted as handshake_failed, not refusals);
        # our own key last, for nodes that share one identity (superline-zmq cluster --curve-cert)
        own = self.curve.public_key
        keys = sorted(k.decode() for k in self._allow.keys if k != own)
        if own in self._allow.keys:
            keys.append(own.decode())
        if known in keys:
            keys.remove(known)
            keys.insert(0, known)
        return list(keys)

    def _probe_once(self, endpoint: str, key: str | None, frames: list[bytes]) -> None:
        """One short-lived DEALER: sends the hello, closes, and lingers one beat to deliver it."""
        linger = max(1, int(self.timing.heartbeat_interval * 1000))
        sock = self._ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.SNDHWM, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, linger)  # one try per probe: a wrong key is not retried
            if self._ipv6:
                sock.setsockopt(zmq.IPV6, 1)
            self._secure(sock)
            self._connect_to(sock, endpoint, key)
            self._try_send(sock, frames)
        except zmq.ZMQError as exc:
            self._bad("addr", "cannot probe %r: %s", endpoint, exc)
        finally:
            sock.close(linger=linger)

    # ------------------------------------------------------------------ gossip (the driver's link)
    def _gossip_broadcast(self, data: bytes) -> None:
        if not self._closed:
            self._send_control(self._pub, [GOSSIP_TOPIC, data], "gossip broadcast")

    def _gossip_send(self, node: NodeId, data: bytes) -> bool:
        if self._closed:
            return False
        dealer = self._dealer_sync.get(node)
        if dealer is None:
            self._stats["control_dropped_unknown"] += 1
            log.debug("no route to %s for a gossip message", node)
            return False
        err = _try_send_now(dealer, [KIND_GOSSIP, self._node_b, node.encode(), data])
        if err is not None:
            self._stats["control_dropped_hwm"] += 1
            self._rlog.log(logging.WARNING, "control", "dropped a gossip message to %s: %s", node, _why(err))
            return False
        return True

    def _connect(self, node: NodeId, addr: Addr) -> None:
        if self._closed:
            return
        pub, router = addr.get("pub"), addr.get("router")
        if not pub or not router or pub == self._endpoints["pub"] or router == self._endpoints["router"]:
            self._bad("addr", "member %s has an unusable address %r", node, addr)
            return
        key = addr.get("key")
        if self.curve is not None:
            if not key or key.encode() not in self._allow.keys:
                # a member vouched for by another node that we do not trust (yet): no
                # connection, so it cannot hear us and we never hear it; a reload that
                # allows its key connects then
                self._refused_peers[node] = dict(addr)
                self._peer_key_refused(node, key, router)
                return
            self._key_at[router] = key
        self._refused_peers.pop(node, None)
        self._disconnect(node)
        dealer = self._socket(zmq.DEALER)
        try:
            self._connect_to(dealer, router, key)
            refs = self._pub_refs.get(pub)
            if refs is not None and self._pub_keys.get(pub) != key:
                # a new node (new key) took over this address: the old connection cannot work
                with contextlib.suppress(zmq.ZMQError):
                    self._sub.disconnect(pub)
                refs = None
            if refs is None:
                self._connect_to(self._sub, pub, key)
                refs = self._pub_refs[pub] = set()
                if key:
                    self._pub_keys[pub] = key
        except (zmq.ZMQError, ValueError) as exc:
            self._all.remove(dealer)
            dealer.close(linger=0)
            self._bad("addr", "member %s has an unusable address %r: %s", node, addr, exc)
            return
        refs.add(node)
        self._peer_pub[node] = pub
        self._dealers[node] = dealer
        if key:
            self._member_keys[node] = key
        if self.curve is not None:
            self._watch_dealer(node, dealer)
        # Member DEALERs only ever send, so they are driven through a plain shadow socket:
        # no Future per message. (Never do this on a socket something also receives on.)
        sync = self._dealer_sync[node] = zmq.Socket.shadow(dealer.underlying)
        if self._driver is not None:
            # first-hand news of us: the member connects back now, not at the next beat
            hello = self._driver.hello()
            self._send_control_now(sync, [KIND_GOSSIP, self._node_b, node.encode(), hello], f"hello to {node}")

    def _disconnect(self, node: NodeId) -> None:
        self._member_keys.pop(node, None)
        self._refused_by.pop(node.encode(), None)  # any new connection to it is made afresh
        retry = self._refused_retry.pop(node, None)
        if retry is not None:
            retry.cancel()
        self._refused_delay.pop(node, None)
        self._dealer_sync.pop(node, None)
        self._unwatch_dealer(node)
        dealer = self._dealers.pop(node, None)
        if dealer is not None:
            self._all.remove(dealer)
            dealer.close(linger=0)
        pub = self._peer_pub.pop(node, None)
        if pub is not None:
            refs = self._pub_refs.get(pub)
            if refs is not None:
                refs.discard(node)
                if not refs:  # a restarted node may reuse the address: disconnect only the last user
                    del self._pub_refs[pub]
                    self._pub_keys.pop(pub, None)
                    try:
                        self._sub.disconnect(pub)
                    except zmq.ZMQError:
                        pass
        for conf in self._tokens.values():
            conf.event.set()  # subscribe() stops waiting for a member that is gone
        for _, conf in self._join_tokens.values():
            conf.event.set()

    def _gossip_in(self, data: bytes) -> None:
        driver = self._driver
        if driver is None or self._closed:
            return
        if not driver.receive(data):  # malformed: the driver counted bad_gossip and logged it
            self._stats["bad_messages"] += 1

    # ------------------------------------------------------------------ CURVE: who gets in
    @property
    def allowed_keys(self) -> frozenset[bytes]:
        """The public keys (Z85 bytes) this node admits right now (empty without CURVE)."""
        return self._allow.keys

    async def reload_allowed(self, allowed: AllowedLike | None = None) -> AllowChange:
        """Apply a new allow list now: re-read the allow directory, or take ``allowed`` (keys or a directory).

        A key added is admitted from the next handshake on (a refused node that keeps
        probing gets in then; members we refused to connect to are connected now). A
        key removed is refused from the next handshake on, and its existing connections
        are dropped before this returns: members holding it are evicted (disconnected and
        dropped from membership and presence at once, as if they had left), and, if any
        connection was admitted with it since the listeners were last re-created, the ROUTER
        and XPUB are unbound and bound again on the same endpoints so that every inbound
        connection re-authenticates (peers still allowed reconnect within ~100 ms; what was
        in flight to this node over those connections may be lost, as on any reconnect).

        Raises :class:`~superline_zmq.errors.CurveKeyError` (nothing changed) if the new
        list cannot be read, and ``RuntimeError`` without CURVE or if a listener cannot be
        bound again.
        """
        if self.curve is None:
            raise RuntimeError("this adapter runs without CURVE: there is no allow list to reload")
        source = allowed if allowed is not None else self._allow_dir
        if source is None:
            raise CurveKeyError("this node's allow list is a fixed collection of keys: pass the new keys")
        keys, directory = resolve_allowed(source)
        old = self._allow.keys
        added, removed = keys - old, old - keys
        self._allow.keys = keys  # ZAP decides with the new list from the next handshake on
        self._allow_dir = directory
        self._stats["allow_reloads"] += 1
        evicted: list[NodeId] = []
        rebound = False
        if removed and not self._closed:
            gone = {k.decode() for k in removed}
            self._key_at = {ep: k for ep, k in self._key_at.items() if k not in gone}
            for node, key in list(self._member_keys.items()):
                if key in gone:
                    evicted.append(node)
                    addr = self._peer_addr(node)
                    if addr is not None:
                        self._evicted[node] = addr
                    self._disconnect(node)
                    if self._driver is not None:
                        self._driver.evict(node)
            if removed & self._allow.admitted:
                await self._rebind()
                rebound = True
        if added and not self._closed:
            members = self._driver.members() if self._driver is not None else {}
            for node, addr in list(self._refused_peers.items()):
                key = addr.get("key", "")
                if key.encode() in keys and node in members:
                    self._connect(node, addr)
            for node, addr in list(self._evicted.items()):
                if addr.get("key", "").encode() in keys and self._driver is not None:
                    # trusted again: say hello, so it knows to reconnect and introduce itself
                    del self._evicted[node]
                    self._probe(addr, self._driver.hello())
        change = AllowChange(
            added=frozenset(fingerprint(k) for k in added),
            removed=frozenset(fingerprint(k) for k in removed),
            evicted=tuple(evicted),
            rebound=rebound,
            allowed=len(keys),
        )
        log.info(
            "node %s: allow list reloaded: %d key(s) allowed, added %s, removed %s%s%s",
            self.node,
            len(keys),
            sorted(change.added) or "none",
            sorted(change.removed) or "none",
            f", evicted {', '.join(evicted)}" if evicted else "",
            "; listeners re-created so every peer re-authenticates" if rebound else "",
        )
        return change

    async def _rebind(self) -> None:
        """Unbind and bind again the ROUTER and the XPUB: libzmq closes every connection accepted
        on an endpoint when it is unbound, so each peer reconnects and goes through ZAP again."""
        self._allow.admitted.clear()  # from now on it lists what the new connections were admitted with
        self._stats["listener_rebinds"] += 1
        loop = asyncio.get_running_loop()
        for sock, endpoint in ((self._router, self._bound["router"]), (self._pub, self._bound["pub"])):
            sock.unbind(endpoint)
            deadline = loop.time() + 5.0
            while True:
                try:
                    sock.bind(endpoint)
                    break
                except zmq.ZMQError as exc:
                    # the old listener is closed by libzmq's I/O thread: EADDRINUSE for a moment
                    if exc.errno != zmq.EADDRINUSE or loop.time() > deadline:
                        log.error("node %s lost its listener %s: %s", self.node, endpoint, exc)
                        raise RuntimeError(f"could not bind {endpoint} again: {exc}") from exc
                    await asyncio.sleep(0.01)

    def _on_zap_refused(self, domain: str, key: bytes, address: str) -> None:
        """ZAP refused a CURVE handshake: the client key is not allowed."""
        self._stats["auth_refused"] += 1
        self._rlog.log(
            logging.WARNING,
            "auth_refused",
            "refused a node with key %s from %s on the %s: its public key is not in the allow list",
            fingerprint(key),
            address or "an unknown address",
            "router" if domain == ROUTER_DOMAIN else "pub socket",
        )

    def _peer_key_refused(self, node: NodeId | None, key: str | None, endpoint: str) -> None:
        self._stats["peer_key_refused"] += 1
        self._rlog.log(
            logging.WARNING,
            "peer_key_refused",
            "not connecting to %s at %s: %s",
            node or "a forgotten peer",
            endpoint,
            f"its key {fingerprint(key)} is not in the allow list" if key else "it has no CURVE key",
        )

    async def _monitor_loop(self, monitor: zmq.asyncio.Socket, what: str) -> None:
        """Count and log the handshakes a listening socket failed (ZAP refusals are counted by ZAP),
        and, on the SUB, the members that refused our key."""
        while not monitor.closed:
            try:
                event = parse_monitor_message(await monitor.recv_multipart())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if monitor.closed:
                    return
                self._rlog.log(logging.ERROR, "monitor", "reading the %s monitor failed: %r", what, exc)
                await asyncio.sleep(0.01)
                continue
            if what == "sub":
                endpoint = event["endpoint"]
                self._on_refused_by(endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint))
            elif what.startswith("dealer:"):
                self._on_dealer_refused(NodeId(what[len("dealer:") :]))
            else:
                self._on_handshake_failed(int(event["event"]), int(event["value"]), what)

    def _on_refused_by(self, pub: str) -> None:
        """A member's PUB refused our key. libzmq never retries a connection ZAP refused, so the
        member's connections (this one and, refused by the same list, our DEALER to its ROUTER)
        are dead until we make new ones: that happens as soon as the member calls us (it only
        connects to nodes whose key it allows, so then it admits ours)."""
        nodes = sorted(self._pub_refs.get(pub, ()))
        self._stats["refused_by_peer"] += 1
        self._rlog.log(
            logging.WARNING,
            "refused_by",
            "%s at %s refused this node's key %s: it is not in that node's allow list (yet)",
            ", ".join(nodes) or "a node",
            pub,
            self.curve.fingerprint if self.curve is not None else "?",
        )
        for node in nodes:
            self._refused_by[node.encode()] = node
            self._schedule_refused_retry(node)

    def _on_dealer_refused(self, node: NodeId) -> None:
        """``node``'s ROUTER refused our key: reconnect to it when it calls us (as for the SUB)."""
        if node not in self._dealers or node.encode() in self._refused_by:
            return
        self._stats["refused_by_peer"] += 1
        self._rlog.log(
            logging.WARNING,
            "refused_by",
            "%s refused this node's key %s: it is not in that node's allow list (yet)",
            node,
            self.curve.fingerprint if self.curve is not None else "?",
        )
        self._refused_by[node.encode()] = node
        self._schedule_refused_retry(node)

    def _retry_refused(self, node: NodeId) -> None:
        """``node`` called us after refusing our key: it admits us now, so connect to it afresh."""
        addr = self._peer_addr(node)
        if addr is not None and not self._closed:
            log.info("node %s: %s admits this node now; reconnecting to it", self.node, node)
            self._connect(node, addr)  # forgets any retry scheduled: admitted

    def _schedule_refused_retry(self, node: NodeId) -> None:
        """Reconnect to a member that refused our key on our own, after a backoff (the
        re-probing one: ``reprobe_initial`` doubling to ``reprobe_max``, jittered), in case
        it admits us again before it has anything to tell us: until then its beats cannot
        reach us and it looks dead here. Refused again, the next try waits longer."""
        if node in self._refused_retry or self._closed:
            return
        timing = self.timing
        delay = self._refused_delay.get(node, timing.reprobe_initial)
        self._refused_delay[node] = min(2 * delay, timing.reprobe_max)
        loop = asyncio.get_running_loop()
        self._refused_retry[node] = loop.call_later(delay * random.uniform(0.8, 1.2), self._refused_retry_due, node)

    def _refused_retry_due(self, node: NodeId) -> None:
        self._refused_retry.pop(node, None)
        if self._closed or self._refused_by.pop(node.encode(), None) is None:
            return  # it called us meanwhile (reconnected), or it is gone
        delay = self._refused_delay.get(node)
        self._stats["refused_retries"] += 1
        self._retry_refused(node)
        if delay is not None:
            self._refused_delay[node] = delay  # kept across the reconnect, in case it refuses again

    def _peer_addr(self, node: NodeId) -> Addr | None:
        driver = self._driver
        m = driver.gossip.membership.get(node) if driver is not None else None
        return dict(m.addr) if m is not None and m.addr is not None else None

    def _on_handshake_failed(self, event: int, value: int, what: str) -> None:
        endpoint = self._endpoints["router" if what == "router" else "pub"]
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            self._stats["auth_refused"] += 1
            self._rlog.log(
                logging.WARNING,
                "auth_plain",
                "refused a peer speaking plain ZMTP (no CURVE) on %s (key: none; its address is not reported)",
                endpoint,
            )
            return
        self._stats["handshake_failed"] += 1
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # measured: about a fifth of plain-ZMTP peers notice the mismatch first and hang up,
            # and a CURVE peer that gives up mid-handshake looks exactly the same
            why = (
                f"the peer hung up during the handshake ({_errno_name(value)}): a plain-ZMTP peer that noticed "
                "first, or a node that gave up waiting"
            )
        else:
            why = (
                f"{_protocol_error(value)}: a peer that does not hold this node's public key (a node probing a "
                "seed tries every allowed key), or not ZeroMQ at all"
            )
        self._rlog.log(logging.INFO, "handshake_failed", "a CURVE handshake on %s failed: %s", endpoint, why)

    # ------------------------------------------------------------------ receiving
    async def _recv_loop(self, sock: zmq.asyncio.Socket, handle: Callable[[list[bytes]], None], what: str) -> None:
        # After each awaited receive, drain what is already queued through a plain shadow
        # socket: pyzmq's asyncio path costs a Future per message, about half the relay's
        # CPU under load. Draining until EAGAIN keeps the edge-triggered FD armed.
        sync: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        n = 0
        while not sock.closed:
            try:
                frames = await sock.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as exc:
                if sock.closed or exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                self._rlog.log(logging.ERROR, f"recv_{what}", "receiving on the %s socket failed: %r", what, exc)
                await asyncio.sleep(0.01)
                continue
            except Exception as exc:
                self._rlog.log(logging.ERROR, f"recv_{what}", "receiving on the %s socket failed: %r", what, exc)
                await asyncio.sleep(0.01)
                continue
            while True:
                try:
                    handle(frames)
                except Exception as exc:
                    self._stats["handler_errors"] += 1
                    self._rlog.log(logging.ERROR, f"handle_{what}", "handling a %s message failed: %r", what, exc)
                n += 1
                if n % _BATCH == 0:
                    await asyncio.sleep(0)  # a busy socket must not starve the loop
                    break
                if sock.closed:
                    return
                try:
                    frames = sync.recv_multipart(zmq.NOBLOCK)
                except zmq.ZMQError:  # EAGAIN: drained (or closing; the outer loop sees it)
                    break

    def _on_sub_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._bad("sub", "dropped a %d-frame message on the subscriber", len(frames))
            return
        topic, body = frames
        if topic == GOSSIP_TOPIC:
            self._gossip_in(body)
            return
        if _is_token(topic):
            conf = self._tokens.get(topic)
            if conf is None:
                return  # the marker of a subscribe() that is already done
            try:
                member = NodeId(body.decode())
            except UnicodeDecodeError:
                self._bad("sub", "dropped a subscription marker with an undecodable node id")
                return
            conf.got.add(member)
            conf.event.set()
            return
        if not topic.endswith(b"\0"):
            self._bad("sub", "dropped a message on an unknown topic %r", topic[:64])
            return
        try:
            channel = topic[:-1].decode()
        except UnicodeDecodeError:
            self._bad("sub", "dropped a publication with an undecodable channel %r", topic[:64])
            return
        on_channel = self._on_channel
        if channel not in self._channels or on_channel is None:
            self._stats["channel_not_held"] += 1  # in flight when we unsubscribed
            return
        self._stats["delivered"] += 1
        on_channel(channel, body)

    def _on_router_message(self, frames: list[bytes]) -> None:
        if len(frames) != 5:
            self._bad("router", "dropped a %d-frame direct message", len(frames) - 1)
            return
        _, kind, sender, target, payload = frames
        if self._evicted and sender.decode(errors="replace") in self._evicted:
            # sent before its key was removed and read after (reload_allowed awaits the
            # listeners' rebind): a late hello must not bring an evicted node back
            self._stats["evicted_dropped"] += 1
            return
        if self._refused_by:
            refused = self._refused_by.pop(sender, None)
            if refused is not None:
                self._retry_refused(refused)
                if self._driver is not None:
                    # Its beats could not reach us while it refused our SUB, so it may be dead
                    # here by now; this message is first-hand news that it is not, and what we
                    # send back (the answer to a request it relays) must not be dropped as
                    # going to a dead node while the new SUB waits for its next beat.
                    self._driver.heard_from(refused)
        if kind == KIND_GOSSIP:
            if target and target != self._node_b:
                self._misrouted(target)
                return
            self._gossip_in(payload)
            return
        if kind != KIND_DATA and kind != KIND_SYNC:
            self._bad("router", "dropped a direct message of unknown kind %r", kind[:16])
            return
        if target != self._node_b:
            self._misrouted(target)
            return
        try:
            node = sender.decode()
        except UnicodeDecodeError:
            node = ""
        if not node:
            self._bad("router", "dropped a direct message with a bad sender %r", sender[:64])
            return
        if kind == KIND_DATA:
            self._deliver_direct(NodeId(node), payload)
        else:
            self._on_sync_request(NodeId(node), payload)

    def _on_sync_request(self, sender: NodeId, token: bytes) -> None:
        """A joining member asks us to show it our subscriptions: subscribe its token until it answers."""
        if not _is_token(token):
            self._bad("router", "dropped a sync request with a malformed token")
            return
        if sender not in self._peer_pub or token in self._tokens:
            return  # not connected to it yet (it asks again), or a duplicate
        conf = _Confirm()
        self._tokens[token] = conf
        self._sub.setsockopt(zmq.SUBSCRIBE, token)
        task = asyncio.get_running_loop().create_task(self._hold_token(token, sender, conf))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _hold_token(self, token: bytes, member: NodeId, conf: _Confirm) -> None:
        try:
            await self._await_members({member}, conf, lambda waiting: None)
        finally:
            self._tokens.pop(token, None)
            if not self._closed:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, token)

    def _on_xpub_message(self, frames: list[bytes]) -> None:
        if len(frames) != 1 or not frames[0] or frames[0][0] not in (0, 1):
            self._bad("xpub", "dropped an upstream message that is not a subscription")
            return
        msg = frames[0]
        topic = msg[1:]
        if msg[0] == 1 and _is_token(topic):
            # every subscription the member sent before the token, on this connection, is
            # in force here now: tell it (a marker), and note it if we asked (join sync)
            join = self._join_tokens.get(topic)
            if join is not None:
                join[1].got.add(join[0])
                join[1].event.set()
            self._send_control(self._pub, [topic, self._node_b], "subscription marker")

    def _misrouted(self, target: bytes) -> None:
        self._stats["direct_misrouted"] += 1
        self._rlog.log(
            logging.WARNING,
            "misrouted",
            "dropped a direct message for node %r, not this node %s (it reused a departed node's address?)",
            target[:64],
            self.node,
        )

    def _bad(self, key: str, msg: str, *args: object) -> None:
        self._stats["bad_messages"] += 1
        self._rlog.log(logging.WARNING, f"bad_{key}", msg, *args)


def _errno_name(value: int) -> str:
    return errno.errorcode.get(value, f"errno {value}")


@functools.cache
def _protocol_error(value: int) -> str:
    """libzmq's name of a ZMTP protocol error code (monitor events), e.g. ``ZMTP_CRYPTOGRAPHIC``."""
    for name in dir(zmq):
        if name.startswith("PROTOCOL_ERROR_") and getattr(zmq, name) == value:
            return name.removeprefix("PROTOCOL_ERROR_")
    return f"error {value:#x}"


def _why(err: BaseException) -> str:
    return "high-water mark reached" if isinstance(err, zmq.Again) else repr(err)


def _try_send_now(sock: zmq.Socket[bytes], frames: list[bytes]) -> zmq.ZMQError | None:
    """Send on a plain socket without blocking: None if ZeroMQ took it, else why not."""
    try:
        sock.send_multipart(frames, flags=zmq.DONTWAIT)
    except zmq.ZMQError as exc:  # zmq.Again: the queue is at its high-water mark
        return exc
    return None


class _ZmqLink:
    """The gossip driver's link: the adapter's XPUB, member DEALERs and connections."""

    def __init__(self, adapter: ZeroMQAdapter) -> None:
        self._adapter = adapter

    def broadcast(self, data: bytes) -> None:
        self._adapter._gossip_broadcast(data)

    def send(self, node: NodeId, data: bytes) -> bool:
        return self._adapter._gossip_send(node, data)

    def connect(self, node: NodeId, addr: Addr) -> None:
        self._adapter._connect(node, addr)

    def disconnect(self, node: NodeId) -> None:
        self._adapter._disconnect(node)

    def probe(self, node: NodeId | None, addr: Addr, data: bytes) -> None:
        self._adapter._probe(addr, data)
