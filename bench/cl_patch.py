"""Opt-in experiment: the ZeroMQ adapter changes cluster_delivery.py suggests, applied by monkeypatching.

Nothing here runs unless the node's environment has `CL_PATCH` (a comma-separated subset of `drain`, `sync`);
`cluster_delivery.py --patch drain,sync` sets it for the library's nodes only, so a run can show what the
suggested library fixes would buy. The library itself is not changed, and the default benchmark run measures
the library as it is.

- `drain`: `ZeroMQAdapter._recv_loop` takes the first message with the awaited `recv_multipart()` as today,
  then up to `_BATCH - 1` more with a plain non-blocking `recv_multipart(zmq.NOBLOCK)` on a shadow socket
  (no Future, no poller bookkeeping per message) until `zmq.Again`, then yields. Safe for the edge-triggered
  ZeroMQ FD because it always ends on `Again` and every send on these sockets still goes through the asyncio
  socket (which re-checks `EVENTS` for waiting receivers).
- `sync`: direct messages and gossip to one member go out through a shadow (plain) socket of the member's DEALER:
  `send_multipart(frames, zmq.DONTWAIT)`, catching `zmq.Again`, instead of the asyncio socket's
  Future-returning `send_multipart`. Safe because nothing ever receives on those DEALERs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from superline_zmq.adapters import zeromq as zm

ENV = "CL_PATCH"


async def _recv_loop_drain(
    self: Any, sock: zmq.asyncio.Socket, handle: Callable[[list[bytes]], None], what: str
) -> None:
    sync = zmq.Socket.shadow(sock.underlying)
    n = 0
    while not sock.closed:
        try:
            frames = await sock.recv_multipart()
        except asyncio.CancelledError:
            raise
        except zmq.ZMQError as exc:
            if sock.closed or exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                return
            self._rlog.log(logging.ERROR, f"recv_{what}", "receiving on the %s socket failed: %r", what, exc)
            await asyncio.sleep(0.01)
            continue
        while True:
            try:
                handle(frames)
            except Exception as exc:
                self._stats["handler_errors"] += 1
                self._rlog.log(logging.ERROR, f"handle_{what}", "handling a %s message failed: %r", what, exc)
            n += 1
            if n % zm._BATCH == 0:
                await asyncio.sleep(0)  # a busy socket must not starve the loop
                break
            if sock.closed:
                break
            try:
                frames = sync.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again: nothing more now (or the socket closed: the outer loop sees it)
                break


def _install_sync_send(cls: Any) -> None:
    original_try_send = cls._try_send
    shadows: dict[int, tuple[zmq.asyncio.Socket, zmq.Socket]] = {}

    def _try_send(self: Any, sock: zmq.asyncio.Socket, frames: list[bytes]) -> BaseException | None:
        if sock is self._pub:
            return original_try_send(self, sock, frames)  # the XPUB: its receive loop waits on it
        entry = shadows.get(id(sock))
        if entry is None or entry[0] is not sock:
            if len(shadows) > 256:
                shadows.clear()
            entry = shadows[id(sock)] = (sock, zmq.Socket.shadow(sock.underlying))
        try:
            entry[1].send_multipart(frames, zmq.DONTWAIT)
        except Exception as exc:  # zmq.Again (queue full) or a closed socket
            return exc
        return None

    cls._try_send = _try_send


def apply() -> list[str]:
    """Apply the patches named in $CL_PATCH; return their names."""
    names = [n for n in os.environ.get(ENV, "").split(",") if n]
    if "drain" in names:
        zm.ZeroMQAdapter._recv_loop = _recv_loop_drain  # type: ignore[method-assign]
    if "sync" in names:
        _install_sync_send(zm.ZeroMQAdapter)
    return names
