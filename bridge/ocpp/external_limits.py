"""Limits another party puts on a station, as the station reports them (OCPP 2.0.1 and 2.1
NotifyChargingLimit and ClearedChargingLimit); pure: wire dicts in, domain out.

A building's energy manager (``EMS``), the grid operator (``SO``), the station's owner
(``CSO``) or anyone else may limit a station outside its central system; OCPP 2.1 names such
a profile ``ChargingStationExternalConstraints`` (only the station sets those). The station
applies it whatever drbridge sends, the lower of both holding, and tells the central system
with NotifyChargingLimit: who set it, on which EVSE (0 or none: the whole station), whether
it is grid critical, and its schedule where it gives one. ClearedChargingLimit ends it.

Read leniently: a period without a limit (2.1 allows one that only sets a setpoint or a
mode) limits nothing; per-phase limits (2.1 ``limit_L2``, ``limit_L3``) count by the lowest,
as a ceiling must; a schedule without a start counts from when the notice arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.ocpp.wire import parse_time

WHOLE_STATION = 0


@dataclass(frozen=True)
class ExternalPeriod:
    start: datetime
    limit: float | None  # in the schedule's unit (A: per phase); None: this period sets none
    number_phases: int | None = None


@dataclass(frozen=True)
class ExternalSchedule:
    unit: str  # "A" or "W"
    periods: tuple[ExternalPeriod, ...]  # in order of their start
    end: datetime | None = None  # from its duration; None: open-ended

    def period_at(self, at: datetime) -> ExternalPeriod | None:
        """The period in force at ``at`` (None: before the first, or after the end)."""
        if self.end is not None and at >= self.end:
            return None
        current = None
        for period in self.periods:
            if period.start > at:
                break
            current = period
        return current

    def watts_at(self, at: datetime, voltage_v: float, phases: int) -> float | None:
        """The limit at ``at`` in watts (None: none then): amps on the phases the period
        names (else the station's), at the station's nominal voltage."""
        period = self.period_at(at)
        if period is None or period.limit is None:
            return None
        if self.unit == "W":
            return period.limit
        return period.limit * voltage_v * (period.number_phases or phases)


@dataclass(frozen=True)
class ExternalLimit:
    """One party's limit on a station (or one of its EVSEs), or its end (``cleared``)."""

    source: str  # chargingLimitSource: EMS, SO, CSO, Other (2.1: any name of 20 characters)
    evse_id: int  # 0: the whole station
    received_at: datetime
    grid_critical: bool | None = None  # None: not said
    schedules: tuple[ExternalSchedule, ...] = ()  # none: the station gave no schedule
    cleared: bool = False

    def key(self) -> tuple[str, int]:
        """A new notice from the same source for the same EVSE replaces the one before."""
        return self.source, self.evse_id

    def watts_at(self, at: datetime, voltage_v: float, phases: int) -> float | None:
        """The lowest of its schedules' limits at ``at``, in watts (None: none then)."""
        limits = [w for s in self.schedules if (w := s.watts_at(at, voltage_v, phases))
                  is not None]
        return min(limits) if limits and not self.cleared else None

    def describe(self) -> str:
        """For the reason chain and the dashboard: ``EMS limit on EVSE 1 (grid critical)``."""
        where = "the station" if self.evse_id == WHOLE_STATION else f"EVSE {self.evse_id}"
        text = f"{self.source} limit on {where}"
        if self.cleared:
            return f"{text} cleared"
        if self.grid_critical:
            text += " (grid critical)"
        return text


def read_notify_charging_limit(payload: Mapping[str, Any],
                               received_at: datetime) -> ExternalLimit:
    """NotifyChargingLimitRequest (validated against its version's schema) -> the limit."""
    charging_limit = payload.get("chargingLimit")
    charging_limit = charging_limit if isinstance(charging_limit, Mapping) else {}
    critical = charging_limit.get("isGridCritical")
    schedules = tuple(schedule for raw in payload.get("chargingSchedule") or []
                      if (schedule := _schedule(raw, received_at)) is not None)
    return ExternalLimit(str(charging_limit.get("chargingLimitSource", "Other")),
                         _evse(payload), received_at,
                         critical if isinstance(critical, bool) else None, schedules)


def read_cleared_charging_limit(payload: Mapping[str, Any],
                                received_at: datetime) -> ExternalLimit:
    """ClearedChargingLimitRequest -> the end of that source's limit on that EVSE."""
    return ExternalLimit(str(payload.get("chargingLimitSource", "Other")), _evse(payload),
                         received_at, cleared=True)


def _evse(payload: Mapping[str, Any]) -> int:
    evse = payload.get("evseId")
    return evse if isinstance(evse, int) and not isinstance(evse, bool) else WHOLE_STATION


def _schedule(raw: Any, received_at: datetime) -> ExternalSchedule | None:
    if not isinstance(raw, Mapping):
        return None
    start = parse_time(raw["startSchedule"]) if "startSchedule" in raw else None
    start = start or received_at
    periods = []
    for period in raw.get("chargingSchedulePeriod") or []:
        if not isinstance(period, Mapping) or not isinstance(period.get("startPeriod"), int):
            continue
        limits = [float(period[key]) for key in ("limit", "limit_L2", "limit_L3")
                  if isinstance(period.get(key), int | float)
                  and not isinstance(period.get(key), bool)]
        phases = period.get("numberPhases")
        periods.append(ExternalPeriod(start + timedelta(seconds=period["startPeriod"]),
                                      min(limits) if limits else None,
                                      phases if isinstance(phases, int) else None))
    if not periods:
        return None
    duration = raw.get("duration")
    end = start + timedelta(seconds=duration) if isinstance(duration, int) else None
    unit = str(raw.get("chargingRateUnit", "A")).strip().upper()
    return ExternalSchedule(unit, tuple(sorted(periods, key=lambda p: p.start)), end)
