"""TaskOwner: tasks are held until they end, failures reported, the rest cancelled on close.

``eager=True`` (request handlers) starts a task at once on Python 3.12+; on 3.11 it is an
ordinary task. Each test checks the behaviour of the Python it runs on, so both branches are
exercised wherever the suite runs (CI: 3.11; `.ci/latest` or a newer interpreter: 3.12+).
"""

from __future__ import annotations

import asyncio
from typing import Any

from superline_zmq.tasks import EAGER_TASKS, TaskOwner


def reporter() -> tuple[list[BaseException], Any]:
    seen: list[BaseException] = []
    return seen, lambda exc, conn=None: seen.append(exc)


async def test_a_handler_that_does_not_wait_is_done_before_spawn_returns_where_python_can() -> None:
    seen, report = reporter()
    owner = TaskOwner(report, eager=True)
    ran: list[asyncio.Task[Any] | None] = []

    async def quick() -> int:
        ran.append(asyncio.current_task())
        return 1

    task = owner.spawn(quick())
    if EAGER_TASKS:
        assert task.done() and ran == [task] and len(owner) == 0
    else:
        assert not task.done() and ran == [] and len(owner) == 1
        await task
        assert ran == [task]
    assert task.result() == 1 and seen == []
    await asyncio.sleep(0)
    assert len(owner) == 0


async def test_an_eager_task_that_waits_is_held_then_cancelled_on_close() -> None:
    seen, report = reporter()
    owner = TaskOwner(report, eager=True)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = owner.spawn(slow())
    assert started.is_set() == EAGER_TASKS
    assert len(owner) == 1
    await owner.close()
    assert task.cancelled() and len(owner) == 0 and seen == []


async def test_a_failure_goes_to_the_reporter_eager_or_not() -> None:
    for eager in (True, False):
        seen, report = reporter()
        owner = TaskOwner(report, eager=eager)
        boom = ValueError("boom")

        async def fail(exc: BaseException = boom) -> None:
            raise exc

        owner.spawn(fail())
        for _ in range(5):  # a done callback runs on a later loop turn
            await asyncio.sleep(0)
        assert seen == [boom] and len(owner) == 0


async def test_a_custom_task_factory_is_respected() -> None:
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        _, report = reporter()
        owner = TaskOwner(report, eager=True)

        async def quick() -> None:
            return None

        await owner.spawn(quick())
        assert len(made) == 1
    finally:
        loop.set_task_factory(None)


async def test_close_returns_when_a_task_is_done_but_its_callbacks_have_not_run() -> None:
    """Since Python 3.12 gathering done tasks does not yield: close() must not spin on them."""
    seen, report = reporter()
    owner = TaskOwner(report)

    async def quick() -> None:
        return None

    task = owner.spawn(quick())
    await asyncio.sleep(0)  # the task ran; its done callback is queued behind this coroutine
    assert task.done() and len(owner) == 1
    await owner.close()
    assert len(owner) == 0 and seen == []
