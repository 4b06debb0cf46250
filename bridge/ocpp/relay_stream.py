"""One end of the Unix socket between the bridge and an edge worker: the asyncio layer over
:mod:`bridge.ocpp.relay`.

Writes are joined per loop turn: a profile wave or a burst of meter values is thousands of
small messages, and one ``write`` for all those of a turn costs one system call instead of
thousands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bridge.ocpp.relay import Decoder, Message, RelayError

log = logging.getLogger(__name__)


class RelayStream(asyncio.Protocol):
    """Reads messages into ``on_message``; :meth:`send` queues one for the turn's write."""

    def __init__(self, on_message: Callable[[Message], None],
                 on_lost: Callable[[RelayStream], None]) -> None:
        self._on_message, self._on_lost = on_message, on_lost
        self._decoder = Decoder()
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = asyncio.Event()
        self.owner: Any = None  # what the other end is, to whoever reads the messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except RelayError as error:
            log.error("edge relay out of step (%s); dropping it", error)
            if self._transport is not None:
                self._transport.abort()
            return
        for message in messages:
            try:
                self._on_message(message)
            except Exception:  # one message's trouble must not end the relay
                log.exception("edge relay: failed to handle a %s", message.kind.name)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pending.clear()
        self._writable.set()  # nobody waits to write into a closed stream
        self.lost.set()
        self._on_lost(self)

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def send(self, message: bytes) -> None:
        """Queue ``message``; written with the others of this loop turn (dropped once the
        stream is lost: the peer is gone)."""
        if self._transport is None:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(message)

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write."""
        if not self._writable.is_set():
            await self._writable.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def _flush(self) -> None:
        if self._pending and self._transport is not None:
            self._transport.write(b"".join(self._pending))
        self._pending.clear()
