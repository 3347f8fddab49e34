"""superline_zmq: typed realtime WebSocket servers that scale out without a broker.

The public API is what ``__all__`` lists; everything else is internal.
"""

from superline_zmq.adapter import Adapter
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus
from superline_zmq.client import Backoff, Client, Subscription, connect
from superline_zmq.contract import (
    Contract,
    Event,
    Request,
    ServerRequest,
    Topic,
    define_contract,
    event,
    request,
    server_request,
    topic,
)
from superline_zmq.errors import ContractError, ErrorCode, SocketError, SuperlineError
from superline_zmq.ids import ConnId, NodeId, UserId
from superline_zmq.server import (
    Auth,
    Backpressure,
    BusMeta,
    BusSubscription,
    Conn,
    Handshake,
    Heartbeat,
    MiddlewareInfo,
    Room,
    SocketServer,
    create_socket_server,
)
from superline_zmq.wire import JsonSerializer, MsgpackSerializer, Serializer

__all__ = [
    "Adapter",
    "Auth",
    "Backoff",
    "Backpressure",
    "BusMeta",
    "BusSubscription",
    "Client",
    "Conn",
    "ConnId",
    "Contract",
    "ContractError",
    "ErrorCode",
    "Event",
    "Handshake",
    "Heartbeat",
    "JsonSerializer",
    "MemoryAdapter",
    "MemoryBus",
    "MiddlewareInfo",
    "MsgpackSerializer",
    "NodeId",
    "Request",
    "Room",
    "Serializer",
    "ServerRequest",
    "SocketError",
    "SocketServer",
    "Subscription",
    "SuperlineError",
    "Topic",
    "UserId",
    "connect",
    "create_socket_server",
    "define_contract",
    "event",
    "request",
    "server_request",
    "topic",
]
