"""The exception tree and the wire error codes.

::

    SuperlineError                 base of everything this library raises
    ├── SocketError                an error with a wire code; crosses the wire as `err`/`serr`
    ├── ContractError (ValueError) a malformed contract or implementation, raised at definition time
    └── CurveKeyError (ValueError) a malformed CURVE key, key pair, certificate or allow directory

Third-party exceptions (msgspec, websockets, zmq) are translated at the boundary that meets
them, with ``__cause__`` kept.
"""

from __future__ import annotations

from typing import Any, Final


class ErrorCode:
    """Built-in error codes (PROTOCOL §5). Any other string is allowed and passed through."""

    BAD_REQUEST: Final = "BAD_REQUEST"
    UNAUTHORIZED: Final = "UNAUTHORIZED"
    FORBIDDEN: Final = "FORBIDDEN"
    NOT_FOUND: Final = "NOT_FOUND"
    TIMEOUT: Final = "TIMEOUT"
    VALIDATION: Final = "VALIDATION"
    DISCONNECTED: Final = "DISCONNECTED"
    INTERNAL: Final = "INTERNAL"


class SuperlineError(Exception):
    """Base class of every exception this library raises on purpose."""


class SocketError(SuperlineError):
    """An error that carries a wire code, a human message and optional structured data.

    Raised in a handler it reaches the caller with the same code, message and data;
    raised by the client it is what a failed call rejects with.
    """

    def __init__(self, code: str, message: str = "", data: Any = None) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.data = data

    def __repr__(self) -> str:
        extra = f", data={self.data!r}" if self.data is not None else ""
        return f"SocketError({self.code!r}, {self.message!r}{extra})"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ContractError(SuperlineError, ValueError):
    """A contract or an implementation does not make sense; names the entry at fault."""


class CurveKeyError(SuperlineError, ValueError):
    """A CURVE key, key pair, certificate file or allow directory that cannot be used; says which and why."""
