"""Credentials and TLS come from the URL, exactly as redis-py reads it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from rd_helpers import eventually
from rd_server import RedisServer, free_port
from redis.exceptions import AuthenticationError, ConnectionError
from superline_zmq_redis import RedisAdapter, _resp, redis_adapter

from superline_zmq.ids import make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor


async def _round_trip(url: str, prefix: str) -> None:
    """Two adapters on ``url``: a publish, a direct message and a presence write get through."""
    got: list[tuple[str, bytes]] = []
    direct: list[bytes] = []
    a, b = await redis_adapter(url, prefix=prefix), await redis_adapter(url, prefix=prefix)
    try:
        na, nb = new_node_id(), new_node_id()
        await a.start(na, lambda c, d: None, lambda s, d: None)
        await b.start(nb, lambda c, d: got.append((c, d)), lambda s, d: direct.append(d))
        await b.subscribe("r:x")
        a.publish("r:x", b"hello")
        await eventually(lambda: got == [("r:x", b"hello")])
        await eventually(lambda: a.is_alive(nb))
        assert a.send(nb, b"direct")
        await eventually(lambda: direct == [b"direct"])
        assert a.presence is not None and b.presence is not None
        a.presence.put(ConnDescriptor(id=make_conn_id(na, 1), role="user", node_id=na, connected_at=1.0, user_id="u"))
        await eventually(lambda: b.presence.is_online("u"))  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()


async def test_bulk_reads_are_on(redis_server: RedisServer, prefix: str) -> None:
    """The fast path reads redis-py's private stream reader; this fails if a redis-py release hides it.

    The adapter still works then (``test_without_bulk_reads``), only slower: a failure here
    means "look at _resp.Replies before declaring this redis-py supported", not a broken adapter.
    """
    import redis

    a = await redis_adapter(redis_server.url, prefix=prefix)
    try:
        await a.start(new_node_id(), lambda c, d: None, lambda n, d: None)
        stats = a.statistics()
        assert stats["bulk_reads"] == 1, f"redis-py {redis.__version__}: bulk RESP reads are off ({stats})"
    finally:
        await a.close()


async def test_without_bulk_reads(redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for a redis-py whose connections hide their stream reader: redis-py parses every reply."""
    monkeypatch.setattr(_resp.Replies, "bulk", property(lambda self: False))
    await _round_trip(redis_server.url, prefix)


async def test_password_in_the_url(make_redis: Callable[..., RedisServer], prefix: str) -> None:
    redis = make_redis(password="s3cret pass")
    await _round_trip(f"redis://:s3cret%20pass@127.0.0.1:{redis.port}/0", prefix)


async def test_acl_user_in_the_url(make_redis: Callable[..., RedisServer], prefix: str) -> None:
    acl = ["--user", "default", "off", "--user", "app", "on", ">pw", "~*", "&*", "+@all"]
    redis = make_redis(extra=acl, ping_auth=("app", "pw"))
    await _round_trip(f"redis://app:pw@127.0.0.1:{redis.port}/0", prefix)
    with pytest.raises(AuthenticationError):
        await redis_adapter(f"redis://app:wrong@127.0.0.1:{redis.port}/0", prefix=prefix)


async def test_wrong_or_missing_password_fails_at_once(make_redis: Callable[..., RedisServer], prefix: str) -> None:
    redis = make_redis(password="right")
    with pytest.raises(AuthenticationError):
        await redis_adapter(f"redis://:wrong@127.0.0.1:{redis.port}/0", prefix=prefix)
    with pytest.raises(AuthenticationError):  # NOAUTH
        await redis_adapter(f"redis://127.0.0.1:{redis.port}/0", prefix=prefix)


async def test_unreachable_redis_fails_at_once(prefix: str) -> None:
    with pytest.raises((ConnectionError, TimeoutError)):
        await redis_adapter(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, command_timeout=2.0)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (apt-get install openssl): cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


async def test_tls_url(make_redis: Callable[..., RedisServer], certificate: tuple[str, str], prefix: str) -> None:
    redis = make_redis(tls=certificate, password="tlspw")
    cert = Path(certificate[0])
    await _round_trip(f"rediss://:tlspw@127.0.0.1:{redis.port}/0?ssl_ca_certs={cert}", prefix)
    adapter = RedisAdapter(f"rediss://127.0.0.1:{redis.port}/0", prefix=prefix)
    assert adapter.url.startswith("rediss://")
    await adapter.close()
