"""The bridge's end of its OCPP edge workers (``ocpp.workers`` above 0).

:class:`EdgeWorkers` opens the stations' listening socket (so that a second bridge on the
same port fails to start, as it would without workers) and keeps the worker processes
(:mod:`bridge.ocpp.edge_worker`) running, each accepting from that socket: a busy worker
accepts fewer, and while one restarts the others accept all. The bridge decides, through
callbacks, whether an address may open another socket (``admit``, before anything is read
from it) and whether a handshake is accepted (``judge``), and hands each accepted station
to ``serve`` as a :class:`RelayedConnection`: what a link needs of a websocket (``recv``,
``send``, ``close``), over the relay. The station links, and everything after them, do not
know the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from bridge.ocpp.listening import BACKLOG
from bridge.ocpp.relay import Kind, Message, encode, encode_json
from bridge.ocpp.relay_stream import RelayStream

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
RESTART_AFTER_S = 1.0  # doubled after each failed start, up to RESTART_MAX_S
RESTART_MAX_S = 30.0
CLOSE_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_OK_CODES = (1000, 1001)
ABNORMAL_CLOSURE = 1006
# A station's frames the bridge holds unread: at PAUSE_AT the worker stops reading them (as
# websockets' own queue of 16 does in-process), at RESUME_AT it reads them again.
PAUSE_AT = 16
RESUME_AT = 4
# the folder the bridge package is in
_CODE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Handshake:
    """What a worker relays of a station's handshake, for the bridge to judge."""

    path: str
    host: str
    authorization: str | None = field(repr=False)
    peercert: dict[str, Any] | None = field(repr=False)


@dataclass(frozen=True)
class Verdict:
    status: int  # relay.ACCEPT, or the HTTP status of a refusal
    headers: Sequence[tuple[str, str]] = ()


@dataclass
class WorkerOptions:
    """How the stations' socket is opened and each worker serves it: what the in-process
    edge would be given."""

    host: str
    port: int
    subprotocols: Sequence[str]
    max_size: int
    backlog: int = BACKLOG
    tls: tuple[Path, Path, Path | None] | None = None
    log_level: str = "INFO"


class _Request:
    """The part of a websockets request the station server reads: its headers."""

    __slots__ = ("headers",)

    def __init__(self, authorization: str | None) -> None:
        self.headers: dict[str, str] = {}
        if authorization is not None:
            self.headers["Authorization"] = authorization


class _Lifetime:
    """One run of one worker process: its relay, and the sockets it holds by relay id (a
    worker started again numbers them afresh, so nothing here outlives its run)."""

    __slots__ = ("worker", "stream", "ready", "hosts", "admitted", "judging", "accepted",
                 "connections")

    def __init__(self, worker: _Worker, stream: RelayStream,
                 ready: asyncio.Future[None]) -> None:
        self.worker, self.stream = worker, stream
        self.ready = ready  # set when the worker says it accepts
        self.hosts: dict[int, str] = {}  # every socket, with its peer's address
        self.admitted: set[int] = set()  # those counted in the per-address limits
        self.judging: set[int] = set()  # handshakes being judged
        self.accepted: dict[int, Handshake] = {}  # handshakes accepted, not yet open
        self.connections: dict[int, RelayedConnection] = {}


class RelayedConnection:
    """A station's websocket as seen through a worker: frames in order, then the close."""

    __slots__ = ("_lifetime", "_id", "subprotocol", "request", "_inbox",
                 "_waiter", "_paused", "_closed", "_closed_event")

    def __init__(self, lifetime: _Lifetime, relay_id: int, subprotocol: str,
                 authorization: str | None) -> None:
        self._lifetime, self._id = lifetime, relay_id
        self.subprotocol = subprotocol
        self.request: _Request | None = _Request(authorization)
        self._inbox: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed: ConnectionClosed | None = None
        self._closed_event: asyncio.Event | None = None

    @property
    def worker_pid(self) -> int | None:
        """The process of the worker that holds this connection."""
        process = self._lifetime.worker.process
        return process.pid if process is not None else None

    # what the worker relays --------------------------------------------------------------------
    def deliver(self, frame: str | bytes) -> None:
        self._inbox.append(frame)
        if len(self._inbox) >= PAUSE_AT and not self._paused:
            self._paused = True
            self._lifetime.stream.send(encode(Kind.PAUSE, self._id, b""))
        self._wake()

    def lost(self, code: int, reason: str) -> None:
        if self._closed is not None:
            return
        if code == ABNORMAL_CLOSURE:  # no close frame either way
            self._closed = ConnectionClosedError(None, None)
        else:
            close = Close(code, reason)
            self._closed = ConnectionClosedOK(close, close, True) if code in _OK_CODES \
                else ConnectionClosedError(close, close, True)
        self._wake()
        if self._closed_event is not None:
            self._closed_event.set()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # what a link asks of its connection ----------------------------------------------------------
    async def recv(self) -> str | bytes:
        while not self._inbox:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._paused and len(self._inbox) <= RESUME_AT and self._closed is None:
            self._paused = False
            self._lifetime.stream.send(encode(Kind.RESUME, self._id, b""))
        return self._inbox.popleft()

    async def send(self, message: str) -> None:
        if self._closed is not None:
            raise self._closed
        stream = self._lifetime.stream
        stream.send(encode(Kind.SEND, self._id, message.encode()))
        await stream.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed is not None:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
            self._lifetime.stream.send(encode_json(Kind.CLOSE, self._id,
                                                   {"code": code, "reason": reason}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed_event.wait(), CLOSE_TIMEOUT_S)


@dataclass(eq=False)
class _Worker:
    """One worker: its process, and its current run's relay once it accepts."""

    name: str
    process: asyncio.subprocess.Process | None = None
    lifetime: _Lifetime | None = None


class EdgeWorkers:
    def __init__(self, count: int, options: WorkerOptions,
                 admit: Callable[[str], bool],
                 released: Callable[[str], None],
                 judge: Callable[[Handshake], Awaitable[Verdict]],
                 serve: Callable[[Handshake, RelayedConnection], Awaitable[None]]) -> None:
        """``admit``: whether an address may open another socket (counted until
        ``released`` is called with it); ``judge``: the verdict on a handshake; ``serve``:
        serves an accepted station until its connection closes."""
        self._count, self._options = count, options
        self._admit, self._released = admit, released
        self._judge, self._serve = judge, serve
        self._workers: list[_Worker] = []
        self._listening: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.port = options.port
        self.restarts = 0  # workers that exited while the bridge ran
        self.failed_starts = 0  # starts of those that failed (each tried again)

    async def start(self) -> None:
        """Open the stations' socket and start every worker; raises OSError when the port
        is taken, RuntimeError when a worker does not start."""
        try:
            self._listening = self._listen()
            self.port = self._listening[0].getsockname()[1]
            self._workers = [_Worker(f"edge{n + 1}") for n in range(self._count)]
            await asyncio.gather(*(self._spawn(worker) for worker in self._workers))
        except BaseException:
            await self.close()
            raise
        for worker in self._workers:
            self._track(asyncio.create_task(self._keep_running(worker),
                                            name=f"{worker.name}-watch"))

    def _listen(self) -> list[socket.socket]:
        """A listening socket on every address the host names ("localhost" may name two),
        all on one port (the first's, when the port is 0)."""
        options = self._options
        port = options.port
        addresses = socket.getaddrinfo(options.host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in addresses:
                listening = socket.socket(family, kind, proto)
                sockets.append(listening)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # each family its own socket, as asyncio does
                    listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listening.bind((address[0], port, *address[2:]))
                listening.listen(options.backlog)
                port = listening.getsockname()[1]
        except BaseException:
            for listening in sockets:
                listening.close()
            raise
        return sockets

    async def _spawn(self, worker: _Worker) -> None:
        """Start the worker's process and wait until it accepts; raises RuntimeError or
        OSError (and on any of them, or cancelled, leaves no process of it running)."""
        options = self._options
        # The relay is one end of a socket pair that only this worker is given: no name for
        # another process to find and join.
        ours, theirs = socket.socketpair()
        listen_fds = [listening.fileno() for listening in self._listening]
        fds = (theirs.fileno(), *listen_fds)
        argv = [sys.executable, "-m", "bridge.ocpp.edge_worker",
                "--relay-fd", str(theirs.fileno()),
                "--listen-fds", ",".join(map(str, listen_fds)),
                "--backlog", str(options.backlog),
                "--subprotocols", ",".join(options.subprotocols),
                "--max-size", str(options.max_size),
                "--log-level", options.log_level, "--name", worker.name]
        if options.tls is not None:
            certificate, private_key, client_ca = options.tls
            argv += ["--tls-certificate", str(certificate), "--tls-private-key", str(private_key)]
            if client_ca is not None:
                argv += ["--tls-client-ca", str(client_ca)]
        log.debug("starting OCPP edge worker: %s", " ".join(argv))
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        # The same code as the bridge's, wherever it was imported from.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, (_CODE_ROOT, os.environ.get("PYTHONPATH")))))
        process, stream = None, None
        try:
            try:
                # its own session: a Ctrl-C at the terminal stops the bridge, which stops its
                # workers
                process = worker.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=fds,
                    start_new_session=True, env=env)
            finally:
                theirs.close()  # the worker has its own copy
            stream = RelayStream(lambda message: self._on_message(stream, message),
                                 self._stream_lost)
            lifetime = stream.owner = _Lifetime(worker, stream, ready)
            await loop.connect_accepted_socket(lambda: stream, ours)
            exited = asyncio.ensure_future(process.wait())
            try:
                done, _ = await asyncio.wait({ready, exited}, timeout=START_TIMEOUT_S,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                exited.cancel()
            if ready not in done:
                raise RuntimeError(f"OCPP edge worker {worker.name} did not start (exit status"
                                   f" {process.returncode}; its own errors are logged above)")
            worker.lifetime = lifetime
        except BaseException:
            if stream is not None and stream.connected:
                stream.close()
            else:
                ours.close()
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.shield(process.wait())
            raise

    async def _keep_running(self, worker: _Worker) -> None:
        """A worker that exits while the bridge runs is started again; its stations
        reconnect (to the other workers meanwhile). A start that fails is tried again, less
        and less often."""
        while not self._closing:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._closing:
                return
            self.restarts += 1
            log.error("OCPP edge worker %s exited with status %s; its stations reconnect;"
                      " starting it again", worker.name, code)
            delay = RESTART_AFTER_S
            while True:
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._spawn(worker)
                    break
                except Exception as error:  # RuntimeError, or OSError from the system
                    if self._closing:
                        return  # stopped by close() while it started
                    self.failed_starts += 1
                    delay = min(2 * delay, RESTART_MAX_S)
                    log.error("OCPP edge worker %s did not start (%s); trying again in"
                              " %.0f s", worker.name, error, delay)

    # the relays ----------------------------------------------------------------------------------
    def _on_message(self, stream: RelayStream, message: Message) -> None:
        kind, relay_id = message.kind, message.connection
        lifetime: _Lifetime | None = stream.owner
        if kind is Kind.FRAME:  # the most frequent by far
            connection = lifetime.connections.get(relay_id) if lifetime is not None else None
            if connection is not None:
                body = message.body
                try:
                    connection.deliver(body.decode())
                except UnicodeDecodeError:
                    connection.deliver(body)  # read as ever: refused as not valid JSON
            return
        if lifetime is None:
            return
        if kind is Kind.READY:
            if not lifetime.ready.done():
                lifetime.ready.set_result(None)
            log.debug("OCPP edge worker %s (pid %s) accepts", lifetime.worker.name,
                      message.body.decode(errors="replace"))
            return
        if kind is Kind.CONNECTED:
            host = str(message.json().get("host") or "")
            lifetime.hosts[relay_id] = host
            admitted = self._admit(host)
            if admitted:
                lifetime.admitted.add(relay_id)
            stream.send(encode_json(Kind.ADMISSION, relay_id, {"admitted": admitted}))
        elif kind is Kind.HELLO:
            value = message.json()
            handshake = Handshake(str(value.get("path") or ""), lifetime.hosts.get(relay_id, ""),
                                  value.get("authorization"), value.get("peercert"))
            lifetime.judging.add(relay_id)
            self._track(asyncio.create_task(self._answer(lifetime, relay_id, handshake)))
        elif kind is Kind.OPENED:
            self._opened(lifetime, relay_id, str(message.json().get("subprotocol", "")))
        elif kind is Kind.CLOSED:
            value = message.json()
            self._closed(lifetime, relay_id, int(value.get("code", ABNORMAL_CLOSURE)),
                         str(value.get("reason", "")))
        else:
            log.warning("edge relay: unexpected %s from %s", kind.name, lifetime.worker.name)

    async def _answer(self, lifetime: _Lifetime, relay_id: int, handshake: Handshake) -> None:
        try:
            verdict = await self._judge(handshake)
        except Exception:  # a bug of ours: the station is refused, the bridge goes on
            log.exception("judging the handshake of %s failed", handshake.path)
            verdict = Verdict(HTTPStatus.INTERNAL_SERVER_ERROR)
        if relay_id not in lifetime.judging or lifetime.stream.lost.is_set():
            return  # the socket closed meanwhile (CLOSED has released what it held)
        lifetime.judging.discard(relay_id)
        if verdict.status == 0:
            lifetime.accepted[relay_id] = handshake
        lifetime.stream.send(encode_json(Kind.VERDICT, relay_id, {
            "status": int(verdict.status), "headers": [list(h) for h in verdict.headers]}))

    def _opened(self, lifetime: _Lifetime, relay_id: int, subprotocol: str) -> None:
        handshake = lifetime.accepted.pop(relay_id, None)
        if handshake is None:  # not a handshake we accepted: close it
            lifetime.stream.send(encode_json(Kind.CLOSE, relay_id, {"code": 1008, "reason": ""}))
            return
        connection = RelayedConnection(lifetime, relay_id, subprotocol,
                                       handshake.authorization)
        lifetime.connections[relay_id] = connection
        self._track(asyncio.create_task(self._serve(handshake, connection)))

    def _closed(self, lifetime: _Lifetime, relay_id: int, code: int, reason: str) -> None:
        lifetime.judging.discard(relay_id)
        lifetime.accepted.pop(relay_id, None)
        host = lifetime.hosts.pop(relay_id, None)
        if relay_id in lifetime.admitted:
            lifetime.admitted.discard(relay_id)
            self._released(host or "")
        connection = lifetime.connections.pop(relay_id, None)
        if connection is not None:
            connection.lost(code, reason)

    def _stream_lost(self, stream: RelayStream) -> None:
        lifetime: _Lifetime | None = stream.owner
        if lifetime is None:
            return
        for relay_id in list(lifetime.hosts) + list(lifetime.connections):
            self._closed(lifetime, relay_id, ABNORMAL_CLOSURE, "edge worker gone")

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers
                if w.process is not None and w.process.returncode is None]

    async def close(self) -> None:
        """Stop the workers (their stations' websockets close with 1001) and the relays."""
        self._closing = True
        # first the watchers, so that no worker is started again meanwhile (a start under
        # way kills its process when cancelled)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
        for worker in self._workers:
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("OCPP edge worker %s did not stop; killed", worker.name)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.lifetime is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.lifetime.stream.lost.wait(), STOP_TIMEOUT_S)
        for listening in self._listening:
            listening.close()
