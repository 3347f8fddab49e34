"""The pure modules stay pure: no I/O library, no event loop, no clock, no global randomness.

``tests/test_public_api.py`` checks in a fresh interpreter that they pull in neither
``websockets`` nor ``zmq``; this reads their source, so it also catches ``asyncio``,
``time`` (a clock read) and module-level ``random`` (randomness must be an injected
``random.Random``), even where those would be imported anyway by something else.
"""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

#: Modules whose decisions take time and randomness as arguments.
PURE = [
    "superline_zmq.gossip",
    "superline_zmq.membership",
    "superline_zmq.presence",
    "superline_zmq.probes",
    "superline_zmq.timing",
    "superline_zmq.session",
    "superline_zmq.client_session",
    "superline_zmq.requests",
    "superline_zmq.names",
    "superline_zmq.wire",
    "superline_zmq.envelope",
    "superline_zmq.contract",
    "superline_zmq.validation",
    "superline_zmq.errors",
    "superline_zmq.ids",
    "superline_zmq.transport",
    "superline_zmq.metrics",
    "superline_zmq.health",
]

#: Top-level modules a pure module may not import: I/O, event loops, clocks.
FORBIDDEN = {"asyncio", "websockets", "zmq", "socket", "selectors", "threading", "time", "datetime", "uvloop"}


def impurities(module: str) -> list[str]:
    """What in ``module``'s source breaks purity (empty if nothing)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN or top == "random":
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                found.append(f"from {node.module} import ...")
            elif top == "random" and any(alias.name != "Random" for alias in node.names):
                found.append(f"from random import {', '.join(a.name for a in node.names)}")
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_no_clock_no_global_randomness(module: str) -> None:
    assert impurities(module) == []


def test_the_check_sees_impurity() -> None:
    # guard for the test above: modules that do read a clock or run a loop are flagged
    assert "import time" in impurities("superline_zmq.logs")
    assert "import asyncio" in impurities("superline_zmq.gossip_driver")
