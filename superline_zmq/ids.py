"""Identifiers that travel on the wire as strings, kept apart by type (pure)."""

from __future__ import annotations

import uuid
from typing import NewType

NodeId = NewType("NodeId", str)
ConnId = NewType("ConnId", str)
UserId = NewType("UserId", str)


def new_node_id() -> NodeId:
    """A fresh node id: 64 random bits as 16 hex digits, new for every process (incarnation)."""
    return NodeId(uuid.uuid4().hex[:16])


def make_conn_id(node: NodeId, seq: int) -> ConnId:
    """A connection id that names its node, so a targeted send needs no lookup to route."""
    return ConnId(f"{node}.{seq:x}")


def node_of(conn: str) -> NodeId | None:
    """The node a connection id names, or None if the id is not one of ours."""
    node, sep, seq = conn.partition(".")
    if not sep or len(node) != 16 or not seq:
        return None
    return NodeId(node)
