"""The ``superline-zmq`` command line: ``run``, ``cluster`` and ``demo`` as real processes.

The process tests are sync tests driving their own ``asyncio.run``, so they run once
(not once per event loop): what they test is the CLI's own loop, not the test's.
Every wait has a deadline; every process started here is killed by PID at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import http_get
from presence_app import api

import superline_zmq
from superline_zmq import connect
from superline_zmq.cli import main
from superline_zmq.testing.cluster import free_port

TESTS = Path(__file__).resolve().parent
ROOT = Path(superline_zmq.__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(TESTS), env.get("PYTHONPATH")]))
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "superline_zmq.cli", *args]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextlib.asynccontextmanager
async def _spawn(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *_cli(*args),
        cwd=TESTS,
        env={**_env(), **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        assert proc.stderr is not None
        err = await asyncio.wait_for(proc.stderr.read(), 5)
        raise AssertionError(f"the process ended its output (rc={proc.returncode}); stderr:\n{err.decode()}")
    return line.decode()


# ---------------------------------------------------------------------- bad usage (in process)
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("presence_app:nope", "module 'presence_app' has no attribute 'nope'"),
        ("presence_app:api", "presence_app:api is a superline_zmq.contract.Contract object"),
        ("presence_app:Text", "calling presence_app:Text() with no arguments failed"),
        ("presence_app:UserState", "presence_app:UserState() returned a presence_app.UserState object"),
        ("presence_app:Local.__doc__", "presence_app:Local.__doc__ is None; expected a SocketServer"),
        ("presence_app", "expected MODULE:APP"),
    ],
)
def test_run_bad_app_exits_2_with_a_message(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", spec, "--loop", "asyncio"]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "presence_app:app", "--ws", "nonsense"]) == 2
    assert main(["cluster", "presence_app:app", "--nodes", "0"]) == 2
    assert main(["cluster", "presence_app:app", "--host", "10.1.2.3", "--loop", "asyncio"]) == 2
    err = capsys.readouterr().err
    assert "expected HOST:PORT" in err and "not a loopback address" in err, err


def test_bad_app_in_a_real_process_exits_2() -> None:
    async def scenario() -> None:
        async with _spawn("run", "no_such_module_xyz:app", "--json") as proc:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 2
            assert b"cannot import module 'no_such_module_xyz'" in err

    asyncio.run(scenario())


# ---------------------------------------------------------------------- run
def test_run_serves_websockets_and_sigterm_exits_0() -> None:
    async def scenario() -> None:
        args = ("run", "presence_app:app", "--ws", "127.0.0.1:0", "--bind", "tcp://127.0.0.1:0", "--json")
        async with _spawn(*args) as proc:
            ready = json.loads(await _line(proc, 20))
            assert ready["event"] == "ready"
            assert set(ready) == {"event", "node_id", "ws", "pub", "router", "pid"}
            assert ready["pid"] == proc.pid
            assert ready["ws"].startswith("ws://127.0.0.1:")
            assert ready["router"].startswith("tcp://127.0.0.1:") and not ready["router"].endswith(":0")
            client = await connect(api, ready["ws"], role="admin", open_timeout=5)
            try:
                me = await client.call("whoami", timeout=5)
                assert me.node == ready["node_id"] and me.role == "admin"
            finally:
                await client.close()
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, err.decode()
            events = [json.loads(x)["event"] for x in out.decode().splitlines()]
            assert events[-2:] == ["stopping", "stopped"], events

    asyncio.run(scenario())


async def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    status, _, body = await http_get(host, int(port), "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


async def _ready(url: str) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").removeprefix("ws://").split("/")[0].rsplit(":", 1)
    status, _, body = await http_get(host, int(port), "/readyz")
    return status, json.loads(body)


def test_a_node_is_scraped_over_http_and_ready_once_it_joined(tmp_path: Path) -> None:
    """Configured by a file and the environment; /metrics moves with traffic; /readyz turns 200 on joining."""
    seed = f"tcp://127.0.0.1:{free_port()}"
    cfg = tmp_path / "node.toml"
    cfg.write_text('app = "presence_app:app"\ntiming = "local"\nmetrics = "127.0.0.1:0"\nlog-format = "json"\n')

    async def scenario() -> None:
        async with _spawn("run", "--config", str(cfg), env={"SUPERLINE_SEED": seed}) as late:
            ready = json.loads(await _line(late, 20))
            assert ready["event"] == "ready" and ready["metrics"].startswith("http://127.0.0.1:")
            assert ready["metrics"].endswith("/metrics")
            for url in (ready["metrics"], ready["ws"]):  # the metrics port and the WebSocket port
                host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
                assert (await http_get(host, int(port), "/healthz"))[0] == 200
                status, body = await _ready(url)
                assert status == 503 and body["reason"].startswith("no seed has answered yet"), body
            before = await _metrics(ready["metrics"])
            assert before[("superline_ready", ())] == 0
            client = await connect(api, ready["ws"], role="admin", open_timeout=5)
            try:
                await client.call("whoami", timeout=5)
                after = await _metrics(ready["metrics"])
            finally:
                await client.close()
            ok = ("superline_requests_total", (("outcome", "ok"),))
            assert after[ok] == before.get(ok, 0) + 1
            assert after[("superline_connections", (("role", "admin"),))] == 1
            assert after[("superline_frames_received_total", ())] > before[("superline_frames_received_total", ())]
            assert after[("superline_request_duration_seconds_count", ())] >= 1
            async with _spawn("run", "presence_app:app", "--bind", seed, "--timing", "local", "--json") as first:
                assert json.loads(await _line(first, 20))["event"] == "ready"
                deadline = time.monotonic() + 15
                while (await _ready(ready["metrics"]))[0] != 200:
                    assert time.monotonic() < deadline, await _ready(ready["metrics"])
                    await asyncio.sleep(0.05)
                assert (await _ready(ready["ws"]))[0] == 200
                metrics = await _metrics(ready["metrics"])
                assert metrics[("superline_cluster_members_alive", ())] == 2
                assert metrics[("superline_ready", ())] == 1
                first.send_signal(signal.SIGTERM)
                await asyncio.wait_for(first.wait(), 15)
                assert first.returncode == 0
            late.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(late.communicate(), 15)
            assert late.returncode == 0, err.decode()
            lines = [json.loads(x) for x in err.decode().splitlines() if x.strip()]  # --log-format json
            assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)


# ---------------------------------------------------------------------- CURVE
def test_keygen_writes_a_pyzmq_pair_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superline_zmq.curve import CurveConfig

    assert main(["keygen", "node-a", "--dir", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    config = CurveConfig.from_files(tmp_path / "keys" / "node-a.key_secret", tmp_path / "keys")
    assert f"key fingerprint {config.fingerprint}" in out
    assert (tmp_path / "keys" / "node-a.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keygen", "node-a", "--dir", str(tmp_path / "keys")]) == 1
    assert main(["keygen", "../escape", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_curve_options_are_checked_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "n", "--dir", str(tmp_path)]) == 0
    cert = str(tmp_path / "n.key_secret")
    assert main(["run", "presence_app:app", "--loop", "asyncio", "--curve-cert", cert]) == 2
    assert main(["run", "presence_app:app", "--loop", "asyncio", "--curve-cert", str(tmp_path / "n.key"),
                 "--curve-allow", str(tmp_path)]) == 2  # fmt: skip
    assert main(["run", "presence_app:app", "--loop", "asyncio", "--curve-cert", cert,
                 "--curve-allow", str(tmp_path / "nowhere")]) == 2  # fmt: skip
    assert main(["cluster", "presence_app:app", "--loop", "asyncio", "--curve", "--curve-cert", cert,
                 "--curve-allow", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "go together" in err and "holds no secret key" in err and "does not exist" in err, err
    assert "do not combine" in err, err


def test_run_with_curve_reloads_its_allow_list_on_sighup(tmp_path: Path) -> None:
    async def scenario() -> None:
        assert main(["keygen", "n", "--dir", str(tmp_path / "certs")]) == 0
        assert main(["keygen", "other", "--dir", str(tmp_path / "certs")]) == 0
        allow = tmp_path / "allow"
        allow.mkdir()
        args = ("run", "presence_app:app", "--json", "--curve-cert", str(tmp_path / "certs" / "n.key_secret"),
                "--curve-allow", str(allow))  # fmt: skip
        async with _spawn(*args) as proc:
            ready = json.loads(await _line(proc, 20))
            assert ready["event"] == "ready" and len(ready["key"]) == 8
            (allow / "other.key").write_bytes((tmp_path / "certs" / "other.key").read_bytes())
            proc.send_signal(signal.SIGHUP)
            reloaded = json.loads(await _line(proc, 10))
            assert reloaded["event"] == "reloaded" and reloaded["allowed"] == 1 and len(reloaded["added"]) == 1
            (allow / "broken.key").write_text("no key in here\n")
            proc.send_signal(signal.SIGHUP)
            failed = json.loads(await _line(proc, 10))
            assert failed["event"] == "reload_failed" and "broken.key" in failed["error"]
            client = await connect(api, ready["ws"], role="admin", open_timeout=5)  # still serving
            try:
                stats = await client.call("stats", timeout=5)
                assert stats["adapter_allowed_keys"] == 1 and stats["adapter_allow_reloads"] == 1
            finally:
                await client.close()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, err.decode()


def test_run_advertises_what_it_is_told_and_says_where_it_is_bound() -> None:
    async def scenario() -> None:
        args = ("run", "presence_app:app", "--bind", "tcp://0.0.0.0:0", "--json")
        args += ("--advertise", "tcp://127.0.0.1:7201", "--advertise-pub", "tcp://127.0.0.1:7202")
        async with _spawn(*args) as proc:
            bound = json.loads(await _line(proc, 20))
            assert bound["event"] == "bound" and bound["router"].startswith("tcp://0.0.0.0:")
            ready = json.loads(await _line(proc, 20))
            assert (ready["event"], ready["router"], ready["pub"]) == ("ready", "tcp://127.0.0.1:7201", "tcp://127.0.0.1:7202")
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0

    asyncio.run(scenario())


# ---------------------------------------------------------------------- cluster
def test_cluster_prints_urls_and_sigint_stops_every_child() -> None:
    async def scenario() -> None:
        args = ("cluster", "presence_app:app", "--nodes", "2", "--heartbeat-interval", "0.2", "--ttl", "1.0")
        async with _spawn(*args) as proc:
            lines: list[str] = []
            deadline = time.monotonic() + 30
            while not any("ready and converged" in x for x in lines):
                lines.append(await _line(proc, max(0.1, deadline - time.monotonic())))
            table = "".join(lines)
            urls = re.findall(r"ws://127\.0\.0\.1:\d+/", table)
            assert len(urls) == 2, table
            pids = [int(row.split()[-1]) for row in lines[1:3]]
            assert all(not _gone(pid) for pid in pids)
            for url in urls:  # both serve
                client = await connect(api, url, role="admin", open_timeout=5)
                try:
                    assert await client.call("count", timeout=5) >= 1
                finally:
                    await client.close()
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err.decode()
            assert all(_gone(pid) for pid in pids), pids

    asyncio.run(scenario())


# ---------------------------------------------------------------------- demo
def test_demo_runs_for_its_duration_and_exits_0() -> None:
    async def scenario() -> tuple[str, str, Any]:
        args = ("demo", "--duration", "3", "--nodes", "3", "--clients", "6", "--interval", "1", "--seed", "7")
        async with _spawn(*args) as proc:
            out, err = await asyncio.wait_for(proc.communicate(), 40)
            return out.decode(), err.decode(), proc.returncode

    out, err, rc = asyncio.run(scenario())
    assert rc == 0, err
    frames = [f for f in re.split(r"(?m)^(?=superline-zmq demo )", out) if f.startswith("superline-zmq demo")]
    assert frames, out
    last = frames[-1]
    assert "nodes alive 3/3" in last, last
    assert "cluster transport: CURVE" in last, last
    assert len(re.findall(r"^\d+\s+[0-9a-f]{16}\s+yes\s", last, re.M)) == 3, last
    assert "demo finished: 3 nodes" in out, out
    assert re.search(r"^node 2 drained and left in [\d.]+ s \(exit code 0\)", out, re.M), out
