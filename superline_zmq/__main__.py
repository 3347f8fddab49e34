"""``python -m superline_zmq ...`` is the ``superline-zmq`` command (for when scripts are not on PATH)."""

from superline_zmq.cli import main

raise SystemExit(main())
