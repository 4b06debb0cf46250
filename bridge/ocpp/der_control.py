"""OCPP 2.1 DER control: the volt-watt rule as the station's own VoltWatt curve (pure:
domain in, wire dicts out, and back).

A station that holds the curve follows it from its own voltage, within its own response
time, whether or not the bridge is there. What the schemas and the specification fix:

- ``SetDERControlRequest``: ``isDefault``, ``controlId`` (at most 36 characters),
  ``controlType`` and exactly one setting, here ``curve`` (``DERCurveType``: ``priority``,
  0 the highest; ``yUnit``; 1 to 10 ``curveData`` points; ``responseTime``, the seconds to
  reach 90 % of a new target; ``hysteresis`` for the return to normal; ``startTime`` and
  ``duration`` only for a scheduled control). A default control has neither and stays in
  force until cleared. Per type, a control with a lower priority number supersedes one with
  a higher; a new control that is itself superseded comes back ``Accepted`` with its own id
  in ``supersededIds``.
- VoltWatt: ``y`` is active power in ``yUnit`` ``PctMaxW`` (percent of the EVSE's maximum
  active power) or ``PctWAvail``. The schema leaves ``x`` to "the curve type"; drbridge
  writes the voltage in percent of the nominal voltage, as IEEE 1547 and IEEE 2030.5 (whose
  DER curves these types follow) do, and can write volts for a station that reads them.
  OCPP's sign: positive is discharging, negative is charging (as for ``FixedVar`` and
  ``dischargeLimit``).
- Support: the device model's ``ACDERCtrlr`` / ``DCDERCtrlr`` per EVSE, with
  ``Available``, ``Enabled`` and ``ModesSupported`` (DER control types); an unsupported
  type is answered ``NotSupported``.

How drbridge reads a VoltWatt curve for a station that only charges: ``-y`` is the share of
its maximum power it may draw at that voltage (a ceiling, as the charging volt-watt modes of
grid codes work); the station draws less when its charging profile or its EV says so. The
curve is the rule's restriction (:func:`policies.voltwatt_points.response_points`): the sag
curve, ``pause_below`` and ``pause_above``. The over-voltage rule is not in it: it raises
price limits up to a share of the *site*, from the highest voltage at *any* station, and
never above the site cap or a DR limit, which a station acting alone cannot know; so it
stays the bridge's, and the curve allows full power up to ``pause_above`` so that it never
stands in its way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bridge.ocpp.voltage_observation import VoltageObservation, read_time
from policies.model import VoltageRule
from policies.voltwatt_points import interpolate, response_points

Payload = dict[str, Any]
CONTROL_ID = "drbridge-voltwatt"  # one per station, replaced in place when the rule changes
# 0 is the highest priority. A grid operator's own VoltWatt (a lower number) overrules
# ours, as it should; ours overrules only controls that asked for less precedence.
PRIORITY = 10
MAX_POINTS = 10  # DERCurveType.curveData
RESPONSE_TIME_S = 1.0  # tighten within about a second, as the bridge's own rule does
DER_COMPONENTS = ("ACDERCtrlr", "DCDERCtrlr")
# Ends of the curve written out (pu), so a station that does not hold the first and last
# values flat beyond the curve still does the right thing there.
_FAR_LOW_PU, _FAR_HIGH_PU = 0.5, 1.5


@dataclass(frozen=True)
class DerCurve:
    """A VoltWatt curve in OCPP's units."""

    points: tuple[tuple[float, float], ...]  # (x: % of nominal V, y: % of max W; - charging)
    response_time_s: float = RESPONSE_TIME_S
    hysteresis_delay_s: float | None = None  # wait before returning to normal
    hysteresis_gradient: float | None = None  # then at most this many % per second

    def payload(self, priority: int = PRIORITY) -> Payload:
        """DERCurveType."""
        curve: Payload = {
            "priority": priority, "yUnit": "PctMaxW", "responseTime": self.response_time_s,
            "curveData": [{"x": x, "y": y} for x, y in self.points],
        }
        hysteresis = {key: value for key, value in (
            ("hysteresisDelay", self.hysteresis_delay_s),
            ("hysteresisGradient", self.hysteresis_gradient)) if value is not None}
        if hysteresis:
            curve["hysteresis"] = hysteresis
        return curve

    def charging_share(self, x: float) -> float:
        """The share of its maximum a charging station may draw at this voltage (in the
        curve's x unit)."""
        return max(0.0, -interpolate(list(self.points), x) / 100)

    def same_as(self, other: DerCurve, tolerance: float = 0.01) -> bool:
        return len(self.points) == len(other.points) and all(
            abs(a - c) <= tolerance and abs(b - d) <= tolerance
            for (a, b), (c, d) in zip(self.points, other.points, strict=True))


@dataclass(frozen=True)
class Unexpressible:
    """The rule cannot be put into a DER curve; the bridge keeps it central."""

    reason: str


def volt_watt_curve(rule: VoltageRule, min_share: float,
                    response_time_s: float = RESPONSE_TIME_S,
                    x_in_volts_of: float | None = None) -> DerCurve | Unexpressible:
    """The rule's restriction as a VoltWatt curve for one station.

    ``x`` is in percent of the nominal voltage; ``x_in_volts_of`` (the nominal voltage)
    writes it in volts instead, for a station found to read the axis that way.

    ``min_share`` is the minimum current as a share of the station's maximum power as the
    station knows it (PctMaxW is of its own maximum). The rule's hold time and ease step
    become the curve's return to normal: wait ``hold_s``, then rise at most ``ease_step``
    per ``hold_s``. With ``scope: site`` each station still backs off by its own voltage
    alone: less than the rule (one station's sag limits all), and better than nothing
    while the bridge is away; the bridge's central rule does the rest.
    """
    scale = x_in_volts_of if x_in_volts_of is not None else 100.0
    points = [(round(pu * scale, 2), _y(share))
              for pu, share in response_points(rule, min_share)]
    if len(points) > MAX_POINTS:
        return Unexpressible(f"the volt-watt rule needs {len(points)} points; a DER curve "
                             f"holds {MAX_POINTS}")
    far_low, far_high = _FAR_LOW_PU * scale, _FAR_HIGH_PU * scale
    if len(points) < MAX_POINTS and points[0][0] > far_low:
        points.insert(0, (far_low, points[0][1]))
    if len(points) < MAX_POINTS and points[-1][0] < far_high:
        points.append((far_high, points[-1][1]))
    delay = gradient = None
    if rule.hold_s > 0:
        delay = float(rule.hold_s)
        if rule.ease_step is not None:
            gradient = round(100 * rule.ease_step / rule.hold_s, 3)
    return DerCurve(tuple(points), response_time_s, delay, gradient)


def _y(share: float) -> float:
    value = round(-100 * share, 2)
    return 0.0 if value == 0 else value  # no "-0.0" on the wire


def set_der_control_request(curve: DerCurve, control_id: str = CONTROL_ID,
                            priority: int = PRIORITY) -> Payload:
    """A default control: no start time nor duration, in force until cleared, whether or
    not the bridge is there."""
    return {"isDefault": True, "controlId": control_id, "controlType": "VoltWatt",
            "curve": curve.payload(priority)}


def get_der_control_request(request_id: int, control_id: str = CONTROL_ID) -> Payload:
    """Ask for our control back; the station answers, then sends ReportDERControl."""
    return {"requestId": request_id, "isDefault": True, "controlId": control_id}


def clear_der_control_request(control_id: str = CONTROL_ID) -> Payload:
    """Clear ours by its id: never another party's control."""
    return {"isDefault": True, "controlId": control_id}


DerStatus = Literal["accepted", "superseded", "not-supported", "rejected", "not-found",
                    "unreadable"]


@dataclass(frozen=True)
class DerReply:
    status: DerStatus
    detail: str = ""


def read_reply(reply: Mapping[str, Any], control_id: str = CONTROL_ID) -> DerReply:
    """A Set/Get/ClearDERControl answer. ``superseded``: taken, but another control of the
    type with a higher priority is in force, so the station does not follow ours."""
    status = reply.get("status")
    info = reply.get("statusInfo")
    detail = ""
    if isinstance(info, Mapping):
        detail = " ".join(str(info[k]) for k in ("reasonCode", "additionalInfo") if k in info)
    if not isinstance(status, str):
        return DerReply("unreadable", detail)
    status = status.strip().lower()
    if status == "accepted":
        superseded = reply.get("supersededIds")
        if isinstance(superseded, list) and control_id in superseded:
            return DerReply("superseded", detail)
        return DerReply("accepted", detail)
    known: dict[str, DerStatus] = {"notsupported": "not-supported", "rejected": "rejected",
                                   "notfound": "not-found"}
    return DerReply(known.get(status, "unreadable"), detail or status)


@dataclass(frozen=True)
class InstalledControl:
    curve: DerCurve
    superseded: bool


@dataclass(frozen=True)
class DerControlReport:
    """What a GetDERControl brought: the answer, and our control as the station holds it
    (None unless the answer is ``accepted`` and a ReportDERControl names it)."""

    reply: DerReply
    control: InstalledControl | None = None


def read_report(reports: Iterable[Mapping[str, Any]],
                control_id: str = CONTROL_ID) -> InstalledControl | None:
    """Our VoltWatt control in the ReportDERControl parts a GetDERControl brought (None:
    the station holds none under our id)."""
    for report in reports:
        for entry in report.get("curve") or []:
            if not isinstance(entry, Mapping) or entry.get("id") != control_id or \
                    entry.get("curveType") != "VoltWatt":
                continue
            curve = entry.get("curve") if isinstance(entry.get("curve"), Mapping) else {}
            try:
                points = tuple((float(p["x"]), float(p["y"])) for p in curve["curveData"])
                response = float(curve.get("responseTime", RESPONSE_TIME_S))
            except (KeyError, TypeError, ValueError):
                return None
            hysteresis = curve.get("hysteresis") if isinstance(curve.get("hysteresis"),
                                                               Mapping) else {}
            return InstalledControl(
                DerCurve(points, response, hysteresis.get("hysteresisDelay"),
                         hysteresis.get("hysteresisGradient")),
                entry.get("isSuperseded") is True)
    return None


def support_query(evse_ids: Sequence[int]) -> Payload:
    """GetVariablesRequest for the DER controllers of these EVSEs."""
    return {"getVariableData": [
        {"component": {"name": component, "evse": {"id": evse}}, "variable": {"name": name}}
        for evse in sorted(set(evse_ids)) or [1] for component in DER_COMPONENTS
        for name in ("Available", "Enabled", "ModesSupported")]}


def supports_volt_watt(reply: Mapping[str, Any]) -> bool:
    """Whether some EVSE has a DER controller that is available, enabled and lists VoltWatt
    among its modes (a controller that lists no modes is given the benefit of the doubt:
    the SetDERControl answer settles it)."""
    values: dict[tuple[str, int | None], dict[str, str]] = {}
    for result in reply.get("getVariableResult") or []:
        if not isinstance(result, Mapping) or \
                str(result.get("attributeStatus", "")).lower() != "accepted":
            continue
        component = result.get("component") if isinstance(result.get("component"),
                                                          Mapping) else {}
        variable = result.get("variable") if isinstance(result.get("variable"), Mapping) else {}
        evse = component.get("evse") if isinstance(component.get("evse"), Mapping) else {}
        key = (str(component.get("name", "")).lower(), evse.get("id"))
        values.setdefault(key, {})[str(variable.get("name", "")).lower()] = \
            str(result.get("attributeValue", ""))
    for found in values.values():
        on = all(found.get(name, "").strip().lower() == "true"
                 for name in ("available", "enabled"))
        modes = {m.strip().lower() for m in found.get("modessupported", "").split(",")
                 if m.strip()}
        if on and (not modes or "voltwatt" in modes):
            return True
    return False


def observation_from_alarm(station_id: str, payload: Mapping[str, Any],
                           received_at: datetime) -> VoltageObservation:
    """NotifyDERAlarm: the station's own control met a grid event (no voltage given)."""
    control = payload.get("controlType", "DER control")
    fault = payload.get("gridEventFault")
    ended = payload.get("alarmEnded") is True
    what = f"{fault} " if fault else ""
    detail = f"station's own DER control ({control}): {what}alarm {'ended' if ended else 'raised'}"
    if payload.get("extraInfo"):
        detail += f" ({payload['extraInfo']})"
    return VoltageObservation(station_id, read_time(payload.get("timestamp"), received_at),
                              "der-control", returned_to_normal=ended, detail=detail)


def observation_from_start_stop(station_id: str, payload: Mapping[str, Any],
                                received_at: datetime,
                                control_id: str = CONTROL_ID) -> VoltageObservation | None:
    """NotifyDERStartStop about our control, or about one that superseded ours (None: about
    neither)."""
    started = payload.get("started") is True
    at = read_time(payload.get("timestamp"), received_at)
    superseded = payload.get("supersededIds")
    if payload.get("controlId") == control_id:
        detail = f"station's own DER control {'started' if started else 'stopped'}"
        return VoltageObservation(station_id, at, "der-control", returned_to_normal=not started,
                                  detail=detail)
    if started and isinstance(superseded, list) and control_id in superseded:
        detail = f"station's own DER control superseded by {payload.get('controlId')}"
        return VoltageObservation(station_id, at, "der-control", returned_to_normal=True,
                                  detail=detail)
    return None
