"""OCPP 1.6J, central-system side: one :class:`StationLink16` per connected station.

The OCPP-J framing (:mod:`bridge.ocpp.framing`) with the 1.6 actions: the handlers of
what a 1.6 station sends, which hand what they learn to a
:class:`~bridge.ocpp.link.StationListener` in domain terms, and the calls the dispatcher
makes (:class:`~bridge.ocpp.link.ChargerLink`) as 1.6 payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ocpp.v16.enums import Action

from bridge.ocpp.capabilities import KEYS, Capabilities, parse_configuration, parse_rated_current
from bridge.ocpp.der_control import DerControlReport, DerCurve, DerReply
from bridge.ocpp.framing import Dialect, Handler, OcppJLink
from bridge.ocpp.link import (
    ACCEPTED,
    CompositeSchedule,
    InstalledProfile,
    reply_status,
)
from bridge.ocpp.profiles import BuiltProfile
from bridge.ocpp.voltage_monitors import (
    NOT_SUPPORTED,
    InstalledMonitor,
    MonitorOutcome,
    MonitorSpec,
)
from bridge.ocpp.wire import HEARTBEAT_INTERVAL_S, Payload, now_iso, parse_time
from bridge.worst_case import Rated

log = logging.getLogger(__name__)

OCPP16 = Dialect(
    version="1.6",
    schemas="v16",
    request_suffix="",  # a request's schema is the action's name: MeterValues.json
    actions=frozenset(a.value for a in Action),
    format_violation="FormationViolation",
    occurrence_violation="OccurenceConstraintViolation",  # so spelt in OCPP 1.6
)
# OCPP 1.6 has no standard way to set voltage boundaries in the charger: no variable
# monitors, no DER control. Its stations get the bridge's central rule only.
NO_DER_CONTROL = DerReply("not-supported", "OCPP 1.6 has no DER control")


class StationLink16(OcppJLink):
    """The central system's end of one OCPP 1.6 station's websocket."""

    DIALECT = OCPP16

    def handlers(self) -> Mapping[str, Handler]:
        return {
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

    # calls to the station ----------------------------------------------------------------
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

    # voltage boundaries: none in OCPP 1.6 (answered here, no call) ----------------------
    async def set_voltage_monitors(self, monitors: Sequence[MonitorSpec]) -> MonitorOutcome:
        return MonitorOutcome.all_refused(monitors, NOT_SUPPORTED)

    async def clear_voltage_monitors(self, monitor_ids: Sequence[int]) -> set[int]:
        return set(monitor_ids)

    async def read_voltage_monitors(self, wanted: Sequence[MonitorSpec]
                                    ) -> list[InstalledMonitor]:
        return []

    async def read_der_support(self) -> bool:
        return False

    async def set_der_control(self, curve: DerCurve) -> DerReply:
        return NO_DER_CONTROL

    async def read_der_control(self) -> DerControlReport:
        return DerControlReport(NO_DER_CONTROL)

    async def clear_der_control(self) -> DerReply:
        return NO_DER_CONTROL

    # handlers: wire dicts in, wire dicts out -------------------------------------------------
    def on_boot(self, payload: Payload) -> Payload:
        self._listener.station_booted(self.id, {
            "vendor": payload["chargePointVendor"],
            "model": payload["chargePointModel"],
            "firmware": str(payload.get("firmwareVersion") or ""),
        })
        return {"currentTime": now_iso(), "interval": HEARTBEAT_INTERVAL_S,
                "status": "Accepted"}

    def on_heartbeat(self, payload: Payload) -> Payload:
        return {"currentTime": now_iso()}

    def on_status(self, payload: Payload) -> Payload:
        self._listener.status_changed(self.id, payload["connectorId"], payload["status"])
        return {}

    def on_authorize(self, payload: Payload) -> Payload:
        # Authorisation belongs to the site's own back office; drbridge only steers power.
        return {"idTagInfo": {"status": "Accepted"}}

    def on_start_transaction(self, payload: Payload) -> Payload:
        # a time the schema took but Python cannot read: when it arrived
        transaction_id = self._listener.transaction_started(
            self.id, payload["connectorId"], payload["idTag"], payload["meterStart"],
            parse_time(payload["timestamp"]) or datetime.now(UTC),
        )
        return {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}

    def on_stop_transaction(self, payload: Payload) -> Payload:
        self._listener.transaction_stopped(
            self.id, payload["transactionId"], payload["meterStop"],
            parse_time(payload["timestamp"]) or datetime.now(UTC))
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
    start = parse_time(start_text)
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
