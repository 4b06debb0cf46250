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

from bridge.ocpp.capabilities import KEYS, parse_configuration, parse_rated_current
from bridge.ocpp.der_control import DerControlReport, DerCurve, DerReply
from bridge.ocpp.framing import Dialect, EncodedPayload, LinkHandler, OcppJLink
from bridge.ocpp.link import (
    ACCEPTED,
    BeforeAnswer,
    CallFailed,
    CapabilitiesRead,
    CompositeSchedule,
    InstalledProfile,
    reply_status,
)
from bridge.ocpp.profiles import BuiltProfile
from bridge.ocpp.sampling import Sampling, SamplingChange, SamplingReply, sampling_from
from bridge.ocpp.voltage_monitors import (
    NOT_SUPPORTED,
    InstalledMonitor,
    MonitorOutcome,
    MonitorSpec,
)
from bridge.ocpp.wire import HEARTBEAT_INTERVAL_S, Payload, action_names, now_iso, parse_time
from bridge.worst_case import Rated

log = logging.getLogger(__name__)

OCPP16 = Dialect(
    version="1.6",
    schemas="v16",
    request_suffix="",  # a request's schema is the action's name: MeterValues.json
    actions=action_names("v16", ""),
    format_violation="FormationViolation",
    occurrence_violation="OccurenceConstraintViolation",  # so spelt in OCPP 1.6
)
# OCPP 1.6 has no standard way to set voltage boundaries in the charger: no variable
# monitors, no DER control. Its stations get the bridge's central rule only.
NO_DER_CONTROL = DerReply("not-supported", "OCPP 1.6 has no DER control")
INTERVAL_KEY = "MeterValueSampleInterval"
MEASURANDS_KEY = "MeterValuesSampledData"
SAMPLING_KEYS = (INTERVAL_KEY, MEASURANDS_KEY)


class StationLink16(OcppJLink):
    """The central system's end of one OCPP 1.6 station's websocket."""

    DIALECT = OCPP16

    @classmethod
    def handlers(cls) -> Mapping[str, LinkHandler]:
        return {
            "BootNotification": cls.on_boot,
            "Heartbeat": cls.on_heartbeat,
            "StatusNotification": cls.on_status,
            "Authorize": cls.on_authorize,
            "StartTransaction": cls.on_start_transaction,
            "StopTransaction": cls.on_stop_transaction,
            "MeterValues": cls.on_meter_values,
            "DataTransfer": cls.on_data_transfer,
            # status reports that need no action: acknowledged, so the station moves on
            "FirmwareStatusNotification": cls.on_notice,
            "DiagnosticsStatusNotification": cls.on_notice,
        }

    # calls to the station ----------------------------------------------------------------
    async def read_capabilities(self) -> CapabilitiesRead:
        try:
            reply = await self._request("GetConfiguration", {"key": [*KEYS, *SAMPLING_KEYS]},
                                        lenient=True)
        except CallFailed as error:
            if error.error_code is None or error.unsupported:
                raise
            # A station that takes fewer keys a request (its GetConfigurationMaxKeys) may
            # refuse them all: its capabilities matter more than its sampling.
            log.info("%s: GetConfiguration of %d keys refused (%s); asking for fewer", self.id,
                     len(KEYS) + len(SAMPLING_KEYS), error)
            reply = await self._request("GetConfiguration", {"key": list(KEYS)}, lenient=True)
        keys = reply.get("configurationKey")
        keys = keys if isinstance(keys, list) else []
        return CapabilitiesRead(parse_configuration(keys), parse_sampling(keys))

    async def read_sampling(self) -> Sampling:
        reply = await self._request("GetConfiguration", {"key": list(SAMPLING_KEYS)},
                                    lenient=True)
        keys = reply.get("configurationKey")
        return parse_sampling(keys if isinstance(keys, list) else [])

    async def read_rated_current(self) -> Rated | None:
        """The maximum current a station states in a key of its own, if any (all its keys
        are asked for: the name is the vendor's)."""
        reply = await self._request("GetConfiguration", {}, lenient=True)
        keys = reply.get("configurationKey")
        return parse_rated_current(keys if isinstance(keys, list) else [])

    async def set_profile(self, profile: BuiltProfile,
                          before_answer: BeforeAnswer | None = None) -> str:
        # Built by bridge.ocpp.profiles, whose tests check it against the 1.6 schema.
        # the profile's JSON is made once for all the stations a wave gives it to (and
        # the payload is no local of this frame: held in a wave, one per station adds up)
        reply = await self._request("SetChargingProfile", EncodedPayload(
            f'{{"connectorId":{int(profile.connector_id)},'
            f'"csChargingProfiles":{profile.payload_json}}}'),
            lenient=True, before_answer=before_answer)
        return reply_status(reply)

    async def installed_profiles(self) -> list[InstalledProfile] | None:
        return None  # OCPP 1.6 has no call that lists them: the composite schedule tells

    async def set_sampling(self, change: SamplingChange) -> SamplingReply:
        """A ChangeConfiguration for each key (1.6 changes one a call), each asked whatever
        the station answered to the other."""
        interval = measurands = None
        if change.interval_s is not None:
            interval = await self.change_configuration(INTERVAL_KEY, str(change.interval_s))
        if change.measurands is not None:
            measurands = await self.change_configuration(MEASURANDS_KEY,
                                                         ",".join(change.measurands))
        return SamplingReply(interval, measurands)

    async def change_configuration(self, key: str, value: str) -> str:
        """The station's answer ("Accepted" in any case reads as such), or why there was none."""
        try:
            reply = await self._request("ChangeConfiguration", {"key": key, "value": value},
                                        lenient=True)
        except CallFailed as error:
            return str(error)
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


def parse_sampling(keys: Sequence[object]) -> Sampling:
    """The meter's sampling from GetConfiguration.conf's configurationKey list (names in any
    case); a key not listed, or listed without a value, is not read. A key listed read-only
    cannot be set with ChangeConfiguration (OCPP 1.6 KeyValue.readonly)."""
    items = {item["key"].strip().lower(): item for item in keys
             if isinstance(item, Mapping) and isinstance(item.get("key"), str)}
    interval = items.get(INTERVAL_KEY.lower(), {})
    measurands = items.get(MEASURANDS_KEY.lower(), {})
    return sampling_from(interval.get("value"), measurands.get("value"),
                         read_only(interval.get("readonly")),
                         read_only(measurands.get("readonly")))


def read_only(flag: object) -> bool:
    """KeyValue.readonly as stations send it: true, or "true" in any case."""
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


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
