"""The stations' latest voltages, for the volt-watt rule, the VTN's reports and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.ocpp.voltage_observation import VoltageObservation, merge, meter_value_source
from bridge.telemetry import Reading
from policies.fleet import Plan
from policies.model import VoltageRule
from policies.voltwatt import (
    SITE_KEY,
    VoltageReading,
    absorb_share,
    curve_share,
    site_mean,
)

PhaseVoltage = tuple[str, float, float]  # (L1..L3, minimum V, mean V)


@dataclass(frozen=True)
class SiteVoltage:
    """Per phase over the stations' fresh readings."""

    at: datetime
    phases: tuple[PhaseVoltage, ...]

    def to_json(self) -> dict[str, dict[str, float]]:
        return {name: {"min_v": round(low, 1), "mean_v": round(mean, 1)}
                for name, low, mean in self.phases}


class GridMonitor:
    """Keeps each station's newest voltage reading (all its connectors' meters share it)."""

    def __init__(self, nominal_v: float, stale_after_s: float) -> None:
        self.nominal_v = nominal_v
        self.stale_after = timedelta(seconds=stale_after_s)
        self.latest: dict[str, VoltageReading] = {}

    def observe(self, station_id: str, reading: Reading, received_at: datetime) -> bool:
        """Keep a reading; True when it is newer than the one kept.

        A reading counts from when it was taken, or from when it arrived if the station's
        clock says later: a clock running ahead must not keep a reading fresh (and an
        over-voltage floor up) after the station has fallen silent.
        """
        if not reading.has_voltage:
            return False
        at = min(reading.at, received_at)
        kept = self.latest.get(station_id)
        if kept is not None and kept.at > at:
            return False
        source = meter_value_source(at)
        self.latest[station_id] = VoltageReading(
            at, reading.voltages_v, tuple(source if v is not None else None
                                          for v in reading.voltages_v))
        return True

    def observe_event(self, observation: VoltageObservation, lines: tuple[int, ...]) -> bool:
        """Fold a voltage the station reported between its samples (a monitor's event) into
        its reading (``lines``: those it uses, for a voltage that names none); True when the
        reading changed. A notice without a voltage, or older than the reading, changes
        nothing."""
        kept = self.latest.get(observation.station_id)
        merged = merge(kept, observation, lines, self.stale_after)
        if merged is None or merged is kept:
            return False
        self.latest[observation.station_id] = merged
        return True

    def readings(self, stations: Iterable[str]) -> dict[str, VoltageReading]:
        """The readings of these stations (those connected now)."""
        return {sid: self.latest[sid] for sid in stations if sid in self.latest}

    def site(self, now: datetime, stations: Iterable[str] | None = None) -> SiteVoltage:
        readings = self.latest if stations is None else self.readings(stations)
        return SiteVoltage(now, tuple(site_mean(readings, now, self.stale_after)))

    def worth_a_plan(self, rule: VoltageRule | None, station_id: str,
                     plan: Plan | None) -> bool:
        """Whether a new reading of this station may change the volt-watt restriction.

        With nothing restricted, no over-voltage floor and the reading inside the curve's
        full-power band and below the over-voltage rule, the plan stays as it is; otherwise
        the next plan looks at it (tighten or ease).
        """
        if rule is None or station_id not in self.latest:
            return False
        state = plan.state if plan is not None else None
        holds = state.voltage if state is not None else {}
        key = SITE_KEY if rule.scope == "site" else station_id
        hold = holds.get(key)
        if (hold is not None and hold.share < 1.0) or (state is not None and state.absorb):
            return True
        reading = self.latest[station_id]
        pus = [v / self.nominal_v for v in reading.phases_v if v is not None]
        return any(curve_share(rule, pu, 0.0) < 1.0 or absorb_share(rule, pu) > 0
                   for pu in pus)

    def tightens(self, rule: VoltageRule, station_id: str, plan: Plan | None,
                 min_share: float) -> bool:
        """Whether the station's reading asks for less than the restriction in force (none:
        full power), on any phase: worth planning without delay."""
        reading = self.latest.get(station_id)
        if reading is None:
            return False
        state = plan.state if plan is not None else None
        key = SITE_KEY if rule.scope == "site" else station_id
        hold = state.voltage.get(key) if state is not None else None
        current = hold.share if hold is not None else 1.0
        return any(curve_share(rule, volts / self.nominal_v, min_share) < current - 1e-9
                   for volts in reading.phases_v if volts is not None and volts > 0)
