"""The bridge's end of its OCPP edge workers (``ocpp.workers`` above 0).

:class:`EdgeWorkers` keeps the worker processes (:mod:`bridge.ocpp.edge_worker`) running,
each listening on the stations' port with ``SO_REUSEPORT``; the bridge itself holds the
port bound without listening, so that it stays the bridge's while a worker restarts. It
judges each handshake a worker relays (the callback ``judge``) and hands each accepted
station to ``serve`` as a :class:`RelayedConnection`: what a link needs of a websocket
(``recv``, ``send``, ``close``), over the relay. The station links, and everything after
them, do not know the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from bridge.ocpp.relay import Kind, Message, encode, encode_json
from bridge.ocpp.relay_stream import RelayStream

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
RESTART_AFTER_S = 1.0
CLOSE_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_OK_CODES = (1000, 1001)
ABNORMAL_CLOSURE = 1006


@dataclass(frozen=True)
class Handshake:
    """What a worker relays of a station's handshake, for the bridge to judge."""

    path: str
    host: str
    authorization: str | None
    peercert: dict[str, Any] | None


@dataclass(frozen=True)
class Verdict:
    status: int  # relay.ACCEPT, relay.ABORT, or an HTTP status
    headers: Sequence[tuple[str, str]] = ()


@dataclass
class WorkerOptions:
    """How each worker listens: what the in-process edge would be given."""

    host: str
    port: int
    subprotocols: Sequence[str]
    max_size: int
    backlog: int = 2048
    tls: tuple[Path, Path, Path | None] | None = None
    log_level: str = "INFO"


class _Request:
    """The part of a websockets request the station server reads: its headers."""

    __slots__ = ("headers",)

    def __init__(self, authorization: str | None) -> None:
        self.headers: dict[str, str] = {}
        if authorization is not None:
            self.headers["Authorization"] = authorization


class RelayedConnection:
    """A station's websocket as seen through a worker: frames in order, then the close."""

    __slots__ = ("_worker", "_id", "subprotocol", "request", "response", "remote_address",
                 "_inbox", "_waiter", "_closed", "_closed_event")

    def __init__(self, worker: _Worker, relay_id: int, subprotocol: str, host: str,
                 authorization: str | None) -> None:
        self._worker, self._id = worker, relay_id
        self.subprotocol = subprotocol
        self.request: _Request | None = _Request(authorization)
        self.response: Any = None
        self.remote_address = (host, 0)
        self._inbox: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: ConnectionClosed | None = None
        self._closed_event: asyncio.Event | None = None

    @property
    def worker_pid(self) -> int | None:
        """The process of the worker that holds this connection."""
        process = self._worker.process
        return process.pid if process is not None else None

    # what the worker relays --------------------------------------------------------------------
    def deliver(self, frame: str | bytes) -> None:
        self._inbox.append(frame)
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
        return self._inbox.popleft()

    async def send(self, message: str) -> None:
        if self._closed is not None:
            raise self._closed
        stream = self._worker.stream
        stream.send(encode(Kind.SEND, self._id, message.encode()))
        await stream.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed is not None:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
            self._worker.stream.send(encode_json(Kind.CLOSE, self._id,
                                                 {"code": code, "reason": reason}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed_event.wait(), CLOSE_TIMEOUT_S)


@dataclass(eq=False)
class _Worker:
    """One worker process and its relay."""

    name: str
    process: asyncio.subprocess.Process | None = None
    stream: RelayStream = field(default=None)  # type: ignore[assignment]
    ready: asyncio.Future[None] | None = None
    # handshakes judged and not yet closed: relay id -> (its handshake, admitted address)
    pending: dict[int, tuple[Handshake, str | None]] = field(default_factory=dict)
    connections: dict[int, RelayedConnection] = field(default_factory=dict)


class EdgeWorkers:
    def __init__(self, count: int, options: WorkerOptions,
                 judge: Callable[[Handshake], Awaitable[tuple[Verdict, str | None]]],
                 serve: Callable[[Handshake, RelayedConnection], Awaitable[None]],
                 released: Callable[[str], None]) -> None:
        """``judge``: the verdict on a handshake, and the address admitted under the
        per-address limits (None when none was); ``released``: called with that address
        once its connection is gone; ``serve``: serves an accepted station until its
        connection closes."""
        self._count, self._options = count, options
        self._judge, self._serve, self._released = judge, serve, released
        self._workers: list[_Worker] = []
        self._relay_dir: tempfile.TemporaryDirectory[str] | None = None
        self._relay_server: asyncio.AbstractServer | None = None
        self._reserved: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.port = options.port
        self.restarts = 0

    async def start(self) -> None:
        self._reserve_port()
        self._relay_dir = tempfile.TemporaryDirectory(prefix="drbridge-edge-")
        path = Path(self._relay_dir.name) / "relay.sock"
        loop = asyncio.get_running_loop()
        self._relay_server = await loop.create_unix_server(self._new_stream, str(path))
        for number in range(self._count):
            worker = _Worker(f"edge{number + 1}")
            self._workers.append(worker)
            await self._spawn(worker)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.gather(*(w.ready for w in self._workers if w.ready is not None))
        except BaseException:
            await self.close()
            raise

    def _reserve_port(self) -> None:
        """Bind the stations' port (not listening: only the workers accept on it)."""
        options = self._options
        family, kind, proto, _, address = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        reserved = socket.socket(family, kind, proto)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)
        self._reserved = reserved
        self.port = reserved.getsockname()[1]

    async def _spawn(self, worker: _Worker) -> None:
        assert self._relay_dir is not None
        options = self._options
        argv = [sys.executable, "-m", "bridge.ocpp.edge_worker",
                "--relay", str(Path(self._relay_dir.name) / "relay.sock"),
                "--host", options.host, "--port", str(self.port),
                "--subprotocols", ",".join(options.subprotocols),
                "--max-size", str(options.max_size), "--backlog", str(options.backlog),
                "--log-level", options.log_level, "--name", worker.name]
        if options.tls is not None:
            certificate, private_key, client_ca = options.tls
            argv += ["--tls-certificate", str(certificate), "--tls-private-key", str(private_key)]
            if client_ca is not None:
                argv += ["--tls-client-ca", str(client_ca)]
        worker.ready = asyncio.get_running_loop().create_future()
        worker.process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL)
        self._track(asyncio.create_task(self._supervise(worker), name=f"{worker.name}-watch"))

    async def _supervise(self, worker: _Worker) -> None:
        """A worker that exits while the bridge runs is started again; its stations
        reconnect (to the other workers meanwhile)."""
        process = worker.process
        assert process is not None
        code = await process.wait()
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(RuntimeError(
                f"OCPP edge worker {worker.name} exited with {code} before it listened"))
            return
        if self._closing:
            return
        log.error("OCPP edge worker %s exited with %s; its stations reconnect; restarting it",
                  worker.name, code)
        self.restarts += 1
        await asyncio.sleep(RESTART_AFTER_S)
        if not self._closing:
            await self._spawn(worker)

    # the relays ----------------------------------------------------------------------------------
    def _new_stream(self) -> RelayStream:
        holder: list[RelayStream] = []
        stream = RelayStream(lambda message: self._on_message(holder[0], message),
                             self._stream_lost)
        holder.append(stream)
        return stream

    def _on_message(self, stream: RelayStream, message: Message) -> None:
        kind = message.kind
        if kind is Kind.READY:
            self._claim(stream, int(message.body))
            return
        worker: _Worker | None = stream.owner
        if worker is None:
            return
        if kind is Kind.FRAME:
            connection = worker.connections.get(message.connection)
            if connection is not None:
                body = message.body
                try:
                    connection.deliver(body.decode())
                except UnicodeDecodeError:
                    connection.deliver(body)  # read as ever: refused as not valid JSON
            return
        if kind is Kind.HELLO:
            value = message.json()
            handshake = Handshake(str(value.get("path") or ""), str(value.get("host") or ""),
                                  value.get("authorization"), value.get("peercert"))
            self._track(asyncio.create_task(self._answer(worker, message.connection, handshake)))
        elif kind is Kind.OPENED:
            self._opened(worker, message.connection, str(message.json().get("subprotocol", "")))
        elif kind is Kind.CLOSED:
            value = message.json()
            self._closed(worker, message.connection, int(value.get("code", ABNORMAL_CLOSURE)),
                         str(value.get("reason", "")))
        else:
            log.warning("edge relay: unexpected %s from %s", kind.name, worker.name)

    def _claim(self, stream: RelayStream, pid: int) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.pid == pid:
                worker.stream = stream
                stream.owner = worker
                if worker.ready is not None and not worker.ready.done():
                    worker.ready.set_result(None)
                log.debug("OCPP edge worker %s (pid %d) listens", worker.name, pid)
                return
        log.warning("edge relay: a worker of process %d is not ours; dropped", pid)
        stream.close()

    async def _answer(self, worker: _Worker, relay_id: int, handshake: Handshake) -> None:
        verdict, admitted = await self._judge(handshake)
        if worker.stream.lost.is_set():
            if admitted is not None:
                self._released(admitted)
            return
        worker.pending[relay_id] = (handshake, admitted)
        worker.stream.send(encode_json(Kind.VERDICT, relay_id, {
            "status": verdict.status, "headers": [list(h) for h in verdict.headers]}))

    def _opened(self, worker: _Worker, relay_id: int, subprotocol: str) -> None:
        pending = worker.pending.get(relay_id)
        if pending is None:  # not a handshake we judged: close it
            worker.stream.send(encode_json(Kind.CLOSE, relay_id, {"code": 1008, "reason": ""}))
            return
        handshake = pending[0]
        connection = RelayedConnection(worker, relay_id, subprotocol, handshake.host,
                                       handshake.authorization)
        worker.connections[relay_id] = connection
        self._track(asyncio.create_task(self._serve(handshake, connection)))

    def _closed(self, worker: _Worker, relay_id: int, code: int, reason: str) -> None:
        pending = worker.pending.pop(relay_id, None)
        if pending is not None and pending[1] is not None:
            self._released(pending[1])
        connection = worker.connections.pop(relay_id, None)
        if connection is not None:
            connection.lost(code, reason)

    def _stream_lost(self, stream: RelayStream) -> None:
        worker = stream.owner
        if worker is None or worker.stream is not stream:
            return
        for relay_id in list(worker.pending) + list(worker.connections):
            self._closed(worker, relay_id, ABNORMAL_CLOSURE, "edge worker gone")

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
            if worker.stream is not None:
                await worker.stream.lost.wait()
        if self._relay_server is not None:
            self._relay_server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reserved is not None:
            self._reserved.close()
        if self._relay_dir is not None:
            self._relay_dir.cleanup()
