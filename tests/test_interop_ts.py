"""Interop: super-line's own TypeScript client against our Python server.

Each test starts ``tests/interop/app.py``'s server in-process on 127.0.0.1 (port 0) and
runs ``node tests/interop/ts_scenarios.mjs ws://127.0.0.1:PORT/ <scenario>``, which drives
the bundled client (``<repo>/../shared/interop/superline-client.mjs``, passed to node as
``$SUPERLINE_INTEROP_CLIENT``) and prints one JSON line of observations per scenario. The
script checks its own expectations (exit status); these tests assert the observed values.
Skipped when ``node`` or the bundle is missing, except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: super-line's bundled client: beside the repository (``../shared``), or where the variable says.
CLIENT_BUNDLE = Path(
    os.environ.get("SUPERLINE_INTEROP_CLIENT") or REPO_ROOT.parent / "shared/interop/superline-client.mjs"
)
SCRIPT = REPO_ROOT / "tests/interop/ts_scenarios.mjs"
APP = REPO_ROOT / "tests/interop/app.py"
NODE_DEADLINE_S = 60.0


def _load_app() -> ModuleType:
    # By path, so the test does not depend on how `tests/` is laid out as packages; the
    # module is registered before it runs so msgspec can resolve its annotations.
    name = "superline_interop_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _missing(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail in CI, which has node and ../shared."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the TypeScript interop tests, but {reason}")
    pytest.skip(reason)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _missing("`node` is not on PATH (needed to run super-line's TypeScript client)")
    if not CLIENT_BUNDLE.is_file():
        _missing(
            f"super-line's client bundle is not at {CLIENT_BUNDLE} "
            "(the repository's ../shared/interop, or set SUPERLINE_INTEROP_CLIENT)"
        )
    assert node is not None
    return node


class Served:
    def __init__(self, srv: Any, log: list[tuple[Any, ...]]) -> None:
        self.srv = srv
        self.log = log

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.srv.port}/"


async def _serve(**options: Any) -> Served:
    app = _load_app()
    log: list[tuple[Any, ...]] = []
    srv = app.build_server(log=log, **options)
    await srv.listen("127.0.0.1", 0)
    return Served(srv, log)


@pytest.fixture
async def server() -> AsyncIterator[Served]:
    _node()
    served = await _serve()
    try:
        yield served
    finally:
        await served.srv.close()


async def run_scenarios(url: str, *names: str) -> dict[str, dict[str, Any]]:
    """Run the node script; return ``{scenario: result}``; fail with its output otherwise."""
    node = _node()
    env = {**os.environ, "SUPERLINE_INTEROP_CLIENT": str(CLIENT_BUNDLE)}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        url,
        *names,
        cwd=str(REPO_ROOT),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_DEADLINE_S)
    except TimeoutError:
        proc.kill()  # this process only, by its PID
        out, err = await proc.communicate()
        pytest.fail(
            f"node ts_scenarios.mjs {' '.join(names)} did not finish within {NODE_DEADLINE_S} s\n"
            f"stdout:\n{out.decode(errors='replace')}\nstderr:\n{err.decode(errors='replace')}"
        )
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    lines: dict[str, dict[str, Any]] = {}
    for raw in stdout.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            lines[line["scenario"]] = line
    failed = {n: line.get("error") for n, line in lines.items() if not line["ok"]}
    assert proc.returncode == 0 and not failed, (
        f"ts_scenarios.mjs exited {proc.returncode}; failed scenarios: {failed}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    )
    missing = [n for n in names if n not in lines]
    assert not missing, f"no result line for {missing}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return {n: line["result"] for n, line in lines.items()}


async def run_one(url: str, name: str) -> dict[str, Any]:
    return (await run_scenarios(url, name))[name]


async def _settled_log(served: Served, kind: str, count: int) -> list[tuple[Any, ...]]:
    """The app log's entries of ``kind`` once there are ``count`` of them (bounded wait)."""
    for _ in range(200):
        entries = [e for e in served.log if e[0] == kind]
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.01)
    return [e for e in served.log if e[0] == kind]


# ---------------------------------------------------------------- scenarios


async def test_handshake_and_initial_env(server: Served) -> None:
    r = await run_one(server.url, "env")
    assert r["env"] is None  # the app sets no env: the first frame carries d=null (§1)
    assert r["first_frame"] == {"t": "env", "d": None}
    assert r["connected"] is True
    assert r["query"] == {"token": "interop-token", "role": "user"}  # role written last (§1)
    assert r["upgrade"] == {"status": 101, "protocol": None}  # no subprotocol selected (§1)
    # The server saw the connection and, after the client's close, its end.
    assert await _settled_log(server, "connect", 1) == [("connect", "user")]
    assert await _settled_log(server, "disconnect", 1) == [("disconnect", "user")]


async def test_echo_round_trip_and_correlation(server: Served) -> None:
    r = await run_one(server.url, "echo")
    assert r["reply"] == {"text": "héllo, wörld ✓ 🚀"}
    assert r["concurrent"] == [f"m{k}" for k in range(20)]


async def test_request_without_input(server: Served) -> None:
    r = await run_one(server.url, "whoami")
    # The TS client drops `d` entirely for an undefined input (§2); it means null.
    assert r["sent_frame"] == {"t": "req", "i": 1, "m": "whoami"}
    assert r["reply"] == {"text": "user:alice"}


async def test_typed_error(server: Served) -> None:
    r = await run_one(server.url, "typed_error")
    assert r["error"] == {
        "ok": False,
        "code": "NOPE",
        "message": "nope: abc",
        "has_data": True,
        "data": {"reason": "because", "n": 7},
    }
    assert r["raw_frame"] == {
        "t": "err",
        "i": 1,
        "code": "NOPE",
        "m": "nope: abc",
        "d": {"reason": "because", "n": 7},
    }


async def test_internal_error_hides_details(server: Served) -> None:
    r = await run_one(server.url, "internal")
    err = r["error"]
    assert err["code"] == "INTERNAL"
    assert err["message"] == "Internal server error"
    assert "kaboom" not in json.dumps(r["raw_frame"])
    # No data for an INTERNAL error: `d` is omitted (§2 "SHOULD omit d in err").
    assert r["raw_frame"] == {"t": "err", "i": 1, "code": "INTERNAL", "m": "Internal server error"}
    assert err["has_data"] is False
    assert r["after"] == {"text": "still here"}


def _assert_validation(out: dict[str, Any], path: list[Any] | None = None) -> None:
    assert out["code"] == "VALIDATION", out
    # PROTOCOL §5 gives "Validation failed" as the typical message; we may add detail after it.
    assert out["message"].startswith("Validation failed"), out
    issues = out["data"]
    assert isinstance(issues, list) and issues, out  # Standard-Schema-like issue list (§5)
    for issue in issues:
        assert isinstance(issue, dict) and isinstance(issue.get("message"), str) and issue["message"], out
    if path is not None:
        assert any(i.get("path") == path for i in issues), out


async def test_validation_error_for_bad_input(server: Served) -> None:
    r = await run_one(server.url, "validation")
    _assert_validation(r["bad_type"], ["text"])  # echo({text: 123})
    _assert_validation(r["missing"])  # echo() -> no `d` -> null
    _assert_validation(r["wrong_shape"], ["n"])  # tick({n: 1.5})
    assert r["after"] == {"text": "ok"}


async def test_not_found_for_cross_role_and_unknown_names(server: Served) -> None:
    r = await run_one(server.url, "not_found")

    def err(code: str, message: str) -> dict[str, Any]:
        return {"ok": False, "code": code, "message": message, "has_data": False, "data": None}

    assert r["cross_role"] == err("NOT_FOUND", "Unknown message: report")
    # NOT_FOUND comes before validation (§5): bad input to a foreign name is still NOT_FOUND.
    assert r["cross_role_bad_input"] == err("NOT_FOUND", "Unknown message: report")
    assert r["unknown"] == err("NOT_FOUND", "Unknown message: nosuch")
    assert r["unknown_topic"] == err("NOT_FOUND", "Unknown topic: nosuchtopic")
    assert not [e for e in server.log if e[0] == "report"]  # the agent handler never ran


async def test_agent_role(server: Served) -> None:
    r = await run_one(server.url, "agent")
    assert r["report"] == {"ok": True}
    assert r["whoami"]["code"] == "NOT_FOUND"
    assert r["whoami"]["message"] == "Unknown message: whoami"
    assert r["echo"] == {"text": "shared"}
    assert ("report", "r1") in server.log


async def test_events_from_on_connection_and_handler(server: Served) -> None:
    r = await run_one(server.url, "event")
    assert r["welcome"] == {"text": "welcome user"}
    assert r["poked"] == {"text": "poked:hey"}
    assert r["reply"] == {"ok": True}
    assert r["all"] == [{"text": "welcome user"}, {"text": "poked:hey"}]


async def test_topic_subscribe_publish_unsubscribe(server: Served) -> None:
    r = await run_one(server.url, "topic")
    assert r["sub_frame"] == {"t": "sub", "i": 1, "c": "ticks"}
    assert r["ack_frame"] == {"t": "res", "i": 1, "d": None}  # sub ack: d is null (§3.1)
    assert r["reply"] == {"ok": True}
    assert r["received"] == {"n": 5}
    assert r["all"] == [{"n": 5}]  # nothing after unsubscribe
    pub = r["pub_frame"]
    assert {k: v for k, v in pub.items() if k != "nd"} == {"t": "pub", "c": "ticks", "d": {"n": 5}}
    assert set(pub) <= {"t", "c", "d", "nd"}
    assert ("subscribe", "ticks", True) in server.log


async def test_forbidden_subscribe(server: Served) -> None:
    r = await run_one(server.url, "forbidden")
    assert r["denied"] == {
        "ok": False,
        "code": "FORBIDDEN",
        "message": "Subscribe denied: secret",
        "has_data": False,
        "data": None,
    }
    assert r["after"] == {"text": "alive"}
    assert ("subscribe", "secret", False) in server.log


async def test_server_to_client_request(server: Served) -> None:
    r = await run_one(server.url, "server_request")
    assert r["answer"] == {"ok": True}
    assert r["asked"] == ["ready?", "decline", "bad", "crash"]
    sreq = r["sreq_frame"]
    assert set(sreq) == {"t", "i", "m", "d"} and isinstance(sreq["i"], int)
    assert (sreq["t"], sreq["m"], sreq["d"]) == ("sreq", "confirm", {"q": "ready?"})
    # The client's typed serr reaches the server-side caller, which lets it propagate.
    assert r["declined"] == {
        "ok": False,
        "code": "DECLINED",
        "message": "not now",
        "has_data": True,
        "data": {"why": "test"},
    }
    # The server validates the sres output against confirm's output schema (§6).
    assert r["bad_output"]["code"] == "VALIDATION"
    assert r["crash"]["code"] == "INTERNAL"
    answers = r["answer_frames"]
    assert [f["t"] for f in answers] == ["sres", "serr", "sres", "serr"]
    assert answers[0]["d"] == {"ok": True}


async def test_server_request_without_client_handler(server: Served) -> None:
    r = await run_one(server.url, "server_request_unhandled")
    assert r["serr_frame"]["code"] == "NOT_FOUND"
    assert r["serr_frame"]["m"] == "No handler for confirm"
    assert r["error"]["code"] == "NOT_FOUND"
    assert r["error"]["message"] == "No handler for confirm"


async def test_authentication_failure_is_http_401(server: Served) -> None:
    r = await run_one(server.url, "auth_rejected")
    assert r["close_code"] == 1006  # a refused upgrade looks like a drop (§1)
    assert r["ws_errors"] == ["Unexpected server response: 401"]
    assert r["frames"] == 0
    assert r["call"]["code"] == "DISCONNECTED"
    assert not [e for e in server.log if e[0] == "connect"]


async def test_heartbeat_ping_pong() -> None:
    _node()
    served = await _serve(heartbeat={"interval": 0.2, "max_missed": 2})
    try:
        r = await run_one(served.url, "heartbeat")
        stats = served.srv.statistics()
    finally:
        await served.srv.close()
    # ~1.2 s at a 0.2 s interval: several pings, each answered by exactly one pong (§7).
    assert r["pings"] >= 3, r
    assert r["pongs"] == r["pings"], r
    assert r["ping_frame"] == {"t": "ping"}
    assert r["pong_frame"] == {"t": "pong"}
    assert r["disconnects"] == []
    assert r["after"] == {"text": "beat"}
    assert stats["reaped"] == 0


# Fields of each server -> client frame kind (PROTOCOL.md §3.2): (required, allowed).
SERVER_FRAMES: dict[str, tuple[set[str], set[str]]] = {
    "res": ({"t", "i"}, {"t", "i", "d"}),
    "err": ({"t", "code", "m"}, {"t", "i", "code", "m", "d"}),
    "evt": ({"t", "e", "d"}, {"t", "e", "d"}),
    "pub": ({"t", "c", "d"}, {"t", "c", "d", "nd"}),
    "sreq": ({"t", "i", "m", "d"}, {"t", "i", "m", "d"}),
    "env": ({"t", "d"}, {"t", "d"}),
    "ping": ({"t"}, {"t"}),
}


async def test_json_serializer_frames_match_protocol() -> None:
    _node()
    served = await _serve(serializer="json")
    try:
        r = await run_one(served.url, "frames")
    finally:
        await served.srv.close()
    inbound = r["inbound"]
    assert inbound, "no frames received"
    for item in inbound:
        frame = item["frame"]
        assert item["binary"] is False, f"JSON frames travel as text messages (§2): {frame}"
        assert isinstance(frame, dict) and frame.get("t") in SERVER_FRAMES, frame
        required, allowed = SERVER_FRAMES[frame["t"]]
        assert required <= set(frame) <= allowed, f"{frame} (required {required}, allowed {allowed})"
        for key in ("i",):
            if key in frame:
                assert isinstance(frame[key], int) and not isinstance(frame[key], bool), frame
        for key in ("m", "code", "e", "c", "nd"):
            if key in frame:
                assert isinstance(frame[key], str), frame
    kinds = [item["frame"]["t"] for item in inbound]
    assert kinds[0] == "env"  # always the first frame (§1)
    assert {"env", "res", "err", "evt", "pub", "sreq"} <= set(kinds)
    # Replies echo the request ids the client allocated (1, 2, ... shared with `sub`).
    outbound = [item["frame"] for item in r["outbound"]]
    asked = {f["i"]: f for f in outbound if f["t"] in ("req", "sub")}
    replies = [item["frame"] for item in inbound if item["frame"]["t"] in ("res", "err")]
    assert sorted(f["i"] for f in replies) == sorted(asked)
    by_id = {f["i"]: f for f in replies}
    assert by_id[1] == {"t": "res", "i": 1, "d": {"text": "f"}}
    nope = {"t": "err", "i": 2, "code": "NOPE", "m": "nope: f", "d": {"reason": "because", "n": 7}}
    assert by_id[2] == nope
    assert by_id[3] == {"t": "err", "i": 3, "code": "INTERNAL", "m": "Internal server error"}
    assert by_id[4] == {"t": "err", "i": 4, "code": "NOT_FOUND", "m": "Unknown message: nosuch"}
    sub_id = next(f["i"] for f in outbound if f["t"] == "sub")
    assert by_id[sub_id] == {"t": "res", "i": sub_id, "d": None}
    # The client's answer to the sreq echoes the server's id.
    sreq = next(item["frame"] for item in inbound if item["frame"]["t"] == "sreq")
    sres = next(f for f in outbound if f["t"] == "sres")
    assert sres == {"t": "sres", "i": sreq["i"], "d": {"ok": True}}
