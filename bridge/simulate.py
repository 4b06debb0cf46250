"""``drbridge simulate``: the policy engine over a simulated fleet through described events.

No network and no clock: every interval the plan is made as the bridge would make it
(previous state in, next state out), each simulated EV draws what its limit and its
own charger allow until its battery is full, and what it drew is fed back as the
measured power of the next interval.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bridge.config import Config
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, PlanState, Session, StationInfo, value_at
from policies.plan import Conditions, decide_opt, make_plan
from policies.validation import validate_yaml
from policies.voltwatt import VoltageReading, VoltHold

DEFAULT_START = datetime(2026, 1, 15, 16, 0, tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntervalSpec(_Strict):
    minutes: float = Field(gt=0)
    value: float


class SignalSpec(_Strict):
    name: str = "SIMPLE"
    type: str = "level"
    unit: str | None = None
    scale: str | None = None
    intervals: tuple[IntervalSpec, ...] = Field(min_length=1)


class EventSpec(_Strict):
    id: str = Field(min_length=1)
    start_min: float = Field(ge=0)  # minutes after the simulation starts
    recovery_min: float | None = Field(default=None, gt=0)
    signals: tuple[SignalSpec, ...] = Field(min_length=1)


class FleetSpec(_Strict):
    stations: int = Field(default=10, ge=1, le=2000)
    ev_kw: tuple[float, ...] = Field(default=(7.4, 11.0, 22.0), min_length=1)  # EVs' own limits
    need_kwh: tuple[float, float] = (10.0, 40.0)  # energy each EV wants, drawn in this range
    arrive_within_min: float = Field(default=30, ge=0)  # arrivals spread over this
    stay_h: tuple[float, float] = (4.0, 10.0)  # each EV leaves after this long, full or not
    needs_known: bool = True  # the policy is told each EV's need and departure


class SourceChange(_Strict):
    at_min: float = Field(ge=0)  # minutes after the simulation starts
    source_v: float = Field(gt=0)


class FeederSpec(_Strict):
    """A weak feeder: the stations' voltage is the source's less their current's drop."""

    source_v: float = Field(default=230, gt=0)  # line-to-neutral at the transformer
    impedance_ohm: float = Field(default=0.1, ge=0, le=10)  # per line
    # the source voltage from a moment on (other load on the feeder, a tap change)
    changes: tuple[SourceChange, ...] = ()

    def source_at(self, minutes: float) -> float:
        volts = self.source_v
        for change in sorted(self.changes, key=lambda c: c.at_min):
            if change.at_min <= minutes:
                volts = change.source_v
        return volts


class Scenario(_Strict):
    """An EVENT.yaml: what happens during a simulation."""

    start: datetime = DEFAULT_START
    duration_min: float = Field(default=180, gt=0, le=7 * 24 * 60)
    interval_s: float = Field(default=60, ge=1, le=3600)
    seed: int = 1
    fleet: FleetSpec = Field(default_factory=FleetSpec)
    events: tuple[EventSpec, ...] = ()
    feeder: FeederSpec | None = None  # the stations report its voltage (policy.voltage)

    def dr_events(self) -> list[DrEvent]:
        result = []
        for spec in self.events:
            start = self.start + timedelta(minutes=spec.start_min)
            signals = []
            for signal in spec.signals:
                at, intervals = start, []
                for item in signal.intervals:
                    length = timedelta(minutes=item.minutes)
                    intervals.append(SignalInterval(start=at, duration=length, value=item.value))
                    at += length
                signals.append(EventSignal(name=signal.name, type=signal.type, unit=signal.unit,
                                           scale=signal.scale, intervals=tuple(intervals)))
            duration = max(sum((i.duration for i in s.intervals), timedelta(0)) for s in signals)
            result.append(DrEvent(
                event_id=spec.id, modification_number=0, status=EventStatus.FAR, start=start,
                duration=duration, signals=tuple(signals),
                recovery=None if spec.recovery_min is None
                else timedelta(minutes=spec.recovery_min)))
        return result


def load_scenario(text: str, source: str) -> Scenario:
    return validate_yaml(text, source, Scenario)


@dataclass
class _Ev:
    station: StationInfo
    arrives: datetime
    max_w: float
    need_wh: float
    departs: datetime
    delivered_wh: float = 0.0

    def charging(self, at: datetime) -> bool:
        return self.arrives <= at < self.departs and self.delivered_wh < self.need_wh


@dataclass(frozen=True)
class Row:
    at: datetime
    site_limit_w: float
    allocated_w: float
    load_w: float
    charging: int
    paused: int
    reason: str
    voltage_v: float | None = None  # the feeder's lowest line voltage under this load
    free_voltage_v: float | None = None  # ...had every EV drawn what it could


def _stations(config: Config, count: int) -> list[StationInfo]:
    listed = [s.id for s in config.model.ocpp.stations]
    ids = listed[:count] if listed else []
    ids += [f"SIM-{i:02d}" for i in range(len(ids) + 1, count + 1)]
    return [config.station_info(sid) for sid in ids]


def simulate(config: Config, scenario: Scenario, fleet_size: int | None = None) -> list[Row]:
    """One row per interval: what the plan allowed and what the simulated fleet drew."""
    rng = random.Random(scenario.seed)
    spec = scenario.fleet
    evs = []
    for station in _stations(config, fleet_size or spec.stations):
        arrives = scenario.start + timedelta(minutes=rng.uniform(0, spec.arrive_within_min))
        evs.append(_Ev(station, arrives, min(rng.choice(spec.ev_kw) * 1000, station.max_w),
                       rng.uniform(*spec.need_kwh) * 1000,
                       departs=arrives + timedelta(hours=rng.uniform(*spec.stay_h))))
    site = config.site
    policy = config.policy
    events = scenario.dr_events()
    step = timedelta(seconds=scenario.interval_s)
    state: PlanState | None = None
    baselines: dict[str, float] = {}
    opted: dict[str, bool] = {}
    measured: dict[str, float] = {}
    rows: list[Row] = []
    feeder = scenario.feeder
    volts: tuple[float, float, float] | None = None
    at = scenario.start
    while at < scenario.start + timedelta(minutes=scenario.duration_min):
        load_before = sum(measured.values())
        for event in events:
            # the VTN announces each event ten minutes ahead (or at once)
            if event.event_id not in opted and at >= event.start - timedelta(minutes=10):
                baselines[event.event_id] = load_before
                opt, _ = decide_opt(event, policy, site, load_before)
                opted[event.event_id] = opt == "optIn"
        active = [e for e in events if opted.get(e.event_id) and _in_play(e, at)]
        sessions = tuple(
            Session(ev.station.station_id, 1, ev.arrives,
                    energy_needed_wh=ev.need_wh - ev.delivered_wh if spec.needs_known else None,
                    departure=ev.departs if spec.needs_known else None)
            for ev in evs if ev.charging(at))
        fleet = Fleet({ev.station.station_id: ev.station for ev in evs}, sessions,
                      measured_w=dict(measured))
        if feeder is not None:
            volts = _feeder_volts(feeder, fleet, measured,
                                  (at - scenario.start) / timedelta(minutes=1))
        readings = {ev.station.station_id: VoltageReading(at, volts) for ev in evs} \
            if volts is not None else {}
        plan = make_plan(active, policy, site, fleet, at, state,
                         Conditions(baselines_w=baselines, rng=random.Random(scenario.seed),
                                    voltages=readings))
        state = plan.state
        site_step = value_at(plan.site, at)
        allocated = 0.0
        measured = {}
        free: dict[str, float] = {}
        for ev in evs:
            step_now = value_at(plan.stations.get(ev.station.station_id, ()), at)
            limit = step_now.limit_w if step_now else 0.0
            allocated += limit
            if ev.charging(at):
                draw = min(limit, ev.max_w, (ev.need_wh - ev.delivered_wh) * 3600
                           / step.total_seconds())
                free[ev.station.station_id] = min(
                    ev.max_w, (ev.need_wh - ev.delivered_wh) * 3600 / step.total_seconds())
                ev.delivered_wh += draw * step.total_seconds() / 3600
                measured[ev.station.station_id] = draw
        rows.append(Row(
            at=at,
            site_limit_w=site_step.limit_w if site_step else site.capacity_w,
            allocated_w=allocated,
            load_w=sum(measured.values()),
            charging=sum(1 for w in measured.values() if w > 0),
            paused=len(plan.paused),
            reason=(site_step.reason if site_step else "site capacity")
            + _held_back(plan.state.voltage if plan.state else {}),
            voltage_v=None if feeder is None else min(_feeder_volts(
                feeder, fleet, measured, (at - scenario.start) / timedelta(minutes=1))),
            free_voltage_v=None if feeder is None else min(_feeder_volts(
                feeder, fleet, free, (at - scenario.start) / timedelta(minutes=1))),
        ))
        at += step
    return rows


def _held_back(holds: Mapping[str, VoltHold]) -> str:
    restricted = [hold for hold in holds.values() if hold.share < 1.0]
    if not restricted:
        return ""
    why = restricted[0].reason.split(" [")[0]
    return f"; voltage: {len(restricted)} station(s) held back ({why})"


def _feeder_volts(feeder: FeederSpec, fleet: Fleet, draws_w: dict[str, float],
                  minutes: float) -> tuple[float, float, float]:
    """The voltage on each line with the stations drawing ``draws_w``."""
    amps = [0.0, 0.0, 0.0]
    for station_id, watts in draws_w.items():
        for line, per_watt in enumerate(fleet.stations[station_id].amps_per_watt()):
            amps[line] += per_watt * watts
    source = feeder.source_at(minutes)
    drop = feeder.impedance_ohm
    return (source - drop * amps[0], source - drop * amps[1], source - drop * amps[2])


def _in_play(event: DrEvent, at: datetime) -> bool:
    end = event.end
    if end is None:
        return True
    return at < end + (event.recovery or timedelta(0))


def table(rows: Sequence[Row]) -> str:
    with_volts = any(r.voltage_v is not None for r in rows)
    lines = [f"{'time':>8}  {'limit kW':>8}  {'allocated':>9}  {'load kW':>8}  "
             f"{'charging':>8}  {'paused':>6}  " + ("volts  " if with_volts else "") + "reason"]
    for row in rows:
        volts = f"{row.voltage_v or 0:5.1f}  " if with_volts else ""
        lines.append(
            f"{row.at:%H:%M:%S}  {row.site_limit_w / 1000:8.1f}  {row.allocated_w / 1000:9.1f}  "
            f"{row.load_w / 1000:8.1f}  {row.charging:8d}  {row.paused:6d}  {volts}{row.reason}")
    return "\n".join(lines)


def voltage_marks(config: Config) -> dict[str, Any]:
    """The plot's nominal voltage and the volt-watt rule's thresholds, as plot() takes them."""
    rule = config.policy.voltage
    floors: list[tuple[float, str]] = []
    if rule is not None:
        for pu, value in sorted(rule.curve.items()):
            floors.append((pu, f"{pu:g} pu: {value if value == 'min' else f'{value:.0%}'}"))
        if rule.pause_below is not None:
            floors.append((rule.pause_below, f"{rule.pause_below:g} pu: pause"))
        if rule.pause_above is not None:
            floors.append((rule.pause_above, f"{rule.pause_above:g} pu: pause"))
        if rule.over_voltage is not None:
            floors.append((rule.over_voltage.start,
                           f"{rule.over_voltage.start:g} pu: prices give way"))
            floors.append((rule.over_voltage.full,
                           f"{rule.over_voltage.full:g} pu: prices hold nothing back"))
    return {"nominal_v": config.site.voltage_v, "floors": floors}


def _plot_voltage(axes: Any, rows: Sequence[Row], nominal_v: float,
                  floors: Sequence[tuple[float, str]]) -> None:
    times = [r.at for r in rows]
    axes.step(times, [(r.free_voltage_v or 0) / nominal_v for r in rows], where="post",
              label="without the rule (every EV at its own limit)", color="tab:gray",
              linestyle="--")
    axes.step(times, [(r.voltage_v or 0) / nominal_v for r in rows], where="post",
              label="lowest line voltage", color="tab:purple")
    for pu, label in floors:
        axes.axhline(pu, color="tab:gray", linestyle=":", linewidth=1)
        axes.annotate(label, (times[0], pu), textcoords="offset points", xytext=(2, 2),
                      fontsize=8, color="tab:gray")
    axes.set_ylabel("voltage (pu)")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)


def plot(rows: Sequence[Row], path: Path, title: str, nominal_v: float = 230.0,
         floors: Sequence[tuple[float, str]] = ()) -> None:
    """Load against limit over time (and the feeder's voltage, where simulated), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [r.at for r in rows]
    with_volts = any(r.voltage_v is not None for r in rows)
    if with_volts:
        fig, (top, volts, bottom) = plt.subplots(3, 1, figsize=(10, 8), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 2, 1]})
        _plot_voltage(volts, rows, nominal_v, floors)
    else:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    top.step(times, [r.site_limit_w / 1000 for r in rows], where="post", label="site limit",
             color="tab:red", linewidth=2)
    top.step(times, [r.allocated_w / 1000 for r in rows], where="post",
             label="allocated to stations", color="tab:orange", linestyle="--")
    top.step(times, [r.load_w / 1000 for r in rows], where="post", label="simulated load",
             color="tab:blue")
    top.set_ylabel("kW")
    top.set_title(title)
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.step(times, [r.charging for r in rows], where="post", label="charging",
                color="tab:green")
    bottom.step(times, [r.paused for r in rows], where="post", label="paused", color="tab:gray")
    bottom.set_ylabel("sessions")
    bottom.legend(loc="upper right")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
