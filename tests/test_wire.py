"""superline.v1 frame codecs (pure: no sockets)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from msgspec import UNSET

from superline_zmq import JsonSerializer, MsgpackSerializer, wire
from superline_zmq.validation import issues, validation_error

JSON = JsonSerializer()
MSGPACK = MsgpackSerializer()
CLIENT_FRAMES = JSON.decoder(wire.ClientFrame)
SERVER_FRAMES = JSON.decoder(wire.ServerFrame)


class Point(msgspec.Struct):
    x: int
    y: int


class Poly(msgspec.Struct):
    pts: list[Point]


# ---------------------------------------------------------------- encoding (exact bytes)
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (wire.ReqOut(7, "send", {"a": 1}), b'{"t":"req","i":7,"m":"send","d":{"a":1}}'),
        (wire.ReqOut(1, "whoami"), b'{"t":"req","i":1,"m":"whoami","d":null}'),
        (wire.Sub(8, "prices"), b'{"t":"sub","i":8,"c":"prices"}'),
        (wire.Unsub("prices"), b'{"t":"unsub","c":"prices"}'),
        (wire.SResOut(3, {"ok": True}), b'{"t":"sres","i":3,"d":{"ok":true}}'),
        (
            wire.SErr(3, "NOT_FOUND", "No handler for confirm"),
            b'{"t":"serr","i":3,"code":"NOT_FOUND","m":"No handler for confirm"}',
        ),
        (wire.SErr(3, "X", "m", {"k": 1}), b'{"t":"serr","i":3,"code":"X","m":"m","d":{"k":1}}'),
        (wire.Ping(), b'{"t":"ping"}'),
        (wire.Pong(), b'{"t":"pong"}'),
        (wire.ResOut(7, {"id": "m-91"}), b'{"t":"res","i":7,"d":{"id":"m-91"}}'),
        (wire.ResOut(4, None), b'{"t":"res","i":4,"d":null}'),
        (
            wire.Err("FORBIDDEN", "not a member", 7, {"room": "lobby"}),
            b'{"t":"err","code":"FORBIDDEN","m":"not a member","i":7,"d":{"room":"lobby"}}',
        ),
        (wire.EvtOut("message", {"text": "hi"}), b'{"t":"evt","e":"message","d":{"text":"hi"}}'),
        (wire.PubOut("prices", 12.5, "5b0e"), b'{"t":"pub","c":"prices","d":12.5,"nd":"5b0e"}'),
        (wire.PubOut("prices", 12.5), b'{"t":"pub","c":"prices","d":12.5}'),
        (wire.SReqOut(3, "confirm", {"q": "ready?"}), b'{"t":"sreq","i":3,"m":"confirm","d":{"q":"ready?"}}'),
        (wire.EnvOut(None), b'{"t":"env","d":null}'),
        (wire.EnvOut({"p": 1}), b'{"t":"env","d":{"p":1}}'),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, msgspec.Struct) else "",
)
def test_encode_exact(frame: Any, expected: bytes) -> None:
    assert JSON.encode(frame) == expected


def test_none_result_is_sent_as_explicit_null() -> None:
    obj = json.loads(JSON.encode(wire.ResOut(4, None)))
    assert "d" in obj and obj["d"] is None


def test_err_without_data_omits_d() -> None:
    obj = json.loads(JSON.encode(wire.Err("INTERNAL", "Internal server error", 1)))
    assert obj == {"t": "err", "i": 1, "code": "INTERNAL", "m": "Internal server error"}
    assert "d" not in obj


def test_connection_level_err_omits_i() -> None:
    obj = json.loads(JSON.encode(wire.Err("BAD_REQUEST", "x")))
    assert obj == {"t": "err", "code": "BAD_REQUEST", "m": "x"}


def test_serr_without_data_omits_d() -> None:
    obj = json.loads(JSON.encode(wire.SErr(2, "TIMEOUT", "late")))
    assert "d" not in obj


# ---------------------------------------------------------------- decoding (every tag)
@pytest.mark.parametrize(
    ("buf", "kind", "fields"),
    [
        (b'{"t":"req","i":7,"m":"send","d":{"a":1}}', wire.Req, {"i": 7, "m": "send"}),
        (b'{"t":"sub","i":8,"c":"prices"}', wire.Sub, {"i": 8, "c": "prices"}),
        (b'{"t":"unsub","c":"prices"}', wire.Unsub, {"c": "prices"}),
        (b'{"t":"sres","i":3,"d":{"ok":true}}', wire.SRes, {"i": 3}),
        (b'{"t":"serr","i":3,"code":"X","m":"bad","d":[1]}', wire.SErr, {"i": 3, "code": "X", "m": "bad", "d": [1]}),
        (b'{"t":"pong"}', wire.Pong, {}),
        (b'{"t":"ping"}', wire.Ping, {}),
    ],
)
def test_decode_client_frames(buf: bytes, kind: type, fields: dict[str, Any]) -> None:
    frame = CLIENT_FRAMES.decode(buf)
    assert type(frame) is kind
    for k, v in fields.items():
        assert getattr(frame, k) == v


@pytest.mark.parametrize(
    ("buf", "kind", "fields"),
    [
        (b'{"t":"res","i":7,"d":{"id":"m"}}', wire.Res, {"i": 7}),
        (
            b'{"t":"err","i":7,"code":"FORBIDDEN","m":"no","d":{"r":1}}',
            wire.Err,
            {"i": 7, "code": "FORBIDDEN", "m": "no", "d": {"r": 1}},
        ),
        (b'{"t":"err","code":"X","m":"conn-level"}', wire.Err, {"i": UNSET, "d": UNSET}),
        (b'{"t":"evt","e":"message","d":1}', wire.Evt, {"e": "message"}),
        (b'{"t":"pub","c":"prices","d":1,"nd":"abc"}', wire.Pub, {"c": "prices", "nd": "abc"}),
        (b'{"t":"pub","c":"prices","d":1}', wire.Pub, {"nd": UNSET}),
        (b'{"t":"sreq","i":3,"m":"confirm","d":{"q":"?"}}', wire.SReq, {"i": 3, "m": "confirm"}),
        (b'{"t":"env","d":null}', wire.Env, {}),
        (b'{"t":"ping"}', wire.Ping, {}),
        (b'{"t":"pong"}', wire.Pong, {}),
    ],
)
def test_decode_server_frames(buf: bytes, kind: type, fields: dict[str, Any]) -> None:
    frame = SERVER_FRAMES.decode(buf)
    assert type(frame) is kind
    for k, v in fields.items():
        assert getattr(frame, k) == v


def test_payload_is_kept_raw_and_decoded_later() -> None:
    frame = CLIENT_FRAMES.decode(b'{"t":"req","i":1,"m":"p","d":{"x":1,"y":2}}')
    assert isinstance(frame.d, msgspec.Raw)
    assert bytes(frame.d) == b'{"x":1,"y":2}'
    assert wire.payload(frame.d, JSON.decoder(Point), JSON.null()) == Point(1, 2)


def test_unknown_extra_fields_are_ignored() -> None:
    frame = SERVER_FRAMES.decode(b'{"t":"res","i":1,"d":2,"extra":true,"nd":"x"}')
    assert frame == wire.Res(1, msgspec.Raw(b"2"))


@pytest.mark.parametrize(
    "buf",
    [
        b'{"t":"req","i":1,"m":"x"}',
        b'{"t":"sres","i":1}',
        b'{"t":"res","i":1}',
        b'{"t":"evt","e":"x"}',
        b'{"t":"pub","c":"x"}',
        b'{"t":"sreq","i":1,"m":"x"}',
        b'{"t":"env"}',
    ],
)
def test_missing_d_is_unset_and_decodes_as_null(buf: bytes) -> None:
    t = json.loads(buf)["t"]
    decoder = CLIENT_FRAMES if t in ("req", "sres") else SERVER_FRAMES
    frame = decoder.decode(buf)
    assert frame.d is UNSET
    assert wire.payload(frame.d, JSON.decoder(int | None), JSON.null()) is None
    assert wire.payload(frame.d, JSON.decoder(None), JSON.null()) is None
    with pytest.raises(msgspec.ValidationError, match="got `null`"):
        wire.payload(frame.d, JSON.decoder(Point), JSON.null())


def test_explicit_null_d_is_not_unset() -> None:
    frame = SERVER_FRAMES.decode(b'{"t":"res","i":1,"d":null}')
    assert frame.d is not UNSET
    assert wire.payload(frame.d, JSON.decoder(Any), JSON.null()) is None


@pytest.mark.parametrize(
    "buf",
    [b"null", b"[1]", b'"x"', b"{}", b'{"t":"bogus"}', b'{"t":"req","i":"x","m":"a"}', b"not json"],
)
def test_bad_client_frames_raise_msgspec_errors(buf: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        CLIENT_FRAMES.decode(buf)


# ---------------------------------------------------------------- serializers
def test_msgpack_round_trip_every_outbound_frame() -> None:
    dec = MSGPACK.decoder(wire.ServerFrame)
    res = dec.decode(MSGPACK.encode(wire.ResOut(5, {"id": "x", "n": [1, 2]})))
    assert type(res) is wire.Res and res.i == 5
    assert msgspec.msgpack.decode(res.d) == {"id": "x", "n": [1, 2]}
    assert wire.payload(res.d, MSGPACK.decoder(dict[str, Any]), MSGPACK.null()) == {"id": "x", "n": [1, 2]}
    err = dec.decode(MSGPACK.encode(wire.Err("NOPE", "no", 5, {"k": 1})))
    assert err == wire.Err("NOPE", "no", 5, {"k": 1})
    evt = dec.decode(MSGPACK.encode(wire.EvtOut("notice", {"text": "hi"})))
    assert type(evt) is wire.Evt and evt.e == "notice"
    pub = dec.decode(MSGPACK.encode(wire.PubOut("prices", 1.5, "node")))
    assert type(pub) is wire.Pub and pub.nd == "node"
    assert wire.payload(pub.d, MSGPACK.decoder(float), MSGPACK.null()) == 1.5
    sreq = dec.decode(MSGPACK.encode(wire.SReqOut(9, "confirm", {"q": "?"})))
    assert type(sreq) is wire.SReq and sreq.m == "confirm"
    env = dec.decode(MSGPACK.encode(wire.EnvOut(None)))
    assert type(env) is wire.Env
    assert wire.payload(env.d, MSGPACK.decoder(Any), MSGPACK.null()) is None

    cdec = MSGPACK.decoder(wire.ClientFrame)
    req = cdec.decode(MSGPACK.encode(wire.ReqOut(1, "greet", {"name": "a"})))
    assert type(req) is wire.Req and req.m == "greet"
    assert wire.payload(req.d, MSGPACK.decoder(dict[str, str]), MSGPACK.null()) == {"name": "a"}
    assert cdec.decode(MSGPACK.encode(wire.Sub(2, "c"))) == wire.Sub(2, "c")
    assert cdec.decode(MSGPACK.encode(wire.Unsub("c"))) == wire.Unsub("c")
    assert cdec.decode(MSGPACK.encode(wire.Pong())) == wire.Pong()
    sres = cdec.decode(MSGPACK.encode(wire.SResOut(3, True)))
    assert type(sres) is wire.SRes and wire.payload(sres.d, MSGPACK.decoder(bool), MSGPACK.null()) is True
    assert cdec.decode(MSGPACK.encode(wire.SErr(3, "X", "m"))) == wire.SErr(3, "X", "m")


def test_msgpack_missing_d_decodes_as_null() -> None:
    frame = MSGPACK.decoder(wire.ServerFrame).decode(msgspec.msgpack.encode({"t": "res", "i": 1}))
    assert frame.d is UNSET
    assert wire.payload(frame.d, MSGPACK.decoder(int | None), MSGPACK.null()) is None


def test_serializer_flags_and_nulls() -> None:
    assert (JSON.name, JSON.text, JSON.null()) == ("json", True, b"null")
    assert (MSGPACK.name, MSGPACK.text, MSGPACK.null()) == ("msgpack", False, b"\xc0")
    assert msgspec.msgpack.decode(MSGPACK.null()) is None


def test_msgpack_rejects_text_frames() -> None:
    with pytest.raises(msgspec.DecodeError, match="must be binary"):
        MSGPACK.decode_any('{"t":"ping"}')


def test_get_serializer() -> None:
    assert isinstance(wire.get_serializer("json"), JsonSerializer)
    assert isinstance(wire.get_serializer("msgpack"), MsgpackSerializer)
    custom = JsonSerializer()
    assert wire.get_serializer(custom) is custom
    with pytest.raises(ValueError, match="unknown serializer 'yaml'"):
        wire.get_serializer("yaml")  # type: ignore[arg-type]


# ---------------------------------------------------------------- frame_id (error path)
@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (b"not json at all", (None, None)),
        (b"\xff\xfe", (None, None)),
        (b"", (None, None)),
        (b"null", (None, None)),
        (b"[1, 2]", (None, None)),
        (b'"x"', (None, None)),
        (b"42", (None, None)),
        (b'{"t":"bogus","i":5}', ("bogus", 5)),
        (b'{"t":"csub","i":9,"c":"todos"}', ("csub", 9)),
        (b'{"t":"req","i":"x","m":"a"}', ("req", None)),
        (b'{"t":"req","i":true}', ("req", None)),
        (b'{"t":"req","i":1.5}', ("req", None)),
        (b'{"i":3}', (None, 3)),
        ('{"t":"sub","i":2}', ("sub", 2)),
    ],
)
def test_frame_id_json(buf: bytes | str, expected: tuple[Any, Any]) -> None:
    assert wire.frame_id(JSON, buf) == expected


def test_frame_id_msgpack() -> None:
    assert wire.frame_id(MSGPACK, msgspec.msgpack.encode({"t": "x", "i": 4})) == ("x", 4)
    assert wire.frame_id(MSGPACK, b"\xc1") == (None, None)  # 0xc1 is never used in msgpack
    assert wire.frame_id(MSGPACK, '{"t":"x","i":4}') == (None, None)  # text frame
    assert wire.frame_id(MSGPACK, msgspec.msgpack.encode([1])) == (None, None)


# ---------------------------------------------------------------- validation errors
def test_validation_error_names_the_path() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(b'{"x":1,"y":"no"}', type=Point)
    err = validation_error(info.value, "input of 'move'")
    assert err.code == "VALIDATION"
    assert err.message.startswith("Validation failed for input of 'move': ")
    assert "$.y" in err.message
    assert err.data == [{"message": "Expected `int`, got `str`", "path": ["y"]}]
    assert err.__cause__ is info.value


def test_issues_paths_with_indexes_and_without_path() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(b'{"pts":[{"x":1,"y":2},{"x":1,"y":"no"}]}', type=Poly)
    assert issues(info.value) == [{"message": "Expected `int`, got `str`", "path": ["pts", 1, "y"]}]
    with pytest.raises(msgspec.ValidationError) as info2:
        msgspec.json.decode(b'"s"', type=int)
    assert issues(info2.value) == [{"message": "Expected `int`, got `str`", "path": []}]
