"""Turning msgspec validation failures into ``VALIDATION`` errors (pure)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from superline_zmq.errors import ErrorCode, SocketError

_AT = re.compile(r"^(?P<msg>.*?) - at `(?P<path>\$[^`]*)`$", re.S)
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def issues(exc: msgspec.ValidationError) -> list[dict[str, Any]]:
    """A Standard-Schema-like issue list: ``[{"message": ..., "path": [...]}]``."""
    text = str(exc)
    m = _AT.match(text)
    if m is None:
        return [{"message": text, "path": []}]
    path: list[str | int] = []
    for key, index in _TOKEN.findall(m.group("path")[1:]):
        if key:
            path.append(key)
        else:
            path.append(int(index) if index.isdigit() else index)
    return [{"message": m.group("msg"), "path": path}]


def validation_error(exc: msgspec.ValidationError, where: str) -> SocketError:
    """A ``VALIDATION`` :class:`SocketError` saying what failed, where, and at which path."""
    err = SocketError(ErrorCode.VALIDATION, f"Validation failed for {where}: {exc}", issues(exc))
    err.__cause__ = exc
    return err
