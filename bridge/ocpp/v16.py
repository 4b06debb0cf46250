"""OCPP 1.6J, central-system side: one :class:`StationLink` per connected station.

Calls from the station take a lean path: one JSON decode, validation against
the OCPP 1.6 JSON schemas (the ones the ``ocpp`` package ships) compiled once
with ``fastjsonschema``, a handler over the wire dict, one JSON encode. The
``ocpp`` library's generic routing costs ten times more per message (schema
validation with ``jsonschema``, key-case conversion, dataclass round trips),
and MeterValues from thousands of stations are the bridge's hot path. Calls *to*
the station (GetConfiguration, SetChargingProfile) are rare and go through the
library's ``call()``, with its validation.

Handlers answer at once and hand what they learnt to a :class:`StationListener`
in domain terms; they never await a call to the station (that would stall the
station's message loop); the dispatcher makes those from its own tasks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastjsonschema
from ocpp.exceptions import OCPPError
from ocpp.messages import CallError, CallResult
from ocpp.v16 import ChargePoint, call
from ocpp.v16.enums import Action, ChargingProfileStatus, ClearChargingProfileStatus

from bridge.ocpp.capabilities import KEYS, Capabilities, parse_configuration

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
def request_validator(action: str) -> Callable[[Payload], Any]:
    """The compiled validator of a 1.6 request, from the schemas the ocpp package ships."""
    text = resources.files("ocpp").joinpath("v16", "schemas", f"{action}.json").read_text("utf-8")
    return fastjsonschema.compile(json.loads(text))


def validate_request(action: str, payload: Payload) -> None:
    try:
        request_validator(action)(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        code = _RULE_CODES.get(error.rule or "", "PropertyConstraintViolation")
        raise Refused(code, f"{action}: {error.message}") from None


class CallFailed(Exception):
    """A call to a station got a CallError, timed out, or the link dropped."""


class StationListener(Protocol):
    def station_booted(self, station_id: str, info: dict[str, str]) -> None: ...

    def station_seen(self, station_id: str) -> None: ...

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None: ...

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime) -> int: ...

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None: ...

    def meter_values(self, station_id: str, connector_id: int,
                     meter_values: list[dict[str, Any]]) -> None: ...


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _time(text: str | None) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


class StationLink(ChargePoint):
    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float) -> None:
        super().__init__(station_id, connection, response_timeout=call_timeout_s)
        self._listener = listener
        self._handlers: dict[str, Callable[[Payload], Payload]] = {
            "BootNotification": self.on_boot,
            "Heartbeat": self.on_heartbeat,
            "StatusNotification": self.on_status,
            "Authorize": self.on_authorize,
            "StartTransaction": self.on_start_transaction,
            "StopTransaction": self.on_stop_transaction,
            "MeterValues": self.on_meter_values,
            "DataTransfer": self.on_data_transfer,
        }

    # frames in -----------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes) -> None:
        """Every frame gets an answer; a bad one a CALLERROR, and the link lives on."""
        self._listener.station_seen(self.id)
        try:
            frame = json.loads(raw_msg)
        except (ValueError, TypeError):
            await self._send_call_error("-1", "FormationViolation", "not valid JSON")
            return
        if not isinstance(frame, list) or not frame or frame[0] not in (2, 3, 4):
            await self._send_call_error("-1", "ProtocolError", "not an OCPP-J message")
            return
        if frame[0] == 2:
            await self._on_call(frame)
        elif frame[0] == 3 and len(frame) == 3:
            self._response_queue.put_nowait(CallResult(str(frame[1]), frame[2]))
        elif frame[0] == 4 and len(frame) >= 4:
            details = frame[4] if len(frame) > 4 else {}
            self._response_queue.put_nowait(
                CallError(str(frame[1]), frame[2], frame[3], details)
            )
        # a malformed reply is dropped: the pending call then times out and is retried

    async def _on_call(self, frame: list[Any]) -> None:
        if len(frame) != 4 or not isinstance(frame[1], str):
            unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else "-1"
            await self._send_call_error(unique_id, "ProtocolError", "a CALL has four elements")
            return
        _, unique_id, action, payload = frame
        try:
            handler = self._handlers.get(action)
            if handler is None:
                supported = action in ACTIONS_16
                raise Refused("NotImplemented" if supported else "NotSupported",
                              f"{action} is not {'handled' if supported else 'an OCPP 1.6 action'}")
            if not isinstance(payload, dict):
                raise Refused("FormationViolation", "the payload must be an object")
            validate_request(action, payload)
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

    async def _send_call_error(self, unique_id: str, code: str, description: str) -> None:
        frame = [4, unique_id, code, description[:500], {}]
        await self._send(json.dumps(frame, separators=(",", ":")))

    async def _send(self, message: str) -> None:
        await self._connection.send(message)  # without the library's per-frame INFO log

    # calls to the station ----------------------------------------------------------------
    async def _call(self, payload: Any, skip_schema_validation: bool = False) -> Any:
        try:
            result = await self.call(payload, suppress=False,
                                     skip_schema_validation=skip_schema_validation)
        except OCPPError as error:
            raise CallFailed(f"CALLERROR {error.code}: {error.description}") from error
        except TimeoutError as error:
            raise CallFailed("no answer in time") from error
        except Exception as error:  # closed connection, invalid reply
            raise CallFailed(f"{type(error).__name__}: {error}") from error
        return result

    async def read_capabilities(self) -> Capabilities:
        result = await self._call(call.GetConfiguration(key=list(KEYS)))
        return parse_configuration(result.configuration_key or [])

    async def set_charging_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        # Built by bridge.ocpp.profiles and checked against the 1.6 schema by the tests; the
        # library's validation (~0.3 ms per profile with jsonschema) is skipped on the way out.
        result = await self._call(
            call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile),
            skip_schema_validation=True,
        )
        status = str(result.status)
        if status not in PROFILE_STATUSES:
            raise CallFailed(f"SetChargingProfile answered with status {status!r}")
        return status

    async def change_configuration(self, key: str, value: str) -> str:
        result = await self._call(call.ChangeConfiguration(key=key, value=value))
        return str(result.status)

    async def clear_charging_profile(self, profile_id: int) -> str:
        result = await self._call(call.ClearChargingProfile(id=profile_id))
        return str(result.status)

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

    def on_data_transfer(self, payload: Payload) -> Payload:
        # No vendor extensions: drbridge stays with what every compliant station speaks.
        return {"status": "UnknownVendorId"}


ACCEPTED = ChargingProfileStatus.accepted.value
PROFILE_STATUSES = frozenset(s.value for s in ChargingProfileStatus)
CLEARED = ClearChargingProfileStatus.accepted.value
