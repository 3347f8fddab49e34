"""Who may open a WebSocket before anything else runs: the Origin allow list and connection caps (pure).

The server's upgrade decision (:meth:`SocketServer.decide <superline_zmq.server.SocketServer.decide>`)
asks these two plain objects before it runs ``authenticate``, so a refused handshake costs
a dictionary lookup and no application code, whatever the transport:

- :class:`OriginPolicy`: a browser sends the page's origin in the ``Origin`` header of
  every WebSocket upgrade, and WebSockets are not covered by the same-origin policy, so
  without this check any web page a logged-in user visits can open a socket to the server
  with the user's cookies (cross-site WebSocket hijacking). A listed origin, or no
  ``Origin`` header at all (not a browser: browsers always send it), passes; anything
  else is refused with 403. ``None`` allows every origin.
- :class:`ConnectionLimits`: ``max_connections`` per node and ``max_connections_per_ip``;
  beyond them the upgrade is refused with 503. Counting is O(1) per handshake and per
  close: the total is the server's table of open connections, and the per-address counts
  are one dictionary, kept only when that cap is set.

Origins are compared as browsers serialize them (RFC 6454): lower-case scheme and host,
the port only when it is not the scheme's default, no path; ``null`` (sandboxed frames,
``file:`` pages) matches only if listed literally.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: Why :meth:`ConnectionLimits.check` refused a handshake.
OVER_TOTAL = "max_connections"
OVER_PER_IP = "max_connections_per_ip"


def normalize_origin(origin: str) -> str:
    """``origin`` as a browser would send it (``https://example.com``, ``http://localhost:8080``, ``null``).

    Raises ``ValueError`` for something that is not an origin (no scheme or host, or a
    path, query or fragment), so a typo in the configuration fails at start.
    """
    text = origin.strip()
    if text.lower() == "null":
        return "null"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {origin!r} ({exc})") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host or parts.username or parts.password:
        raise ValueError(f"not an origin: {origin!r} (expected scheme://host[:port], e.g. https://example.com)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"not an origin: {origin!r} (an origin has no path, query or fragment)")
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """The browser origins allowed to open a WebSocket (``None``: any); see the module docstring."""

    __slots__ = ("origins",)

    def __init__(self, origins: Iterable[str] | None) -> None:
        if isinstance(origins, str):
            raise TypeError("origins= takes a list of origins, not one string (wrap it in a list)")
        #: The normalized allowed origins (None: any origin).
        self.origins: frozenset[str] | None = (
            None if origins is None else frozenset(normalize_origin(o) for o in origins)
        )

    def allows(self, origin: str | None) -> bool:
        """Whether an upgrade carrying this ``Origin`` header (None: none) may proceed."""
        if self.origins is None or origin is None:
            return True
        try:
            return normalize_origin(origin) in self.origins
        except ValueError:
            return False  # garbage in the header is no listed origin


def host_of(peer: str) -> str:
    """The address part of a ``host:port`` / ``[v6]:port`` peer string (the per-IP key)."""
    host, sep, _ = peer.rpartition(":")
    return host.strip("[]") if sep else peer


class ConnectionLimits:
    """Caps on open connections: in total and per peer address (``None``: no cap); see the module docstring."""

    __slots__ = ("_per_ip", "max_connections", "max_connections_per_ip")

    def __init__(self, max_connections: int | None = None, max_connections_per_ip: int | None = None) -> None:
        for name, value in (("max_connections", max_connections), ("max_connections_per_ip", max_connections_per_ip)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self._per_ip: dict[str, int] = {}

    def check(self, peer: str, open_now: int) -> str | None:
        """Why one more connection from ``peer`` (``host:port``) must be refused, with ``open_now`` open
        (:data:`OVER_TOTAL` or :data:`OVER_PER_IP`); None if it fits."""
        if self.max_connections is not None and open_now >= self.max_connections:
            return OVER_TOTAL
        if self.max_connections_per_ip is not None and self._per_ip.get(host_of(peer), 0) >= (
            self.max_connections_per_ip
        ):
            return OVER_PER_IP
        return None

    def opened(self, peer: str) -> None:
        """A connection from ``peer`` is open (counted against its address)."""
        if self.max_connections_per_ip is not None:
            ip = host_of(peer)
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def closed(self, peer: str) -> None:
        """A connection :meth:`opened` from ``peer`` is closed."""
        if self.max_connections_per_ip is not None:
            ip = host_of(peer)
            left = self._per_ip.get(ip, 0) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    def per_ip(self, peer: str) -> int:
        """Open connections counted for ``peer``'s address (0 when the per-address cap is off)."""
        return self._per_ip.get(host_of(peer), 0)


__all__ = ["OVER_PER_IP", "OVER_TOTAL", "ConnectionLimits", "OriginPolicy", "host_of", "normalize_origin"]
