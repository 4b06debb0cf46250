"""An OCPP edge worker: one process that holds station websockets for the bridge.

Started by the bridge (:mod:`bridge.ocpp.edge_workers`) with ``ocpp.workers`` above 0, never
by hand. The bridge opens the stations' listening socket and hands it to every worker; each
accepts from it, and does per connection what costs the most CPU and knows nothing of
OCPP: TLS, the HTTP handshake, websocket framing, keepalive pings. The bridge decides
everything else (:mod:`bridge.ocpp.relay`): whether an address may open another socket
(asked before anything is read from it), whether a handshake is accepted, and every
frame's answer. A worker holds no state a restart would lose: one that dies drops its
connections, and the stations connect again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from bridge.gc_tuning import tune_for_many_connections
from bridge.ocpp.keepalive import Keepalive
from bridge.ocpp.listening import BACKLOG
from bridge.ocpp.relay import ACCEPT, Kind, Message, encode, encode_json
from bridge.ocpp.relay_stream import RelayStream
from bridge.ocpp.security import websockets_logger
from bridge.ocpp.station_path import station_id_from_path
from bridge.ocpp.tls import server_context

log = logging.getLogger(__name__)

# A handshake the bridge has not judged in this long is refused with 503 (the bridge is
# stalled; the station tries again); within websockets' own limit for a whole handshake.
OPEN_TIMEOUT_S = 10.0
VERDICT_TIMEOUT_S = 8.0
ABNORMAL_CLOSURE = 1006
# Frames and closes the bridge sent that wait for a station that does not read. OCPP-J has
# one call in flight each way, so a reading station never has more than a few; past this
# many it is dropped (it connects again; nothing of its session is lost).
MAX_OUTBOX = 256
_CLOSE = object()  # in a connection's outbox: close it once what came before is sent


class _Relayed(ServerConnection):
    """A station's connection, numbered for the relay."""

    relay_id: int = 0
    station = ""  # as the request path names it, for the log
    reading: asyncio.Event | None = None  # cleared while the bridge asks for a pause


class EdgeWorker:
    def __init__(self) -> None:
        self.stream: RelayStream | None = None
        self._next_id = 0
        self.sockets: dict[int, _Relayed] = {}  # every accepted socket, by relay id
        self.connections: dict[int, _Relayed] = {}  # those whose websocket is open
        self._verdicts: dict[int, asyncio.Future[tuple[int, list[list[str]]]]] = {}
        self._outboxes: dict[int, deque[Any]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self.keepalive = Keepalive(
            lambda: [(c.station, c) for c in self.connections.values()])

    # messages from the bridge -------------------------------------------------------------------
    def on_message(self, message: Message) -> None:
        kind, relay_id = message.kind, message.connection
        if kind is Kind.SEND:
            self._queue(relay_id, message.body)
        elif kind is Kind.ADMISSION:
            connection = self.sockets.get(relay_id)
            if connection is not None:
                if message.json().get("admitted"):
                    connection.transport.resume_reading()
                else:
                    connection.transport.abort()
        elif kind is Kind.VERDICT:
            verdict = self._verdicts.pop(relay_id, None)
            if verdict is not None and not verdict.done():
                value = message.json()
                verdict.set_result((int(value["status"]), value.get("headers", [])))
        elif kind is Kind.CLOSE:
            value = message.json()
            self._queue(relay_id, (_CLOSE, int(value["code"]), str(value["reason"])))
        elif kind is Kind.PAUSE:
            connection = self.connections.get(relay_id)
            if connection is not None and connection.reading is None:
                connection.reading = asyncio.Event()
        elif kind is Kind.RESUME:
            connection = self.connections.get(relay_id)
            if connection is not None and connection.reading is not None:
                connection.reading.set()
                connection.reading = None
        else:
            log.warning("edge worker: unexpected %s from the bridge", kind.name)

    def _queue(self, relay_id: int, item: Any) -> None:
        """Frames and the close go out in the order the bridge sent them."""
        connection = self.connections.get(relay_id)
        if connection is None:
            return  # gone already; its CLOSED is on its way to the bridge
        outbox = self._outboxes.get(relay_id)
        if outbox is not None:
            if len(outbox) >= MAX_OUTBOX:
                log.warning("station %s reads nothing of what it is sent; dropping its"
                            " connection", connection.station)
                del self.connections[relay_id]  # nothing more is queued for it
                connection.transport.abort()
                return
            outbox.append(item)
            return
        if isinstance(item, bytes) and _write_now(connection, item):
            return
        self._outboxes[relay_id] = deque((item,))
        task = asyncio.create_task(self._send_all(relay_id))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_all(self, relay_id: int) -> None:
        outbox = self._outboxes[relay_id]
        try:
            while outbox:
                connection = self.connections.get(relay_id)
                if connection is None:
                    return
                item = outbox[0]
                try:
                    if isinstance(item, tuple):
                        await connection.close(item[1], item[2])
                    else:
                        await connection.send(item, text=True)
                except ConnectionClosed:
                    return
                outbox.popleft()
        finally:
            del self._outboxes[relay_id]

    # the stations' side --------------------------------------------------------------------------
    def connection_class(self) -> type[ServerConnection]:
        worker = self

        class Connection(_Relayed):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                worker._next_id = worker._next_id % 0xFFFF_FFFF + 1
                self.relay_id = worker._next_id
                worker.sockets[self.relay_id] = self
                # Nothing is read until the bridge admits the address (its per-address
                # limits count every worker's sockets).
                transport.pause_reading()
                peer = transport.get_extra_info("peername")
                host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
                if worker.stream is None:
                    transport.abort()
                    return
                worker.stream.send(encode_json(Kind.CONNECTED, self.relay_id, {"host": host}))

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                relay_id = self.relay_id
                worker.sockets.pop(relay_id, None)
                worker.connections.pop(relay_id, None)
                verdict = worker._verdicts.pop(relay_id, None)
                if verdict is not None:
                    verdict.cancel()
                if self.reading is not None:
                    self.reading.set()  # the reader is waiting: let it see the close
                if worker.stream is not None:
                    code = self.close_code if self.close_code is not None else ABNORMAL_CLOSURE
                    worker.stream.send(encode_json(Kind.CLOSED, relay_id, {
                        "code": code, "reason": self.close_reason or ""}))

        return Connection

    async def check_request(self, connection: ServerConnection,
                            request: Request) -> Response | None:
        """Ask the bridge whether this handshake may go on."""
        assert isinstance(connection, _Relayed)
        if self.stream is None:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "starting\n")
        connection.station = station_id_from_path(request.path) or "?"
        verdict = asyncio.get_running_loop().create_future()
        self._verdicts[connection.relay_id] = verdict
        self.stream.send(encode_json(Kind.HELLO, connection.relay_id, {
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "peercert": connection.transport.get_extra_info("peercert"),
        }))
        try:
            status, headers = await asyncio.wait_for(verdict, VERDICT_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            self._verdicts.pop(connection.relay_id, None)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again\n")
        if status == ACCEPT:
            return None
        refusal = HTTPStatus(status)
        response = connection.respond(refusal, refusal.phrase + "\n")
        for name, value in headers:
            response.headers[name] = value
        return response

    async def serve_connection(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _Relayed) and self.stream is not None
        relay_id = connection.relay_id
        self.connections[relay_id] = connection
        # The handshake's headers are not needed any more (the bridge has what it judged).
        if connection.request is not None:
            connection.request.headers.clear()
        connection.response = None
        self.stream.send(encode_json(Kind.OPENED, relay_id,
                                     {"subprotocol": connection.subprotocol or ""}))
        receive, stream = connection.recv, self.stream
        with contextlib.suppress(ConnectionClosed):
            while True:
                if connection.reading is not None:
                    # The bridge has enough of this station's frames unread: leave the next
                    # in websockets' queue, which stops reading the socket once it is full.
                    await connection.reading.wait()
                # bytes as they came: the bridge reads them (a text frame is not decoded twice)
                stream.send(encode(Kind.FRAME, relay_id, await receive(decode=False)))
                await stream.drain()  # the bridge reads slower than the stations send


def _write_now(connection: ServerConnection, frame: bytes) -> bool:
    """Write a text frame at once, when the station reads and nothing waits before it;
    False: send it the slow way, from a task that waits while the station does not read.

    What ``Connection.send`` does for one frame, without a task and an async context per
    frame (a third of a worker's CPU in a storm, measured with py-spy): both run on this
    loop, so nothing can come between the frame and its write.
    """
    if connection.protocol.state is not State.OPEN or connection.paused:
        return False
    connection.protocol.send_text(frame)
    connection.send_data()
    return True


async def run(relay_fd: int, listen_fds: Sequence[int], backlog: int,
              subprotocols: Sequence[str], max_size: int,
              tls: tuple[Path, Path, Path | None] | None) -> None:
    loop = asyncio.get_running_loop()
    worker = EdgeWorker()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _, stream = await loop.create_unix_connection(
        lambda: RelayStream(worker.on_message, lambda _: stop.set()),
        sock=socket.socket(fileno=relay_fd))
    worker.stream = stream
    ssl_context = server_context(*tls) if tls is not None else None
    async with contextlib.AsyncExitStack() as servers:
        for fd in listen_fds:  # one per address the bridge listens on
            await servers.enter_async_context(serve(
                worker.serve_connection, sock=socket.socket(fileno=fd),
                subprotocols=[Subprotocol(name) for name in subprotocols],
                process_request=worker.check_request,
                create_connection=worker.connection_class(),
                ssl=ssl_context,
                backlog=backlog,  # (asyncio listens again on the socket, with this)
                open_timeout=OPEN_TIMEOUT_S,
                max_size=max_size,
                logger=websockets_logger(),
                ping_interval=None,  # one task pings them all (bridge.ocpp.keepalive)
                compression=None,
            ))
        keepalive = asyncio.create_task(worker.keepalive.run(), name="keepalive")
        stream.send(encode(Kind.READY, 0, str(os.getpid()).encode()))
        await stop.wait()
        keepalive.cancel()
        # leaving the servers closes the stations' websockets (1001 going away)
    stream.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.ocpp.edge_worker")
    parser.add_argument("--relay-fd", type=int, required=True,
                        help="this worker's end of its relay to the bridge")
    parser.add_argument("--listen-fds", required=True, help="comma-separated")
    parser.add_argument("--backlog", type=int, default=BACKLOG)
    parser.add_argument("--subprotocols", required=True)
    parser.add_argument("--max-size", type=int, required=True)
    parser.add_argument("--tls-certificate", type=Path)
    parser.add_argument("--tls-private-key", type=Path)
    parser.add_argument("--tls-client-ca", type=Path)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--name", default="edge")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s")
    # as the bridge's own: websockets tells of every connection at INFO
    logging.getLogger("websockets").setLevel(
        logging.DEBUG if args.log_level == "DEBUG" else logging.WARNING)
    tune_for_many_connections()
    tls = None
    if args.tls_certificate is not None:
        tls = (args.tls_certificate, args.tls_private_key, args.tls_client_ca)
    fds = [int(fd) for fd in args.listen_fds.split(",")]
    asyncio.run(run(args.relay_fd, fds, args.backlog, args.subprotocols.split(","),
                    args.max_size, tls))


if __name__ == "__main__":
    main()
