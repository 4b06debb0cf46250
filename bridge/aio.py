"""Small asyncio helpers the runtime shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

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
