"""The bulk RESP2 reader and the command packing of the hot paths (pure, no server)."""

from __future__ import annotations

import pytest
from redis.exceptions import InvalidResponse, ResponseError
from superline_zmq_redis import _resp

REPLIES = [
    (b"*3\r\n$7\r\nmessage\r\n$4\r\np:ch\r\n$5\r\n\x00\r\n\xff!\r\n", [b"message", b"p:ch", b"\x00\r\n\xff!"]),
    (b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n", [b"message", b"c", b""]),
    (b"*3\r\n$9\r\nsubscribe\r\n$3\r\nabc\r\n:2\r\n", [b"subscribe", b"abc", 2]),
    (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", [b"pong", b""]),
    (b":-12\r\n", -12),
    (b"+OK\r\n", b"OK"),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*2\r\n*1\r\n:1\r\n$2\r\nab\r\n", [[1], b"ab"]),
]


def test_every_reply_kind_parses() -> None:
    for raw, value in REPLIES:
        got, end = _resp.parse(bytearray(raw), 0)
        assert got == value and end == len(raw), raw


def test_an_error_reply_comes_back_as_an_exception_instance() -> None:
    got, end = _resp.parse(bytearray(b"-NOSCRIPT No matching script\r\n"), 0)
    assert isinstance(got, ResponseError) and "NOSCRIPT" in str(got) and end == 30


def test_replies_split_at_every_byte_boundary() -> None:
    stream = b"".join(raw for raw, _ in REPLIES) + b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$100000\r\n" + b"x" * 100_000
    stream += b"\r\n"
    expected = [v for _, v in REPLIES] + [[b"message", b"c", b"x" * 100_000]]
    for cut in [*range(len(stream) - 100_010), len(stream) - 5, len(stream) - 1]:
        buf, pos, out = bytearray(), 0, []
        for piece in (stream[:cut], stream[cut:]):
            buf += piece
            while True:
                value, new = _resp.parse(buf, pos)
                if value is _resp.INCOMPLETE:
                    assert new == pos
                    break
                out.append(value)
                pos = new
        assert out == expected, cut


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(InvalidResponse):
        _resp.parse(bytearray(b"?what\r\n"), 0)
    with pytest.raises(InvalidResponse):
        _resp.parse(bytearray(b"*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n"), 0)


def test_packing() -> None:
    assert _resp.command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert _resp.command(b"EVALSHA", b"ab", b"0") == b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n"
    head, data, tail = _resp.publish(b"ch", b"\r\n")
    assert head + data + tail == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\n\r\n\r\n"
