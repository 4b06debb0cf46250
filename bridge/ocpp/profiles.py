"""A station's limit schedule -> an OCPP 1.6 charging profile (pure).

The one place that knows the 1.6 ChargingProfile layout. Limits are always
rounded *down* (0.1 A or 1 W) so that what the station applies never exceeds
what the plan allowed; a decrease starts at least a second before its planned
time and an increase on the second after, for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.ocpp.capabilities import Capabilities
from policies.fleet import StationInfo, Step, value_at

# Fixed ids per purpose, so a new profile replaces ours and clearing touches only ours.
STATION_MAX_PROFILE_ID = 9001
STATION_MAX_STACK_LEVEL = 0
# A start slightly in the past keeps a station with a lagging clock from ignoring the profile.
START_LEAD = timedelta(seconds=5)


@dataclass(frozen=True)
class BuiltProfile:
    connector_id: int
    payload: dict  # cs_charging_profiles, camelCase as on the wire
    unit: str
    applied: tuple[Step, ...]  # what the station will apply, in W, at absolute times


def _floor(value: float, step: float) -> float:
    return math.floor(value / step + 1e-9) * step


def to_unit(watts: float, unit: str, station: StationInfo, min_current_a: float) -> float:
    """Watts -> the profile's unit, rounded down; below the minimum current means pause."""
    amps = watts / (station.voltage_v * station.phases)
    if amps < min_current_a - 1e-9:
        return 0.0
    if unit == "A":
        return round(_floor(amps, 0.1), 1)
    return float(math.floor(watts + 1e-9))


def from_unit(limit: float, unit: str, station: StationInfo) -> float:
    return limit * station.voltage_v * station.phases if unit == "A" else limit


def _fit_periods(periods: list[tuple[int, float]], max_periods: int) -> list[tuple[int, float]]:
    """Merge neighbours (keeping the lower limit) until the station can hold them all."""
    periods = list(periods)
    while len(periods) > max_periods:
        gaps = [abs(periods[i][1] - periods[i + 1][1]) for i in range(len(periods) - 1)]
        i = gaps.index(min(gaps))
        periods[i : i + 2] = [(periods[i][0], min(periods[i][1], periods[i + 1][1]))]
    return periods


def station_max_profile(
    steps: Sequence[Step],
    station: StationInfo,
    caps: Capabilities,
    now: datetime,
    min_current_a: float,
) -> BuiltProfile:
    """A ChargePointMaxProfile on connector 0 that holds the whole schedule at absolute times."""
    unit = caps.preferred_unit
    start = now.astimezone(UTC).replace(microsecond=0) - START_LEAD
    # Steps already superseded at the schedule's start are of no use to the station.
    current = value_at(steps, start)
    steps = [s for s in steps if s.start > start or s is current] or list(steps[:1])
    periods: list[tuple[int, float]] = []
    previous: float | None = None
    for step in steps:
        limit = to_unit(step.limit_w, unit, station, min_current_a)
        offset = (step.start - start).total_seconds()
        if previous is None:
            second = 0
        elif limit < previous:
            second = math.ceil(offset) - 1  # at least a second early, even on whole seconds
        else:
            second = math.ceil(offset)
        second = max(second, 0)
        if periods and second <= periods[-1][0]:
            # two steps in one second: the later wins, but never above the earlier
            periods[-1] = (periods[-1][0], min(periods[-1][1], limit))
        elif previous is None or limit != previous:
            periods.append((second, limit))
        previous = periods[-1][1]
    periods = _fit_periods(periods, caps.max_periods)
    payload = {
        "chargingProfileId": STATION_MAX_PROFILE_ID,
        "stackLevel": min(STATION_MAX_STACK_LEVEL, caps.max_stack_level),
        "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": start.isoformat().replace("+00:00", "Z"),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [
                {"startPeriod": second, "limit": limit, "numberPhases": station.phases}
                for second, limit in periods
            ],
        },
    }
    applied = tuple(
        Step(start + timedelta(seconds=second), from_unit(limit, unit, station),
             _reason_at(steps, start + timedelta(seconds=second)))
        for second, limit in periods
    )
    return BuiltProfile(connector_id=0, payload=payload, unit=unit, applied=applied)


def _reason_at(steps: Sequence[Step], at: datetime) -> str:
    step = value_at(steps, at) or (steps[0] if steps else None)
    return step.reason if step else ""


def same_schedule(a: Sequence[Step], b: Sequence[Step], now: datetime) -> bool:
    """Whether two applied schedules give the same limits from ``now`` on (within 1 W)."""
    times = {now} | {s.start for s in (*a, *b) if s.start > now}
    for at in times:
        x, y = value_at(a, at), value_at(b, at)
        if x is None or y is None or abs(x.limit_w - y.limit_w) > 1.0:
            return False
    return True


def is_raise(new: Sequence[Step], old: Sequence[Step] | None, now: datetime) -> bool:
    """Whether ``new`` allows more than ``old`` at any time from ``now`` on."""
    if old is None:
        return True
    times = {now} | {s.start for s in (*new, *old) if s.start > now}
    for at in times:
        x, y = value_at(new, at), value_at(old, at)
        if x is not None and (y is None or x.limit_w > y.limit_w + 1.0):
            return True
    return False
