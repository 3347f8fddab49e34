"""Run an app as one node of a Redis-linked cluster.

::

    python -m superline_zmq_redis.node MODULE:APP --url redis://127.0.0.1:6379/0 [--ws HOST:PORT] [--json]
    superline-zmq-redis MODULE:APP --url ...            (the same, as an installed script)

``MODULE:APP`` is what ``superline-zmq run`` takes: a
:class:`~superline_zmq.SocketServer`, or a zero-argument callable (sync or async)
returning one; the current directory is on ``sys.path``. The node builds the Redis
adapter (``--url``, ``--prefix``, ``--presence-ttl``, ``--heartbeat-interval``), calls
``srv.use_adapter(adapter)``, listens, and prints one JSON line on stdout once serving::

    {"event": "ready", "node_id": "...", "ws": "ws://127.0.0.1:8080/", "pid": 1234, "prefix": "superline"}

SIGTERM or SIGINT closes the server gracefully (its presence leaves Redis at once) and
exits 0; a second signal, or a shutdown longer than ``--shutdown-timeout``, exits 1.
With ``--json`` it also prints ``stopping``/``stopped`` lines. Exit codes: 0 clean stop,
1 runtime failure (Redis unreachable, port taken, ...), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from superline_zmq.cli import (
    Output,
    Stopper,
    UsageError,
    load_target,
    loop_factory,
    parse_hostport,
    resolve_server,
    serve_node,
)
from superline_zmq_redis.adapter import redis_adapter

PROG = "superline-zmq-redis"
log = logging.getLogger("superline_zmq.redis.node")


def _positive(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return f


async def _watch_parent(parent: int, stopper: Stopper) -> None:
    while True:
        await asyncio.sleep(0.25)
        if os.getppid() != parent:
            stopper.stop("parent exited")
            return


async def run(args: argparse.Namespace) -> int:
    """Build the server and its Redis adapter, serve until a signal; return the exit code."""
    host, port = args.ws
    try:
        srv = await resolve_server(load_target(args.app), args.app)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        adapter = await redis_adapter(
            args.url,
            prefix=args.prefix,
            presence_ttl=args.presence_ttl,
            heartbeat_interval=args.heartbeat_interval,
            liveness_poll=args.liveness_poll,
        )
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # redis-py's ConnectionError / AuthenticationError, a timeout
        print(f"{PROG}: error: could not reach Redis at {args.url}: {exc!r}", file=sys.stderr)
        return 1
    watch = None
    if args.watch_parent is not None:
        parent = args.watch_parent
        watch = lambda stopper: _watch_parent(parent, stopper)  # noqa: E731
    return await serve_node(
        srv,
        adapter,
        app=args.app,
        host=host,
        port=port,
        out=Output(args.json),
        ready={"prefix": args.prefix},
        shutdown_timeout=args.shutdown_timeout,
        watch=watch,
        prog=PROG,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run MODULE:APP as one node of a Redis-linked cluster.")
    parser.add_argument(
        "app", metavar="MODULE:APP", help="a SocketServer, or a zero-arg (async) callable returning one"
    )
    parser.add_argument("--url", default=os.environ.get("SUPERLINE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        help="Redis URL (default $SUPERLINE_REDIS_URL or redis://127.0.0.1:6379/0)")  # fmt: skip
    parser.add_argument("--prefix", default="superline", help="key and channel prefix of the cluster")
    parser.add_argument("--presence-ttl", type=_positive, default=90.0, metavar="S",
                        help="a node silent this long leaves presence (default 90)")  # fmt: skip
    parser.add_argument("--heartbeat-interval", type=_positive, default=None, metavar="S",
                        help="liveness key renewal period (default presence-ttl / 3)")  # fmt: skip
    parser.add_argument("--liveness-poll", type=_positive, default=1.0, metavar="S",
                        help="refresh period of the live-node view (default 1)")  # fmt: skip
    parser.add_argument("--ws", type=parse_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="WebSocket listen address (default 127.0.0.1:0, any free port)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print stopping/stopped JSON lines")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="event loop: uvloop when installed (auto, the default), or force one")  # fmt: skip
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    parser.add_argument("--shutdown-timeout", type=_positive, default=10.0, metavar="S",
                        help="graceful shutdown limit before exiting 1 (default 10)")  # fmt: skip
    parser.add_argument("--watch-parent", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )
    try:
        factory = loop_factory(args.loop)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
