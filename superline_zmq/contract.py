"""Contracts: what each role may call, receive, subscribe to and be asked (pure).

A contract has a ``shared`` block and one block per role; a role's effective surface is
shared + its own block. Entries are made with :func:`request`, :func:`event`,
:func:`topic` and :func:`server_request`; their schemas are any type msgspec can
validate (``Struct``, ``TypedDict``, dataclass, builtins, ``None`` for "no payload").

The entry objects are generic (``Request[I, O]``), so passing the entry itself instead of
its name to ``client.call`` or ``to_conn(id).request`` gives a type checker the input and
output types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar, overload

import msgspec
import msgspec.inspect

from superline_zmq.errors import ContractError

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741
P = TypeVar("P")

SHARED: Final = "shared"
_MISSING: Any = object()


class Entry:
    """Base of contract entries. One entry object names exactly one contract entry."""

    kind: str = ""


@dataclass(frozen=True, eq=False)
class Request(Entry, Generic[I, O]):
    """A client → server request: input schema, output schema."""

    input: Any
    output: Any
    kind: str = field(default="request", init=False)


@dataclass(frozen=True, eq=False)
class Event(Entry, Generic[P]):
    """A server → client push to one connection, a room or a user."""

    payload: Any
    kind: str = field(default="event", init=False)


@dataclass(frozen=True, eq=False)
class Topic(Entry, Generic[P]):
    """A server → client publication that clients subscribe to."""

    payload: Any
    kind: str = field(default="topic", init=False)


@dataclass(frozen=True, eq=False)
class ServerRequest(Entry, Generic[I, O]):
    """A server → client request: the server asks, the client answers."""

    input: Any
    output: Any
    kind: str = field(default="server_request", init=False)


@overload
def request(input: None, output: None) -> Request[None, None]: ...
@overload
def request(input: None, output: type[O]) -> Request[None, O]: ...
@overload
def request(input: type[I], output: None) -> Request[I, None]: ...
@overload
def request(input: type[I], output: type[O]) -> Request[I, O]: ...
@overload
def request(input: Any, output: Any = ...) -> Request[Any, Any]: ...
def request(input: Any, output: Any = _MISSING) -> Request[Any, Any]:
    """Declare a client → server request taking ``input`` and answering ``output``."""
    return Request(input, output)


@overload
def event(payload: type[P]) -> Event[P]: ...
@overload
def event(payload: Any) -> Event[Any]: ...
def event(payload: Any) -> Event[Any]:
    """Declare a server-pushed event carrying ``payload``."""
    return Event(payload)


@overload
def topic(payload: type[P]) -> Topic[P]: ...
@overload
def topic(payload: Any) -> Topic[Any]: ...
def topic(payload: Any) -> Topic[Any]:
    """Declare a topic clients subscribe to, publishing ``payload``."""
    return Topic(payload)


@overload
def server_request(input: None, output: type[O]) -> ServerRequest[None, O]: ...
@overload
def server_request(input: type[I], output: type[O]) -> ServerRequest[I, O]: ...
@overload
def server_request(input: Any, output: Any = ...) -> ServerRequest[Any, Any]: ...
def server_request(input: Any, output: Any = _MISSING) -> ServerRequest[Any, Any]:
    """Declare a server → client request taking ``input`` and answering ``output``."""
    return ServerRequest(input, output)


@dataclass(frozen=True)
class Surface:
    """One block of a contract, or a role's effective surface (shared + own)."""

    name: str
    requests: Mapping[str, Request[Any, Any]]
    events: Mapping[str, Event[Any]]
    topics: Mapping[str, Topic[Any]]
    server_requests: Mapping[str, ServerRequest[Any, Any]]
    data: Any = None
    #: For each topic, its channel namespace: the role name, or ``"shared"``.
    topic_ns: Mapping[str, str] = field(default_factory=dict)


class Contract:
    """A validated contract. Build it with :func:`define_contract`."""

    def __init__(self, shared: Surface, own: Mapping[str, Surface]) -> None:
        self.shared = shared
        #: Each role's own block, without the shared entries.
        self.own = own
        self._effective = {name: _merge(shared, block) for name, block in own.items()}
        self._names: dict[int, str] = {}
        for block in (shared, *own.values()):
            for table in (block.requests, block.events, block.topics, block.server_requests):
                for n, e in table.items():
                    self._names[id(e)] = n

    @property
    def roles(self) -> tuple[str, ...]:
        """The role names, in declaration order."""
        return tuple(self.own)

    def surface(self, role: str) -> Surface:
        """The effective surface of ``role``; ``KeyError`` for a role not in the contract."""
        return self._effective[role]

    def name_of(self, entry: Entry | str) -> str:
        """The name an entry object was declared under (a string passes through)."""
        if isinstance(entry, str):
            return entry
        try:
            return self._names[id(entry)]
        except KeyError:
            raise ValueError(f"{entry!r} is not an entry of this contract") from None


def _merge(shared: Surface, block: Surface) -> Surface:
    ns = {n: SHARED for n in shared.topics}
    ns.update({n: block.name for n in block.topics})
    return Surface(
        name=block.name,
        requests={**shared.requests, **block.requests},
        events={**shared.events, **block.events},
        topics={**shared.topics, **block.topics},
        server_requests={**shared.server_requests, **block.server_requests},
        data=block.data,
        topic_ns=ns,
    )


_BLOCK_KEYS: Final = frozenset({"client_to_server", "server_to_client", "data"})


def define_contract(
    shared: Mapping[str, Any] | None = None,
    roles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Contract:
    """Validate and build a contract.

    Raises :class:`ContractError` (a ``ValueError``) naming the entry at fault for: a
    name declared in both shared and a role block, a request or server request without
    an output, a schema msgspec cannot validate, an unknown block key, an entry in the
    wrong direction, or one entry object used under two names.
    """
    seen: dict[int, str] = {}
    shared_block = _block(SHARED, shared or {}, seen)
    own: dict[str, Surface] = {}
    for role, spec in (roles or {}).items():
        if not isinstance(role, str) or not role or role == SHARED:
            raise ContractError(f"role name {role!r} is not allowed (non-empty string, not 'shared')")
        block = _block(role, spec, seen)
        for table in ("requests", "events", "topics", "server_requests"):
            for n in getattr(block, table):
                if _declares(shared_block, n, table):
                    raise ContractError(
                        f"roles.{role}: {n!r} is already declared in shared; names must be unique "
                        "across shared and a role block"
                    )
        own[role] = block
    if not own:
        raise ContractError("a contract needs at least one role under roles={...}")
    return Contract(shared_block, own)


def _declares(block: Surface, name: str, table: str) -> bool:
    if table == "requests":
        return name in block.requests
    return name in block.events or name in block.topics or name in block.server_requests


def _block(where: str, spec: Mapping[str, Any], seen: dict[int, str]) -> Surface:
    if not isinstance(spec, Mapping):
        raise ContractError(f"{where}: expected a mapping, got {type(spec).__name__}")
    unknown = set(spec) - _BLOCK_KEYS
    if unknown:
        raise ContractError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected client_to_server, server_to_client, data"
        )
    requests: dict[str, Request[Any, Any]] = {}
    events: dict[str, Event[Any]] = {}
    topics: dict[str, Topic[Any]] = {}
    sreqs: dict[str, ServerRequest[Any, Any]] = {}
    for name, e in (spec.get("client_to_server") or {}).items():
        path = f"{where}.client_to_server.{name}"
        _check_entry(path, name, e, seen)
        if not isinstance(e, Request):
            raise ContractError(f"{path}: client_to_server takes request(...) entries, got {e!r}")
        _check_schema(path, "input", e.input)
        if e.output is _MISSING:
            raise ContractError(f"{path}: a request needs an output schema: request(Input, Output)")
        _check_schema(path, "output", e.output)
        requests[name] = e
    for name, e in (spec.get("server_to_client") or {}).items():
        path = f"{where}.server_to_client.{name}"
        _check_entry(path, name, e, seen)
        if isinstance(e, Event):
            _check_schema(path, "payload", e.payload)
            events[name] = e
        elif isinstance(e, Topic):
            _check_schema(path, "payload", e.payload)
            topics[name] = e
        elif isinstance(e, ServerRequest):
            _check_schema(path, "input", e.input)
            if e.output is _MISSING:
                raise ContractError(f"{path}: a server request needs an output schema: server_request(Input, Output)")
            _check_schema(path, "output", e.output)
            sreqs[name] = e
        else:
            raise ContractError(
                f"{path}: server_to_client takes event(...), topic(...) or server_request(...), got {e!r}"
            )
    data = spec.get("data")
    if data is not None:
        if where == SHARED:
            raise ContractError("shared.data: per-connection data is declared per role")
        _check_schema(f"{where}.data", "data", data)
    return Surface(where, requests, events, topics, sreqs, data)


def _check_entry(path: str, name: Any, e: Any, seen: dict[int, str]) -> None:
    if not isinstance(name, str) or not name:
        raise ContractError(f"{path}: entry names must be non-empty strings")
    if not isinstance(e, Entry):
        raise ContractError(f"{path}: expected request/event/topic/server_request(...), got {e!r}")
    if id(e) in seen:
        raise ContractError(f"{path}: the same entry object is also declared as {seen[id(e)]}; make one each")
    seen[id(e)] = path


def _check_schema(path: str, what: str, schema: Any) -> None:
    try:
        msgspec.json.Decoder(schema)
        info = msgspec.inspect.type_info(schema)
    except TypeError as exc:
        raise ContractError(f"{path}: {what} {schema!r} is not a schema msgspec can validate ({exc})") from exc
    custom = _custom_type(info, set())
    if custom is not None:
        raise ContractError(
            f"{path}: {what} {schema!r} is not a schema msgspec can validate "
            f"({custom!r} is an arbitrary class; use a Struct, dataclass, TypedDict or builtin)"
        )


def _custom_type(info: Any, seen: set[int]) -> Any:
    """The first arbitrary (non-schema) class inside a msgspec type tree, or None."""
    if id(info) in seen:
        return None
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.CustomType):
        return info.cls
    if isinstance(info, msgspec.inspect.Field):
        return _custom_type(info.type, seen)
    if isinstance(info, msgspec.Struct):
        for name in info.__struct_fields__:
            value = getattr(info, name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, msgspec.Struct):
                    found = _custom_type(item, seen)
                    if found is not None:
                        return found
    return None
