"""Channel names, built and parsed in one place (pure).

Rooms, topics and users ride the adapter's byte channels (see :mod:`superline_zmq.adapter`):

==========================  =============================================================
``r:<room>``                a room's events (``evt`` frames), held by nodes with members
``t:<ns>:<topic>``          a topic's publications (``pub`` frames); ``ns`` is ``shared``
                            or the role that declares the topic
``u:<user>``                one user's events and control messages, held by the nodes
                            where that user is connected
==========================  =============================================================

The names are super-line's (PROTOCOL §11), so a cluster could in principle carry both.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, NewType

#: A channel name on the adapter (``r:lobby``, ``t:shared:ticks``, ``u:alice``).
Channel = NewType("Channel", str)

Kind = Literal["room", "topic", "user"]

_PREFIX: dict[str, Kind] = {"r": "room", "t": "topic", "u": "user"}


def room(name: str) -> Channel:
    """The channel of room ``name``."""
    return Channel("r:" + name)


def topic(ns: str, name: str) -> Channel:
    """The channel of topic ``name`` in namespace ``ns`` (``shared`` or a role)."""
    return Channel(f"t:{ns}:{name}")


def user(user_id: str) -> Channel:
    """The channel of user ``user_id``'s connections."""
    return Channel("u:" + user_id)


class Parsed(NamedTuple):
    """A channel name taken apart: ``kind``, the topic's namespace (else ``""``) and the name."""

    kind: Kind
    ns: str
    name: str


def parse(channel: str) -> Parsed | None:
    """Take a channel name apart; None for anything this module does not build."""
    prefix, sep, rest = channel.partition(":")
    kind = _PREFIX.get(prefix)
    if kind is None or not sep:
        return None
    if kind == "topic":
        ns, sep, name = rest.partition(":")
        return Parsed(kind, ns, name) if sep else None
    return Parsed(kind, "", rest)
