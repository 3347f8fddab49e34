"""superline_zmq server for the round-trip benchmark: shared `echo: request(Text, Text)`.

Same contract and CLI as rt_raw_server.py; clients connect with `?role=user` (default authenticate).
Usage: python bench/rt_ours_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec
from benchlib import add_stop_signals, announce_port, install_loop, use_checkout

use_checkout()

from superline_zmq import create_socket_server, define_contract, request  # noqa: E402


class Text(msgspec.Struct):
    """Payload of the echo request and its reply."""

    text: str


api = define_contract(
    shared={"client_to_server": {"echo": request(Text, Text)}},
    roles={"user": {}},
)


async def echo(input: Text, ctx: Any, conn: Any) -> Text:
    """Return the input unchanged."""
    return input


async def main(port: int) -> None:
    """Listen on 127.0.0.1:`port` until SIGTERM/SIGINT, then close the server."""
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    srv = create_socket_server(api)
    srv.implement({"shared": {"echo": echo}})
    await srv.listen("127.0.0.1", port)
    try:
        announce_port(srv.port)
        await stop.wait()
    finally:
        await srv.close()


def cli() -> None:
    """Parse arguments and run the server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    install_loop(args.uvloop)
    asyncio.run(main(args.port))


if __name__ == "__main__":
    cli()
