"""Health endpoints: ``/healthz`` (the process is up) and ``/readyz`` (ready for traffic) (pure).

Both are plain HTTP ``GET`` answers, served without authentication and without access
logs, on the WebSocket port (the server answers them in ``decide``, before
``authenticate``, when its ``health_paths`` option is on) and on a node's metrics port
(:mod:`superline_zmq.ops_http`). The answer is decided here, from the request's path and
the server's readiness, so both places say the same thing:

- ``/healthz``: always 200 ``{"status": "ok"}`` while the process answers at all;
- ``/readyz``: 200 ``{"status": "ready"}``, or 503 ``{"status": "not ready", "reason": ...}``
  while the server is not listening, its adapter has not joined the cluster, or it is
  draining (see :meth:`SocketServer.readiness <superline_zmq.server.SocketServer.readiness>`).

Responses carry ``Content-Type: application/json`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from superline_zmq.transport import Refuse

#: Headers of every health answer.
HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))


@dataclass(frozen=True)
class HealthPaths:
    """The paths of the health endpoints (``health_paths=True`` uses these defaults)."""

    live: str = "/healthz"
    ready: str = "/readyz"

    def __post_init__(self) -> None:
        for name in ("live", "ready"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise ValueError(f"health path {name!r} must start with '/', got {value!r}")
        if self.live == self.ready:
            raise ValueError(f"the live and ready paths must differ, got {self.live!r} for both")

    def __contains__(self, path: object) -> bool:
        return path == self.live or path == self.ready


def health_paths(spec: HealthPaths | bool | None) -> HealthPaths | None:
    """The server option ``health_paths`` resolved: ``True`` gives the defaults, ``False``/None turns it off."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return HealthPaths()
    if isinstance(spec, HealthPaths):
        return spec
    raise TypeError(f"health_paths must be a bool or a HealthPaths, got {spec!r}")


def answer(paths: HealthPaths, path: str, readiness: Callable[[], str | None]) -> Refuse | None:
    """The HTTP answer for ``path``, or None if it is not a health path.

    ``readiness()`` is None when ready, else the reason (called only for the ready path).
    The answer is a quiet :class:`~superline_zmq.transport.Refuse`: transports do not log it.
    """
    if path == paths.live:
        return _json(HTTPStatus.OK, {"status": "ok"})
    if path == paths.ready:
        reason = readiness()
        if reason is None:
            return _json(HTTPStatus.OK, {"status": "ready"})
        return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "reason": reason})
    return None


def _json(status: HTTPStatus, body: dict[str, str]) -> Refuse:
    return Refuse(int(status), json.dumps(body) + "\n", HEADERS, True)


__all__ = ["HEADERS", "HealthPaths", "answer", "health_paths"]
