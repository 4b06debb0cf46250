"""OCPP 2.0.1, central-system side: one :class:`StationLink201` per connected station.

The OCPP-J framing (:mod:`bridge.ocpp.framing`) with the 2.0.1 actions, as ``v16`` has
the 1.6 ones. :class:`StationLink2` holds what 2.0.1 and 2.1 share (2.1 keeps these
messages, with more optional fields): :class:`StationLink201` is it with the 2.0.1
schemas, ``v21``'s ``StationLink21`` with the 2.1 ones and DER control. What a 2.0.1
station says is handed to the same :class:`~bridge.ocpp.link.StationListener` in the same
domain terms:

- an EVSE is what the rest of the bridge calls a connector (EVSE 0: the station); an EVSE
  may have several connectors, one in use at a time, and its status is theirs combined;
  how many EVSEs a station has is read from its device model (GetReport), not guessed
  from the StatusNotifications that happen to arrive first;
- transactions carry the station's own string ids; the bridge's numeric ids are
  mapped to them here (and kept with the bridge's transaction, so a reconnection or a
  restart finds them again), so a TxProfile always names the station's transaction and
  a TransactionEvent that omits its EVSE (allowed after the first) is attributed by its
  transaction id, never guessed;
- sampled values (numbers with a unit and a power-of-ten multiplier) are turned
  into the shape ``bridge.telemetry`` reads, which ignores those it cannot use;
- a request the schema refuses is repaired where its meaning is unambiguous
  (:mod:`bridge.ocpp.leniency`), as for 1.6;
- voltage boundaries in the station: threshold monitors on its voltage
  (:mod:`bridge.ocpp.voltage_monitors`), whose events (NotifyEvent) are handed on as
  voltage observations at once; limits other parties put on it (NotifyChargingLimit,
  ClearedChargingLimit, :mod:`bridge.ocpp.external_limits`) are handed on too.

The 2.0.1 payloads of our profiles are built here, from the domain
:class:`~bridge.ocpp.profiles.BuiltProfile`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.ocpp import voltage_monitors as vm
from bridge.ocpp.capabilities import Capabilities, parse_rate_units, shared
from bridge.ocpp.der_control import DerControlReport, DerCurve, DerReply
from bridge.ocpp.external_limits import read_cleared_charging_limit, read_notify_charging_limit
from bridge.ocpp.framing import Dialect, LinkHandler, OcppJLink
from bridge.ocpp.link import (
    ACCEPTED,
    UNKNOWN_EVSE,
    BeforeAnswer,
    CallFailed,
    CapabilitiesRead,
    CompositeSchedule,
    InstalledProfile,
    StationListener,
    reply_status,
)
from bridge.ocpp.profiles import STATION_MAX, BuiltProfile
from bridge.ocpp.sampling import Sampling, SamplingChange, SamplingReply, sampling_from
from bridge.ocpp.wire import (
    HEARTBEAT_INTERVAL_S,
    Payload,
    action_names,
    format_time,
    now_iso,
    parse_time,
)
from bridge.telemetry import ENERGY, implausible
from bridge.worst_case import Rated

log = logging.getLogger(__name__)

OCPP201 = Dialect(
    version="2.0.1",
    schemas="v201",
    request_suffix="Request",  # a request's schema: MeterValuesRequest.json
    actions=action_names("v201", "Request"),
    format_violation="FormatViolation",
    occurrence_violation="OccurrenceConstraintViolation",
)
_PURPOSES = {STATION_MAX: "ChargingStationMaxProfile"}  # the others keep their 1.6 names
_DOMAIN_PURPOSES = {wire: domain for domain, wire in _PURPOSES.items()}
# An EVSE's status from its connectors' (one is used at a time): the first that any has.
_EVSE_STATUS_ORDER = ("Occupied", "Reserved", "Available", "Unavailable", "Faulted")
SMART_CHARGING = "SmartChargingCtrlr"
RATED_EVSES = 4  # EVSEs asked for their maximum power, at least
# (variable, instance) read from SmartChargingCtrlr at boot
_VARIABLES = (("Enabled", None), ("RateUnit", None), ("PeriodsPerSchedule", None),
              ("ProfileStackLevel", None), ("Entries", "ChargingProfiles"))
# How a transaction's meter values are sampled (read with the above, set after the limits)
SAMPLED_DATA = "SampledDataCtrlr"
INTERVAL_VARIABLE = "TxUpdatedInterval"
MEASURANDS_VARIABLE = "TxUpdatedMeasurands"
_SAMPLING = [{"component": {"name": SAMPLED_DATA}, "variable": {"name": name}}
             for name in (INTERVAL_VARIABLE, MEASURANDS_VARIABLE)]


# A power of ten beyond this is no unit prefix (OCPP uses -3..6 in practice); 10 ** 10**9
# would take the edge minutes to compute.
MAX_MULTIPLIER = 24


def scaled(value: Any, multiplier: Any) -> float:
    """value × 10^multiplier; NaN when either cannot be read or the power is no prefix
    (telemetry ignores a non-finite value, and counts it)."""
    try:
        number, exponent = float(value), int(multiplier)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    if abs(exponent) > MAX_MULTIPLIER:
        return math.nan
    return number * 10.0 ** exponent  # inf past the float range, never an exception


def sampled_values(meter_value: Payload) -> Payload:
    """A 2.0.1 MeterValue in the shape ``bridge.telemetry.read_meter_value`` reads."""
    samples = []
    for sampled in meter_value.get("sampledValue") or []:
        unit = sampled.get("unitOfMeasure") or {}
        value = scaled(sampled.get("value", 0), unit.get("multiplier", 0))
        sample = {"value": repr(value),
                  "measurand": sampled.get("measurand", "Energy.Active.Import.Register")}
        if sampled.get("phase"):
            sample["phase"] = sampled["phase"]
        if unit.get("unit"):
            sample["unit"] = unit["unit"]
        samples.append(sample)
    return {"timestamp": meter_value.get("timestamp", ""), "sampledValue": samples}


def energy_wh(meter_values: list[Payload]) -> int:
    """The energy register in the last of these meter values that has a usable one (0 when
    none has)."""
    for meter_value in reversed(meter_values):
        for sample in sampled_values(meter_value)["sampledValue"]:
            if sample["measurand"] == ENERGY and "phase" not in sample:
                scale = 1000.0 if sample.get("unit") == "kWh" else 1.0
                wh = float(sample["value"]) * scale
                if implausible(ENERGY, wh) is None:
                    return round(wh)
    return 0


def profile_payload(profile: BuiltProfile, transaction_id: str | None) -> Payload:
    """SetChargingProfileRequest.chargingProfile for a profile, as on the 2.0.1 wire."""
    payload: Payload = {
        "id": profile.profile_id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": _PURPOSES.get(profile.purpose, profile.purpose),
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [{
            "id": profile.profile_id,
            "startSchedule": format_time(profile.start),
            "chargingRateUnit": profile.unit,
            "chargingSchedulePeriod": [
                {"startPeriod": second, "limit": limit, "numberPhases": profile.number_phases}
                for second, limit in profile.periods
            ],
        }],
    }
    if transaction_id is not None:
        payload["transactionId"] = transaction_id
    return payload


def parse_variables(results: Any, connectors: int) -> Capabilities:
    """GetVariablesResponse.getVariableResult -> capabilities, defensively."""
    values: dict[str, str] = {}
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("attributeStatus") != "Accepted":
            continue
        variable = result.get("variable") or {}
        if isinstance(variable, dict) and "attributeValue" in result:
            values[str(variable.get("name"))] = str(result["attributeValue"])
    default = Capabilities()

    def number(name: str, fallback: int) -> int:
        try:
            return int(float(values[name]))
        except (KeyError, ValueError):
            return fallback

    enabled = values.get("Enabled", "true").strip().lower() not in ("false", "0")
    entries = number("Entries", 0)
    return shared(Capabilities(
        rate_units=parse_rate_units(values.get("RateUnit", "")) or default.rate_units,
        max_stack_level=max(number("ProfileStackLevel", default.max_stack_level), 0),
        max_periods=max(number("PeriodsPerSchedule", default.max_periods), 1),
        max_profiles=entries or None,
        features=frozenset({"Core", "SmartCharging"} if enabled else {"Core"}),
        connectors=max(connectors, 1),
        known=True,
    ))


def _named(item: Any, key: str) -> str:
    """The name of an item's component or variable, for comparing ("" when it has none)."""
    named = item.get(key) if isinstance(item, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    return name.strip().lower() if isinstance(name, str) else ""


def parse_sampling(results: Any) -> Sampling:
    """SampledDataCtrlr's TxUpdatedInterval and TxUpdatedMeasurands from a
    GetVariablesResponse.getVariableResult (names in any case); one the station did not
    accept to give is not read."""
    values: dict[str, Any] = {}
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or _named(result, "component") != SAMPLED_DATA.lower() \
                or str(result.get("attributeStatus")).strip().lower() != "accepted":
            continue
        values[_named(result, "variable")] = result.get("attributeValue")
    return sampling_from(values.get(INTERVAL_VARIABLE.lower()),
                         values.get(MEASURANDS_VARIABLE.lower()))


def set_statuses(results: Any, names: Sequence[str]) -> list[str]:
    """Each asked variable's attributeStatus in a SetVariablesResponse.setVariableResult:
    the result naming it, or else the one in its place if that names no variable;
    "Unreadable" when there is none ("Accepted" in any case reads as such)."""
    results = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
    statuses = []
    for index, name in enumerate(names):
        found = next((r for r in results if _named(r, "variable") == name.lower()), None)
        if found is None and index < len(results) and not _named(results[index], "variable"):
            found = results[index]
        status = found.get("attributeStatus") if found is not None else None
        if not isinstance(status, str):
            statuses.append("Unreadable")
        else:
            statuses.append(ACCEPTED if status.strip().lower() == "accepted" else status)
    return statuses


def parse_rated_power(results: Any) -> Rated | None:
    """The station's maximum power if it answered it, else the sum of its EVSEs'."""
    station, evses = None, 0.0
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("attributeStatus") != "Accepted":
            continue
        try:
            watts = float(str(result.get("attributeValue")).strip())
        except ValueError:
            continue
        component = result.get("component")
        name = component.get("name") if isinstance(component, dict) else None
        if watts <= 0:
            continue
        if name == "ChargingStation":
            station = watts
        elif name == "EVSE":
            evses += watts
    if station is not None:
        return Rated("ChargingStation.Power (MaxSet)", watts=station)
    return Rated("EVSE.Power (MaxSet)", watts=evses) if evses else None


def evse_status(statuses: Sequence[str]) -> str:
    """An EVSE's status from its connectors' statuses: in use if any connector is."""
    for status in _EVSE_STATUS_ORDER:
        if status in statuses:
            return status
    return statuses[-1] if statuses else "Unknown"


def device_evses(reports: Sequence[Payload]) -> dict[int, set[int]]:
    """NotifyReport payloads (EVSE and Connector components) -> EVSE id -> connector ids."""
    evses: dict[int, set[int]] = {}
    for report in reports:
        for data in report.get("reportData") or []:
            component = data.get("component") if isinstance(data, dict) else None
            if not isinstance(component, dict):
                continue
            evse = component.get("evse")
            if not isinstance(evse, dict) or str(component.get("name")).lower() not in (
                    "evse", "connector"):
                continue
            try:
                evse_id = int(evse["id"])
                connector = int(evse.get("connectorId") or 0)
            except (KeyError, TypeError, ValueError):
                continue
            if evse_id > 0:
                connectors = evses.setdefault(evse_id, set())
                if connector > 0:
                    connectors.add(connector)
    return evses


def installed_profiles(reports: Sequence[Payload]) -> list[InstalledProfile]:
    """ReportChargingProfiles payloads -> the profiles they list (unreadable ones left out)."""
    found = []
    for report in reports:
        source = str(report.get("chargingLimitSource") or "")
        for profile in report.get("chargingProfile") or []:
            try:
                purpose = str(profile["chargingProfilePurpose"])
                found.append(InstalledProfile(int(profile["id"]),
                                              _DOMAIN_PURPOSES.get(purpose, purpose),
                                              int(report["evseId"]), int(profile["stackLevel"]),
                                              source))
            except (KeyError, TypeError, ValueError):
                continue
    return found


@dataclass
class _Report:
    """What a station sends for one of our report requests, until its last part."""

    parts: list[Payload] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


_Asked = tuple[tuple[str, int], _Report]  # a report under way: its key, and what came


def report_part(action: str) -> LinkHandler:
    """The handler of one kind of report part (``action``), for a link class's table."""
    def handle(link: StationLink2, payload: Payload) -> Payload:
        return link._take_report_part(action, payload)
    return handle


# a TransactionEvent's triggers that only report readings
PERIODIC_TRIGGERS = frozenset({"MeterValuePeriodic", "MeterValueClock"})


class StationLink2(OcppJLink):
    """The central system's end of one OCPP 2.x station's websocket: what 2.0.1 and 2.1
    share. A version's link names its :attr:`DIALECT` (and adds its own messages)."""

    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float) -> None:
        super().__init__(station_id, connection, listener, call_timeout_s)
        # the station's transaction id -> (the bridge's id, EVSE id), and back
        self._transactions: dict[str, tuple[int, int]] = {}
        self._station_tx: dict[int, str] = {}
        self._evses: set[int] = set()  # EVSE ids the station has spoken of
        self._evse_count = 0  # from its device model, once read
        self._connector_status: dict[tuple[int, int], str] = {}
        # reports under way: (report action, requestId) -> what arrived
        self._reports: dict[tuple[str, int], _Report] = {}
        self._report_seq = 0
        # Transactions the bridge does not know, whose events name no EVSE: counted for the
        # station as a whole until an event names it
        self._unattributed: set[str] = set()
        self.unattributed_events = 0
        self._asking: asyncio.Task[None] | None = None
        # our voltage monitors the station holds, by the id it gave (for their events' text)
        self._monitors: dict[int, vm.MonitorSpec] = {}
        self._unreadable_voltage_logged = False

    def _routine(self, action: str, payload: Any) -> bool:
        # a transaction's periodic readings too (2.x's MeterValues within a transaction);
        # not an event that may start, end or change one
        if action == "TransactionEvent":
            if not isinstance(payload, dict) or payload.get("eventType") != "Updated" \
                    or payload.get("triggerReason") not in PERIODIC_TRIGGERS:
                return False
            info = payload.get("transactionInfo")
            station_tx = info.get("transactionId") if isinstance(info, dict) else None
            return isinstance(station_tx, str) and station_tx in self._transactions
        return super()._routine(action, payload)

    @classmethod
    def handlers(cls) -> Mapping[str, LinkHandler]:
        return {
            "BootNotification": cls.on_boot,
            "Heartbeat": cls.on_heartbeat,
            "StatusNotification": cls.on_status,
            "Authorize": cls.on_authorize,
            "TransactionEvent": cls.on_transaction_event,
            "MeterValues": cls.on_meter_values,
            "DataTransfer": cls.on_data_transfer,
            "NotifyEvent": cls.on_notify_event,
            "NotifyChargingLimit": cls.on_notify_charging_limit,
            "ClearedChargingLimit": cls.on_cleared_charging_limit,
            # reports and notices that need no action: acknowledged, so the station moves on
            **{action: cls.on_notice for action in (
                "SecurityEventNotification", "FirmwareStatusNotification",
                "LogStatusNotification")},
            # parts of reports we asked for (acknowledged too when we did not)
            "NotifyReport": report_part("NotifyReport"),
            "ReportChargingProfiles": report_part("ReportChargingProfiles"),
            "NotifyMonitoringReport": report_part("NotifyMonitoringReport"),
        }

    # calls to the station ----------------------------------------------------------------
    async def read_capabilities(self) -> CapabilitiesRead:
        # Its EVSEs from its device model: the EVSE and Connector components, whose every
        # instance a station has (GetReport is lighter than a whole base report). The report
        # comes in NotifyReport calls while we ask for the smart charging variables.
        try:
            report = await self._ask_report("GetReport", "NotifyReport", {"componentVariable": [
                {"component": {"name": "EVSE"}}, {"component": {"name": "Connector"}}]})
        except CallFailed as error:
            log.info("%s: no device model report (%s)", self.id, error)
            report = None
        wanted = [{"component": {"name": SMART_CHARGING},
                   "variable": {"name": name, **({"instance": inst} if inst else {})}}
                  for name, inst in _VARIABLES]
        try:
            reply = await self._request("GetVariables", {"getVariableData": wanted + _SAMPLING},
                                        lenient=True)
        except CallFailed as error:
            if error.error_code is None or error.unsupported:
                raise
            # A station that takes fewer items a request (its ItemsPerMessageGetVariables) may
            # refuse them all: its smart charging matters more than its sampling.
            log.info("%s: GetVariables of %d items refused (%s); asking for fewer", self.id,
                     len(wanted) + len(_SAMPLING), error)
            reply = await self._request("GetVariables", {"getVariableData": wanted},
                                        lenient=True)
        evses = device_evses(await self._collected(report)) if report else {}
        if evses:
            self._evse_count = max(evses)
            log.debug("%s: EVSEs and their connectors: %s", self.id, evses)
        else:
            log.info("%s: its device model names no EVSE; counting those it reports status "
                     "of (%s)", self.id, sorted(self._evses) or "none yet")
        results = reply.get("getVariableResult")
        return CapabilitiesRead(
            parse_variables(results, self._evse_count or max(self._evses, default=1)),
            parse_sampling(results))

    async def read_sampling(self) -> Sampling:
        reply = await self._request("GetVariables", {"getVariableData": _SAMPLING},
                                    lenient=True)
        return parse_sampling(reply.get("getVariableResult"))

    async def installed_profiles(self) -> list[InstalledProfile] | None:
        """GetChargingProfiles for all; the ReportChargingProfiles that follow list them."""
        report = await self._ask_report("GetChargingProfiles", "ReportChargingProfiles",
                                        {"chargingProfile": {}}, no_data="NoProfiles")
        return installed_profiles(await self._collected(report)) if report else []

    async def _ask_report(self, action: str, report_action: str, payload: Payload,
                          no_data: str = "EmptyResultSet") -> _Asked | None:
        """Ask for a report; what to wait on for its parts, or None when there is none
        (``no_data``). Raises CallFailed for any other answer."""
        asked, reply = await self._ask_for_report(
            action, report_action, lambda request_id: {"requestId": request_id, **payload})
        status = reply_status(reply)
        if status == ACCEPTED:
            return asked
        self._reports.pop(asked[0], None)
        if status == no_data:
            return None
        raise CallFailed(f"{action}: {status}")

    async def _ask_for_report(self, action: str, report_action: str,
                              request: Callable[[int], Payload]) -> tuple[_Asked, Payload]:
        """Make a call whose report (``report_action`` parts under its requestId) follows;
        the report to wait on and the call's answer, for the caller to read (it drops the
        report unless the answer says one comes). Raises CallFailed."""
        self._report_seq += 1
        key = (report_action, self._report_seq)
        self._reports[key] = report = _Report()
        try:
            reply = await self._request(action, request(self._report_seq), lenient=True)
        except CallFailed:
            del self._reports[key]
            raise
        return (key, report), reply

    async def _collected(self, asked: _Asked | None) -> list[Payload]:
        """The parts of a report, once its last arrived (or what came within a call's time)."""
        if asked is None:
            return []
        key, report = asked
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await report.done.wait()
        except TimeoutError:
            log.info("%s: %s %d incomplete after %.0f s; using its %d parts", self.id, key[0],
                     key[1], self._call_timeout_s, len(report.parts))
        finally:
            self._reports.pop(key, None)
        return report.parts

    def _take_report_part(self, action: str, payload: Payload) -> Payload:
        """A part of a report we asked for (acknowledged too when we did not)."""
        report = self._reports.get((action, payload.get("requestId", -1)))
        if report is not None:
            report.parts.append(payload)
            if not payload.get("tbc"):
                report.done.set()
        return {}

    async def read_rated_current(self) -> Rated | None:
        """The station's maximum power from its device model: ``Power``'s MaxSet (its
        maxLimit) of the ChargingStation, or else the sum of its EVSEs' (the ids it used,
        and at least the first four)."""
        evses = range(1, max(RATED_EVSES, *self._evses) + 1)
        wanted = [{"component": {"name": "ChargingStation"}, "variable": {"name": "Power"},
                   "attributeType": "MaxSet"}]
        wanted += [{"component": {"name": "EVSE", "evse": {"id": evse}},
                    "variable": {"name": "Power"}, "attributeType": "MaxSet"}
                   for evse in evses]
        reply = await self._request("GetVariables", {"getVariableData": wanted}, lenient=True)
        return parse_rated_power(reply.get("getVariableResult"))

    async def set_profile(self, profile: BuiltProfile,
                          before_answer: BeforeAnswer | None = None) -> str:
        transaction_id = None
        if profile.transaction_id is not None:
            transaction_id = self._station_tx.get(profile.transaction_id) or \
                self._listener.station_transaction(self.id, profile.transaction_id)
            if transaction_id is None:  # never a TxProfile without the station's transaction
                return "UnknownTransaction"
        reply = await self._request("SetChargingProfile", {
            "evseId": profile.connector_id,
            "chargingProfile": profile_payload(profile, transaction_id),
        }, lenient=True, before_answer=before_answer)
        return reply_status(reply)

    async def composite_schedule(self, connector_id: int, duration_s: int,
                                 unit: str) -> CompositeSchedule | None:
        reply = await self._request("GetCompositeSchedule", {
            "duration": duration_s, "evseId": connector_id, "chargingRateUnit": unit,
        }, lenient=True)
        schedule = reply.get("schedule")
        if reply_status(reply) != ACCEPTED or not isinstance(schedule, dict):
            return None
        try:
            start = parse_time(schedule["scheduleStart"]) or datetime.now(UTC)
            periods = tuple(sorted((int(p["startPeriod"]), float(p["limit"]))
                                   for p in schedule["chargingSchedulePeriod"]))
        except (KeyError, TypeError, ValueError):
            return None
        if str(schedule.get("chargingRateUnit", unit)).upper() != unit or not periods:
            return None
        return CompositeSchedule(start, unit, periods)

    async def set_sampling(self, change: SamplingChange) -> SamplingReply:
        """One SetVariables for whatever is asked; each variable has its own answer."""
        asked: dict[str, str] = {}
        if change.interval_s is not None:
            asked[INTERVAL_VARIABLE] = str(change.interval_s)
        if change.measurands is not None:
            asked[MEASURANDS_VARIABLE] = ",".join(change.measurands)
        if not asked:
            return SamplingReply()
        try:
            reply = await self._request("SetVariables", {"setVariableData": [
                {"attributeValue": value, "component": {"name": SAMPLED_DATA},
                 "variable": {"name": name}} for name, value in asked.items()]}, lenient=True)
            statuses = dict(zip(asked, set_statuses(reply.get("setVariableResult"),
                                                    list(asked)), strict=True))
        except CallFailed as error:
            statuses = dict.fromkeys(asked, str(error))
        return SamplingReply(statuses.get(INTERVAL_VARIABLE), statuses.get(MEASURANDS_VARIABLE))

    async def clear_charging_profile(self, profile_id: int) -> str:
        reply = await self._request("ClearChargingProfile", {"chargingProfileId": profile_id},
                                    lenient=True)
        return reply_status(reply)

    # voltage monitors (2.0.1 functional block N, kept in 2.1) ---------------------------
    async def set_voltage_monitors(self, monitors: Sequence[vm.MonitorSpec]
                                   ) -> vm.MonitorOutcome:
        if not monitors:
            return vm.MonitorOutcome((), ())
        try:
            reply = await self._request("SetVariableMonitoring",
                                        vm.set_monitoring_request(monitors), lenient=True)
        except CallFailed as error:
            if error.unsupported:  # a station without variable monitoring
                return vm.MonitorOutcome.all_refused(monitors, vm.NOT_SUPPORTED)
            raise
        outcome = vm.read_set_monitoring_reply(monitors, reply)
        self._monitors.update((m.monitor_id, m.spec) for m in outcome.installed)
        return outcome

    async def clear_voltage_monitors(self, monitor_ids: Sequence[int]) -> set[int]:
        if not monitor_ids:
            return set()
        try:
            reply = await self._request("ClearVariableMonitoring",
                                        vm.clear_monitoring_request(monitor_ids), lenient=True)
        except CallFailed as error:
            if error.unsupported:  # no monitoring: it holds none
                return set(monitor_ids)
            raise
        gone = vm.read_clear_reply(monitor_ids, reply)
        for monitor_id in gone:
            self._monitors.pop(monitor_id, None)
        return gone

    async def read_voltage_monitors(self, wanted: Sequence[vm.MonitorSpec]
                                    ) -> list[vm.InstalledMonitor]:
        if not wanted:
            return []
        try:
            asked = await self._ask_report("GetMonitoringReport", "NotifyMonitoringReport",
                                           vm.monitoring_report_query(wanted))
        except CallFailed as error:
            if error.unsupported:
                return []
            raise
        found = [monitor for part in await self._collected(asked)
                 for monitor in vm.adopt(wanted, part)]
        self._monitors.update((m.monitor_id, m.spec) for m in found)
        return found

    # handlers: wire dicts in, wire dicts out -------------------------------------------------
    def on_boot(self, payload: Payload) -> Payload:
        station = payload["chargingStation"]
        self._listener.station_booted(self.id, {
            "vendor": station["vendorName"],
            "model": station["model"],
            "firmware": str(station.get("firmwareVersion") or ""),
        })
        return {"currentTime": now_iso(), "interval": HEARTBEAT_INTERVAL_S,
                "status": "Accepted"}

    def on_heartbeat(self, payload: Payload) -> Payload:
        return {"currentTime": now_iso()}

    def on_status(self, payload: Payload) -> Payload:
        evse = payload["evseId"]
        self._evses.add(evse)
        self._connector_status[(evse, payload["connectorId"])] = payload["connectorStatus"]
        statuses = [status for (e, _), status in self._connector_status.items() if e == evse]
        self._listener.status_changed(self.id, evse, evse_status(statuses))
        return {}

    def on_authorize(self, payload: Payload) -> Payload:
        # Authorisation belongs to the site's own back office; drbridge only steers power.
        return {"idTokenInfo": {"status": "Accepted"}}

    def on_transaction_event(self, payload: Payload) -> Payload:
        info = payload["transactionInfo"]
        station_tx = info["transactionId"]
        # a time the schema took but Python cannot read: when it arrived
        at = parse_time(payload["timestamp"]) or datetime.now(UTC)
        meter_values = payload.get("meterValue") or []
        event = payload["eventType"]
        named = (payload.get("evse") or {}).get("id") or None  # required only in the first
        known = self._transactions.get(station_tx)
        if known is None:
            # begun before this connection or a bridge restart: the bridge keeps its id (or,
            # recorded without it, the one open on the EVSE named; a Started is a new one)
            found = self._listener.transaction_of(self.id, station_tx,
                                                  named if event != "Started" else None)
            if found is not None:
                known = self._remember(station_tx, *found)
        if known is None and named is not None and event in ("Started", "Updated"):
            token = (payload.get("idToken") or {}).get("idToken", "")
            bridge_tx = self._listener.transaction_started(
                self.id, named, token, energy_wh(meter_values), at, station_tx)
            known = self._remember(station_tx, bridge_tx, named)
        evse = known[1] if known is not None else named
        if evse is None:
            evse = self._unattributed_event(station_tx, event)
        elif station_tx in self._unattributed:
            self._unattributed.discard(station_tx)
            log.info("%s: transaction %s runs on EVSE %d", self.id, station_tx, evse)
        if meter_values:
            self._listener.meter_values(self.id, evse, [sampled_values(m) for m in meter_values])
        if event == "Ended":
            self._unattributed.discard(station_tx)
            if known is not None:
                self._listener.transaction_stopped(self.id, known[0], energy_wh(meter_values),
                                                   at)
                del self._transactions[station_tx]
                self._station_tx.pop(known[0], None)
        return {"idTokenInfo": {"status": "Accepted"}} if "idToken" in payload else {}

    def _unattributed_event(self, station_tx: str, event: str) -> int:
        """An event of a transaction the bridge does not know, without its EVSE.

        Guessing an EVSE could end another EVSE's session or give this one another's
        limit. Its meter values count for the station as a whole (UNKNOWN_EVSE), and the
        station is asked once to send each EVSE's transaction (TriggerMessage), an event
        that names its EVSE.
        """
        self.unattributed_events += 1
        if station_tx not in self._unattributed and event != "Ended":
            self._unattributed.add(station_tx)
            log.warning("%s: transaction %s, unknown to the bridge, names no EVSE (%s); counted "
                        "for the station as a whole; asking the station for its EVSE", self.id,
                        station_tx, event)
            if self._asking is None or self._asking.done():  # one round asks every EVSE
                self._asking = asyncio.get_running_loop().create_task(self._ask_transactions())
        return UNKNOWN_EVSE

    async def _ask_transactions(self) -> None:
        """TriggerMessage(TransactionEvent) for each EVSE: one event per running transaction,
        for the EVSE asked (F06), which stations send with its EVSE."""
        for evse in range(1, max(self._evse_count, *self._evses, 1) + 1):
            try:
                await self._request("TriggerMessage", {"requestedMessage": "TransactionEvent",
                                                       "evse": {"id": evse}}, lenient=True)
            except CallFailed as error:
                log.info("%s: TriggerMessage for EVSE %d failed (%s)", self.id, evse, error)
                return

    def _remember(self, station_tx: str, bridge_tx: int, evse: int) -> tuple[int, int]:
        self._transactions[station_tx] = (bridge_tx, evse)
        self._station_tx[bridge_tx] = station_tx
        self._evses.add(evse)
        return bridge_tx, evse

    def on_meter_values(self, payload: Payload) -> Payload:
        self._listener.meter_values(self.id, payload["evseId"],
                                    [sampled_values(m) for m in payload["meterValue"]])
        return {}

    def on_notice(self, payload: Payload) -> Payload:
        return {}

    def on_notify_event(self, payload: Payload) -> Payload:
        """The voltages in the events (a monitor's crossing, ours or another party's) go on
        at once; events on other variables are not ours to read."""
        found, unreadable = vm.observations(self.id, payload, datetime.now(UTC), self._monitors)
        if unreadable and not self._unreadable_voltage_logged:
            self._unreadable_voltage_logged = True
            log.info("%s: %d voltage event(s) without a readable voltage (%.200r); passed "
                     "over (logged once per connection)", self.id, unreadable,
                     payload.get("eventData"))
        for observation in found:
            self._listener.voltage_observed(self.id, observation)
        return {}

    def on_notify_charging_limit(self, payload: Payload) -> Payload:
        self._listener.external_limit(self.id,
                                      read_notify_charging_limit(payload, datetime.now(UTC)))
        return {}

    def on_cleared_charging_limit(self, payload: Payload) -> Payload:
        self._listener.external_limit(self.id,
                                      read_cleared_charging_limit(payload, datetime.now(UTC)))
        return {}

    def on_data_transfer(self, payload: Payload) -> Payload:
        # No vendor extensions: drbridge stays with what every compliant station speaks.
        return {"status": "UnknownVendorId"}


# OCPP 2.0.1 has no DER control (OCPP 2.1 brought it): answered here, without a call.
NO_DER_CONTROL = DerReply("not-supported", "OCPP 2.0.1 has no DER control")


class StationLink201(StationLink2):
    """The central system's end of one OCPP 2.0.1 station's websocket."""

    DIALECT = OCPP201

    async def read_der_support(self) -> bool:
        return False

    async def set_der_control(self, curve: DerCurve) -> DerReply:
        return NO_DER_CONTROL

    async def read_der_control(self) -> DerControlReport:
        return DerControlReport(NO_DER_CONTROL)

    async def clear_der_control(self) -> DerReply:
        return NO_DER_CONTROL
