"""The app every node of `mesh_idle.py` runs (`superline-zmq run mesh_app:app`): idle, counting its gossip.

It must run unchanged on older checkouts (the "before" figures), so it uses only what every
version since the shared gossip driver has: `create_socket_server`, a one-request contract,
and `superline_zmq.gossip_driver.GossipDriver`. Importing it wraps two driver methods (a
bench may touch internals; an app must not):

- `GossipDriver.receive(data)`: every gossip message this node receives, from its SUB socket
  (broadcasts) or its ROUTER (direct): `in_bytes` / `in_msgs` — each copy on the wire once;
- `GossipDriver.execute(actions)`: what the node hands its sockets: `out_bytes` / `out_msgs`
  (a broadcast counts once; the PUB socket makes a copy per subscriber).

The `admin` role's `gossip` request returns those counters, with `time.monotonic()`.
"""

from __future__ import annotations

import time
from typing import Any

from superline_zmq import Auth, SocketServer, create_socket_server, define_contract, request
from superline_zmq.gossip_driver import GossipDriver

COUNTERS = {"in_bytes": 0, "in_msgs": 0, "out_bytes": 0, "out_msgs": 0}

_receive = GossipDriver.receive
_execute = GossipDriver.execute


def _counting_receive(self: GossipDriver, data: bytes) -> bool:
    COUNTERS["in_bytes"] += len(data)
    COUNTERS["in_msgs"] += 1
    return _receive(self, data)


def _counting_execute(self: GossipDriver, actions: list[Any]) -> None:
    for action in actions:
        data = getattr(action, "data", None)  # Broadcast, Send and Probe carry bytes
        if isinstance(data, bytes):
            COUNTERS["out_bytes"] += len(data)
            COUNTERS["out_msgs"] += 1
    _execute(self, actions)


GossipDriver.receive = _counting_receive  # type: ignore[method-assign]
GossipDriver.execute = _counting_execute  # type: ignore[method-assign]

api = define_contract(roles={"admin": {"client_to_server": {"gossip": request(None, dict[str, float])}}})


def app() -> SocketServer:
    srv = create_socket_server(api, authenticate=lambda hs: Auth("admin", None), heartbeat=False)

    async def gossip(_: None, ctx: Any, conn: Any) -> dict[str, float]:
        return {**{k: float(v) for k, v in COUNTERS.items()}, "t": time.monotonic()}

    srv.implement({"admin": {"gossip": gossip}})
    return srv
