"""``redis-server`` processes for the tests: free loopback ports, no persistence, stopped by PID.

``redis-server`` missing is a failure with an install hint, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

#: How long a redis-server may take to answer PING after it was started.
START_DEADLINE = 10.0
INSTALL_HINT = (
    "redis-server is required by the Redis adapter's tests and was not found on PATH. "
    "Install it with `apt-get install redis-server` (Debian/Ubuntu; the project's .ci/deps does), "
    "or `brew install redis`, then run the tests again."
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, auth: tuple[str, ...], tls: bool = False, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING (raw RESP, no client library involved)."""
    try:
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = stack.enter_context(ctx.wrap_socket(s))
            cmd = b""
            if auth:
                cmd += b"*%d\r\n$4\r\nAUTH\r\n" % (len(auth) + 1)
                for part in auth:
                    cmd += b"$%d\r\n%s\r\n" % (len(part.encode()), part.encode())
            cmd += b"*1\r\n$4\r\nPING\r\n"
            s.sendall(cmd)
            data = b""
            while b"PONG" not in data and not data.startswith(b"-") and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return b"+PONG" in data
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (started by :meth:`start`, stopped by PID)."""

    def __init__(
        self,
        *,
        password: str | None = None,
        extra: list[str] | None = None,
        tls: tuple[str, str] | None = None,
        ping_auth: tuple[str, str] | None = None,
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.exe = exe
        self.password = password
        self.extra = list(extra or [])
        #: (certificate file, key file): serve TLS only (``rediss://``) with them
        self.tls = tls
        #: AUTH arguments for the readiness PING
        self.auth: tuple[str, ...] = ping_auth or ((password,) if password is not None else ())
        self.dir = tempfile.mkdtemp(prefix="superline-redis-")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(self.dir) / "redis.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        if self.tls is not None:
            cert, key = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key]
            ports += ["--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        else:
            ports = ["--port", str(self.port)]
        args = [self.exe, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, "--logfile", str(self.log), "--daemonize", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args + self.extra

    def start(self, port: int | None = None) -> RedisServer:
        """Start it (on ``port``, or a free one) and wait until it answers PING."""
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            self.port = port if port is not None else free_port()
            self.proc = subprocess.Popen(
                self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + START_DEADLINE
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if _ping(self.port, self.auth, self.tls is not None):
                    return self
                time.sleep(0.02)
            self.stop()
            if attempt == attempts - 1:
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}: {self.tail()}")
        raise AssertionError("unreachable")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Stop it by PID (``sig``, then SIGKILL after ``timeout``) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port."""
        port = self.port
        self.stop()
        self.start(port)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
