"""A simulated OCPP 2.1 station (subprotocol ``ocpp2.1``, on ``ocpp.v21``) that carries out
a DER volt-watt control by itself.

Everything the 2.0.1 station with monitors does (:mod:`bridge.sim.station201_monitors`:
transactions, smart charging, a feeder, variable monitors), validated against the 2.1
schemas, and:

- DER control (OCPP 2.1 block R): its device model has an ``ACDERCtrlr`` on each EVSE
  (``Available``, ``Enabled``, ``ModesSupported``); SetDERControl, GetDERControl (then
  ReportDERControl) and ClearDERControl as the specification describes them: per control
  type, the lowest priority number is in force and supersedes the others (a new control
  that is itself superseded is answered with its own id in ``supersededIds``); default
  controls have no start time nor duration; a scheduled control is in force in its window,
  over the default, and NotifyDERStartStop tells when it starts and stops. ``der=
  "not-supported"`` answers every control ``NotSupported``; ``der="rejected"`` offers
  VoltWatt in its device model but refuses every control set from the central system
  (``Rejected``: only its grid operator may set them), and holds none.
- VoltWatt, carried out: many times a second the station reads the curve at its own
  voltage (percent of nominal; the lowest line, the most restrictive); ``-y`` (PctMaxW,
  negative = charging) is the share of its maximum power its EVs may draw together (a
  DER control names no EVSE). It moves there with the curve's ``responseTime`` (90 % of
  the way in that time) and returns to normal only after ``hysteresisDelay`` and at
  ``hysteresisGradient`` %/s. This goes on while the central system is gone. While the
  curve holds it back it raises a NotifyDERAlarm (``UnderVoltage`` or ``OverVoltage``),
  ended when it lets go.
- Smart charging as the 2.0.1 station; the 2.1 purposes ``PriorityCharging`` and
  ``LocalGeneration`` are accepted and kept (not modelled further), and
  ``ChargingStationExternalConstraints`` from the central system is refused (only the
  station sets those). :meth:`SimulatedStation21.set_external_limit` puts an external
  constraint on it (an energy manager's limit), applied (to what its EVs draw and to its
  composite schedule) and reported with NotifyChargingLimit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ocpp.routing import after, on
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v21.enums import Action

from bridge.sim.station import StationSpec
from bridge.sim.station201_monitors import (
    MonitoringStation201,
    MonitorSupport,
    VoltageVariables,
)

DerSupport = Literal["supported", "not-supported", "rejected"]
_SETTINGS = {"curve", "enterService", "fixedPFAbsorb", "fixedPFInject", "fixedVar",
             "freqDroop", "gradient", "limitMaxDischarge"}
_SETTING_OF = {"EnterService": "enterService", "FixedPFAbsorb": "fixedPFAbsorb",
               "FixedPFInject": "fixedPFInject", "FixedVar": "fixedVar",
               "FreqDroop": "freqDroop", "Gradients": "gradient",
               "LimitMaxDischarge": "limitMaxDischarge"}  # every other type: "curve"
_Y_UNITS = {"VoltWatt": ("PctMaxW", "PctWAvail"), "FreqWatt": ("PctMaxW", "PctWAvail"),
            "VoltVar": ("PctMaxVar", "PctVarAvail"), "WattVar": ("PctMaxVar", "PctVarAvail")}
EXTERNAL_PROFILE_ID = -1  # negative: a profile from an external actor, not the CSMS
_EPS = 1e-6


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class DerControl:
    """A DER control as the station keeps it (the setting as it came, camelCase)."""

    control_id: str
    is_default: bool
    control_type: str
    setting: dict[str, Any]
    priority: int
    start: datetime | None
    duration_s: float | None
    superseded: bool = False
    started: bool = False  # NotifyDERStartStop(started) sent
    ended: bool = False

    def in_window(self, now: datetime) -> bool:
        if self.is_default:
            return True
        if self.start is None or now < self.start:
            return False
        return self.duration_s is None or now < self.start + timedelta(seconds=self.duration_s)


class SimulatedStation21(MonitoringStation201):
    """An OCPP 2.1 station whose EV follows a VoltWatt curve from its own voltage."""

    SUBPROTOCOL = "ocpp2.1"
    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"

    def __init__(self, spec: StationSpec, central_system_url: str, *,
                 der: DerSupport = "supported", der_modes: tuple[str, ...] = ("VoltWatt",),
                 monitors: MonitorSupport = "supported",
                 voltages: VoltageVariables = "per-line",
                 evaluate_every_s: float = 0.05) -> None:
        super().__init__(spec, central_system_url, monitors=monitors, voltages=voltages,
                         evaluate_every_s=evaluate_every_s)
        self.der_support = der
        self.der_modes = der_modes
        self.der_controls: dict[str, DerControl] = {}
        self.der_share = 1.0  # of its maximum power its EV may draw, as the curve moved it
        self.der_target = 1.0
        self._restricted_at = 0.0  # seconds of this station's clock when last held back
        self._clock = 0.0
        self._alarm: str | None = None  # the grid event fault raised, until it ends
        self._external: tuple[float, str] | None = None  # (per-phase A, source)

    # ---- what it draws -----------------------------------------------------------------------
    def own_limit_a(self) -> float | None:
        """What the VoltWatt curve lets its EVs draw in all: the share of its maximum active
        power (PctMaxW) is that share of its maximum current."""
        return None if self.der_share >= 1.0 - _EPS else self.der_share * self.spec.max_current_a

    def external_limit_a(self, at: datetime) -> float | None:
        return None if self._external is None else self._external[0]

    def set_external_limit(self, amps: float | None, source: str = "EMS") -> None:
        """An external actor (an energy manager, the grid operator) limits the station; it
        applies the limit and tells the central system (NotifyChargingLimit), or that the
        limit is gone (ClearedChargingLimit)."""
        if amps is None:
            if self._external is not None:
                self._later(call21.ClearedChargingLimit(
                    charging_limit_source=self._external[1], evse_id=0))
            self._external = None
            return
        self._external = (amps, source)
        self._later(call21.NotifyChargingLimit(
            charging_limit={"charging_limit_source": source, "is_grid_critical": False},
            evse_id=0,
            charging_schedule=[{
                "id": EXTERNAL_PROFILE_ID, "charging_rate_unit": "A",
                "start_schedule": _iso(datetime.now(UTC)),
                "charging_schedule_period": [{"start_period": 0, "limit": amps}]}]))

    # ---- carrying out the DER control ----------------------------------------------------
    def volt_watt(self, now: datetime | None = None) -> DerControl | None:
        """The VoltWatt control in force: a scheduled one in its window over the default;
        among those, the lowest priority number."""
        now = now or datetime.now(UTC)
        live = [c for c in self.der_controls.values()
                if c.control_type == "VoltWatt" and not c.superseded and c.in_window(now)]
        scheduled = [c for c in live if not c.is_default]
        pool = scheduled or live
        return min(pool, key=lambda c: c.priority) if pool else None

    def _tick(self, elapsed_s: float) -> None:
        self._clock += elapsed_s
        now = datetime.now(UTC)
        self._start_stop(now)
        control = self.volt_watt(now)
        if control is None:
            self.der_target, self.der_share = 1.0, 1.0
        else:
            self._follow(control.setting, elapsed_s)
        self._raise_or_end_alarm(control)

    def _follow(self, curve: dict[str, Any], elapsed_s: float) -> None:
        points = sorted((float(p["x"]), float(p["y"])) for p in curve["curveData"])
        percents = [100 * v / self.spec.voltage_v for v in self.voltages_v()]
        target = min(max(0.0, -_interpolate(points, pct) / 100) for pct in percents)
        self.der_target = min(target, 1.0)
        response = float(curve.get("responseTime") or 0.0)
        hysteresis = curve.get("hysteresis") or {}
        if self.der_target < self.der_share - _EPS:
            self._restricted_at = self._clock
            self.der_share = _approach(self.der_share, self.der_target, response, elapsed_s)
        elif self.der_target > self.der_share + _EPS:
            if self._clock - self._restricted_at < float(hysteresis.get("hysteresisDelay", 0)):
                return
            gradient = hysteresis.get("hysteresisGradient")
            if gradient:
                self.der_share = min(self.der_target,
                                     self.der_share + float(gradient) / 100 * elapsed_s)
            else:
                self.der_share = _approach(self.der_share, self.der_target, response,
                                           elapsed_s)

    def _raise_or_end_alarm(self, control: DerControl | None) -> None:
        held_back = control is not None and self.der_target < 1.0 - _EPS
        if held_back and self._alarm is None:
            low = min(self.voltages_v()) < self.spec.voltage_v
            self._alarm = "UnderVoltage" if low else "OverVoltage"
            self._later(call21.NotifyDERAlarm(control_type="VoltWatt",
                                              grid_event_fault=self._alarm,
                                              timestamp=_iso(datetime.now(UTC))))
        elif not held_back and self._alarm is not None and self.der_share >= 1.0 - _EPS:
            self._later(call21.NotifyDERAlarm(control_type="VoltWatt",
                                              grid_event_fault=self._alarm, alarm_ended=True,
                                              timestamp=_iso(datetime.now(UTC))))
            self._alarm = None

    def _start_stop(self, now: datetime) -> None:
        for control in self.der_controls.values():
            if control.is_default or control.superseded or control.ended:
                continue
            if not control.started and control.in_window(now):
                control.started = True
                self._later(call21.NotifyDERStartStop(control_id=control.control_id,
                                                      started=True, timestamp=_iso(now)))
            elif control.started and not control.in_window(now):
                control.ended = True
                self._later(call21.NotifyDERStartStop(control_id=control.control_id,
                                                      started=False, timestamp=_iso(now)))

    # ---- handlers ----------------------------------------------------------------------------
    def _der_variables(self) -> dict[str, str]:
        on = str(self.der_support != "not-supported").lower()
        return {"available": on, "enabled": on, "modessupported": ",".join(self.der_modes)}

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]],
                         **kwargs: Any) -> Any:
        answer = super().on_get_variables(get_variable_data, **kwargs)
        values = self._der_variables()
        for index, item in enumerate(get_variable_data):
            component, variable = item["component"], item["variable"]
            evse_id = (component.get("evse") or {}).get("id")
            name = str(variable.get("name", "")).lower()
            if str(component["name"]).lower() == "acderctrlr" and evse_id in self.evses and \
                    name in values:
                answer.get_variable_result[index] = {
                    "attribute_status": "Accepted", "attribute_value": values[name],
                    "component": component, "variable": variable}
        return answer

    def _supported(self, control_type: str) -> bool:
        return self.der_support != "not-supported" and control_type in self.der_modes

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, **kwargs: Any) -> Any:
        if self._raw["chargingProfile"]["chargingProfilePurpose"] == \
                "ChargingStationExternalConstraints":
            return result21.SetChargingProfile(status="Rejected")
        return super().on_set_charging_profile(evse_id, **kwargs)

    @on(Action.set_der_control)
    def on_set_der_control(self, is_default: bool, control_id: str, control_type: str,
                           **_: Any) -> result21.SetDERControl:
        raw = self._raw
        if not self._supported(control_type):
            return result21.SetDERControl(status="NotSupported")
        if self.der_support == "rejected":
            return result21.SetDERControl(status="Rejected", status_info={
                "reason_code": "NotAuthorized",
                "additional_info": "only the grid operator sets DER controls"})
        given = _SETTINGS & raw.keys()
        setting_name = _SETTING_OF.get(control_type, "curve")
        if given != {setting_name}:
            return _refused("ControlFieldMismatch")
        setting = raw[setting_name]
        if setting_name == "curve" and control_type in _Y_UNITS and \
                setting.get("yUnit") not in _Y_UNITS[control_type]:
            return _refused("yUnit")
        start, duration = setting.get("startTime"), setting.get("duration")
        if is_default and (start is not None or duration is not None):
            return _refused("DefaultWithStartTimeOrDuration")
        if not is_default and start is None:
            return _refused("ScheduledWithoutStartTime")
        control = DerControl(control_id, is_default, control_type, setting,
                             int(setting.get("priority", 0)),
                             _time(start) if start else None,
                             float(duration) if duration is not None else None)
        before = {c.control_id for c in self.der_controls.values() if c.superseded}
        self.der_controls[control_id] = control
        self._supersede()
        newly = sorted(c.control_id for c in self.der_controls.values()
                       if c.superseded and c.control_id not in before)
        return result21.SetDERControl(status="Accepted", superseded_ids=newly or None)

    def _supersede(self) -> None:
        """Per type and kind (default or scheduled), the lowest priority number is in force;
        the others are superseded."""
        groups: dict[tuple[str, bool], list[DerControl]] = {}
        for control in self.der_controls.values():
            groups.setdefault((control.control_type, control.is_default), []).append(control)
        for members in groups.values():
            best = min(c.priority for c in members)
            for control in members:
                control.superseded = control.priority > best

    @on(Action.get_der_control)
    def on_get_der_control(self, request_id: int, **_: Any) -> result21.GetDERControl:
        raw = self._raw
        if "controlType" in raw and "controlId" not in raw and \
                not self._supported(raw["controlType"]):
            return result21.GetDERControl(status="NotSupported")
        return result21.GetDERControl(status="Accepted" if self._matching(raw) else "NotFound")

    @after(Action.get_der_control)
    def after_get_der_control(self, request_id: int, **_: Any) -> None:
        # curve-type controls only: the modes this station carries out are all curves
        curves = [{"curve": c.setting, "id": c.control_id, "curve_type": c.control_type,
                   "is_default": c.is_default, "is_superseded": c.superseded}
                  for c in self._matching(self._raw)
                  if _SETTING_OF.get(c.control_type, "curve") == "curve"]
        if curves:
            self._later(call21.ReportDERControl(request_id=request_id, curve=curves))

    def _matching(self, raw: dict[str, Any]) -> list[DerControl]:
        found = []
        for control in self.der_controls.values():
            if "controlId" in raw:
                if control.control_id != raw["controlId"]:
                    continue
            elif "controlType" in raw and control.control_type != raw["controlType"]:
                continue
            if "isDefault" in raw and control.is_default != raw["isDefault"]:
                continue
            found.append(control)
        return found

    @on(Action.clear_der_control)
    def on_clear_der_control(self, is_default: bool, **_: Any) -> result21.ClearDERControl:
        raw = self._raw
        if "controlId" not in raw and "controlType" in raw and \
                not self._supported(raw["controlType"]):
            return result21.ClearDERControl(status="NotSupported")
        doomed = self._matching(raw)
        for control in doomed:
            del self.der_controls[control.control_id]
        self._supersede()
        return result21.ClearDERControl(status="Accepted" if doomed else "NotFound")


def _refused(why: str) -> result21.SetDERControl:
    return result21.SetDERControl(status="Rejected", status_info={
        "reason_code": "InvalidValue", "additional_info": why})


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Linear between the points, flat beyond them."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y1 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _approach(value: float, target: float, response_time_s: float, elapsed_s: float) -> float:
    """A first-order step towards the target that covers 90 % of the way in the response
    time (0: at once)."""
    if response_time_s <= 0:
        return target
    moved = value + (target - value) * (1 - math.exp(-elapsed_s * math.log(10) /
                                                     response_time_s))
    return target if abs(moved - target) < 1e-3 else moved
