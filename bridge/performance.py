"""How a site performed in a DR event: baseline, measured load, shed, compliance (pure).

The baseline is the site's average load over the event's window on the N
previous comparable days (the same day type, weekday or weekend, unless
configured otherwise). With fewer than ``min_days`` such days on record it
falls back to the mean load over a window just before the event. Every result
carries the method used, in words, so a report can say how it was made.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bridge.ocpp.profiles import DECREASE_LEAD
from policies.fleet import Step, value_at

LoadRow = tuple[datetime, float, float]  # (at, measured load W, site limit W)
# A station may take a meter interval or two to follow a new limit; beyond this it is late.
FOLLOW_GRACE = timedelta(seconds=15)
LIMIT_TOLERANCE = 0.05  # meters and EVs are not exact: 5 % over a limit still complies
LIMIT_TOLERANCE_W = 100.0
# The pre-event window ends where the stations may already be lowering their draw for the
# event: a baseline must not include the event's own shed.
PRE_EVENT_GAP = DECREASE_LEAD


@dataclass(frozen=True)
class BaselineSettings:
    days: int = 10
    min_days: int = 3
    comparable: Literal["same_day_type", "all"] = "same_day_type"
    pre_event: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime
    baseline_w: float | None
    measured_w: float | None
    limit_w: float | None
    shed_w: float | None  # baseline - measured


@dataclass(frozen=True)
class Performance:
    event_id: str
    start: datetime
    end: datetime
    method: str
    intervals: tuple[Interval, ...]
    requested_shed_w: float | None  # mean over the intervals of baseline - limit, at least 0
    achieved_shed_w: float | None  # mean over the intervals of baseline - measured
    compliance_pct: float | None  # share of measured intervals at or under the limit
    stations_opted_out: tuple[str, ...] = ()
    stations_non_compliant: tuple[str, ...] = ()

    @property
    def baseline_w(self) -> float | None:
        return _mean(i.baseline_w for i in self.intervals)

    @property
    def measured_w(self) -> float | None:
        return _mean(i.measured_w for i in self.intervals)

    @property
    def delivered_pct(self) -> float | None:
        """Achieved shed as a share of the requested shed."""
        if self.requested_shed_w is None or self.achieved_shed_w is None \
                or self.requested_shed_w <= 0:
            return None
        return 100.0 * self.achieved_shed_w / self.requested_shed_w


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(present) if present else None


def is_weekend(at: datetime) -> bool:
    return at.weekday() >= 5


def comparable_days(start: datetime, settings: BaselineSettings) -> list[int]:
    """How many days back each comparable day lies, nearest first."""
    offsets: list[int] = []
    back = 0
    while len(offsets) < settings.days and back < settings.days * 7 + 7:
        back += 1
        day = start - timedelta(days=back)
        if settings.comparable == "all" or is_weekend(day) == is_weekend(start):
            offsets.append(back)
    return offsets


def baseline_reach(settings: BaselineSettings) -> timedelta:
    """How far before an event's start its baseline may read the site's load, whatever the
    day it starts on: the furthest comparable day, or the pre-event window."""
    monday = datetime(2024, 1, 1)  # any week: only the day types of the days before matter
    furthest = max(max(comparable_days(monday + timedelta(days=d), settings), default=0)
                   for d in range(7))
    return max(timedelta(days=furthest), settings.pre_event + PRE_EVENT_GAP)


def history_windows(start: datetime, end: datetime, settings: BaselineSettings
                    ) -> list[tuple[datetime, datetime]]:
    """The load the baseline may need: the event's window on each comparable day, and the
    window before the event."""
    windows = [(start - timedelta(days=d), end - timedelta(days=d))
               for d in comparable_days(start, settings)]
    windows.append(pre_event_window(start, settings))
    return windows


def pre_event_window(start: datetime, settings: BaselineSettings) -> tuple[datetime, datetime]:
    end = start - PRE_EVENT_GAP
    return end - settings.pre_event, end


def mean_load(rows: Sequence[LoadRow], start: datetime, end: datetime) -> float | None:
    return _mean(load for at, load, _ in rows if start <= at < end)


def mean_limit(rows: Sequence[LoadRow], start: datetime, end: datetime) -> float | None:
    return _mean(limit for at, _, limit in rows if start <= at < end)


def interval_starts(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    starts = []
    at = start
    while at < end:
        starts.append(at)
        at += step
    return starts


def baseline(rows: Sequence[LoadRow], start: datetime, end: datetime, step: timedelta,
             settings: BaselineSettings) -> tuple[list[float | None], str]:
    """The baseline of each interval of [start, end), and the method in words."""
    starts = interval_starts(start, end, step)
    days = [d for d in comparable_days(start, settings)
            if mean_load(rows, start - timedelta(days=d), end - timedelta(days=d)) is not None]
    kind = "days" if settings.comparable == "all" else \
        ("weekend days" if is_weekend(start) else "weekdays")
    if len(days) >= settings.min_days:
        values = [
            _mean(mean_load(rows, a - timedelta(days=d), min(a + step, end) - timedelta(days=d))
                  for d in days)
            for a in starts
        ]
        dates = ", ".join(f"{start - timedelta(days=d):%Y-%m-%d}" for d in days)
        return values, (f"average site load over the same time window on the {len(days)} "
                        f"previous {kind} with data ({dates})")
    before = mean_load(rows, *pre_event_window(start, settings))
    minutes = settings.pre_event.total_seconds() / 60
    gap = PRE_EVENT_GAP.total_seconds()
    why = (f"only {len(days)} previous {kind} with data, fewer than the {settings.min_days} "
           "required")
    if before is None:
        return [None] * len(starts), f"no baseline: {why}, and no load recorded before the event"
    return [before] * len(starts), (f"pre-event load: mean site load over the {minutes:g} min "
                                    f"ending {gap:g} s before the start, when limits may "
                                    f"already fall ({why})")


def evaluate(event_id: str, start: datetime, end: datetime, rows: Sequence[LoadRow],
             step: timedelta, settings: BaselineSettings, cap_w: float | None = None,
             stations_opted_out: Iterable[str] = (),
             stations_non_compliant: Iterable[str] = ()) -> Performance:
    """An event's performance from the site load rows (history, before and during it).

    The limit of each interval is the one recorded with the load; ``cap_w`` stands in
    where none was recorded (an event still to come).
    """
    baselines, method = baseline(rows, start, end, step, settings)
    intervals = []
    for a, base in zip(interval_starts(start, end, step), baselines, strict=True):
        b = min(a + step, end)
        measured = mean_load(rows, a, b)
        limit = mean_limit(rows, a, b)
        if limit is None:
            limit = cap_w
        shed = base - measured if base is not None and measured is not None else None
        intervals.append(Interval(a, b, base, measured, limit, shed))
    requested = _mean(max(i.baseline_w - i.limit_w, 0.0) for i in intervals
                      if i.baseline_w is not None and i.limit_w is not None)
    judged = [i for i in intervals if i.measured_w is not None and i.limit_w is not None]
    compliant = [i for i in judged if i.measured_w <= _allowed(i.limit_w)]  # type: ignore[operator,arg-type]
    return Performance(
        event_id=event_id, start=start, end=end, method=method, intervals=tuple(intervals),
        requested_shed_w=requested,
        achieved_shed_w=_mean(i.shed_w for i in intervals),
        compliance_pct=100.0 * len(compliant) / len(judged) if judged else None,
        stations_opted_out=tuple(sorted(stations_opted_out)),
        stations_non_compliant=tuple(sorted(stations_non_compliant)),
    )


def _allowed(limit_w: float) -> float:
    return limit_w * (1 + LIMIT_TOLERANCE) + LIMIT_TOLERANCE_W


def non_compliant_stations(
    samples: Iterable[tuple[str, datetime, float | None]],
    accepted: Mapping[str, Sequence[tuple[datetime, tuple[Step, ...]]]],
    start: datetime, end: datetime,
    tolerance_w: float = LIMIT_TOLERANCE_W, grace: timedelta = FOLLOW_GRACE,
) -> list[str]:
    """Stations whose measured power stayed above the limit they had accepted.

    ``samples`` are (station id, time, power W); ``accepted`` the schedules each
    station accepted, with when, oldest first. A sample is judged once the limit in
    force has held for ``grace``, and is over when above the limit by more than
    ``tolerance_w``; a station is non-compliant when more than a tenth of its judged
    samples, and at least two, are over.
    """
    judged: dict[str, int] = {}
    over: dict[str, int] = {}
    for station_id, at, power in samples:
        if power is None or not start <= at < end:
            continue
        schedule = None
        for acked_at, steps in accepted.get(station_id, ()):
            if acked_at <= at:
                schedule = (acked_at, steps)
        if schedule is None:
            continue
        step = value_at(schedule[1], at)
        if step is None or at - max(step.start, schedule[0]) < grace:
            continue
        judged[station_id] = judged.get(station_id, 0) + 1
        if power > step.limit_w + tolerance_w:
            over[station_id] = over.get(station_id, 0) + 1
    return sorted(sid for sid, n in over.items() if n >= 2 and n > 0.1 * judged[sid])


def exempt_during(log: Iterable[tuple[str, str | None, datetime]], start: datetime,
                  end: datetime) -> list[str]:
    """Stations exempt from DR at any moment of [start, end), from the log of hold changes
    (station id, mode or None when lifted, when), oldest first."""
    at_start: dict[str, str | None] = {}
    exempt: set[str] = set()
    for station_id, mode, at in log:
        if at < start:
            at_start[station_id] = mode
        elif at < end and mode == "exempt":
            exempt.add(station_id)
    exempt |= {sid for sid, mode in at_start.items() if mode == "exempt"}
    return sorted(exempt)
