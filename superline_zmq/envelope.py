"""Server-to-server messages for targeted sends and server → client requests (pure).

They travel as adapter *direct* messages (bytes to one node), MessagePack-encoded.
Client frames inside them (``frame``, ``input``, ``data``) are already encoded with the
cluster's client serializer, so the owning node forwards them without re-encoding: every
node of one cluster must use the same serializer.
"""

from __future__ import annotations

import msgspec


class EmitTo(msgspec.Struct, frozen=True, tag="emit", array_like=True):
    """Deliver an already-encoded event ``frame`` to connection ``conn``."""

    conn: str
    frame: bytes


class CloseConn(msgspec.Struct, frozen=True, tag="close", array_like=True):
    """Close connection ``conn`` with ``code``/``reason``."""

    conn: str
    code: int = 1000
    reason: str = ""


class Ask(msgspec.Struct, frozen=True, tag="ask", array_like=True):
    """Ask ``conn`` the server request ``name``; answer with :class:`Answer` ``rid``."""

    rid: int
    conn: str
    name: str
    input: bytes
    timeout: float


class Answer(msgspec.Struct, frozen=True, tag="answer", array_like=True):
    """The answer to :class:`Ask` ``rid``: ``data`` on success (``code`` None), else an error."""

    rid: int
    code: str | None = None
    message: str = ""
    data: bytes | None = None


class UserControl(msgspec.Struct, frozen=True, tag="disconnect", array_like=True):
    """Sent on a user's channel: close every connection of that user."""

    code: int = 1000
    reason: str = ""


Direct = EmitTo | CloseConn | Ask | Answer

#: First byte of a control message on a ``u:`` channel; client frames never start with it
#: (a JSON frame starts with ``{``, a MessagePack frame with a map header).
CONTROL_MARK = b"\x00"

_encoder = msgspec.msgpack.Encoder()
_direct = msgspec.msgpack.Decoder(Direct)
_control = msgspec.msgpack.Decoder(UserControl)


def encode(msg: Direct | UserControl) -> bytes:
    """MessagePack bytes of one message."""
    return _encoder.encode(msg)


def decode_direct(data: bytes) -> Direct:
    """Decode a direct message; raises ``ValueError`` naming what was wrong."""
    try:
        msg: Direct = _direct.decode(data)  # typed or Any, by msgspec release: both check
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"malformed direct message ({len(data)} bytes): {exc}") from exc
    return msg


def control(msg: UserControl) -> bytes:
    """A control message for a user channel."""
    return CONTROL_MARK + _encoder.encode(msg)


def decode_control(data: bytes) -> UserControl:
    """Decode a user-channel control message (after :data:`CONTROL_MARK`)."""
    try:
        return _control.decode(data[1:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"malformed user-channel control message ({len(data)} bytes): {exc}") from exc
