"""Stations' websockets in the bridge's own process: websockets' protocol, without I/O,
under an asyncio protocol of our own.

The websocket protocol itself (the opening handshake, frames, masking, pings and pongs,
the closing handshake, the limit on a message's size) is websockets' ``ServerProtocol``.
What this module adds is the part that moves bytes between it and the socket, lean
enough for ten thousand mostly idle connections: websockets' own asyncio connection keeps,
for each one, a message assembler with two queues, three futures, a logger adapter and a
reading path several coroutines deep (14.2 KB per idle connection, measured with 3,000
connections on loopback; 8.7 KB here, the transport's and the protocol's own included).

:class:`StationSocket` is one connection; it offers a link what
:class:`bridge.ocpp.framing.OcppJLink` asks of a websocket (``recv``, ``send``, ``close``)
and what the keepalive asks (``protocol.state``, ``ping``, ``paused``). A message arriving
while the link waits is handed to it directly; a few more wait in a list, and past
:data:`PAUSE_AT` unread messages the socket stops reading, as websockets' queue does.

:class:`StationSockets` is the listening socket: each connection is admitted first (the
per-address limits, before any byte is read), its handshake judged by the caller, and,
once open, served by the caller's coroutine in the task that opened it; closing it
closes every connection with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

# a handshake that has not completed this long after the socket was accepted is dropped
OPEN_TIMEOUT_S = 10.0
# after our close frame (or the station's), the TCP connection is aborted if it has not
# closed this long after
CLOSE_TIMEOUT_S = 10.0
# Messages the link has not read: at PAUSE_AT the socket stops reading (the station's
# frames wait in the kernel), at RESUME_AT it reads again (websockets' queue: 16 and 4).
PAUSE_AT = 16
RESUME_AT = 4
# Bytes written but not yet taken by the kernel: past the high mark a sender waits until
# they are down to the low one (websockets' own limits).
WRITE_HIGH, WRITE_LOW = 32 * 1024, 8 * 1024
GOING_AWAY = 1001
INTERNAL_ERROR = 1011


class Router(Protocol):
    """What handles a station's messages as they are read (see answer_at_once)."""

    def route_now(self, message: str | bytes) -> bool: ...


# (the socket, its handshake request) -> a response refusing it, or None to accept it
Judge = Callable[["StationSocket", Request], Awaitable[Response | None]]
Serve = Callable[["StationSocket"], Awaitable[None]]


class StationSocket(asyncio.Protocol):
    """One station's websocket, from the accepted socket to its close."""

    __slots__ = ("_sockets", "transport", "protocol", "request", "subprotocol", "_admitted",
                 "_message", "_inbox", "_waiter", "_reading_paused", "_writing_paused",
                 "_drained", "_pings", "_timer", "_close_timer", "_task", "_lost", "_gone",
                 "_answered", "_at_once")

    def __init__(self, sockets: StationSockets) -> None:
        self._sockets = sockets
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.protocol = ServerProtocol(subprotocols=sockets.subprotocols,
                                       max_size=sockets.max_size, logger=sockets.logger)
        self.request: Request | None = None  # the handshake's (the server lets go of it)
        self.subprotocol: Subprotocol | None = None
        self._admitted: str | None = None  # the host counted against the per-address limits
        # a fragmented message so far: its first frame's opcode, the frames' data
        self._message: tuple[Opcode, list[bytes]] | None = None
        self._inbox: list[str | bytes] | None = None  # messages the link has not read yet
        self._waiter: asyncio.Future[str | bytes] | None = None  # the link's recv()
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._pings: dict[bytes, asyncio.Future[float]] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the handshake's deadline
        self._close_timer: asyncio.TimerHandle | None = None  # the TCP close's deadline
        self._task: asyncio.Task[None] | None = None  # the handshake, then the serving
        self._lost: asyncio.Future[None] | None = None  # close() waits on it
        self._gone = False  # the TCP connection is closed
        self._answered = False  # the handshake was answered (or given up on)
        self._at_once: Router | None = None  # see answer_at_once

    # what the link asks of its connection ------------------------------------------------
    @property
    def remote_address(self) -> Any:
        return self.transport.get_extra_info("peername")

    @property
    def paused(self) -> bool:
        """Whether the station is not reading what we send (the keepalive leaves it be)."""
        return self._writing_paused

    def recv(self) -> asyncio.Future[str | bytes]:
        """The next message, to await; :class:`ConnectionClosed` once the connection is
        closed.

        A future, not a coroutine: a station's link waits here between any two messages,
        and a coroutine would be one more frame held per connection (about 0.2 KB) and one
        more object made per message.
        """
        waiter: asyncio.Future[str | bytes] = asyncio.get_running_loop().create_future()
        inbox = self._inbox
        if inbox:
            waiter.set_result(inbox.pop(0))
            if self._reading_paused and len(inbox) <= RESUME_AT:
                self._reading_paused = False
                self.transport.resume_reading()
        elif self._gone or self.protocol.state is State.CLOSED:
            waiter.set_exception(self.protocol.close_exc)
        else:
            # _deliver resolves it; one cancelled meanwhile (the link stopped waiting)
            # is done, so the next message goes to the inbox instead
            self._waiter = waiter
        return waiter

    def answer_at_once(self, router: Router | None) -> None:
        """Hand each message to ``router.route_now`` as it is read, in the socket's
        callback, while the link waits in :meth:`recv` (None: never). (The router itself
        is kept, not its bound method: one object less per connection.)

        A message handed to the link's task is handled a turn of the event loop later, and
        a turn lasts as long as its busiest moment: while a DR wave goes out, a station's
        MeterValues waited for two turns of thousands of profiles before it was answered.
        ``route_now`` must answer synchronously (:meth:`send_now`), never raise, and say
        whether it took the message: one it leaves goes to the task. Messages go to the task
        as well whenever it is not waiting (it handles one already, so the order holds) or
        the station is not reading what we send (the task's :meth:`send` waits for it).
        """
        self._at_once = router

    def send_now(self, message: str) -> bool:
        """Send one text message without waiting for the station to read (the caller reads
        no more from it until it does: see :meth:`answer_at_once`); whether it was sent
        (not once the connection closes)."""
        protocol = self.protocol
        if protocol.state is not OPEN:
            return False
        protocol.send_text(message.encode())
        self._write()
        return True

    async def send(self, message: str) -> None:
        """Send one text message; waits while the station is slow to read."""
        protocol = self.protocol
        if protocol.state is not OPEN:
            raise await self._closed()
        protocol.send_text(message.encode())
        self._write()
        if self._writing_paused:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)  # (done when writing resumes, or is lost)
            if self._gone:
                raise protocol.close_exc

    async def ping(self) -> asyncio.Future[float]:
        """Send a ping; the future returned is done when its pong arrives."""
        protocol = self.protocol
        if protocol.state is not OPEN:
            raise await self._closed()
        if self._pings is None:
            self._pings = {}
        data = _ping_payload()
        while data in self._pings:  # each ping its own payload, or its pong is lost
            data = _ping_payload()
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[data] = pong
        protocol.send_ping(data)
        self._write()
        return pong

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the websocket (our close frame, then the station's) and wait until the
        TCP connection is closed: at most :data:`CLOSE_TIMEOUT_S`, then it is aborted."""
        if self.transport is None or self._gone:
            return
        protocol = self.protocol
        if protocol.state is OPEN:
            protocol.send_close(code, reason)
            self._write()
            self._closing()
        elif protocol.state is State.CONNECTING:
            self.transport.abort()
        await self._closed()

    async def _closed(self) -> ConnectionClosed:
        """The close, once the TCP connection is closed: at most :data:`CLOSE_TIMEOUT_S`
        after our close frame, or it is aborted."""
        if not self._gone:
            if self._lost is None:
                self._lost = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_TIMEOUT_S + 1)
            except TimeoutError:
                self.transport.abort()  # (connection_lost follows in the next turn)
                await asyncio.shield(self._lost)
        return self.protocol.close_exc

    # asyncio's callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host = _host_of(transport.get_extra_info("peername"))
        if self._sockets.closing or not self._sockets.admit(host):
            transport.abort()
            return
        self._admitted = host
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self._sockets.opened(self)
        self._timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, self._not_opened)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._write()
        if protocol.close_expected():
            self._closing()
        for event in events:
            if isinstance(event, Request):
                self.request = event
                self._task = asyncio.get_running_loop().create_task(self._open())
            else:
                self._frame(event.opcode, event.data, event.fin)
                # websockets' parser holds the last frame it read until the next one comes
                # (a variable of its generator): its payload goes now, not a reading later
                # (about 0.6 KB a station between MeterValues)
                event.data = b""

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the protocol's state is CLOSED now
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = None
        if self._admitted is not None:
            self._sockets.closed(self, self._admitted)
            self._admitted = None
        closed = self.protocol.close_exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(closed)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # the sender finds the connection gone
        for pong in (self._pings or {}).values():
            pong.cancel()
        self._pings = None
        self._gone = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._task is not None and not self._answered:
            self._task.cancel()  # a handshake still being judged: nobody to answer

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    # inside ------------------------------------------------------------------------------
    def _frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not fin:
                self._message = (opcode, [data])
                return
            self._deliver(_message_of(opcode, data))
        elif opcode is Opcode.CONT:
            if self._message is None:  # the protocol refuses a stray continuation first
                return
            first, parts = self._message
            parts.append(data)
            if fin:
                self._message = None
                self._deliver(_message_of(first, b"".join(parts)))
        elif opcode is Opcode.PONG:
            self._ponged(data)

    def _deliver(self, message: str | bytes) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._at_once is not None and not self._writing_paused \
                    and self._at_once.route_now(message):
                return  # answered; the link's task waits on for the next one
            waiter.set_result(message)
            self._waiter = None
            return
        if self._inbox is None:
            self._inbox = []
        self._inbox.append(message)
        if len(self._inbox) >= PAUSE_AT and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _ponged(self, data: bytes) -> None:
        """A pong answers its ping and every ping sent before it (as websockets reads)."""
        pings = self._pings
        if not pings or data not in pings:
            return
        now = asyncio.get_running_loop().time()
        for sent in list(pings):
            pong = pings.pop(sent)
            if not pong.done():
                pong.set_result(now)
            if sent == data:
                break

    def _write(self) -> None:
        transport = self.transport
        try:
            for data in self.protocol.data_to_send():
                if data:
                    transport.write(data)
                elif transport.can_write_eof():
                    transport.write_eof()
                else:  # TLS cannot half-close
                    transport.close()
        except (OSError, RuntimeError) as error:  # the transport is closed, or half-closed
            log.debug("could not write to a station's socket (%s); dropping it", error)
            transport.abort()

    def _closing(self) -> None:
        """The TCP connection is to close soon: abort it if it has not by the deadline
        (set once: a station that keeps sending does not put it off)."""
        if self._close_timer is None and not self._gone:
            self._close_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, self.transport.abort)

    def _not_opened(self) -> None:
        self._timer = None
        if self.protocol.state is State.CONNECTING:
            log.debug("dropped a connection whose handshake took over %.0f s", OPEN_TIMEOUT_S)
            self.transport.abort()

    async def _open(self) -> None:
        """Answer the handshake; once open, serve the station in this same task."""
        if not await self._handshake():
            return
        code = 1000
        try:
            await self._sockets.serve(self)
        except Exception:
            log.exception("failed to serve a station")
            code = INTERNAL_ERROR
        finally:
            self._task = None
        await self.close(code)

    async def _handshake(self) -> bool:
        """Judge the handshake and send the answer; whether the websocket is open. (A
        coroutine of its own: the request and response it holds go with its frame, not
        kept by the one that serves the station for as long as it is connected.)"""
        protocol, request = self.protocol, self.request
        assert request is not None
        try:
            response = await self._sockets.judge(self, request)
        except Exception:
            log.exception("failed to judge a station's handshake")
            response = protocol.reject(500, "Internal Server Error\n")
        if response is None:
            response = protocol.accept(request)
        self._answered = True
        if self._gone or protocol.state is not State.CONNECTING or protocol.close_expected():
            # the station failed its side meanwhile (a frame before our answer that broke
            # the protocol, say): the protocol has given up on it
            self.transport.abort()
            return False
        protocol.send_response(response)
        self._write()
        if protocol.state is not OPEN:
            self._closing()
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.subprotocol = protocol.subprotocol
        return True


class StationSockets:
    """The listening socket and the stations' connections on it."""

    def __init__(self, judge: Judge, serve: Serve, admit: Callable[[str], bool],
                 release: Callable[[str], None], subprotocols: Sequence[str],
                 max_size: int, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """``admit``: whether a socket from this host may open (counted until ``release``
        is called with it); ``judge``: the refusal of a handshake, or None; ``serve``:
        serves an open connection until it closes."""
        self.judge, self.serve = judge, serve
        self.admit, self._release = admit, release
        self.subprotocols = [Subprotocol(name) for name in subprotocols]
        self.max_size = max_size
        self.logger = logger
        self.sockets: set[StationSocket] = set()
        self.closing = False  # new connections are dropped
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                    backlog: int) -> None:
        loop = asyncio.get_running_loop()
        # a TLS handshake gets the time a websocket handshake gets (asyncio's defaults are
        # 60 s and 30 s, and a socket counts against its address's limits only after it)
        tls = {"ssl_handshake_timeout": OPEN_TIMEOUT_S, "ssl_shutdown_timeout": CLOSE_TIMEOUT_S} \
            if ssl_context is not None else {}
        self._server = await loop.create_server(lambda: StationSocket(self), host, port,
                                                ssl=ssl_context, backlog=backlog, **tls)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def opened(self, socket: StationSocket) -> None:
        self.sockets.add(socket)

    def closed(self, socket: StationSocket, host: str) -> None:
        self.sockets.discard(socket)
        self._release(host)

    async def close(self, timeout_s: float) -> bool:
        """Stop listening, close every connection with 1001 and wait until they are
        closed and served; False if some were not within ``timeout_s`` (those are
        aborted)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        sockets = list(self.sockets)
        work = [asyncio.ensure_future(socket.close(GOING_AWAY)) for socket in sockets]
        work += [socket._task for socket in sockets if socket._task is not None]
        pending: set[asyncio.Future[Any]] = set()
        if work:
            _, pending = await asyncio.wait(work, timeout=timeout_s)
            for future in pending:
                future.cancel()
            for outcome in await asyncio.gather(*work, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("a station's connection failed to close: %r", outcome)
        for socket in list(self.sockets):
            socket.transport.abort()
        for _ in range(10):  # an aborted socket's connection_lost comes in the next turn
            if not self.sockets:
                break
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()
        return not pending


def _ping_payload() -> bytes:
    return os.urandom(4)


def _message_of(opcode: Opcode, data: bytes) -> str | bytes:
    """A text message as text; one that is not valid UTF-8 as its bytes, which the link
    answers with a CALLERROR (websockets would close the connection with 1007)."""
    if opcode is Opcode.TEXT:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data
    return data


def _host_of(address: Any) -> str:
    """The host part of a socket address (IPv4 or IPv6 tuple); empty when unknown."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""
