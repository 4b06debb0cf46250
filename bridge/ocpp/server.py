"""The websocket endpoint stations connect to: ws(s)://host:port/<station id>, subprotocol
ocpp1.6, ocpp2.0.1 or ocpp2.1 (negotiated per station).

Before a station's handshake is answered: the per-address connection limits, then the
station id and its credentials (security profiles 0-3, see bridge.ocpp.auth).

The websockets end in this process, or (``workers`` above 0) in edge worker processes that
relay every frame here (:mod:`bridge.ocpp.edge_workers`); the judging of each handshake and
everything after it is the same code either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

from websockets.http11 import Request, Response

from bridge.aio import cancel_and_wait
from bridge.ocpp import station_socket
from bridge.ocpp.auth import Gatekeeper, Refusal
from bridge.ocpp.edge_workers import (
    EdgeWorkers,
    Handshake,
    RelayedConnection,
    Verdict,
    WorkerOptions,
)
from bridge.ocpp.keepalive import Keepalive
from bridge.ocpp.limits import Admission, ConnectionLimiter, FailureLimiter
from bridge.ocpp.link import ChargerLink, StationListener
from bridge.ocpp.listening import BACKLOG
from bridge.ocpp.relay import ACCEPT
from bridge.ocpp.security import EdgeSecurity, websockets_logger
from bridge.ocpp.station_path import station_id_from_path
from bridge.ocpp.station_socket import StationSocket, StationSockets
from bridge.ocpp.v16 import StationLink16
from bridge.ocpp.v21 import StationLink21
from bridge.ocpp.v201 import StationLink201

log = logging.getLogger(__name__)

# a link of any version drbridge speaks
AnyStationLink = StationLink16 | StationLink201 | StationLink21
SUBPROTOCOL = "ocpp1.6"
# In the order the server prefers one a station offers among several: a station that offers
# 2.1 and 2.0.1 speaks 2.1 (DER control needs it).
SUBPROTOCOLS: dict[str, type[AnyStationLink]] = {SUBPROTOCOL: StationLink16,
                                                 "ocpp2.1": StationLink21,
                                                 "ocpp2.0.1": StationLink201}
# Every version's link is a ChargerLink (checked by type checkers here, and by the tests).
_LINKS: tuple[type[ChargerLink], ...] = tuple(SUBPROTOCOLS.values())
# A refused flood must not flood the log: one line per address and this many seconds.
REFUSAL_LOG_PERIOD_S = 60.0


class OcppServer:
    def __init__(
        self,
        host: str,
        port: int,
        listener: StationListener,
        accepts: Callable[[str], bool],
        on_open: Callable[[str, AnyStationLink], None],
        on_close: Callable[[str, AnyStationLink], None],
        call_timeout_s: float = 10.0,
        security: EdgeSecurity | None = None,
        make_link: Callable[[str, Any, str], AnyStationLink | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        workers: int = 0,
        log_level: str = "INFO",
    ) -> None:
        self._host, self._port = host, port
        self._listener = listener
        self._accepts = accepts
        self._on_open, self._on_close = on_open, on_close
        self._call_timeout_s = call_timeout_s
        # local-controller mode: a link that forwards to the operator's CSMS (None: the
        # version's own link, a central system's)
        self._make_link = make_link
        # the subprotocols offered, the preferred first (local-controller mode: the ones it
        # forwards before the others)
        self._subprotocols = tuple(subprotocols or SUBPROTOCOLS)
        self.security = security or EdgeSecurity()
        self.gatekeeper = Gatekeeper(
            self.security.profile, accepts, self.security.password_hashes,
            FailureLimiter(self.security.failures),
        )
        self.connection_limiter = ConnectionLimiter(self.security.connections)
        self._refusals_logged: dict[str, float] = {}
        self._sockets: StationSockets | None = None
        self._workers = workers
        self._log_level = log_level
        self.edge: EdgeWorkers | None = None
        self.links: dict[str, AnyStationLink] = {}
        self.keepalive = Keepalive(
            lambda: [(station_id, link.connection) for station_id, link in self.links.items()])
        self._keepalive_task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether stations can connect (start has returned)."""
        return self._sockets is not None or self.edge is not None

    @property
    def port(self) -> int:
        if self.edge is not None:
            return self.edge.port
        assert self._sockets is not None
        return self._sockets.port

    async def start(self) -> None:
        if self._workers > 0:
            await self._start_workers()
        else:
            await self._start_here()
        log.info("OCPP 1.6J/2.0.1/2.1 central system listening on %s://%s:%d/<station id>"
                 " (security profile %d%s)", self.security.scheme, self._host, self.port,
                 self.security.profile,
                 f", {self._workers} edge worker processes" if self._workers else "")
        if self.security.profile == 1:
            log.warning("security profile 1: station passwords cross the network unencrypted;"
                        " use it on a trusted network or VPN only (profile 2 adds TLS)")

    async def _start_workers(self) -> None:
        edge = EdgeWorkers(
            self._workers,
            WorkerOptions(self._host, self._port, self._subprotocols,
                          self.security.max_message_bytes, BACKLOG, self.security.tls_files,
                          self._log_level),
            admit=self._admit, released=self.connection_limiter.release,
            judge=self._judge, serve=self._serve_relayed)
        await edge.start()
        self.edge = edge

    async def _start_here(self) -> None:
        # No compression (meter values are small; deflating each frame costs more CPU than
        # it saves), and one task pings every connection (bridge.ocpp.keepalive). A message
        # larger than max_message_bytes closes the connection with 1009 (message too big)
        # before more of it is read; see the README for why not a CALLERROR.
        sockets = StationSockets(
            judge=self._judge_request, serve=self._serve_socket, admit=self._admit,
            release=self.connection_limiter.release, subprotocols=self._subprotocols,
            max_size=self.security.max_message_bytes, logger=websockets_logger())
        await sockets.start(self._host, self._port, self.security.ssl_context, BACKLOG)
        self._sockets = sockets
        self._keepalive_task = asyncio.create_task(self.keepalive.run(), name="keepalive")

    async def close(self) -> None:
        if self.edge is not None:
            await self.edge.close()
        if self._keepalive_task is not None:
            await cancel_and_wait([self._keepalive_task])
        # (each connection's own close deadline first, then a second for its handler)
        if self._sockets is not None and \
                not await self._sockets.close(station_socket.CLOSE_TIMEOUT_S + 1):
            log.warning("some station connections did not close in time")

    async def _judge_request(self, socket: StationSocket, request: Request) -> Response | None:
        refusal = await self._refusal(request.path, _host_of(socket.remote_address),
                                      request.headers.get("Authorization"),
                                      socket.transport.get_extra_info("peercert"))
        if refusal is None:
            return None
        # The reason is for our log; the station learns only the status.
        response = socket.protocol.reject(refusal.status, refusal.status.phrase + "\n")
        for name, value in refusal.headers:
            response.headers[name] = value
        return response

    async def _refusal(self, path: str, host: str, authorization: str | None,
                       peercert: dict[str, Any] | None) -> Refusal | None:
        station_id = station_id_from_path(path)
        if station_id is None:
            log.warning("refused a connection without station id from %s", host)
            return Refusal(HTTPStatus.NOT_FOUND, "unknown station")
        return await self.gatekeeper.check(station_id, host, authorization, peercert)

    def _admit(self, host: str) -> bool:
        """A socket an edge worker accepted, before it reads anything: the per-address
        limits, counted here for every worker together."""
        admission = self.connection_limiter.admit(host, time.monotonic())
        if admission is Admission.ADMITTED:
            return True
        self._log_refusal(host, admission)
        return False

    async def _judge(self, handshake: Handshake) -> Verdict:
        """A handshake an edge worker relays, judged as any other."""
        refusal = await self._refusal(handshake.path, handshake.host, handshake.authorization,
                                      handshake.peercert)
        if refusal is None:
            return Verdict(ACCEPT)
        return Verdict(int(refusal.status), tuple(refusal.headers))

    async def _serve_relayed(self, handshake: Handshake, connection: RelayedConnection) -> None:
        station_id = station_id_from_path(handshake.path)
        if station_id is not None:
            await self._serve(station_id, connection.subprotocol, connection)

    def _log_refusal(self, address: str, admission: Admission) -> None:
        now = time.monotonic()
        last = self._refusals_logged.get(address)
        if last is not None and now - last < REFUSAL_LOG_PERIOD_S:
            return
        if len(self._refusals_logged) >= 1000:  # bounded: forget the oldest
            self._refusals_logged.pop(next(iter(self._refusals_logged)))
        self._refusals_logged.pop(address, None)
        self._refusals_logged[address] = now
        log.warning("refusing connections from %s: %s (logged once a minute)",
                    address, admission.value)

    def _serve_socket(self, socket: StationSocket) -> Awaitable[None]:
        """:meth:`_serve` itself, not a coroutine that awaits it (whose frame each
        connection would hold for as long as it lasts)."""
        station_id = station_id_from_path(socket.request.path if socket.request else "")
        if station_id is None:  # refused in the handshake: not reached
            return asyncio.sleep(0)
        return self._serve(station_id, str(socket.subprotocol), socket)

    async def _serve(self, station_id: str, subprotocol: str, connection: Any) -> None:
        """Serve one station's accepted connection (a websocket here, or relayed by an edge
        worker) until it closes."""
        link_class = SUBPROTOCOLS.get(subprotocol)
        if link_class is None:
            await connection.close(1002, "subprotocol ocpp1.6, ocpp2.0.1 or ocpp2.1 required")
            return
        previous = self.links.get(station_id)
        if previous is not None:
            # A station that reconnects before we noticed the old link died: keep the new one.
            await previous.close(1000, "replaced by a new connection")
        link = self._make_link(station_id, connection, subprotocol) \
            if self._make_link is not None else None
        if link is None:
            link = link_class(station_id, connection, self._listener, self._call_timeout_s)
        # The handshake is read: kept, it would cost each connection a few kilobytes for as
        # long as it lasts (websockets' parser holds on to the request: its headers go).
        if connection.request is not None:
            connection.request.headers.clear()
            connection.request = None
        if isinstance(connection, StationSocket) and getattr(link, "ANSWERS_AT_ONCE", False):
            connection.answer_at_once(link)
        self.links[station_id] = link
        log.info("station %s connected", station_id)
        self._on_open(station_id, link)
        try:
            await link.start()
        except Exception as error:  # ConnectionClosed and anything the link did not handle
            log.info("station %s disconnected (%s)", station_id, type(error).__name__)
        finally:
            if isinstance(connection, StationSocket):
                connection.answer_at_once(None)
            if self.links.get(station_id) is link:
                del self.links[station_id]
            self._on_close(station_id, link)
            await asyncio.sleep(0)


def _host_of(address: Any) -> str:
    """The host part of a socket address (IPv4 or IPv6 tuple); empty when unknown."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""
