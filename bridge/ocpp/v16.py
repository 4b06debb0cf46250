"""OCPP 1.6J, central-system side: one :class:`StationLink` per connected station.

Handlers answer at once and hand what they learnt to a :class:`StationListener`
in domain terms; they never await a call to the station (that would stall the
station's message loop). Calls to the station (GetConfiguration,
SetChargingProfile) are made by the dispatcher from its own tasks.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    DataTransferStatus,
    RegistrationStatus,
)

from bridge.ocpp.capabilities import KEYS, Capabilities, parse_configuration

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 300
# The ocpp library speaks 2.0.1's error codes; 1.6 spells two of them differently.
V16_ERROR_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}


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

    # protocol robustness -----------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes) -> None:
        """As the library's, but a frame that is not OCPP gets a CALLERROR, not silence."""
        self._listener.station_seen(self.id)
        try:
            msg = unpack(raw_msg)
        except OCPPError as error:
            log.warning("%s: malformed frame %.200r: %s", self.id, raw_msg, error.description)
            await self._send_call_error(raw_msg, error.code, str(error.description))
            return
        if msg.message_type_id == MessageType.Call:
            try:
                await self._handle_call(msg)
            except OCPPError as error:
                log.warning("%s: refused %s: %s", self.id, msg.action, error.description)
                await self._send_call_error(raw_msg, error.code, str(error.description))
        elif msg.message_type_id in (MessageType.CallResult, MessageType.CallError):
            self._response_queue.put_nowait(msg)

    async def _send_call_error(self, raw_msg: str | bytes, code: str, description: str) -> None:
        unique_id = "-1"  # what OCPP-J prescribes when the frame's own id cannot be read
        try:
            frame = json.loads(raw_msg)
            if isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str):
                if frame[0] in (3, 4):
                    return  # a reply is never answered
                unique_id = frame[1]
        except (ValueError, TypeError):
            pass
        code = V16_ERROR_CODES.get(code, code)
        await self._send(json.dumps([4, unique_id, code, description[:500], {}]))

    # calls to the station ----------------------------------------------------------------
    async def _call(self, payload: Any) -> Any:
        try:
            result = await self.call(payload, suppress=False)
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
        result = await self._call(
            call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile)
        )
        return str(result.status)

    async def clear_charging_profile(self, profile_id: int) -> str:
        result = await self._call(call.ClearChargingProfile(id=profile_id))
        return str(result.status)

    # handlers ----------------------------------------------------------------------------
    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor: str, charge_point_model: str,
                **extra: Any) -> call_result.BootNotification:
        self._listener.station_booted(self.id, {
            "vendor": charge_point_vendor,
            "model": charge_point_model,
            "firmware": str(extra.get("firmware_version") or ""),
        })
        return call_result.BootNotification(
            current_time=_now_iso(), interval=HEARTBEAT_INTERVAL_S,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    def on_status(self, connector_id: int, error_code: str, status: str,
                  **extra: Any) -> call_result.StatusNotification:
        self._listener.status_changed(self.id, connector_id, status)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        # Authorisation belongs to the site's own back office; drbridge only steers power.
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                             timestamp: str, **extra: Any) -> call_result.StartTransaction:
        transaction_id = self._listener.transaction_started(
            self.id, connector_id, id_tag, meter_start, _time(timestamp)
        )
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                            **extra: Any) -> call_result.StopTransaction:
        self._listener.transaction_stopped(self.id, transaction_id, meter_stop, _time(timestamp))
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]],
                        **extra: Any) -> call_result.MeterValues:
        self._listener.meter_values(self.id, connector_id, meter_value)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **extra: Any) -> call_result.DataTransfer:
        # No vendor extensions: drbridge stays with what every compliant station speaks.
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)


ACCEPTED = ChargingProfileStatus.accepted.value
CLEARED = ClearChargingProfileStatus.accepted.value
