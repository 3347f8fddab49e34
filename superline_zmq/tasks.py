"""Background tasks with an owner, and one place where their failures go.

Every task the server starts (a request handler, a subscribe, a slow close, an app hook)
is spawned through a :class:`TaskOwner`: it keeps a reference until the task ends (so
nothing is garbage-collected mid-flight), sends any exception to the owner's reporter
(never "Task exception was never retrieved"), and cancels and awaits everything still
running when the owner closes, so ``close()`` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("superline_zmq.server")

#: Python 3.12+ can start a task eagerly: run it now, up to its first real suspension.
EAGER_TASKS = sys.version_info >= (3, 12)

#: Reports an exception, optionally about a connection (the app's ``on_error``).
Report = Callable[[BaseException, Any], None]


class TaskOwner:
    """Spawns tasks, reports their failures, and cancels the rest on :meth:`close`.

    ``eager=True`` (request handlers) starts each task at once where Python can (3.12+,
    and no custom task factory on the loop): a handler that answers without waiting is done
    before :meth:`spawn` returns, saving a trip through the event loop per request, with
    ``asyncio.current_task()`` and the task's own context as usual.
    """

    __slots__ = ("_eager", "_report", "_tasks")

    def __init__(self, report: Report, *, eager: bool = False) -> None:
        self._report = report
        self._eager = eager and EAGER_TASKS
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this owner holds; a failure goes to the reporter."""
        if self._eager and inspect.iscoroutine(coro):
            loop = asyncio.get_running_loop()
            if loop.get_task_factory() is None:
                task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
                if task.done():
                    self._done(task)
                    return task
                self._tasks.add(task)
                task.add_done_callback(self._done)
                return task
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def track(self, task: asyncio.Task[Any]) -> None:
        """Hold a task someone else watches (its failure is theirs to report); cancelled on close."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, None)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running tasks to end on their own; False if some were still running at ``timeout``."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
        return not pending

    async def close(self) -> None:
        """Cancel every task still running and wait for them all to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Since 3.12 gathering tasks that are already done does not yield to the loop, so
            # their done callbacks (which discard them) may not have run yet: without this
            # the loop would spin forever.
            self._tasks.difference_update([t for t in tasks if t.done()])


class Reporter:
    """Sends exceptions to the app's ``on_error(exc, conn)`` (sync or async), else logs them."""

    def __init__(self, on_error: Callable[[BaseException, Any], Any] | None) -> None:
        self.on_error = on_error
        #: Where an async ``on_error`` runs (set by the server once it has its task owner).
        self.tasks: TaskOwner | None = None

    def __call__(self, exc: BaseException, conn: Any = None) -> None:
        if self.on_error is None:
            log.error("unhandled error on %s", conn, exc_info=exc)
            return
        try:
            result = self.on_error(exc, conn)
        except Exception:
            log.exception("on_error raised")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            if self.tasks is not None:
                self.tasks.track(task)
            task.add_done_callback(self._hook_done)

    @staticmethod
    def _hook_done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("on_error raised", exc_info=task.exception())


async def maybe_await(value: Any) -> Any:
    """``await value`` if it is awaitable, else ``value`` (app hooks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value
