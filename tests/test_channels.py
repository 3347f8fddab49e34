"""ChannelTable.drain: waits for pending adapter operations and returns (no spinning on done ones)."""

from __future__ import annotations

import asyncio
from typing import Any

from superline_zmq.channels import ChannelTable


class Adapter:
    """Just the two calls a ChannelTable makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def subscribe(self, name: str) -> None:
        self.calls.append(("sub", name))

    async def unsubscribe(self, name: str) -> None:
        self.calls.append(("unsub", name))


async def test_drain_returns_when_an_operation_is_done_but_its_callbacks_have_not_run() -> None:
    """Since Python 3.12 gathering done tasks does not yield: drain() must not spin on them."""
    adapter = Adapter()
    table: ChannelTable[Any] = ChannelTable(adapter, asyncio.ensure_future)  # type: ignore[arg-type]
    ch = table.add_member("r:a", "member")
    await asyncio.sleep(0)  # the subscribe ran; its done callback is queued behind this coroutine
    assert ch.live.done()
    await table.drain()
    assert adapter.calls == [("sub", "r:a")]


async def test_drain_waits_for_a_subscribe_then_an_unsubscribe_in_order() -> None:
    adapter = Adapter()
    table: ChannelTable[Any] = ChannelTable(adapter, asyncio.ensure_future)  # type: ignore[arg-type]
    table.add_member("r:a", "member")
    table.remove_member("r:a", "member")
    await table.drain()
    assert adapter.calls == [("sub", "r:a"), ("unsub", "r:a")]
    assert len(table) == 0
