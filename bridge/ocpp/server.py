"""The websocket endpoint stations connect to: ws://host:port/<station id>, ocpp1.6 or
ocpp2.0.1 (negotiated per station)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge.ocpp.v16 import StationLink, StationListener
from bridge.ocpp.v201 import StationLink201

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
SUBPROTOCOLS = {SUBPROTOCOL: StationLink, "ocpp2.0.1": StationLink201}
CLOSE_TIMEOUT_S = 10.0


def station_id_from_path(path: str) -> str | None:
    """The last path segment, URL-decoded; None when empty."""
    segment = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    station_id = unquote(segment)
    return station_id or None


class OcppServer:
    def __init__(
        self,
        host: str,
        port: int,
        listener: StationListener,
        accepts: Callable[[str], bool],
        on_open: Callable[[str, StationLink], None],
        on_close: Callable[[str, StationLink], None],
        call_timeout_s: float = 10.0,
    ) -> None:
        self._host, self._port = host, port
        self._listener = listener
        self._accepts = accepts
        self._on_open, self._on_close = on_open, on_close
        self._call_timeout_s = call_timeout_s
        self._server: Server | None = None
        self.links: dict[str, StationLink] = {}

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            subprotocols=list(SUBPROTOCOLS),
            process_request=self._check_request,
            # A site reboot brings every station back at once; asyncio's default of 100
            # pending connections would make the kernel drop some of them.
            backlog=2048,
            ping_interval=60,
            # Meter values are small; deflating each frame costs more CPU than it saves.
            compression=None,
            ping_timeout=60,
        )
        log.info("OCPP 1.6J/2.0.1 central system listening on ws://%s:%d/<station id>",
                 self._host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("some station connections did not close in time")

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None or not self._accepts(station_id):
            log.warning("refused station %r from %s", station_id, connection.remote_address)
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown station\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        station_id = station_id_from_path(connection.request.path if connection.request else "")
        if station_id is None:
            return
        link_class = SUBPROTOCOLS.get(str(connection.subprotocol))
        if link_class is None:
            await connection.close(1002, "subprotocol ocpp1.6 or ocpp2.0.1 required")
            return
        previous = self.links.get(station_id)
        if previous is not None:
            # A station that reconnects before we noticed the old link died: keep the new one.
            await previous._connection.close(1000, "replaced by a new connection")
        link = link_class(station_id, connection, self._listener, self._call_timeout_s)
        self.links[station_id] = link
        log.info("station %s connected", station_id)
        self._on_open(station_id, link)
        try:
            await link.start()
        except Exception as error:  # ConnectionClosed and anything the link did not handle
            log.info("station %s disconnected (%s)", station_id, type(error).__name__)
        finally:
            if self.links.get(station_id) is link:
                del self.links[station_id]
            self._on_close(station_id, link)
            await asyncio.sleep(0)
