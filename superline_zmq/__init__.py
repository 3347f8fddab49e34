"""superline_zmq: typed realtime WebSocket servers that scale out without a broker.

The public API is what ``__all__`` lists; everything else is internal.
"""

from superline_zmq._version import __version__ as __version__
from superline_zmq.adapter import Adapter, Presence, PresenceEvents
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
from superline_zmq.metrics import Metrics
from superline_zmq.presence import ConnDescriptor, NodeInfo, PresenceChange, RoomDiff, UserPresence
from superline_zmq.server import (
    Auth,
    Backpressure,
    BusMeta,
    BusSubscription,
    ClusterView,
    Conn,
    ConnTarget,
    Handshake,
    HealthPaths,
    Heartbeat,
    LocalView,
    MiddlewareInfo,
    PresenceSubscription,
    Room,
    SocketServer,
    UserTarget,
    create_socket_server,
)
from superline_zmq.timing import ClusterTiming
from superline_zmq.wire import JsonSerializer, MsgpackSerializer, Serializer

__all__ = [
    "Adapter",
    "Auth",
    "Backoff",
    "Backpressure",
    "BusMeta",
    "BusSubscription",
    "Client",
    "ClusterTiming",
    "ClusterView",
    "Conn",
    "ConnDescriptor",
    "ConnId",
    "ConnTarget",
    "Contract",
    "ContractError",
    "ErrorCode",
    "Event",
    "Handshake",
    "HealthPaths",
    "Heartbeat",
    "JsonSerializer",
    "LocalView",
    "MemoryAdapter",
    "MemoryBus",
    "Metrics",
    "MiddlewareInfo",
    "MsgpackSerializer",
    "NodeId",
    "NodeInfo",
    "Presence",
    "PresenceChange",
    "PresenceEvents",
    "PresenceSubscription",
    "Request",
    "Room",
    "RoomDiff",
    "Serializer",
    "ServerRequest",
    "SocketError",
    "SocketServer",
    "Subscription",
    "SuperlineError",
    "Topic",
    "UserId",
    "UserPresence",
    "UserTarget",
    "connect",
    "create_socket_server",
    "define_contract",
    "event",
    "request",
    "server_request",
    "topic",
]
