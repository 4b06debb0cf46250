"""OCPP 1.6J, central-system side: one :class:`StationLink` per connected station.

Calls from the station take a lean path: one JSON decode, validation against
the OCPP 1.6 JSON schemas (the ones the ``ocpp`` package ships) compiled once
with ``fastjsonschema``, a handler over the wire dict, one JSON encode. A request
the schema refuses is repaired where its meaning is unambiguous
(:mod:`bridge.ocpp.leniency`) before it is refused; valid ones never pay for that. The
``ocpp`` library's generic routing costs ten times more per message (schema
validation with ``jsonschema``, key-case conversion, dataclass round trips),
and MeterValues from thousands of stations are the bridge's hot path. Calls *to*
the station (GetConfiguration, SetChargingProfile) take the same lean path, one
at a time per station, and their answers are validated against the response
schemas; a profile wave to thousands of stations is the other hot path.

Handlers answer at once and hand what they learnt to a :class:`StationListener`
in domain terms; they never await a call to the station (that would stall the
station's message loop); the dispatcher makes those from its own tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from ocpp.v16.enums import Action
from websockets.exceptions import ConnectionClosed

from bridge.ocpp.capabilities import KEYS, Capabilities, parse_configuration, parse_rated_current
from bridge.ocpp.leniency import Repair, bounded_schema, validate_leniently
from bridge.ocpp.link import (
    ACCEPTED,
    CallFailed,
    CompositeSchedule,
    InstalledProfile,
    StationListener,
    reply_status,
)
from bridge.ocpp.profiles import BuiltProfile
from bridge.worst_case import Rated

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 300
# What a schema violation is called in OCPP 1.6 (which spells "Occurence" so).
_RULE_CODES = {
    "required": "OccurenceConstraintViolation",
    "minItems": "OccurenceConstraintViolation",
    "maxItems": "OccurenceConstraintViolation",
    "type": "TypeConstraintViolation",
    "additionalProperties": "FormationViolation",
}
ACTIONS_16 = frozenset(a.value for a in Action)

Payload = dict[str, Any]


class Refused(Exception):
    """A call the station made that gets a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


@cache
def _schema(name: str) -> Payload:
    text = resources.files("ocpp").joinpath("v16", "schemas", f"{name}.json").read_text("utf-8")
    return bounded_schema(json.loads(text))  # type: ignore[no-any-return]


@cache
def _schema_validator(name: str) -> Callable[[Payload], Any]:
    return fastjsonschema.compile(_schema(name))


def request_validator(action: str) -> Callable[[Payload], Any]:
    """The compiled validator of a 1.6 request, from the schemas the ocpp package ships."""
    return _schema_validator(action)


def response_validator(action: str) -> Callable[[Payload], Any]:
    return _schema_validator(f"{action}Response")


def validate_request(action: str, payload: Payload) -> tuple[Payload, tuple[Repair, ...]]:
    """The request as read (repaired where its meaning is unambiguous) and the repairs;
    :class:`Refused` when it cannot be understood."""
    try:
        return validate_leniently(request_validator(action), payload,
                                  lambda: _schema(action))
    except fastjsonschema.JsonSchemaValueException as error:
        code = _RULE_CODES.get(error.rule or "", "PropertyConstraintViolation")
        raise Refused(code, f"{action}: {error.message}") from None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _time_or_none(text: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _time(text: str | None) -> datetime:
    at = _time_or_none(text)
    return at if at is not None else datetime.now(UTC)


class StationLink:
    """The central system's end of one station's websocket (OCPP-J framing, 1.6 actions).

    ``bridge.ocpp.v201`` reuses the framing and replaces the actions.
    """

    VERSION = "1.6"
    KNOWN_ACTIONS: frozenset[str] = ACTIONS_16
    FORMAT_VIOLATION = "FormationViolation"  # 2.0.1 spells it FormatViolation

    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float) -> None:
        self.id = station_id
        self._connection = connection
        self._listener = listener
        self._call_timeout_s = call_timeout_s
        self._call_lock = asyncio.Lock()
        self._call_seq = 0
        self._pending: tuple[str, asyncio.Future[list[Any]]] | None = None
        # Set once the station may be sent calls: its BootNotification was answered, or it
        # sent another request first, so it holds itself accepted from an earlier
        # connection (OCPP forbids a station any other request before its boot is accepted).
        self.registered = asyncio.Event()
        self._handlers: dict[str, Callable[[Payload], Payload]] = {
            "BootNotification": self.on_boot,
            "Heartbeat": self.on_heartbeat,
            "StatusNotification": self.on_status,
            "Authorize": self.on_authorize,
            "StartTransaction": self.on_start_transaction,
            "StopTransaction": self.on_stop_transaction,
            "MeterValues": self.on_meter_values,
            "DataTransfer": self.on_data_transfer,
            # status reports that need no action: acknowledged, so the station moves on
            "FirmwareStatusNotification": self.on_notice,
            "DiagnosticsStatusNotification": self.on_notice,
        }

    def validate_request(self, action: str,
                         payload: Payload) -> tuple[Payload, tuple[Repair, ...]]:
        return validate_request(action, payload)

    def response_validator(self, action: str) -> Callable[[Payload], Any]:
        return response_validator(action)

    # frames in -----------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes) -> None:
        """Every frame gets an answer; a bad one a CALLERROR, and the link lives on."""
        try:
            frame = json.loads(raw_msg)
        except RecursionError:  # nested deeper than the decoder goes (50,000 "[")
            await self._send_call_error("-1", self.FORMAT_VIOLATION, "JSON nested too deep")
            return
        except (ValueError, TypeError):  # also bad UTF-8, and integers of 4,300+ digits
            await self._send_call_error("-1", self.FORMAT_VIOLATION, "not valid JSON")
            return
        if not isinstance(frame, list) or not frame or frame[0] not in (2, 3, 4):
            await self._send_call_error("-1", "ProtocolError", "not an OCPP-J message")
            return
        if frame[0] == 2:
            await self._on_call(frame)
        elif self._pending is not None and len(frame) >= 3 and frame[1] == self._pending[0] \
                and not self._pending[1].done():
            self._pending[1].set_result(frame)
        else:
            # late, unknown or malformed replies are dropped: the call times out and is retried
            log.debug("%s: dropped reply %.200r", self.id, raw_msg)

    async def _on_call(self, frame: list[Any]) -> None:
        if len(frame) != 4 or not isinstance(frame[1], str) or not isinstance(frame[2], str):
            unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else "-1"
            await self._send_call_error(unique_id, "ProtocolError", "a CALL has four elements:"
                                        " 2, a message id, an action name, a payload")
            return
        _, unique_id, action, payload = frame
        try:
            handler = self._handlers.get(action)
            if handler is None:
                supported = action in self.KNOWN_ACTIONS
                raise Refused("NotImplemented" if supported else "NotSupported",
                              f"{action} is not "
                              f"{'handled' if supported else f'an OCPP {self.VERSION} action'}")
            if not isinstance(payload, dict):
                raise Refused(self.FORMAT_VIOLATION, "the payload must be an object")
            payload, repairs = self.validate_request(action, payload)
            if repairs:
                self._listener.request_repaired(self.id, action, repairs)
            reply = handler(payload)
        except Refused as refusal:
            log.warning("%s: refused %s: %s", self.id, action, refusal.description)
            await self._send_call_error(unique_id, refusal.code, refusal.description)
            return
        except Exception:  # a bug of ours must not cost the station its connection
            log.exception("%s: failed to handle %s", self.id, action)
            await self._send_call_error(unique_id, "InternalError", "")
            return
        await self._send(json.dumps([3, unique_id, reply], separators=(",", ":")))
        self.registered.set()  # only after our answer: a boot is accepted once it is sent

    async def _send_call_error(self, unique_id: str, code: str, description: str) -> None:
        frame = [4, unique_id, code, description[:500], {}]
        await self._send(json.dumps(frame, separators=(",", ":")))

    async def _send(self, message: str) -> None:
        await self._connection.send(message)

    async def start(self) -> None:
        """Serve the station's frames until its connection closes."""
        async for message in self._connection:
            try:
                await self.route_message(message)
            except ConnectionClosed:
                raise
            except Exception:  # whatever a frame does, it must not cost the station its link
                log.exception("%s: failed to handle a frame", self.id)

    # calls to the station ----------------------------------------------------------------
    async def _request(self, action: str, payload: Payload, lenient: bool = False) -> Payload:
        """One call to the station and its validated answer; raises CallFailed.

        ``lenient``: an answer that breaks the 1.6 schema is still read (defensively, by
        the caller) instead of failing the call. Only for answers whose every field is
        checked where it is used; requests from the station are always validated.
        """
        async with self._call_lock:  # OCPP-J: one call at a time in each direction
            self._call_seq += 1
            unique_id = str(self._call_seq)
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._pending = (unique_id, answer)
            try:
                await self._send(json.dumps([2, unique_id, action, payload],
                                            separators=(",", ":")))
                self._listener.call_sent(self.id, action)
                async with asyncio.timeout(self._call_timeout_s):
                    frame = await answer
            except TimeoutError as error:
                raise CallFailed("no answer in time") from error
            except Exception as error:  # the connection closed under us
                raise CallFailed(f"{type(error).__name__}: {error}") from error
            finally:
                self._pending = None
        if frame[0] == 4:
            raise CallFailed(f"CALLERROR {frame[2]}: {frame[3] if len(frame) > 3 else ''}",
                             str(frame[2]) if len(frame) > 2 else None)
        reply = frame[2]
        try:
            self.response_validator(action)(reply)
        except fastjsonschema.JsonSchemaValueException as error:
            if not lenient or not isinstance(reply, dict):
                raise CallFailed(f"{action} answer does not follow OCPP {self.VERSION}: "
                                 f"{error.message}") from None
            log.debug("%s: %s answer does not follow OCPP %s (%s); read leniently",
                      self.id, action, self.VERSION, error.message)
        return reply

    async def read_capabilities(self) -> Capabilities:
        reply = await self._request("GetConfiguration", {"key": list(KEYS)}, lenient=True)
        keys = reply.get("configurationKey")
        return parse_configuration(keys if isinstance(keys, list) else [])

    async def read_rated_current(self) -> Rated | None:
        """The maximum current a station states in a key of its own, if any (all its keys
        are asked for: the name is the vendor's)."""
        reply = await self._request("GetConfiguration", {}, lenient=True)
        keys = reply.get("configurationKey")
        return parse_rated_current(keys if isinstance(keys, list) else [])

    async def set_profile(self, profile: BuiltProfile) -> str:
        # Built by bridge.ocpp.profiles, whose tests check it against the 1.6 schema.
        reply = await self._request(
            "SetChargingProfile",
            {"connectorId": profile.connector_id, "csChargingProfiles": profile.payload},
            lenient=True,
        )
        return reply_status(reply)

    async def set_meter_interval(self, seconds: int) -> str:
        return await self.change_configuration("MeterValueSampleInterval", str(seconds))

    async def installed_profiles(self) -> list[InstalledProfile] | None:
        return None  # OCPP 1.6 has no call that lists them: the composite schedule tells

    async def set_measurands(self, measurands: Sequence[str]) -> str:
        """What a transaction's MeterValues carry (a station may refuse, or know fewer)."""
        return await self.change_configuration("MeterValuesSampledData", ",".join(measurands))

    async def close(self, code: int, reason: str) -> None:
        await self._connection.close(code, reason)

    async def change_configuration(self, key: str, value: str) -> str:
        reply = await self._request("ChangeConfiguration", {"key": key, "value": value},
                                    lenient=True)
        return reply_status(reply)

    async def clear_charging_profile(self, profile_id: int) -> str:
        reply = await self._request("ClearChargingProfile", {"id": profile_id}, lenient=True)
        return reply_status(reply)

    async def composite_schedule(self, connector_id: int, duration_s: int,
                                 unit: str) -> CompositeSchedule | None:
        """What the station says it will apply; None when it rejects or cannot answer."""
        reply = await self._request(
            "GetCompositeSchedule",
            {"connectorId": connector_id, "duration": duration_s, "chargingRateUnit": unit},
            lenient=True,
        )
        if reply_status(reply) != ACCEPTED:
            return None
        return parse_composite_schedule(reply, unit)

    # handlers: wire dicts in, wire dicts out -------------------------------------------------
    def on_boot(self, payload: Payload) -> Payload:
        self._listener.station_booted(self.id, {
            "vendor": payload["chargePointVendor"],
            "model": payload["chargePointModel"],
            "firmware": str(payload.get("firmwareVersion") or ""),
        })
        return {"currentTime": _now_iso(), "interval": HEARTBEAT_INTERVAL_S,
                "status": "Accepted"}

    def on_heartbeat(self, payload: Payload) -> Payload:
        return {"currentTime": _now_iso()}

    def on_status(self, payload: Payload) -> Payload:
        self._listener.status_changed(self.id, payload["connectorId"], payload["status"])
        return {}

    def on_authorize(self, payload: Payload) -> Payload:
        # Authorisation belongs to the site's own back office; drbridge only steers power.
        return {"idTagInfo": {"status": "Accepted"}}

    def on_start_transaction(self, payload: Payload) -> Payload:
        transaction_id = self._listener.transaction_started(
            self.id, payload["connectorId"], payload["idTag"], payload["meterStart"],
            _time(payload["timestamp"]),
        )
        return {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}

    def on_stop_transaction(self, payload: Payload) -> Payload:
        self._listener.transaction_stopped(self.id, payload["transactionId"],
                                           payload["meterStop"], _time(payload["timestamp"]))
        return {}

    def on_meter_values(self, payload: Payload) -> Payload:
        self._listener.meter_values(self.id, payload["connectorId"], payload["meterValue"])
        return {}

    def on_notice(self, payload: Payload) -> Payload:
        return {}

    def on_data_transfer(self, payload: Payload) -> Payload:
        # No vendor extensions: drbridge stays with what every compliant station speaks.
        return {"status": "UnknownVendorId"}


def parse_composite_schedule(reply: Payload, unit: str) -> CompositeSchedule | None:
    """GetCompositeSchedule.conf read defensively: None when it cannot be understood."""
    schedule = reply.get("chargingSchedule")
    if not isinstance(schedule, dict):
        return None
    start_text = schedule.get("startSchedule") or reply.get("scheduleStart")
    start = _time_or_none(start_text)
    got_unit = str(schedule.get("chargingRateUnit") or unit).strip().upper()
    periods = []
    for period in schedule.get("chargingSchedulePeriod") or []:
        try:
            periods.append((int(float(period["startPeriod"])), float(period["limit"])))
        except (TypeError, ValueError, KeyError):
            return None
    if start is None or got_unit != unit or not periods:
        return None
    return CompositeSchedule(start, unit, tuple(sorted(periods)))
