"""Run an app as one node of a Redis-linked cluster: ``superline-zmq run --adapter redis``, under its old name.

::

    python -m superline_zmq_redis.node MODULE:APP --url redis://127.0.0.1:6379/0 [--ws HOST:PORT] [--json]
    superline-zmq-redis MODULE:APP --url ...            (the same, as an installed script)

Kept as an alias: everything is ``superline-zmq run --adapter redis`` (see
:mod:`superline_zmq.cli`), so the health paths, ``--metrics``, ``--config`` and the
``SUPERLINE_*`` environment variables work here too. The old flag names still work:
``--url``, ``--prefix``, ``--presence-ttl`` and ``--liveness-poll`` are ``--redis-url``,
``--redis-prefix``, ``--redis-presence-ttl`` and ``--redis-liveness-poll``;
``--heartbeat-interval`` is the liveness key renewal period (default presence-ttl / 3).

Once serving it prints one JSON line on stdout::

    {"event": "ready", "node_id": "...", "ws": "ws://127.0.0.1:8080/", "prefix": "superline", "pid": 1234}

SIGTERM or SIGINT closes the server gracefully (its presence leaves Redis at once) and
exits 0; a second signal, or a shutdown longer than ``--shutdown-timeout``, exits 1.
Exit codes: 0 clean stop, 1 runtime failure (Redis unreachable, port taken, ...), 2 bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from superline_zmq.cli import main as cli_main

PROG = "superline-zmq-redis"

#: The old flags of this runner -> the ``superline-zmq run`` flags they are now.
RENAMED = {
    "--url": "--redis-url",
    "--prefix": "--redis-prefix",
    "--presence-ttl": "--redis-presence-ttl",
    "--liveness-poll": "--redis-liveness-poll",
}


def translate(argv: Sequence[str]) -> list[str]:
    """``argv`` with the old flag names (``--url X`` or ``--url=X``) renamed."""
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in RENAMED:
            arg = RENAMED[name] + eq + value
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["run", "--adapter", "redis", *translate(args)], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
