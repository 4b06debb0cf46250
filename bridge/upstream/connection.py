"""One station's websocket to the operator's CSMS (local-controller mode): the transport.

drbridge opens ``<ocpp.upstream.url>/<station id>`` (or the url with ``{station_id}``
filled in: :mod:`bridge.upstream.address`) when the station connects, with the subprotocol
the station negotiated and the ``Authorization`` header it sent (kept in memory only), and
again with jittered exponential backoff whenever the link drops or the operator refuses
it (a 401 too: the station stays connected to drbridge and keeps its DR limits).
Frames only: what they mean is the forwarding link's business (:mod:`bridge.ocpp.upstream_link`).

On this leg drbridge issues every message id itself (:class:`~bridge.upstream.message_ids.
LegIds`): the station's CALLs go out under fresh ids and their answers are handed back
with the id the station chose; drbridge's own CALLs (the replay, a boot sent again) take
ids from the same counter. OCPP-J allows one CALL in flight per direction, so both kinds
wait for one another here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from bridge.ocpp.security import RedactCredentials
from bridge.upstream.address import station_url
from bridge.upstream.message_ids import (
    Forwarded,
    LegIds,
    Own,
    call_with_id,
    reply_with_id,
    with_id,
)

log = logging.getLogger(__name__)

CALL, CALLRESULT, CALLERROR = 2, 3, 4
CLOSE_TIMEOUT_S = 1.0
# How long close() lets the answers to the operator's calls still under way go out first:
# a station that answers a Reset and reboots at once has its "Accepted" reach the operator.
ANSWERS_GRACE_S = 2.0
OperatorCall = Callable[[str, str, dict[str, Any]], Awaitable[None]]  # id, action, payload
# an answer of the operator's: the frame as read, and its text when it came as text
Answer = tuple[list[Any], str | None]


def _websockets_logger() -> logging.Logger:
    """The logger handed to websockets for the upstream links: a child of
    ``websockets.client``, with the station's credentials redacted from the handshake it
    logs at debug level."""
    logger = logging.getLogger("websockets.client.upstream")
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
    return logger


class UpstreamUnavailable(Exception):
    """The operator cannot be asked now: the link is down, dropped, or the answer is late."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once


def _encoded(frame: list[Any]) -> str:
    return _ENCODER.encode(frame)


class UpstreamConnection:
    """The link of one station to the operator's CSMS, reconnecting until :meth:`close`."""

    def __init__(self, url: str, station_id: str, subprotocol: str, authorization: str | None,
                 ssl_context: ssl.SSLContext | None, call_timeout_s: float,
                 reconnect_min_s: float, reconnect_max_s: float, on_call: OperatorCall,
                 on_open: Callable[[], Awaitable[None]],
                 on_close: Callable[[], None] = lambda: None,
                 max_size: int | None = 2**20) -> None:
        self.url = station_url(url, station_id)
        self.station_id = station_id
        self._subprotocol = subprotocol
        self._authorization = authorization
        self._ssl = ssl_context
        self.call_timeout_s = call_timeout_s
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._on_call = on_call
        self._on_open = on_open
        self._on_close = on_close
        self._max_size = max_size
        self.ids = LegIds()
        self.connected = asyncio.Event()
        # set once the first attempt of this station's connection has ended either way
        self.first_attempt_done = asyncio.Event()
        self._connection: ClientConnection | None = None
        self._lock = asyncio.Lock()  # one CALL of ours in flight at a time
        self._waiting: set[asyncio.Future[Answer]] = set()
        self._kick = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answering: set[asyncio.Task[Any]] = set()  # the operator's calls under way
        self.was_up = False  # for the log: one line per change, not per attempt
        self.refused_login = False  # the operator answered 401/403 to the last attempt

    # ---- the connection -----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; until :meth:`close`."""
        low, high = self._reconnect
        backoff = low
        tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
        while not self._closing:
            try:
                async with connect(
                    self.url, subprotocols=[Subprotocol(self._subprotocol)],
                    additional_headers={"Authorization": self._authorization}
                    if self._authorization else None,
                    open_timeout=self.call_timeout_s, compression=None,
                    max_size=self._max_size, ping_interval=60, ping_timeout=60,
                    # the station has left when drbridge closes: no long goodbye
                    close_timeout=CLOSE_TIMEOUT_S,
                    proxy=None, user_agent_header=None, logger=_websockets_logger(),
                    **tls,
                ) as connection:
                    backoff = low
                    await self._serve(connection)
                self._went_down("the operator closed the link")
            except InvalidStatus as error:
                status = error.response.status_code
                self.refused_login = status in (401, 403)
                self._went_down(f"the operator refused the connection (HTTP {status})"
                                + ("; the station's credentials are not accepted there"
                                   if self.refused_login else ""))
            except (OSError, TimeoutError, ConnectionClosed) as error:
                self._went_down(f"{type(error).__name__}: {error}")
            except Exception as error:  # a handshake the library refuses, and the like
                self._went_down(f"{type(error).__name__}: {error}")
            finally:
                self._connection = None
                self.connected.clear()
                self._fail_waiting()
                self.first_attempt_done.set()
                self._on_close()
            if self._closing:
                break
            delay = min(high, backoff * random.uniform(0.5, 1.5))
            backoff = min(high, backoff * 2)
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()

    def kick(self) -> None:
        """Try again now rather than after the backoff (someone waits for the operator)."""
        self._kick.set()

    async def close(self) -> None:
        """Close the link for good, once the answers to the operator's calls that are under
        way have gone out (for at most :data:`ANSWERS_GRACE_S`)."""
        self._closing = True
        self._kick.set()
        if self._answering:
            await asyncio.wait(set(self._answering), timeout=ANSWERS_GRACE_S)
        connection = self._connection
        if connection is not None:
            await connection.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _went_down(self, why: str) -> None:
        if self._closing:
            return  # the station left: its link goes with it
        if self.was_up or not self.first_attempt_done.is_set():
            log.warning("%s: upstream link to %s down: %s", self.station_id, self.url, why)
        else:
            log.debug("%s: upstream link to %s still down: %s", self.station_id, self.url, why)
        self.was_up = False

    async def _serve(self, connection: ClientConnection) -> None:
        self._connection = connection
        self.refused_login = False
        self.connected.set()
        self.first_attempt_done.set()
        self.was_up = True
        log.info("%s: upstream link to %s open (%s)", self.station_id, self.url,
                 connection.subprotocol)
        self._spawn(self._on_open())
        async for message in connection:
            self._received(message)

    def abort(self) -> None:
        """Drop the link at once (an answer that never came: the operator is treated as
        unreachable, and the link is opened again)."""
        connection = self._connection
        if connection is not None:
            connection.transport.abort()

    # ---- frames in ------------------------------------------------------------------------------
    def _received(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError):
            log.warning("%s: the operator sent a frame that is not JSON; dropped",
                        self.station_id)
            return
        if not isinstance(frame, list) or len(frame) < 3 or frame[0] not in (2, 3, 4):
            log.warning("%s: the operator sent a frame that is not OCPP-J; dropped",
                        self.station_id)
            return
        if frame[0] == CALL:
            if len(frame) != 4 or not isinstance(frame[1], str) \
                    or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
                self._spawn(self._send(_encoded(
                    [CALLERROR, frame[1] if isinstance(frame[1], str) else "-1",
                     "ProtocolError", "a CALL has four elements", {}])))
                return
            task = self._spawn(self._on_call(frame[1], frame[2], frame[3]))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            return
        entry = self.ids.resolve(frame[1])
        if isinstance(entry, Forwarded | Own) and isinstance(entry.tag, asyncio.Future) \
                and not entry.tag.done():
            entry.tag.set_result((frame, message if isinstance(message, str) else None))
        else:
            log.debug("%s: dropped an answer of the operator's to no pending call: %.200r",
                      self.station_id, frame)

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: upstream task failed", self.station_id, exc_info=task.exception())

    def _fail_waiting(self) -> None:
        for future in self._waiting:
            if not future.done():
                future.set_exception(UpstreamUnavailable("the upstream link dropped"))
        self._waiting.clear()

    # ---- frames out -----------------------------------------------------------------------------
    async def _send(self, text: str) -> None:
        connection = self._connection
        if connection is None:
            raise UpstreamUnavailable("the upstream link is down")
        try:
            await connection.send(text)
        except ConnectionClosed as error:
            raise UpstreamUnavailable(f"the upstream link dropped ({error})") from None

    async def answer(self, frame: list[Any]) -> None:
        """A CALLRESULT or CALLERROR to one of the operator's CALLs (under its own id)."""
        await self._send(_encoded(frame))

    async def forward(self, origin_id: str, frame: list[Any],
                      raw: str | None = None) -> tuple[list[Any], str]:
        """A station's CALL (``frame`` as it sent it, ``raw`` its text when unchanged): sent
        under a fresh id; the operator's answer frame (CALLRESULT or CALLERROR, under the
        operator's id) and the text to answer the station with (that frame under
        ``origin_id``, the operator's own text where the id could be swapped in it)."""
        answer, text = await self._exchange(lambda future: self.ids.forward(origin_id, future),
                                            frame, raw, origin_id)
        return answer, text or with_id(answer, origin_id)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """One CALL of drbridge's own (the replay, a boot sent again); the answer frame."""
        answer, _ = await self._exchange(lambda future: self.ids.own(future),
                                         [CALL, "", action, payload])
        return answer

    async def _exchange(self, issue: Callable[[asyncio.Future[Answer]], str],
                        frame: list[Any], raw: str | None = None,
                        origin_id: str = "") -> Answer:
        """Send ``frame`` under the id ``issue`` gives and wait for the answer; the answer
        frame, and for a forwarded CALL its text under ``origin_id`` when the id could be
        swapped in it."""
        async with self._lock:
            if self._connection is None:
                raise UpstreamUnavailable("the upstream link is down")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Answer] = loop.create_future()
            wire_id = issue(future)
            self._waiting.add(future)
            # a plain timer on the future: asyncio.timeout() costs twice as much, per message
            timer = loop.call_later(self.call_timeout_s, self._expired, future)
            try:
                text = call_with_id(raw, origin_id, wire_id) if raw is not None else None
                await self._send(text or with_id(frame, wire_id))
                answer, answered = await future
                if answered is None or not origin_id:
                    return answer, None
                return answer, reply_with_id(answered, wire_id, origin_id)
            except TimeoutError:
                self.ids.forget(wire_id)
                log.warning("%s: the operator did not answer %s in %.1f s; treated as "
                            "unreachable", self.station_id, frame[2], self.call_timeout_s)
                self.abort()
                raise UpstreamUnavailable("no answer in time") from None
            finally:
                timer.cancel()
                self._waiting.discard(future)
                if future.done() and not future.cancelled():
                    future.exception()  # seen, also when the send failed first

    def _expired(self, future: asyncio.Future[Answer]) -> None:
        """No answer in time: the waiting call ends; a send still stuck behind a full
        socket ends with the link, which is dropped anyway."""
        if not future.done():
            future.set_exception(TimeoutError())
            self.abort()
