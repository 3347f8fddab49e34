"""superline.v1 frames and their codecs (pure: no I/O).

Every frame is one object tagged by its ``t`` field (PROTOCOL §3). Frames that carry a
payload exist twice: an *inbound* form whose ``d`` is :class:`msgspec.Raw`, so the
envelope is decoded once and the payload later with the one typed decoder its contract
entry owns; and an *outbound* form whose ``d`` holds any value, encoded in the same pass
as the envelope. A missing ``d`` decodes as ``UNSET`` and means ``null`` (PROTOCOL §2).

Evolution rule: tags never change; a new field gets a default and old peers ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, TypeAlias, TypeVar

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

PROTOCOL: Final = "superline.v1"


# ---------------------------------------------------------------- client -> server
class Req(Struct, tag_field="t", tag="req", frozen=True):
    """Inbound ``req``: call request ``m`` with correlation id ``i``."""

    i: int
    m: str
    d: Raw | UnsetType = UNSET


class Sub(Struct, tag_field="t", tag="sub", frozen=True):
    """``sub``: subscribe to topic ``c``; acked with ``res`` d=null or ``err``."""

    i: int
    c: str


class Unsub(Struct, tag_field="t", tag="unsub", frozen=True):
    """``unsub``: drop a topic subscription; no ack."""

    c: str


class SRes(Struct, tag_field="t", tag="sres", frozen=True):
    """Inbound ``sres``: the client's answer to server request ``i``."""

    i: int
    d: Raw | UnsetType = UNSET


class SErr(Struct, tag_field="t", tag="serr", frozen=True, omit_defaults=True):
    """``serr``: the client's failure answer to server request ``i``."""

    i: int
    code: str
    m: str = ""
    d: Any = UNSET


class Ping(Struct, tag_field="t", tag="ping", frozen=True):
    """``ping``: heartbeat probe (server to client)."""


class Pong(Struct, tag_field="t", tag="pong", frozen=True):
    """``pong``: heartbeat answer (client to server)."""


ClientFrame: TypeAlias = Req | Sub | Unsub | SRes | SErr | Pong | Ping


class ReqOut(Struct, tag_field="t", tag="req", frozen=True):
    """Outbound ``req`` as the client encodes it."""

    i: int
    m: str
    d: Any = None


class SResOut(Struct, tag_field="t", tag="sres", frozen=True):
    """Outbound ``sres`` as the client encodes it."""

    i: int
    d: Any = None


# ---------------------------------------------------------------- server -> client
class Res(Struct, tag_field="t", tag="res", frozen=True):
    """Inbound ``res`` (client side)."""

    i: int
    d: Raw | UnsetType = UNSET


class Err(Struct, tag_field="t", tag="err", frozen=True, omit_defaults=True):
    """``err``: failure reply to ``i``, or connection-level when ``i`` is absent."""

    code: str
    m: str = ""
    i: int | UnsetType = UNSET
    d: Any = UNSET


class Evt(Struct, tag_field="t", tag="evt", frozen=True):
    """Inbound ``evt`` (client side)."""

    e: str
    d: Raw | UnsetType = UNSET


class Pub(Struct, tag_field="t", tag="pub", frozen=True):
    """Inbound ``pub`` (client side)."""

    c: str
    d: Raw | UnsetType = UNSET
    nd: str | UnsetType = UNSET


class SReq(Struct, tag_field="t", tag="sreq", frozen=True):
    """Inbound ``sreq`` (client side)."""

    i: int
    m: str
    d: Raw | UnsetType = UNSET


class Env(Struct, tag_field="t", tag="env", frozen=True):
    """Inbound ``env`` (client side)."""

    d: Raw | UnsetType = UNSET


ServerFrame: TypeAlias = Res | Err | Evt | Pub | SReq | Env | Ping | Pong


class ResOut(Struct, tag_field="t", tag="res", frozen=True):
    """Outbound ``res``; ``d`` is ``null`` for a ``None`` result (PROTOCOL §2)."""

    i: int
    d: Any = None


class EvtOut(Struct, tag_field="t", tag="evt", frozen=True):
    """Outbound ``evt``."""

    e: str
    d: Any = None


class PubOut(Struct, tag_field="t", tag="pub", frozen=True):
    """Outbound ``pub``; ``nd`` names the publishing node."""

    c: str
    d: Any = None
    nd: str | UnsetType = UNSET


class SReqOut(Struct, tag_field="t", tag="sreq", frozen=True):
    """Outbound ``sreq``."""

    i: int
    m: str
    d: Any = None


class EnvOut(Struct, tag_field="t", tag="env", frozen=True):
    """Outbound ``env``."""

    d: Any = None


#: Frames of the collections runtime (out of scope): ones that carry ``i`` get NOT_FOUND.
COLLECTION_TAGS_WITH_ID: Final = frozenset({"csub", "cbat", "cdopen", "cdwr"})


# ---------------------------------------------------------------- serializers
class Decoder(Protocol[T_co]):
    """A long-lived typed decoder (``msgspec.json.Decoder`` or ``msgspec.msgpack.Decoder``)."""

    def decode(self, buf: Any, /) -> T_co: ...


class Serializer(Protocol):
    """How frames become WebSocket messages. Both ends must use the same one."""

    name: str
    #: Send text frames (JSON) rather than binary ones (MessagePack).
    text: bool

    def encode(self, obj: Any, /) -> bytes: ...

    def decoder(self, type: Any, /) -> Decoder[Any]: ...

    def decode_any(self, buf: bytes | str, /) -> Any: ...

    def null(self) -> bytes: ...


class JsonSerializer:
    """JSON text frames: the default, what super-line's TypeScript client speaks."""

    name = "json"
    text = True

    def __init__(self) -> None:
        self.encode: Callable[[Any], bytes] = msgspec.json.Encoder().encode

    def decoder(self, type: Any, /) -> Decoder[Any]:
        return msgspec.json.Decoder(type)

    def decode_any(self, buf: bytes | str, /) -> Any:
        return msgspec.json.decode(buf)

    def null(self) -> bytes:
        return b"null"


class MsgpackSerializer:
    """MessagePack binary frames: smaller and faster, for peers that both opt in."""

    name = "msgpack"
    text = False

    def __init__(self) -> None:
        self.encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode

    def decoder(self, type: Any, /) -> Decoder[Any]:
        return msgspec.msgpack.Decoder(type)

    def decode_any(self, buf: bytes | str, /) -> Any:
        if isinstance(buf, str):
            raise msgspec.DecodeError("MessagePack frames must be binary, got a text frame")
        return msgspec.msgpack.decode(buf)

    def null(self) -> bytes:
        return b"\xc0"


SerializerName: TypeAlias = Literal["json", "msgpack"]


def get_serializer(spec: SerializerName | Serializer) -> Serializer:
    """Resolve ``"json"``/``"msgpack"`` or pass a custom :class:`Serializer` through."""
    if spec == "json":
        return JsonSerializer()
    if spec == "msgpack":
        return MsgpackSerializer()
    if isinstance(spec, str):
        raise ValueError(f"unknown serializer {spec!r}: use 'json', 'msgpack' or a Serializer object")
    return spec


def payload(raw: Raw | UnsetType, decoder: Decoder[T], null: bytes) -> T:
    """Decode a frame's ``d`` with its typed decoder; a missing ``d`` decodes as null."""
    return decoder.decode(null if raw is UNSET else raw)


def frame_id(serializer: Serializer, buf: bytes | str) -> tuple[Any, Any]:
    """Best-effort ``(t, i)`` of a frame that failed typed decoding (error path only)."""
    try:
        obj = serializer.decode_any(buf)
    except (msgspec.DecodeError, ValueError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    i = obj.get("i")
    if isinstance(i, bool) or not isinstance(i, int):
        i = None
    return obj.get("t"), i


class DecoderCache:
    """One long-lived typed decoder per schema, built on first use (schemas are kept alive, so ids stay unique)."""

    __slots__ = ("_decoders", "_serializer")

    def __init__(self, serializer: Serializer) -> None:
        self._serializer = serializer
        self._decoders: dict[int, tuple[Any, Decoder[Any]]] = {}

    def get(self, schema: Any) -> Decoder[Any]:
        """The decoder for ``schema``."""
        hit = self._decoders.get(id(schema))
        if hit is None:
            hit = self._decoders[id(schema)] = (schema, self._serializer.decoder(schema))
        return hit[1]


def error_frame(
    encode: Callable[[Any], bytes],
    i: int | UnsetType,
    code: str,
    message: str,
    data: Any = None,
    *,
    answer: bool = False,
) -> tuple[bytes, Exception | None]:
    """The one error-frame builder: ``err`` (server) or ``serr`` (``answer``: a client's answer).

    ``data`` that cannot be serialized is left out rather than losing the error; the
    exception is returned so the caller can report it.
    """
    d = UNSET if data is None else data
    if answer:
        assert i is not UNSET, "an serr answers a request: it needs its id"
        frame: Any = SErr(i, code, message, d)
        bare: Any = SErr(i, code, message)
    else:
        frame = Err(code, message, i, d)
        bare = Err(code, message, i)
    try:
        return encode(frame), None
    except (TypeError, ValueError) as exc:  # error data that cannot be serialized
        return encode(bare), exc
