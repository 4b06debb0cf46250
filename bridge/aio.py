"""Small asyncio helpers the runtime shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout: float = 5.0) -> None:
    """Cancel tasks and wait until they have ended, without ever hanging a shutdown.

    Cancellation is repeated: on Python 3.11 ``asyncio.wait_for`` (which the
    ``ocpp`` library awaits on every call) can swallow a cancellation that
    arrives as its inner future completes.
    """
    loop = asyncio.get_running_loop()
    pending = {t for t in tasks if not t.done()}
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for task in pending:
        log.warning("task %s did not stop within %.0f s", task.get_name(), timeout)


class Wake:
    """A flag a task waits on, as :class:`asyncio.Event`, that also tells ``on_set`` each
    time it is set (so that the task that serves it can be started on demand).

    Kept per station: slotted, and its waiters' futures exist only while someone waits
    (``asyncio.Event`` holds a deque from its start).
    """

    __slots__ = ("_set", "_waiters", "on_set")

    def __init__(self, on_set: Callable[[], object] | None = None) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self.on_set = on_set

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)
        if self.on_set is not None:
            self.on_set()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
