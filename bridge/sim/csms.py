"""A small operator CSMS for tests: the upstream a local controller forwards to.

The central-system side of the real ``ocpp`` library (``ocpp.v16.ChargePoint`` and
``ocpp.v201.ChargePoint`` handlers) over a real websockets server, speaking OCPP 1.6J or
2.0.1 per the subprotocol each station (or a local controller on its behalf) offers. It
behaves like an operator's back office in the ways that matter to drbridge:

- it answers BootNotification, Heartbeat, StatusNotification, MeterValues, and the
  notices stations send unasked;
- it authorizes from an allow-list of id tags (Authorize, StartTransaction, 2.0.1
  TransactionEvent with an idToken): listed tags get their listed status, others
  ``Invalid``;
- it assigns its own 1.6 transaction ids from its own counter (5000 up by default), so
  they differ from any id a station got from someone else;
- it records every frame it receives, with the time it arrived;
- it checks HTTP Basic credentials (security profile 1) when given passwords, and over
  TLS may ask for client certificates (records the names they carry);
- it sends requests to a named station on demand and returns the answer;
- it can go down (stop listening, drop its connections) and come back on the same port;
- it can stop reading one station's link (:meth:`UpstreamCsms.stall`), as a back office
  whose process hangs or whose network stops delivering: the TCP connection stays open, and
  nothing sent on it is read or answered, a close frame neither;
- it can answer a refused 1.6 StartTransaction without its transactionId
  (``start_refusal_without_transaction_id``), as some central systems do.

Tests may also hold the answer to an action (:meth:`UpstreamCsms.hold`): the message is
recorded on arrival, its answer waits until released, as a slow or stalled back office.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import ocpp.messages
from ocpp.charge_point import camel_to_snake_case, remove_nones, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, unpack, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge.ocpp.tls import common_names

log = logging.getLogger(__name__)

ocpp.messages.ASYNC_VALIDATION = False  # see bridge.sim.station

SUBPROTOCOLS = ("ocpp1.6", "ocpp2.0.1")
# What the operator may ask of a station, per version (the requests a local controller
# must forward, and, for the smart-charging ones, look at on the way).
REQUESTS_16 = frozenset({
    "SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule",
    "RemoteStartTransaction", "RemoteStopTransaction", "ChangeConfiguration",
    "GetConfiguration", "TriggerMessage", "Reset", "ChangeAvailability", "UnlockConnector",
    "ClearCache", "DataTransfer", "GetLocalListVersion", "SendLocalList", "ReserveNow",
    "CancelReservation", "UpdateFirmware", "GetDiagnostics",
})
REQUESTS_201 = frozenset({
    "SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "GetChargingProfiles",
    "RequestStartTransaction", "RequestStopTransaction", "SetVariables", "GetVariables",
    "TriggerMessage", "Reset", "ChangeAvailability", "UnlockConnector", "ClearCache",
    "DataTransfer", "GetLocalListVersion", "SendLocalList", "ReserveNow", "CancelReservation",
    "UpdateFirmware", "GetLog", "GetTransactionStatus", "CustomerInformation", "GetBaseReport",
})
FIRST_TRANSACTION_ID = 5000
HEARTBEAT_INTERVAL_S = 300
_FRAME_KINDS = {2: "CALL", 3: "CALLRESULT", 4: "CALLERROR"}


class CsmsCallError(Exception):
    """The station answered a request with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


@dataclass(frozen=True)
class Received:
    """One frame the CSMS received, as on the wire."""

    station_id: str
    kind: str  # CALL, CALLRESULT or CALLERROR
    message_id: str
    action: str | None  # CALLs only
    payload: Any  # the CALL's or CALLRESULT's payload (camelCase), the CALLERROR's code
    at: datetime


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (user.decode("utf-8", "replace"), password) if colon else None


class UpstreamCsms:
    """The operator's CSMS on loopback. ``port`` 0 picks a free one at the first start."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        id_tags: Mapping[str, str] | Iterable[str] = ("ALLOWED",),
        passwords: Mapping[str, str] | None = None,
        first_transaction_id: int = FIRST_TRANSACTION_ID,
        auth_valid_for: timedelta | None = None,
        call_timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        start_refusal_without_transaction_id: bool = False,
    ) -> None:
        self.host, self.port = host, port
        # id tag -> the status it gets ("Accepted", "Blocked", ...); unlisted: "Invalid"
        self.id_tags: dict[str, str] = (
            dict(id_tags) if isinstance(id_tags, Mapping) else dict.fromkeys(id_tags, "Accepted")
        )
        self.passwords = dict(passwords) if passwords is not None else None
        self.auth_valid_for = auth_valid_for  # expiryDate / cacheExpiryDateTime when set
        self.boot_status = "Accepted"
        self.call_timeout_s = call_timeout_s
        self.ssl_context = ssl_context
        # A lenient-peer quirk: refuse a 1.6 start with idTagInfo only, leaving out the
        # transactionId 1.6 requires in every StartTransaction answer. This CSMS stands in
        # for the operator's, and some operators' central systems answer a refusal so; the
        # local controller has to cope with that answer, so the test peer must be able to
        # send it (nothing else here breaks the protocol on purpose).
        self.start_refusal_without_transaction_id = start_refusal_without_transaction_id
        self.received: list[Received] = []
        self.stations: dict[str, ChargePoint16 | ChargePoint201] = {}
        # 1.6 transactions it assigned: id -> (station id, connector id, id tag)
        self.transactions: dict[int, tuple[str, int, str]] = {}
        self.refused_logins = 0
        # the subject common names of the client certificate each station presented (TLS)
        self.client_certificates: dict[str, list[str]] = {}
        self._transaction_ids = itertools.count(first_transaction_id)
        self._held: dict[str, asyncio.Event] = {}
        self._server: Server | None = None
        self._connections: set[ServerConnection] = set()
        self._connection_of: dict[str, ServerConnection] = {}  # station id -> its link
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (again): on the port of the first start once it had one."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle, self.host, self.port, subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            process_request=self._check_login, ssl=self.ssl_context, compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, abort: bool = False) -> None:
        """Go down: stop listening and end every connection (``abort``: without a close
        frame, as when the operator's network fails)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=not abort)
        if abort:
            for connection in list(self._connections):
                connection.transport.abort()
        await server.wait_closed()
        self.stations.clear()

    async def __aenter__(self) -> UpstreamCsms:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _check_login(self, connection: ServerConnection,
                           request: Request) -> Response | None:
        if self.passwords is None:
            return None
        station_id = _station_id(request.path)
        credentials = _basic_credentials(request.headers.get("Authorization"))
        expected = self.passwords.get(station_id)
        if credentials is not None and expected is not None and credentials[0] == station_id \
                and hmac.compare_digest(credentials[1], expected.encode("utf-8")):
            return None
        self.refused_logins += 1
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="OCPP"'
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        station_id = _station_id(connection.request.path if connection.request else "")
        if connection.subprotocol == "ocpp1.6":
            station: ChargePoint16 | ChargePoint201 = _Station16(station_id, connection, self)
        elif connection.subprotocol == "ocpp2.0.1":
            station = _Station201(station_id, connection, self)
        else:
            await connection.close(1002, "subprotocol ocpp1.6 or ocpp2.0.1 required")
            return
        self._connections.add(connection)
        self.stations[station_id] = station
        self._connection_of[station_id] = connection
        peer = connection.transport.get_extra_info("peercert")
        if peer:
            self.client_certificates[station_id] = common_names(peer)
        try:
            await station.start()
        except Exception as error:  # the connection closed, or went down with us
            log.info("CSMS: %s disconnected (%s)", station_id, type(error).__name__)
        finally:
            self._connections.discard(connection)
            if self.stations.get(station_id) is station:
                del self.stations[station_id]
            if self._connection_of.get(station_id) is connection:
                del self._connection_of[station_id]

    def stall(self, station_id: str) -> None:
        """Stop reading the station's link: what arrives on it waits in the socket, unread
        and unanswered (a close frame too), while the connection stays open."""
        self._connection_of[station_id].transport.pause_reading()

    # ---- what stations said ------------------------------------------------------------------
    async def _record(self, station_id: str, raw: str | bytes) -> str | None:
        """Note a frame; the action of a CALL (None for anything else)."""
        try:
            frame = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(frame, list) or len(frame) < 3 or frame[0] not in _FRAME_KINDS:
            return None
        kind = _FRAME_KINDS[frame[0]]
        action = str(frame[2]) if kind == "CALL" else None
        payload = frame[3] if kind == "CALL" and len(frame) > 3 else frame[2]
        self.received.append(Received(station_id, kind, str(frame[1]), action, payload,
                                      datetime.now(UTC)))
        async with self._arrived:
            self._arrived.notify_all()
        return action

    def calls(self, action: str | None = None, station_id: str | None = None) -> list[Received]:
        """The CALLs received, oldest first, of one action and/or station."""
        return [r for r in self.received if r.kind == "CALL"
                and action in (None, r.action) and station_id in (None, r.station_id)]

    async def wait_for(self, action: str, count: int = 1, station_id: str | None = None,
                       timeout: float = 10.0) -> list[Received]:
        """Until at least ``count`` CALLs of ``action`` arrived; those CALLs."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(
                lambda: len(self.calls(action, station_id)) >= count)
        return self.calls(action, station_id)

    def id_tag_status(self, id_tag: str) -> str:
        return self.id_tags.get(id_tag, "Invalid")

    def _expiry(self) -> str | None:
        if self.auth_valid_for is None:
            return None
        at = datetime.now(UTC) + self.auth_valid_for
        return at.isoformat(timespec="seconds").replace("+00:00", "Z")

    def next_transaction_id(self, station_id: str, connector_id: int, id_tag: str) -> int:
        transaction_id = next(self._transaction_ids)
        self.transactions[transaction_id] = (station_id, connector_id, id_tag)
        return transaction_id

    # ---- held answers ----------------------------------------------------------------------
    def hold(self, action: str) -> None:
        """Record CALLs of ``action`` on arrival but answer them only once released."""
        self._held[action] = asyncio.Event()

    def release(self, action: str) -> None:
        event = self._held.pop(action, None)
        if event is not None:
            event.set()

    async def _gate(self, action: str | None) -> None:
        event = self._held.get(action or "")
        if event is not None:
            await event.wait()

    # ---- requests to a station -------------------------------------------------------------
    async def request(self, station_id: str, action: str, payload: Mapping[str, Any]) -> Any:
        """Send one request (its payload as on the wire, camelCase) to a connected station
        and return its answer as on the wire; raises :class:`CsmsCallError` on a
        CALLERROR, TimeoutError when no answer comes in time, KeyError when the station is
        not connected."""
        station = self.stations[station_id]
        version_16 = isinstance(station, ChargePoint16)
        allowed, calls = (REQUESTS_16, call16) if version_16 else (REQUESTS_201, call201)
        if action not in allowed:
            raise ValueError(f"{action} is not a request this CSMS sends in OCPP "
                             f"{'1.6' if version_16 else '2.0.1'}")
        message = getattr(calls, action)(**camel_to_snake_case(dict(payload)))
        try:
            answer = await station.call(message, suppress=False)
        except OCPPError as error:
            raise CsmsCallError(type(error).__name__, str(error.description)) from None
        return snake_to_camel_case(remove_nones(asdict(answer)))


def _station_id(path: str) -> str:
    return unquote(path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])


class _Station16(ChargePoint16):
    """One 1.6 station's connection, as the CSMS sees it."""

    def __init__(self, station_id: str, connection: ServerConnection, csms: UpstreamCsms) -> None:
        super().__init__(station_id, connection, response_timeout=csms.call_timeout_s)
        self.csms = csms

    async def route_message(self, raw_msg: str | bytes) -> None:
        action = await self.csms._record(self.id, raw_msg)
        await self.csms._gate(action)
        if action == "StartTransaction" and self.csms.start_refusal_without_transaction_id \
                and await self._refused_without_transaction_id(raw_msg):
            return
        await super().route_message(raw_msg)

    async def _refused_without_transaction_id(self, raw_msg: str | bytes) -> bool:
        """Answer a valid StartTransaction whose id tag is refused with idTagInfo alone
        (see ``start_refusal_without_transaction_id``); False, having sent nothing, for a
        start to handle as usual. Sent past the library, whose handlers may not answer
        against the schema."""
        try:
            message = unpack(raw_msg)
            if not isinstance(message, Call):
                return False
            await validate_payload(message, self._ocpp_version)
        except OCPPError:
            return False  # the library's handling answers it with the CALLERROR it warrants
        info = self._id_tag_info(message.payload["idTag"])
        if info["status"] == "Accepted":
            return False
        await self._send(message.create_call_result(
            {"idTagInfo": snake_to_camel_case(info)}).to_json())
        return True

    def _id_tag_info(self, id_tag: str) -> dict[str, Any]:
        info: dict[str, Any] = {"status": self.csms.id_tag_status(id_tag)}
        expiry = self.csms._expiry()
        if expiry is not None:
            info["expiry_date"] = expiry
        return info

    @on(Action16.boot_notification)
    def on_boot(self, **_: Any) -> result16.BootNotification:
        return result16.BootNotification(current_time=_now_iso(), interval=HEARTBEAT_INTERVAL_S,
                                         status=self.csms.boot_status)

    @on(Action16.heartbeat)
    def on_heartbeat(self, **_: Any) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=_now_iso())

    @on(Action16.status_notification)
    def on_status(self, **_: Any) -> result16.StatusNotification:
        return result16.StatusNotification()

    @on(Action16.meter_values)
    def on_meter_values(self, **_: Any) -> result16.MeterValues:
        return result16.MeterValues()

    @on(Action16.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> result16.Authorize:
        return result16.Authorize(id_tag_info=self._id_tag_info(id_tag))

    @on(Action16.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str,
                             **_: Any) -> result16.StartTransaction:
        transaction_id = self.csms.next_transaction_id(self.id, connector_id, id_tag)
        return result16.StartTransaction(transaction_id=transaction_id,
                                         id_tag_info=self._id_tag_info(id_tag))

    @on(Action16.stop_transaction)
    def on_stop_transaction(self, id_tag: str | None = None,
                            **_: Any) -> result16.StopTransaction:
        return result16.StopTransaction(
            id_tag_info=self._id_tag_info(id_tag) if id_tag is not None else None)

    @on(Action16.data_transfer)
    def on_data_transfer(self, **_: Any) -> result16.DataTransfer:
        return result16.DataTransfer(status="UnknownVendorId")

    @on(Action16.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> result16.FirmwareStatusNotification:
        return result16.FirmwareStatusNotification()

    @on(Action16.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: Any) -> result16.DiagnosticsStatusNotification:
        return result16.DiagnosticsStatusNotification()


class _Station201(ChargePoint201):
    """One 2.0.1 station's connection, as the CSMS sees it."""

    def __init__(self, station_id: str, connection: ServerConnection, csms: UpstreamCsms) -> None:
        super().__init__(station_id, connection, response_timeout=csms.call_timeout_s)
        self.csms = csms

    async def route_message(self, raw_msg: str | bytes) -> None:
        action = await self.csms._record(self.id, raw_msg)
        await self.csms._gate(action)
        await super().route_message(raw_msg)

    def _id_token_info(self, id_token: Mapping[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"status": self.csms.id_tag_status(str(id_token.get("id_token")))}
        expiry = self.csms._expiry()
        if expiry is not None:
            info["cache_expiry_date_time"] = expiry
        return info

    @on(Action201.boot_notification)
    def on_boot(self, **_: Any) -> result201.BootNotification:
        return result201.BootNotification(current_time=_now_iso(),
                                          interval=HEARTBEAT_INTERVAL_S,
                                          status=self.csms.boot_status)

    @on(Action201.heartbeat)
    def on_heartbeat(self, **_: Any) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=_now_iso())

    @on(Action201.status_notification)
    def on_status(self, **_: Any) -> result201.StatusNotification:
        return result201.StatusNotification()

    @on(Action201.meter_values)
    def on_meter_values(self, **_: Any) -> result201.MeterValues:
        return result201.MeterValues()

    @on(Action201.authorize)
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> result201.Authorize:
        return result201.Authorize(id_token_info=self._id_token_info(id_token))

    @on(Action201.transaction_event)
    def on_transaction_event(self, id_token: dict[str, Any] | None = None,
                             **_: Any) -> result201.TransactionEvent:
        return result201.TransactionEvent(
            id_token_info=self._id_token_info(id_token) if id_token is not None else None)

    @on(Action201.data_transfer)
    def on_data_transfer(self, **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="UnknownVendorId")

    @on(Action201.notify_report)
    def on_notify_report(self, **_: Any) -> result201.NotifyReport:
        return result201.NotifyReport()

    @on(Action201.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> result201.ReportChargingProfiles:
        return result201.ReportChargingProfiles()

    @on(Action201.notify_event)
    def on_notify_event(self, **_: Any) -> result201.NotifyEvent:
        return result201.NotifyEvent()

    @on(Action201.notify_charging_limit)
    def on_notify_charging_limit(self, **_: Any) -> result201.NotifyChargingLimit:
        return result201.NotifyChargingLimit()

    @on(Action201.security_event_notification)
    def on_security_event(self, **_: Any) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()

    @on(Action201.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> result201.FirmwareStatusNotification:
        return result201.FirmwareStatusNotification()

    @on(Action201.log_status_notification)
    def on_log_status(self, **_: Any) -> result201.LogStatusNotification:
        return result201.LogStatusNotification()
