"""An OCPP edge worker: one process that holds station websockets for the bridge.

Started by the bridge (:mod:`bridge.ocpp.edge_workers`) with ``ocpp.workers`` above 0, never
by hand. Each worker listens on the stations' port itself (``SO_REUSEPORT``: the kernel
spreads new connections over the workers), and does per connection what costs the most
CPU and knows nothing of OCPP: TLS, the HTTP handshake, websocket framing, keepalive pings.
It asks the bridge to judge each handshake, and relays every text frame to the bridge and
back (:mod:`bridge.ocpp.relay`). It holds no state a restart would lose: a worker that dies
drops its connections, and the stations connect again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
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
from bridge.ocpp.relay import ABORT, ACCEPT, Kind, Message, encode, encode_json
from bridge.ocpp.relay_stream import RelayStream
from bridge.ocpp.security import websockets_logger
from bridge.ocpp.station_path import station_id_from_path
from bridge.ocpp.tls import server_context

log = logging.getLogger(__name__)

# A handshake the bridge has not judged in this long is refused (the bridge is stalled or
# gone; the station tries again).
VERDICT_TIMEOUT_S = 30.0
ABNORMAL_CLOSURE = 1006
_CLOSE = object()  # in a connection's outbox: close it once what came before is sent


class _Relayed(ServerConnection):
    """A station's connection, numbered for the relay."""

    relay_id: int = 0
    station = ""  # as the request path names it, for the log


class EdgeWorker:
    def __init__(self) -> None:
        self.stream: RelayStream | None = None
        self._next_id = 0
        self.connections: dict[int, _Relayed] = {}  # open websockets, by relay id
        self._verdicts: dict[int, asyncio.Future[tuple[int, list[list[str]]]]] = {}
        self._outboxes: dict[int, deque[Any]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self.keepalive = Keepalive(
            lambda: [(c.station, c) for c in self.connections.values()])

    # messages from the bridge -------------------------------------------------------------------
    def on_message(self, message: Message) -> None:
        if message.kind is Kind.SEND:
            self._queue(message.connection, message.body)
        elif message.kind is Kind.VERDICT:
            verdict = self._verdicts.pop(message.connection, None)
            if verdict is not None and not verdict.done():
                value = message.json()
                verdict.set_result((int(value["status"]), value.get("headers", [])))
        elif message.kind is Kind.CLOSE:
            value = message.json()
            self._queue(message.connection, (_CLOSE, int(value["code"]), str(value["reason"])))
        else:
            log.warning("edge worker: unexpected %s from the bridge", message.kind.name)

    def _queue(self, connection_id: int, item: Any) -> None:
        """Frames and the close go out in the order the bridge sent them, one at a time."""
        connection = self.connections.get(connection_id)
        if connection is None:
            return  # gone already; its CLOSED is on its way to the bridge
        outbox = self._outboxes.get(connection_id)
        if outbox is not None:
            outbox.append(item)
            return
        if isinstance(item, bytes) and _write_now(connection, item):
            return
        self._outboxes[connection_id] = deque((item,))
        task = asyncio.create_task(self._send_all(connection_id))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_all(self, connection_id: int) -> None:
        outbox = self._outboxes[connection_id]
        try:
            while outbox:
                connection = self.connections.get(connection_id)
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
            del self._outboxes[connection_id]

    # the stations' side --------------------------------------------------------------------------
    def connection_class(self) -> type[ServerConnection]:
        worker = self

        class Connection(_Relayed):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                worker._next_id = worker._next_id % 0xFFFF_FFFF + 1
                self.relay_id = worker._next_id

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                worker.connections.pop(self.relay_id, None)
                verdict = worker._verdicts.pop(self.relay_id, None)
                if verdict is not None:
                    verdict.cancel()
                if worker.stream is not None:
                    code = self.close_code if self.close_code is not None else ABNORMAL_CLOSURE
                    worker.stream.send(encode_json(Kind.CLOSED, self.relay_id, {
                        "code": code, "reason": self.close_reason or ""}))

        return Connection

    async def check_request(self, connection: ServerConnection,
                            request: Request) -> Response | None:
        """Ask the bridge whether this handshake may go on."""
        assert isinstance(connection, _Relayed)
        if self.stream is None:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "starting\n")
        verdict = asyncio.get_running_loop().create_future()
        self._verdicts[connection.relay_id] = verdict
        connection.station = station_id_from_path(request.path) or "?"
        peername = connection.transport.get_extra_info("peername")
        self.stream.send(encode_json(Kind.HELLO, connection.relay_id, {
            "path": request.path,
            "host": str(peername[0]) if isinstance(peername, tuple) and peername else "",
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
        if status == ABORT:
            connection.transport.abort()
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
                # bytes as they came: the bridge reads them (a text frame is not decoded twice)
                stream.send(encode(Kind.FRAME, relay_id, await receive(decode=False)))


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


async def run(relay_path: Path, host: str, port: int, subprotocols: Sequence[str],
              max_size: int, backlog: int, tls: tuple[Path, Path, Path | None] | None) -> None:
    loop = asyncio.get_running_loop()
    worker = EdgeWorker()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _, stream = await loop.create_unix_connection(
        lambda: RelayStream(worker.on_message, lambda _: stop.set()), str(relay_path))
    worker.stream = stream
    ssl_context = server_context(*tls) if tls is not None else None
    async with serve(
        worker.serve_connection, host, port,
        reuse_port=True,
        subprotocols=[Subprotocol(name) for name in subprotocols],
        process_request=worker.check_request,
        create_connection=worker.connection_class(),
        ssl=ssl_context,
        max_size=max_size,
        logger=websockets_logger(),
        backlog=backlog,
        ping_interval=None,  # one task pings them all (bridge.ocpp.keepalive)
        compression=None,
    ) as server:
        keepalive = asyncio.create_task(worker.keepalive.run(), name="keepalive")
        stream.send(encode(Kind.READY, 0, str(os.getpid()).encode()))
        await stop.wait()
        keepalive.cancel()
        server.close()  # closes the stations' websockets (1001 going away)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
    stream.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.ocpp.edge_worker")
    parser.add_argument("--relay", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subprotocols", required=True)
    parser.add_argument("--max-size", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=2048)
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
    asyncio.run(run(args.relay, args.host, args.port, args.subprotocols.split(","),
                    args.max_size, args.backlog, tls))


if __name__ == "__main__":
    main()
