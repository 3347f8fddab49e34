"""ASGI apps served by uvicorn / hypercorn processes in ``test_transport_asgi.py``.

* ``app``: Starlette with an HTTP route (``/hello``) beside the echo gateway mounted under ``/ws``
  (clients dial ``/ws/?role=ok``);
* ``standalone``: the endpoint alone, whose lifespan touches ``$ASGI_MARKERS/startup`` and
  ``$ASGI_MARKERS/shutdown``;
* ``failing``: the endpoint alone, whose startup hook raises.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from transport_gateway import EchoGateway

from superline_zmq.transport.asgi import AsgiEndpoint

gateway = EchoGateway(max_message_size=64 * 1024)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from starlette")


app = Starlette(routes=[Route("/hello", hello), Mount("/ws", app=AsgiEndpoint(gateway))])


def _mark(name: str) -> None:
    Path(os.environ["ASGI_MARKERS"], name).write_text(name)


async def _startup() -> None:
    _mark("startup")


async def _shutdown() -> None:
    _mark("shutdown")


async def _broken() -> None:
    raise RuntimeError("no database")


standalone = AsgiEndpoint(EchoGateway(), on_startup=_startup, on_shutdown=_shutdown)
failing = AsgiEndpoint(EchoGateway(), on_startup=_broken)
