"""The Origin allow list and the connection caps as plain objects (no sockets)."""

from __future__ import annotations

import pytest

from superline_zmq.limits import (
    OVER_PER_IP,
    OVER_TOTAL,
    ConnectionLimits,
    OriginPolicy,
    host_of,
    normalize_origin,
)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:80/", "http://localhost"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("NULL", "null"),
    ],
)
def test_origins_are_compared_as_browsers_serialize_them(given: str, normal: str) -> None:
    assert normalize_origin(given) == normal


@pytest.mark.parametrize(
    "bad", ["example.com", "https://", "https://example.com/app", "https://example.com?x=1", "https://u:p@example.com"]
)
def test_a_configured_origin_that_is_no_origin_fails_at_once(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        OriginPolicy([bad])


def test_origin_policy() -> None:
    anyone = OriginPolicy(None)
    assert anyone.allows("https://evil.example") and anyone.allows(None)
    policy = OriginPolicy(["https://app.example.com", "http://localhost:8080"])
    assert policy.allows("https://app.example.com") and policy.allows("https://APP.example.com:443")
    assert policy.allows("http://localhost:8080")
    assert policy.allows(None)  # no Origin header: not a browser
    for origin in ("https://evil.example", "http://app.example.com", "http://localhost:8081", "null", "%%garbage"):
        assert not policy.allows(origin), origin
    assert OriginPolicy(["null"]).allows("null")
    assert not OriginPolicy([]).allows("https://app.example.com")
    with pytest.raises(TypeError, match="not one string"):
        OriginPolicy("https://app.example.com")


def test_connection_caps_count_in_and_out() -> None:
    limits = ConnectionLimits(max_connections=3, max_connections_per_ip=2)
    assert limits.check("10.0.0.1:5000", 0) is None
    limits.opened("10.0.0.1:5000")
    limits.opened("10.0.0.1:5001")
    assert limits.per_ip("10.0.0.1:1") == 2
    assert limits.check("10.0.0.1:5002", 2) == OVER_PER_IP
    assert limits.check("[::1]:5000", 2) is None
    assert limits.check("[::1]:5000", 3) == OVER_TOTAL
    limits.closed("10.0.0.1:5000")
    assert limits.check("10.0.0.1:5002", 1) is None
    limits.closed("10.0.0.1:5001")
    limits.closed("10.0.0.1:5001")  # an extra close never goes negative
    assert limits.per_ip("10.0.0.1:1") == 0 and limits._per_ip == {}
    off = ConnectionLimits()
    off.opened("10.0.0.1:1")
    assert off.check("10.0.0.1:1", 10**6) is None and off.per_ip("10.0.0.1:1") == 0  # nothing kept
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            ConnectionLimits(max_connections=bad)  # type: ignore[arg-type]


def test_host_of() -> None:
    assert host_of("10.0.0.1:80") == "10.0.0.1"
    assert host_of("[::1]:80") == "::1"
    assert host_of("unix-socket") == "unix-socket"
