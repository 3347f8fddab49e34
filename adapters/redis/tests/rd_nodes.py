"""Node processes for the tests: ``python -m superline_zmq_redis.node rd_node_app:app`` on one Redis.

Each node is its own OS process (its own event loop, its own Redis connections), as in
production. :func:`start_node` waits for its JSON ``ready`` line (with a deadline) and
returns a :class:`NodeProcess`; :class:`Nodes` stops every process it started by PID
(SIGTERM for a graceful stop, SIGKILL for a crash, SIGKILL for anything left at teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

from rd_helpers import DEFAULT_TIMEOUT
from rd_node_app import api

from superline_zmq import Client, connect

HERE = Path(__file__).resolve().parent
READY_DEADLINE = 20.0


class NodeProcess:
    """One node process, as its ``ready`` line described it."""

    def __init__(self, proc: asyncio.subprocess.Process, args: list[str]) -> None:
        self.proc = proc
        self.args = args
        self.pid = proc.pid
        self.url = ""
        self.node_id = ""
        self.stderr: deque[str] = deque(maxlen=200)
        self._stderr_task: asyncio.Task[None] | None = None

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())

    def describe(self) -> str:
        return f"node pid {self.pid} ({' '.join(self.args)}); stderr:\n" + "\n".join(self.stderr)

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


class Nodes:
    """Starts node processes on one Redis and always stops them."""

    def __init__(self, url: str, prefix: str, *, presence_ttl: float, heartbeat_interval: float) -> None:
        self.url = url
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self.heartbeat_interval = heartbeat_interval
        self.nodes: list[NodeProcess] = []
        self.clients: list[Client] = []

    async def start(self) -> NodeProcess:
        args = [
            sys.executable, "-m", "superline_zmq_redis.node", "rd_node_app:app",
            "--url", self.url, "--prefix", self.prefix,
            "--presence-ttl", repr(self.presence_ttl), "--heartbeat-interval", repr(self.heartbeat_interval),
            "--liveness-poll", "0.2", "--json", "--loop", "asyncio", "--watch-parent", str(os.getpid()),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(HERE),
            start_new_session=True,
        )
        node = NodeProcess(proc, args)
        self.nodes.append(node)
        node._stderr_task = asyncio.ensure_future(node._drain_stderr())
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(READY_DEADLINE):
                while True:
                    line = await proc.stdout.readline()
                    if not line:
                        await asyncio.sleep(0.1)  # let stderr drain for the message
                        raise RuntimeError("node exited before it was ready: " + node.describe())
                    event: dict[str, Any] = json.loads(line)
                    if event.get("event") == "ready":
                        node.url, node.node_id = event["ws"], event["node_id"]
                        return node
        except TimeoutError:
            raise RuntimeError(f"node not ready within {READY_DEADLINE} s: " + node.describe()) from None

    async def client(self, node: NodeProcess, role: str, **params: str) -> Client:
        client = await connect(api, node.url, role=role, params=params, reconnect=False, open_timeout=DEFAULT_TIMEOUT)
        self.clients.append(client)
        return client

    async def kill(self, node: NodeProcess) -> None:
        """SIGKILL: no goodbye, no presence cleanup."""
        node.signal(signal.SIGKILL)
        await node.wait(5.0)

    async def stop(self, node: NodeProcess) -> int:
        """SIGTERM: the node closes gracefully; returns its exit code."""
        node.signal(signal.SIGTERM)
        return await node.wait(15.0)

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), DEFAULT_TIMEOUT)
        for node in self.nodes:
            node.signal(signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.wait(5.0)
            if node._stderr_task is not None:
                node._stderr_task.cancel()
                await asyncio.gather(node._stderr_task, return_exceptions=True)
