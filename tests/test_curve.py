"""CURVE between nodes: keys and certificates, then real adapters on 127.0.0.1 admitting only allowed keys.

The adapter tests run several CURVE adapters in this process (each on its own ZeroMQ
context, each with its own ZAP handler) plus raw sockets playing intruders. Nothing
sleeps for correctness: every wait is :func:`helpers.eventually` with a deadline, and
"nothing arrived" is asserted after a marker sent later on the same path has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from helpers import eventually
from zmq.auth import create_certificates

from superline_zmq.adapter import Adapter
from superline_zmq.adapters.zeromq import ZeroMQAdapter, zeromq_adapter
from superline_zmq.curve import CurveConfig, fingerprint, parse_key, read_allow_dir, write_certificate
from superline_zmq.errors import CurveKeyError, SuperlineError
from superline_zmq.ids import NodeId, new_node_id
from superline_zmq.testing.conformance import AdapterConformance, Node

FAST: dict[str, Any] = {"heartbeat_interval": 0.05, "ttl": 0.5}
LOCAL = "tcp://127.0.0.1:0"


def keypair() -> tuple[bytes, bytes]:
    return zmq.curve_keypair()


# ---------------------------------------------------------------- keys and certificates
def test_a_key_pair_and_an_allow_list_of_keys() -> None:
    public, secret = keypair()
    other, _ = keypair()
    config = CurveConfig(public.decode(), secret, [other, other.decode(), public])
    assert config.public_key == public and config.secret_key == secret
    assert config.allowed == {other, public} and config.allow_dir is None
    assert config.fingerprint == public.decode()[:8] == fingerprint(public) == fingerprint(public.decode())
    assert secret.decode() not in repr(config) and public.decode() in repr(config)
    with pytest.raises(CurveKeyError, match="fixed list"):
        config.read_allowed()
    assert config.read_allowed([other]) == (frozenset({other}), None)


@pytest.mark.parametrize(
    ("public", "secret", "message"),
    [
        (b"short", None, "must be 40 Z85 characters.*got 5"),
        (b"\x01" * 32, None, "raw 32-byte key"),
        (b"~" * 40, None, "not valid Z85"),
        (1234, None, "as str or bytes, got int"),
        (None, b"short", "secret_key must be 40 Z85 characters.*, got 5$"),
        ("other", None, "is not the public half of secret_key"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_error(public: Any, secret: Any, message: str) -> None:
    good_public, good_secret = keypair()
    if public == "other":
        public = keypair()[0]
    with pytest.raises(CurveKeyError, match=message) as info:
        CurveConfig(good_public if public is None else public, good_secret if secret is None else secret)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SuperlineError)
    assert good_secret.decode() not in str(info.value)


def test_allowed_is_keys_or_a_directory_never_a_single_key() -> None:
    public, secret = keypair()
    with pytest.raises(CurveKeyError, match="not a single key"):
        CurveConfig(public, secret, public)
    with pytest.raises(CurveKeyError, match=r"allowed\[1\]"):
        CurveConfig(public, secret, [public, b"nope"])
    with pytest.raises(CurveKeyError, match="does not exist"):
        CurveConfig(public, secret, "/nonexistent/allow")
    assert parse_key(f"  {public.decode()}\n", "k") == public


def test_from_files_reads_pyzmq_certificates(tmp_path: Path) -> None:
    certs, allow = tmp_path / "certs", tmp_path / "allow"
    certs.mkdir()
    allow.mkdir()
    mine_pub, mine_secret = create_certificates(certs, "mine")  # pyzmq's own writer
    peer_pub, _ = write_certificate("peer", certs)  # ours
    for f in (mine_pub, peer_pub):
        (allow / Path(f).name).write_bytes(Path(f).read_bytes())
    (allow / "notes.txt").write_text("ignored: not a .key file")
    config = CurveConfig.from_files(mine_secret, allow)
    assert config.allow_dir == allow and len(config.allowed) == 2
    assert config.public_key in config.allowed
    assert "allow_dir=" in repr(config) and config.secret_key.decode() not in repr(config)
    # the public certificate alone is no identity
    with pytest.raises(CurveKeyError, match="holds no secret key"):
        CurveConfig.from_files(mine_pub, allow)
    with pytest.raises(CurveKeyError, match="cannot read the certificate"):
        CurveConfig.from_files(tmp_path / "missing.key_secret", allow)
    # a re-read sees a key added and a key removed; a broken file fails the whole read
    (allow / "peer.key").unlink()
    assert read_allow_dir(allow) == {config.public_key}
    (allow / "broken.key").write_text("curve\n    nothing here\n")
    with pytest.raises(CurveKeyError, match=r"broken\.key"):
        config.read_allowed()


def test_write_certificate_keeps_the_secret_private_and_never_overwrites(tmp_path: Path) -> None:
    public, secret = write_certificate("node-a", tmp_path / "keys")
    assert (public.name, secret.name) == ("node-a.key", "node-a.key_secret")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    config = CurveConfig.from_files(secret, tmp_path / "keys")
    assert config.allowed == {config.public_key}
    with pytest.raises(FileExistsError):
        write_certificate("node-a", tmp_path / "keys")
    for bad in ("", "../x", "a/b", ".."):
        with pytest.raises(ValueError, match="plain file name"):
            write_certificate(bad, tmp_path)


# ---------------------------------------------------------------- the conformance suite over CURVE
class TestZeroMQCurveAdapter(AdapterConformance):
    """The Adapter Protocol's semantics hold unchanged with every socket under CURVE."""

    def cluster_factory(self) -> Callable[[], Adapter]:
        pairs = [keypair() for _ in range(6)]
        allowed = [p for p, _ in pairs]
        first: list[ZeroMQAdapter] = []

        def make() -> Adapter:
            public, secret = pairs[len(first)]
            seeds = [first[0].endpoints["router"]] if first else []
            adapter = ZeroMQAdapter(
                LOCAL, seeds, heartbeat_interval=0.1, ttl=2.0, curve=CurveConfig(public, secret, allowed)
            )
            first.append(adapter)
            return adapter

        return make


# ---------------------------------------------------------------- adapters admitting only allowed keys
class Peer(Node):
    adapter: ZeroMQAdapter

    def stat(self, key: str) -> int:
        return self.adapter.statistics()[key]

    @property
    def router(self) -> str:
        return self.adapter.endpoints["router"]

    def live(self) -> set[NodeId]:
        return {n for n, alive in self.adapter.members().items() if alive}


MakePeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
def keys() -> list[tuple[bytes, bytes]]:
    """Six key pairs: 0..2 are the cluster's, 3 an intruder's, 4 and 5 spares."""
    return [keypair() for _ in range(6)]


@pytest.fixture
async def make_peer() -> AsyncIterator[MakePeer]:
    """``await make_peer(*seeds, curve=...)``: a started adapter (FAST gossip)."""
    adapters: list[ZeroMQAdapter] = []

    async def make(*seeds: str, curve: CurveConfig | None, **options: Any) -> Peer:
        adapter = await zeromq_adapter(LOCAL, list(seeds), curve=curve, **{**FAST, **options})
        adapters.append(adapter)
        peer = Peer(adapter, new_node_id())
        await adapter.start(peer.id, peer.on_channel, peer.on_direct)
        return peer

    yield make
    for adapter in adapters:
        await asyncio.wait_for(adapter.close(), 10)


def config(keys: list[tuple[bytes, bytes]], k: int, allowed: list[int]) -> CurveConfig:
    return CurveConfig(keys[k][0], keys[k][1], [keys[i][0] for i in allowed])


async def cluster_of_three(make_peer: MakePeer, keys: list[tuple[bytes, bytes]]) -> list[Peer]:
    a = await make_peer(curve=config(keys, 0, [0, 1, 2]))
    b = await make_peer(a.router, curve=config(keys, 1, [0, 1, 2]))
    c = await make_peer(b.router, curve=config(keys, 2, [0, 1, 2]))  # finds a through b's gossip
    peers = [a, b, c]
    for p in peers:
        await eventually(lambda p=p: p.live() == {q.id for q in peers} - {p.id}, message=f"{p.id} never saw all")
    return peers


async def test_curve_nodes_join_through_seeds_and_deliver(make_peer: MakePeer, keys: list[tuple[bytes, bytes]]) -> None:
    a, b, c = await cluster_of_three(make_peer, keys)
    await c.adapter.subscribe("r:x")
    a.adapter.publish("r:x", b"to the room")
    assert a.adapter.send(c.id, b"to c")
    await eventually(lambda: c.channel == [("r:x", b"to the room")] and c.direct == [(a.id, b"to c")])
    for p in (a, b, c):
        stats = p.adapter.statistics()
        assert stats["auth_refused"] == 0 and stats["peer_key_refused"] == 0
        assert stats["auth_admitted"] >= 2 and stats["allowed_keys"] == 3
    # seeds were probed with every allowed key before their own was known: the wrong
    # ones failed the handshake at the seed, which is not a refusal
    assert a.stat("handshake_failed") + b.stat("handshake_failed") >= 1


async def test_a_context_has_room_for_one_curve_node(keys: list[tuple[bytes, bytes]]) -> None:
    ctx = zmq.asyncio.Context()
    try:
        first = await zeromq_adapter(LOCAL, context=ctx, curve=config(keys, 0, [0]))
        with pytest.raises(ValueError, match="another ZAP handler"):
            await zeromq_adapter(LOCAL, context=ctx, curve=config(keys, 1, [0]))
        await first.close()
    finally:
        ctx.term()


async def test_a_plain_adapter_warns_at_start_and_a_curve_one_does_not(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="superline_zmq.zeromq")
    await make_peer(curve=None)
    warned = [r for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    caplog.clear()
    await make_peer(curve=config(keys, 0, [0]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("CURVE on" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="without CURVE"):
        await (await make_peer(curve=None)).adapter.reload_allowed([keys[0][0]])


async def test_an_unlisted_key_and_a_plain_node_stay_outside_and_are_counted(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="superline_zmq.zeromq")
    a, b, _ = await cluster_of_three(make_peer, keys)
    await a.adapter.subscribe("r:x")
    # the intruder knows the members' public keys (they are public) but its own is not listed
    intruder = await make_peer(a.router, curve=config(keys, 3, [0, 1, 2, 3]))
    plain = await make_peer(a.router, curve=None)

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

    await eventually(lambda: any("plain ZMTP" in m for m in refusals()), message=lambda: f"{refusals()}")
    await eventually(lambda: any(fingerprint(keys[3][0]) in m and "127.0.0.1" in m for m in refusals()))
    assert a.stat("auth_refused") >= 2
    assert intruder.adapter.members() == {} and plain.adapter.members() == {}
    for p in (intruder, plain):
        assert p.id not in a.adapter.members() and p.id not in b.adapter.members()
        assert not a.adapter.is_alive(p.id)
        assert not p.adapter.send(a.id, b"let me in")  # it knows no route
        await p.adapter.subscribe("r:x")
        p.adapter.publish("r:x", b"injected")
    # and it hears nothing: a marker published after the injections reaches a, theirs never did
    b.adapter.publish("r:x", b"marker")
    await eventually(lambda: ("r:x", b"marker") in a.channel)
    assert ("r:x", b"injected") not in a.channel and a.direct == []
    a.adapter.publish("r:x", b"secret")
    assert intruder.channel == [] and plain.channel == []
    assert a.stat("members") == 2  # still exactly the cluster


async def test_a_raw_plain_subscriber_gets_nothing_from_a_curve_publisher(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]]
) -> None:
    a = await make_peer(curve=config(keys, 0, [0]))
    ctx = zmq.asyncio.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(a.adapter.endpoints["pub"])
        # one attempt: libzmq reports it as a refusal, or (when the plain side hangs up first) as
        # a broken-off handshake
        await eventually(lambda: a.stat("auth_refused") + a.stat("handshake_failed") >= 1)
        a.adapter.publish("r:x", b"payload")
        assert await sub.poll(200) == 0  # a bounded wait for a negative, after the refusal was counted
        sub.close(linger=0)
    finally:
        ctx.term()


async def test_reload_admits_an_added_key_and_drops_a_removed_one_at_once(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]], tmp_path: Path
) -> None:
    a, b, c = await cluster_of_three(make_peer, keys)
    newcomer = await make_peer(a.router, curve=config(keys, 3, [0, 1, 2, 3]))
    await eventually(lambda: a.stat("auth_refused") >= 1)
    assert newcomer.id not in a.live()

    # added on every member: the newcomer's next hello gets in, and it becomes a full member
    for p in (a, b, c):
        change = await p.adapter.reload_allowed([keys[i][0] for i in (0, 1, 2, 3)])
        assert change.added == {fingerprint(keys[3][0])} and change.removed == frozenset()
        assert not change.rebound and change.allowed == 4
    everyone = {p.id for p in (a, b, c, newcomer)}
    for p in (a, b, c, newcomer):
        await eventually(lambda p=p: p.live() == everyone - {p.id}, message=f"{p.id} never saw the newcomer")

    # c's key is removed on a and b: c is dropped there before reload_allowed returns
    await a.adapter.subscribe("r:y")
    loop = asyncio.get_running_loop()
    for p in (a, b):
        t0 = loop.time()
        change = await p.adapter.reload_allowed([keys[i][0] for i in (0, 1, 3)])
        assert loop.time() - t0 < a.adapter.heartbeat_interval
        assert change.removed == {fingerprint(keys[2][0])} and change.evicted == (c.id,) and change.rebound
        assert c.id not in p.live() and not p.adapter.is_alive(c.id)
        assert p.adapter.presence is not None
        assert c.id not in [n.node_id for n in await p.adapter.presence.topology()]
    # the members still allowed reconnected to the re-created listeners and re-sent their
    # subscriptions (a confirmed subscribe says so: its token travels after them)
    await b.adapter.subscribe("r:sync")
    await a.adapter.subscribe("r:sync")
    # c's existing connections are gone: what it sends no longer arrives, even though it still
    # believes in a for a while (it learns nothing: nobody tells an evicted node)
    c.adapter.publish("r:y", b"from c")
    c.adapter.send(a.id, b"direct from c")
    b.adapter.publish("r:y", b"marker")
    await eventually(lambda: ("r:y", b"marker") in a.channel)
    assert ("r:y", b"from c") not in a.channel and (c.id, b"direct from c") not in a.direct
    await eventually(lambda: a.stat("auth_refused") >= 2)  # its reconnections were refused
    assert a.stat("listener_rebinds") == 1 and a.stat("allow_reloads") == 2
    # the others still reach a through the re-created listeners
    b.adapter.send(a.id, b"still here")
    await eventually(lambda: (b.id, b"still here") in a.direct)
    assert a.adapter.send(b.id, b"and back")
    await eventually(lambda: (a.id, b"and back") in b.direct)

    # a removal that no connection holds costs nothing: no rebind
    change = await a.adapter.reload_allowed([keys[i][0] for i in (0, 1, 3)])
    assert change.removed == frozenset() and not change.rebound
    # a list that cannot be read changes nothing
    with pytest.raises(CurveKeyError):
        await a.adapter.reload_allowed(tmp_path / "missing")
    assert a.stat("allowed_keys") == 3


async def test_reload_rereads_the_allow_directory(make_peer: MakePeer, tmp_path: Path) -> None:
    certs, allow = tmp_path / "certs", tmp_path / "allow"
    for name in ("a", "b"):
        public, _ = write_certificate(name, certs)
        (allow / public.name).parent.mkdir(exist_ok=True)
        (allow / public.name).write_bytes(public.read_bytes())
    a = await make_peer(curve=CurveConfig.from_files(certs / "a.key_secret", allow))
    b = await make_peer(a.router, curve=CurveConfig.from_files(certs / "b.key_secret", allow))
    await eventually(lambda: a.live() == {b.id} and b.live() == {a.id})
    (allow / "b.key").unlink()
    change = await a.adapter.reload_allowed()
    assert change.evicted == (b.id,) and a.live() == set()
    (allow / "b.key").write_bytes((certs / "b.key").read_bytes())
    change = await a.adapter.reload_allowed()
    assert change.added == {b.adapter.curve.fingerprint}  # type: ignore[union-attr]
    # b was refused on its reconnections; it forgets a, probes it again and is let back in
    await eventually(lambda: a.live() == {b.id} and b.live() == {a.id}, timeout=10)


async def test_a_node_started_before_every_member_allows_it_joins_them_all_once_they_do(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]]
) -> None:
    # a rollout done in the wrong order: the new node starts when only its seed lists it
    s = await make_peer(curve=config(keys, 0, [0, 1, 2]))
    m = await make_peer(s.router, curve=config(keys, 1, [0, 1]))
    await eventually(lambda: s.live() == {m.id} and m.live() == {s.id})
    n = await make_peer(s.router, curve=config(keys, 2, [0, 1, 2]))
    await eventually(lambda: s.live() == {m.id, n.id})
    # m refuses n's connections; n is told so (libzmq never retries them by itself)
    await eventually(lambda: n.stat("refused_by_peer") >= 1 and m.stat("auth_refused") >= 1)
    await eventually(lambda: m.stat("peer_key_refused") >= 1)  # and m will not connect to n
    assert n.id not in m.live()
    await m.adapter.reload_allowed([keys[i][0] for i in (0, 1, 2)])
    # m now connects to n; n, called by the member that refused it, reconnects to it
    await eventually(lambda: m.live() == {s.id, n.id} and n.live() == {s.id, m.id})
    await n.adapter.subscribe("r:z")
    await m.adapter.subscribe("r:z")
    m.adapter.publish("r:z", b"m to n")
    n.adapter.publish("r:z", b"n to m")
    await eventually(lambda: ("r:z", b"m to n") in n.channel and ("r:z", b"n to m") in m.channel)


async def test_nodes_sharing_one_identity_find_each_other(make_peer: MakePeer, keys: list[tuple[bytes, bytes]]) -> None:
    # superline-zmq cluster --curve-cert gives every node the same key pair: a seed's key is then our own
    a = await make_peer(curve=config(keys, 0, [0]))
    b = await make_peer(a.router, curve=config(keys, 0, [0]))
    await eventually(lambda: a.live() == {b.id} and b.live() == {a.id})
    assert a.adapter.send(b.id, b"same key")
    await eventually(lambda: b.direct == [(a.id, b"same key")])


async def test_a_refused_node_retries_on_its_own_with_backoff_and_late_hellos_do_not_readmit_it(
    make_peer: MakePeer, keys: list[tuple[bytes, bytes]]
) -> None:
    from superline_zmq import ClusterTiming
    from superline_zmq.gossip import Hello, encode

    timing = ClusterTiming(heartbeat_interval=0.05, ttl=0.5, reprobe_initial=0.1, reprobe_max=0.4)
    a = await make_peer(curve=config(keys, 0, [0, 1]), timing=timing)
    b = await make_peer(a.router, curve=config(keys, 1, [0, 1]), timing=timing)
    await eventually(lambda: a.live() == {b.id} and b.live() == {a.id})

    change = await a.adapter.reload_allowed([keys[0][0]])  # b's key removed at a: b is evicted
    assert change.evicted == (b.id,)
    # a hello b sent before the eviction and read after it does not bring b back
    a.adapter._on_router_message([b"id", b"g", b.id.encode(), a.id.encode(), encode(Hello(b.id, b.adapter.endpoints))])
    assert a.stat("evicted_dropped") == 1 and b.id not in a.live()
    # a refuses b from now on; b keeps trying on its own, ever more rarely, counted
    await eventually(lambda: b.stat("refused_retries") >= 3, 10.0)
    assert b.id not in a.live()

    await a.adapter.reload_allowed([keys[0][0], keys[1][0]])  # restored: b is a member again
    await eventually(lambda: a.live() == {b.id} and b.live() == {a.id}, 10.0)
    await b.adapter.subscribe("r:back")  # confirmed once b's new SUB is subscribed at a
    a.adapter.publish("r:back", b"welcome back")
    await eventually(lambda: ("r:back", b"welcome back") in b.channel)
