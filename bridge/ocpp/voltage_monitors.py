"""Variable monitors on a station's voltage at the volt-watt rule's thresholds (OCPP 2.0.1,
and 2.1, which keeps these messages); pure: domain in, wire dicts out, and back.

A threshold monitor makes the station report at once (NotifyEvent, trigger ``Alerting``)
when its voltage crosses the threshold, and again (``cleared``) when it returns, instead of
at the next meter sample, so the rule acts within a second.

Device model. The appendix's standardized variable for a supply voltage is ``ACVoltage``
(decimal, V); it lists it for the components ``EVSE``, ``ChargingStation`` and
``ElectricalFeed``. It names no instance for the lines, so a station that offers each line
does so under an instance of its own (``L1``...). The bridge therefore tries candidates,
best first (:func:`candidates`), and keeps what the station accepts: each result says
``UnknownComponent`` / ``UnknownVariable`` / ``UnsupportedMonitorType`` where it cannot.

Monitor ids are the station's (it assigns them; an id in a request replaces that
monitor). The bridge keeps the ids it was given and clears those alone, never a monitor it
did not set (:func:`monitor_changes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bridge.ocpp.voltage_observation import (
    VoltageObservation,
    line_of,
    read_time,
    read_volts,
)
from policies.model import VoltageRule
from policies.voltwatt_points import MAX_THRESHOLDS, thresholds

Payload = dict[str, Any]
VARIABLE = "ACVoltage"
# Names a voltage event may carry: the standardized one, and what some firmware uses.
_VOLTAGE_NAMES = frozenset({"acvoltage", "voltage"})
# 2.0.1 severity 5 is "Alert", the default for any monitoring event; a station reports only
# events at or below its MonitoringCtrlr.ActiveMonitoringLevel, so a more severe level
# would be a claim the voltage does not warrant, and a milder one may go unreported.
DEFAULT_SEVERITY = 5
MonitorKind = Literal["LowerThreshold", "UpperThreshold"]
# What a monitor is refused with where the station (or its OCPP version) has no monitoring:
# the CALLERROR codes of a SetVariableMonitoring it cannot take at all.
NOT_SUPPORTED = "NotSupported"
UNSUPPORTED = frozenset({NOT_SUPPORTED, "NotImplemented"})


@dataclass(frozen=True)
class VoltageVariable:
    """A component-variable of the station's device model that holds a voltage."""

    component: str  # EVSE, ChargingStation, ElectricalFeed
    evse_id: int | None = None
    instance: str | None = None  # the line, for stations that offer each (L1, L2, L3)

    @property
    def line(self) -> int | None:
        return line_of(self.instance)

    def component_payload(self) -> Payload:
        payload: Payload = {"name": self.component}
        if self.evse_id is not None:
            payload["evse"] = {"id": self.evse_id}
        return payload

    def variable_payload(self) -> Payload:
        payload: Payload = {"name": VARIABLE}
        if self.instance is not None:
            payload["instance"] = self.instance
        return payload

    def key(self) -> tuple[str, int | None, str | None]:
        """Device-model names are case-insensitive."""
        instance = self.instance.lower() if self.instance is not None else None
        return self.component.lower(), self.evse_id, instance

    def describe(self) -> str:
        where = f"EVSE {self.evse_id}" if self.evse_id is not None else self.component
        return f"{where} {self.instance}" if self.instance else where


def candidates(evse_ids: Sequence[int],
               lines: Sequence[int]) -> list[tuple[VoltageVariable, ...]]:
    """Sets of voltage variables to try, best first: each line of each EVSE; each EVSE's
    one voltage; the station's one voltage."""
    evses = sorted(set(evse_ids)) or [1]
    return [
        tuple(VoltageVariable("EVSE", evse, f"L{line}") for evse in evses for line in lines),
        tuple(VoltageVariable("EVSE", evse) for evse in evses),
        (VoltageVariable("ChargingStation"),),
    ]


@dataclass(frozen=True)
class MonitorSpec:
    """One monitor the bridge wants on the station."""

    variable: VoltageVariable
    kind: MonitorKind
    volts: float
    severity: int = DEFAULT_SEVERITY
    why: str = ""

    def identity(self) -> tuple[object, ...]:
        """What makes two monitors the same (``why`` is our note, not the station's)."""
        return self.variable.key(), self.kind, round(self.volts, 1), self.severity

    def data(self) -> Payload:
        """SetMonitoringDataType. Not tied to transactions: an idle station's voltage tells
        of the feeder too (with ``scope: site`` any station's sag limits all)."""
        return {"value": round(self.volts, 1), "type": self.kind, "severity": self.severity,
                "transaction": False, "component": self.variable.component_payload(),
                "variable": self.variable.variable_payload()}

    def describe(self) -> str:
        side = "below" if self.kind == "LowerThreshold" else "above"
        text = f"{side} {self.volts:.1f} V"
        return f"{text} ({self.why})" if self.why else text


def desired_monitors(rule: VoltageRule | None, nominal_v: float,
                     variables: Iterable[VoltageVariable], severity: int = DEFAULT_SEVERITY,
                     limit: int = MAX_THRESHOLDS) -> list[MonitorSpec]:
    """The monitors the rule asks for on each of these variables (none without a rule):
    a LowerThreshold at each threshold below nominal, an UpperThreshold at each above."""
    if rule is None:
        return []
    points = thresholds(rule, limit=limit)
    return [MonitorSpec(variable, "LowerThreshold" if t.side == "below" else "UpperThreshold",
                        round(t.pu * nominal_v, 1), severity, t.why)
            for variable in variables for t in points]


def set_monitoring_request(specs: Sequence[MonitorSpec]) -> Payload:
    """SetVariableMonitoringRequest for these monitors (new ones: no ids)."""
    return {"setMonitoringData": [spec.data() for spec in specs]}


@dataclass(frozen=True)
class InstalledMonitor:
    monitor_id: int  # the station's
    spec: MonitorSpec


@dataclass(frozen=True)
class MonitorOutcome:
    installed: tuple[InstalledMonitor, ...]
    refused: tuple[tuple[MonitorSpec, str], ...]  # (monitor, the station's status)

    @classmethod
    def all_refused(cls, specs: Sequence[MonitorSpec], status: str) -> MonitorOutcome:
        """Every one refused with one status: a station (or a version) without monitoring."""
        return cls((), tuple((spec, status) for spec in specs))

    @property
    def unsupported(self) -> bool:
        """Nothing taken, and the station has no monitoring at all."""
        return not self.installed and bool(self.refused) and all(
            status in UNSUPPORTED for _, status in self.refused)

    @property
    def variable_unknown(self) -> bool:
        """Nothing taken, and the station knows no such variable: try the next candidate."""
        return not self.installed and bool(self.refused) and all(
            status in ("UnknownComponent", "UnknownVariable") for _, status in self.refused)


def _status(result: Mapping[str, Any]) -> str:
    status = result.get("status")
    if not isinstance(status, str):
        return "Unreadable"
    return "Accepted" if status.strip().lower() == "accepted" else status.strip()


def _result_matches(spec: MonitorSpec, result: Mapping[str, Any]) -> bool:
    """Whether a result names this monitor's variable and type (absent fields: no objection,
    a station that trims its answer is read by the order)."""
    component = result.get("component")
    variable = result.get("variable")
    if isinstance(component, Mapping) and "name" in component and \
            str(component["name"]).lower() != spec.variable.component.lower():
        return False
    if isinstance(variable, Mapping) and "name" in variable and \
            str(variable["name"]).lower() not in _VOLTAGE_NAMES:
        return False
    if isinstance(variable, Mapping) and "instance" in variable and \
            str(variable["instance"]).lower() != (spec.variable.instance or "").lower():
        return False
    kind = result.get("type")
    return not isinstance(kind, str) or kind == spec.kind


def read_set_monitoring_reply(specs: Sequence[MonitorSpec], reply: Mapping[str, Any]
                              ) -> MonitorOutcome:
    """What the station took of a SetVariableMonitoring request, defensively.

    Results are read in the order of the request, as stations answer; a result that names
    another variable or type than its place says is looked up among the others. A monitor
    accepted without a readable id cannot be cleared later, so it counts as refused.
    """
    results = reply.get("setMonitoringResult")
    results = [r for r in results if isinstance(r, Mapping)] if isinstance(results, list) else []
    unused = list(range(len(results)))
    installed: list[InstalledMonitor] = []
    refused: list[tuple[MonitorSpec, str]] = []
    for position, spec in enumerate(specs):
        index = position if position in unused and _result_matches(spec, results[position]) \
            else next((i for i in unused if _result_matches(spec, results[i])), None)
        if index is None:
            refused.append((spec, "NoResult"))
            continue
        unused.remove(index)
        result = results[index]
        status = _status(result)
        monitor_id = result.get("id")
        if status == "Accepted" and isinstance(monitor_id, int) and not isinstance(
                monitor_id, bool):
            installed.append(InstalledMonitor(monitor_id, spec))
        else:
            refused.append((spec, status if status != "Accepted" else "AcceptedWithoutId"))
    return MonitorOutcome(tuple(installed), tuple(refused))


@dataclass(frozen=True)
class MonitorChanges:
    to_set: tuple[MonitorSpec, ...]
    to_clear: tuple[int, ...]  # ids of monitors the bridge set earlier

    @property
    def empty(self) -> bool:
        return not self.to_set and not self.to_clear


def monitor_changes(desired: Sequence[MonitorSpec],
                    installed: Sequence[InstalledMonitor]) -> MonitorChanges:
    """Follow a change of rule: set what is missing, clear what is no longer wanted (by the
    ids the station gave the bridge; nothing else). A rule removed: ``desired`` empty."""
    wanted = {spec.identity() for spec in desired}
    have = {monitor.spec.identity() for monitor in installed}
    seen: set[tuple[object, ...]] = set()
    to_set = []
    for spec in desired:
        if spec.identity() not in have and spec.identity() not in seen:
            to_set.append(spec)
            seen.add(spec.identity())
    kept: set[tuple[object, ...]] = set()
    to_clear = []
    for monitor in installed:
        identity = monitor.spec.identity()
        if identity not in wanted or identity in kept:  # unwanted, or a second copy
            to_clear.append(monitor.monitor_id)
        else:
            kept.add(identity)
    return MonitorChanges(tuple(to_set), tuple(to_clear))


def clear_monitoring_request(monitor_ids: Sequence[int]) -> Payload:
    return {"id": list(monitor_ids)}


def read_clear_reply(monitor_ids: Sequence[int], reply: Mapping[str, Any]) -> set[int]:
    """The ids that are gone: cleared, or unknown to the station (already gone)."""
    results = reply.get("clearMonitoringResult")
    gone = set()
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, Mapping):
            continue
        status = _status(result)
        monitor_id = result.get("id")
        if monitor_id in monitor_ids and status in ("Accepted", "NotFound"):
            gone.add(int(monitor_id))
    return gone


def observations(station_id: str, payload: Mapping[str, Any], received_at: datetime,
                 ours: Mapping[int, MonitorSpec] | None = None
                 ) -> tuple[list[VoltageObservation], int]:
    """The voltages in a NotifyEvent, and how many voltage events could not be read.

    Every event on a voltage variable counts, whatever set it off (one of ours, another
    party's monitor, a periodic one): a fresh voltage is a fresh voltage. Events on other
    variables are not ours to read and are passed over.
    """
    found: list[VoltageObservation] = []
    unreadable = 0
    events = payload.get("eventData")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, Mapping):
            continue
        variable = event.get("variable") if isinstance(event.get("variable"), Mapping) else {}
        if str(variable.get("name", "")).lower() not in _VOLTAGE_NAMES:
            continue
        volts = read_volts(event.get("actualValue"))
        if volts is None:
            unreadable += 1
            continue
        component = event.get("component") if isinstance(event.get("component"), Mapping) \
            else {}
        evse = component.get("evse") if isinstance(component.get("evse"), Mapping) else {}
        evse_id = evse.get("id") if isinstance(evse.get("id"), int) else None
        line = line_of(variable.get("instance"))
        cleared = event.get("cleared") is True
        spec = (ours or {}).get(event.get("variableMonitoringId"))  # type: ignore[arg-type]
        on = f" on L{line}" if line is not None else ""
        if spec is not None:
            crossed = ("back " if cleared else "") + spec.describe()
            detail = f"station's monitor event: {volts:.1f} V{on}, {crossed}"
        else:
            detail = f"station's monitor event: {volts:.1f} V{on} ({event.get('trigger')})"
        at = read_time(event.get("timestamp") or payload.get("generatedAt"), received_at)
        found.append(VoltageObservation(station_id, at, "monitor", volts, line, evse_id,
                                        cleared, detail))
    return found, unreadable


def monitoring_report_query(specs: Sequence[MonitorSpec]) -> Payload:
    """GetMonitoringReportRequest's criteria (without its requestId): the threshold monitors
    on the variables of these monitors, to find ours among them (:func:`adopt`)."""
    variables: dict[tuple[object, ...], VoltageVariable] = {}
    for spec in specs:
        variables.setdefault(spec.variable.key(), spec.variable)
    query: Payload = {"monitoringCriteria": ["ThresholdMonitoring"]}
    if variables:
        query["componentVariable"] = [
            {"component": v.component_payload(), "variable": v.variable_payload()}
            for v in variables.values()]
    return query


def adopt(desired: Sequence[MonitorSpec], report: Mapping[str, Any]) -> list[InstalledMonitor]:
    """Monitors in a NotifyMonitoringReport that are exactly ones the bridge wants (type,
    value, severity, variable): after a station answered ``Duplicate`` (it already holds
    them, from an earlier run whose ids were lost), so they can be followed and cleared."""
    wanted = {spec.identity(): spec for spec in desired}
    adopted = []
    for entry in report.get("monitor") or []:
        if not isinstance(entry, Mapping):
            continue
        component = entry.get("component") or {}
        variable = entry.get("variable") or {}
        if not isinstance(component, Mapping) or not isinstance(variable, Mapping) or \
                str(variable.get("name", "")).lower() not in _VOLTAGE_NAMES:
            continue
        evse = component.get("evse") if isinstance(component.get("evse"), Mapping) else {}
        instance = variable.get("instance")
        found = VoltageVariable(str(component.get("name", "")),
                                evse.get("id") if isinstance(evse.get("id"), int) else None,
                                instance if isinstance(instance, str) else None)
        for monitor in entry.get("variableMonitoring") or []:
            if not isinstance(monitor, Mapping) or not isinstance(monitor.get("id"), int):
                continue
            try:
                candidate = MonitorSpec(found, monitor.get("type"),  # type: ignore[arg-type]
                                        float(monitor.get("value")),  # type: ignore[arg-type]
                                        int(monitor.get("severity")))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            spec = wanted.get(candidate.identity())
            if spec is not None and monitor.get("transaction") is not True:
                adopted.append(InstalledMonitor(int(monitor["id"]), spec))
    return adopted
