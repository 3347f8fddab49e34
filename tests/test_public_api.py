"""The public surface: ``__all__`` and which modules stay pure (no websockets, no zmq)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import superline_zmq

EXPECTED_ALL = {
    # introspection & presence
    "ClusterView",
    "ConnDescriptor",
    "ConnTarget",
    "LocalView",
    "NodeInfo",
    "Presence",
    "UserTarget",
    # presence events
    "PresenceChange",
    "PresenceEvents",
    "PresenceSubscription",
    "RoomDiff",
    "UserPresence",
    "Adapter",
    "BusMeta",
    "BusSubscription",
    "MemoryAdapter",
    "MemoryBus",
    "Room",
    "Auth",
    "Backoff",
    "Backpressure",
    "Client",
    "Conn",
    "ConnId",
    "Contract",
    "ContractError",
    "ErrorCode",
    "Event",
    "Handshake",
    "Heartbeat",
    "JsonSerializer",
    "MiddlewareInfo",
    "MsgpackSerializer",
    "NodeId",
    "Request",
    "Serializer",
    "ServerRequest",
    "SocketError",
    "SocketServer",
    "SuperlineError",
    "Subscription",
    "Topic",
    "UserId",
    "connect",
    "create_socket_server",
    "define_contract",
    "event",
    "request",
    "server_request",
    "topic",
    # cluster
    "ClusterTiming",
    # operations
    "HealthPaths",
    "Metrics",
}

PURE_MODULES = [
    "superline_zmq.contract",
    "superline_zmq.wire",
    "superline_zmq.errors",
    "superline_zmq.validation",
    "superline_zmq.ids",
    "superline_zmq.logs",
    "superline_zmq.limits",
    "superline_zmq.names",
    "superline_zmq.requests",
    "superline_zmq.session",
    "superline_zmq.client_session",
    "superline_zmq.envelope",
    "superline_zmq.transport",
    "superline_zmq.gossip",
    "superline_zmq.membership",
    "superline_zmq.presence",
    "superline_zmq.probes",
    "superline_zmq.timing",
    "superline_zmq.metrics",
    "superline_zmq.health",
]


def test_all_names_exist() -> None:
    missing = [name for name in superline_zmq.__all__ if not hasattr(superline_zmq, name)]
    assert missing == []
    assert len(superline_zmq.__all__) == len(set(superline_zmq.__all__))


def test_all_matches_the_typed_core_surface() -> None:
    # The typed-core names must all be public; names added later (cluster, rooms, ...)
    # are reported so this list is updated on purpose.
    public = set(superline_zmq.__all__)
    assert EXPECTED_ALL - public == set(), "typed-core names missing from __all__"
    assert public - EXPECTED_ALL == set(), "unexpected names in __all__ (update EXPECTED_ALL)"


def test_star_import_gives_exactly_all() -> None:
    ns: dict[str, Any] = {}
    exec("from superline_zmq import *", ns)
    assert {k for k in ns if not k.startswith("__")} == set(superline_zmq.__all__)


def test_error_tree() -> None:
    from superline_zmq import ContractError, ErrorCode, SocketError, SuperlineError

    assert issubclass(SocketError, SuperlineError)
    assert issubclass(ContractError, SuperlineError) and issubclass(ContractError, ValueError)
    err = SocketError("NOPE", "no", {"k": 1})
    assert (err.code, err.message, err.data) == ("NOPE", "no", {"k": 1})
    assert str(err) == "NOPE: no"
    assert repr(err) == "SocketError('NOPE', 'no', data={'k': 1})"
    assert SocketError("TIMEOUT").message == "TIMEOUT"
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert codes == {
        "BAD_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "NOT_FOUND",
        "TIMEOUT",
        "VALIDATION",
        "DISCONNECTED",
        "INTERNAL",
    }


#: Runs in a fresh interpreter: imports one module of the package *without* running the
#: package's ``__init__`` (which wires up the server and client on purpose), then reports
#: which I/O libraries and which of our modules ended up in ``sys.modules``.
PROBE = """
import importlib, importlib.util, json, sys, types
spec = importlib.util.find_spec("superline_zmq")
pkg = types.ModuleType("superline_zmq")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["superline_zmq"] = pkg
importlib.import_module(sys.argv[1])
io = sorted(m for m in sys.modules if m.split(".")[0] in ("websockets", "zmq"))
ours = sorted(m for m in sys.modules if m.startswith("superline_zmq."))
print(json.dumps({"io": io, "ours": ours}))
"""


def _probe(module: str) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_do_not_import_io_libraries(module: str) -> None:
    result = _probe(module)
    assert result["io"] == [], f"{module} pulled in {result['io']}"
    impure = [m for m in result["ours"] if m not in PURE_MODULES]
    assert impure == [], f"{module} imported non-pure modules {impure}"


def test_the_probe_sees_an_io_import() -> None:
    # guard for the test above: the same probe does flag the websockets transport
    result = _probe("superline_zmq.transport.ws")
    assert "websockets" in result["io"]


#: The only modules allowed to import each I/O library.
IO_OWNERS = {
    "websockets": ("superline_zmq/transport/",),
    "zmq": ("superline_zmq/adapters/zeromq.py", "superline_zmq/curve.py"),
    # the optional extra superline-zmq[metrics]: only its exporter imports it
    "prometheus_client": ("superline_zmq/prometheus.py",),
}


def test_only_the_transport_layer_imports_websockets_and_only_the_adapter_imports_zmq() -> None:
    root = Path(superline_zmq.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        text = path.read_text()
        for lib, owners in IO_OWNERS.items():
            if re.search(rf"^\s*(import|from) {lib}(\.|\s)", text, re.M) and not rel.startswith(owners):
                offenders.append(f"{rel} imports {lib}")
    assert offenders == []


async def test_runs_on_the_loop_its_id_names(request: pytest.FixtureRequest) -> None:
    loop_type = type(asyncio.get_running_loop())
    if request.node.name.endswith("[uvloop]"):
        assert loop_type.__module__.startswith("uvloop"), loop_type
    else:
        assert request.node.name.endswith("[asyncio]"), request.node.name
        assert loop_type.__module__.startswith("asyncio"), loop_type
