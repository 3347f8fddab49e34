"""The contract and server the fan-out tests run against.

``api`` has a shared block and two roles. The names are chosen to exercise every
fan-out rule:

- ``notice`` (shared event): what rooms carry; ``alert`` (``user`` only) is a role-only
  event, which ``conn.emit`` allows for a user and ``room.broadcast`` refuses;
- ``ticks`` / ``news`` (shared topics): every role may subscribe; the cluster bus
  carries them;
- ``alerts``: declared by *both* roles, as two distinct role topics (channels
  ``t:user:alerts`` and ``t:agent:alerts``), so ``for_role`` must keep them apart;
- ``sync`` (shared event): the clusters' sentinel (see :meth:`cluster.Cluster.settle`);
- ``whoami`` (shared request): tells a client its connection id and node, so a test can
  find the server-side :class:`~superline_zmq.Conn` of a client it opened.

This module is importable on its own (a later issue runs the same app in separate OS
processes as ZeroMQ nodes): ``build_server(**options)`` returns an un-started server.
"""

from __future__ import annotations

from typing import Any

import msgspec

from superline_zmq import Conn, SocketServer, create_socket_server, define_contract, event, request, topic


class Text(msgspec.Struct):
    text: str


class Tick(msgspec.Struct):
    n: int


class Alert(msgspec.Struct):
    level: int


class Me(msgspec.Struct):
    id: str
    node: str
    role: str


api = define_contract(
    shared={
        "client_to_server": {"whoami": request(None, Me)},
        "server_to_client": {
            "notice": event(Text),
            "sync": event(int),
            "ticks": topic(Tick),
            "news": topic(Text),
        },
    },
    roles={
        "user": {"server_to_client": {"alert": event(Alert), "alerts": topic(Alert)}},
        "agent": {"server_to_client": {"alerts": topic(Alert)}},
    },
)


def build_server(**options: Any) -> SocketServer:
    """An un-started fan-out server for ``api`` (options go to ``create_socket_server``)."""
    srv = create_socket_server(api, **options)

    async def whoami(inp: None, ctx: Any, conn: Conn) -> Me:
        return Me(conn.id, srv.node_id, conn.role)

    srv.implement({"shared": {"whoami": whoami}})
    return srv
