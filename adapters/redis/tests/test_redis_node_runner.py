"""The node runner's failures: bad usage exits 2, an unreachable Redis exits 1, each with a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rd_server import free_port

HERE = Path(__file__).resolve().parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "superline_zmq_redis.node", *args],
        cwd=str(HERE), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_usage_exits_2() -> None:
    done = _run("no_such_module:app", "--url", "redis://127.0.0.1:1/0")
    assert done.returncode == 2 and "cannot import module 'no_such_module'" in done.stderr
    done = _run("rd_node_app:app", "--presence-ttl", "1", "--heartbeat-interval", "2")
    assert done.returncode == 2 and "must exceed the heartbeat interval" in done.stderr


def test_unreachable_redis_exits_1() -> None:
    done = _run("rd_node_app:app", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 1 and "could not reach Redis" in done.stderr
