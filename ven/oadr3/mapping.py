"""OpenADR 3 events as the :class:`~policies.events.DrEvent` the 2.0b VEN produces. Pure.

An OpenADR 3 event is a list of intervals, each with payloads (``{type, values}``); a
payload type plays the part of a 2.0b signal. The types drbridge acts on become signals
the policy engine already reads, where the meaning is the same:

==============================  ===============================================
OpenADR 3 payload type          DrEvent signal (name / type)
==============================  ===============================================
SIMPLE                          SIMPLE / level
PRICE                           ELECTRICITY_PRICE / price (currency per kWh)
DISPATCH_SETPOINT               LOAD_DISPATCH / setpoint (power)
DISPATCH_SETPOINT_RELATIVE      LOAD_DISPATCH / delta (power shed)
IMPORT_CAPACITY_LIMIT           IMPORT_CAPACITY_LIMIT / limit (power)
EXPORT_CAPACITY_LIMIT           EXPORT_CAPACITY_LIMIT / limit (power)
==============================  ===============================================

Other payload types are listed in ``ignored_signals`` and logged by the VEN. Times follow
the User Guide (7.3, 7.4): an interval without a start follows the one before it; an
interval's own ``intervalPeriod`` overrides the event's; ``0001-01-01`` means now (the
moment the VEN first saw the event, so that polling again does not move it); ``P9999Y`` is
open-ended (held for :data:`OPEN_SPAN`); a payload with several values is that many equal
sub-intervals (3.1.0's compact form).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.events import DrEvent, EventSignal, EventStatus, InvalidEvent, SignalInterval
from ven.oadr3.wire import (
    BEGINNING,
    FOREVER,
    Event,
    PayloadDescriptor,
    Program,
    Target,
    ValuesMap,
)
from ven.shared import Targeting

# An open-ended interval ('P9999Y') lasts this long from its start: far enough to be for
# ever in any plan, near enough that a station schedule's duration in seconds fits 32 bits.
OPEN_SPAN = timedelta(days=3650)

# payload type -> (signal name, signal type, what its values are)
SIGNALS: dict[str, tuple[str, str, str]] = {
    "SIMPLE": ("SIMPLE", "level", "level"),
    "PRICE": ("ELECTRICITY_PRICE", "price", "price"),
    "DISPATCH_SETPOINT": ("LOAD_DISPATCH", "setpoint", "power"),
    "DISPATCH_SETPOINT_RELATIVE": ("LOAD_DISPATCH", "delta", "power"),
    "IMPORT_CAPACITY_LIMIT": ("IMPORT_CAPACITY_LIMIT", "limit", "power"),
    "EXPORT_CAPACITY_LIMIT": ("EXPORT_CAPACITY_LIMIT", "limit", "power"),
}
# OpenADR 3 power units (Definition, Unit Enumerations: KW) -> the units policies read
POWER_UNITS = {"KW": "kW", "W": "W", "MW": "MW"}
# energy units a price may be per -> kWh in one of them
PRICE_PER = {"KWH": 1.0, "MWH": 1000.0, "WH": 0.001}
TARGET_KINDS_3_0 = ("VEN_NAME", "RESOURCE_NAME", "GROUP")


@dataclass(frozen=True)
class ResolvedInterval:
    """One event interval at absolute times."""

    id: int
    start: datetime
    end: datetime
    payloads: tuple[ValuesMap, ...]


@dataclass(frozen=True)
class SiteNames:
    """Who this VEN is on the VTN, for targeting.

    ``site_targets`` and ``group_targets`` are the targets the utility granted to the VEN
    object and to its resources (OpenADR 3.1.0 object privacy); the names themselves count
    too, for VTNs that target by name.
    """

    ven_name: str
    site_resource: str
    group_ids: frozenset[str] = frozenset()
    resource_ids: frozenset[str] = frozenset()  # configured resources (not created on the VTN)
    site_targets: frozenset[str] = frozenset()
    group_targets: Mapping[str, frozenset[str]] | None = None

    @property
    def whole_site(self) -> frozenset[str]:
        return frozenset({self.ven_name, self.site_resource}) | self.site_targets

    def groups_named(self, names: set[str]) -> tuple[str, ...]:
        granted = self.group_targets or {}
        return tuple(sorted(g for g in self.group_ids
                            if g in names or granted.get(g, frozenset()) & names))


def match_targets(targets: list[Target] | None, names: SiteNames) -> Targeting | None:
    """Which part of the site an event's targets name; None when none of it is ours.

    No targets: the whole VEN. 3.1.0 string targets are matched against the VEN's and its
    resources' names and granted targets. Of 3.0.1 typed targets, VEN_NAME, RESOURCE_NAME
    and GROUP are judged; other kinds (SERVICE_AREA, POWER_SERVICE_LOCATION, ...) the VEN
    cannot judge and leaves to the VTN, as the 2.0b VEN does.
    """
    strings = {t for t in targets or () if isinstance(t, str)}
    typed: dict[str, set[str]] = {}
    for target in targets or ():
        if isinstance(target, ValuesMap) and target.type.upper() in TARGET_KINDS_3_0:
            typed.setdefault(target.type.upper(), set()).update(
                str(v) for v in target.values if isinstance(v, str | int)
                and not isinstance(v, bool))
    if not strings and not any(typed.values()):
        return Targeting(whole_site=True)
    named = strings | typed.get("RESOURCE_NAME", set()) | typed.get("GROUP", set())
    if strings & names.whole_site or names.ven_name in typed.get("VEN_NAME", set()) \
            or names.site_resource in typed.get("RESOURCE_NAME", set()):
        return Targeting(whole_site=True)
    groups = names.groups_named(named)
    resources = tuple(sorted(named & names.resource_ids))
    if groups or resources:
        return Targeting(whole_site=False, resources=resources, groups=groups)
    return None


def _end(start: datetime, duration: timedelta, where: str) -> datetime:
    try:
        return start + (OPEN_SPAN if duration >= FOREVER else duration)
    except OverflowError:
        raise InvalidEvent(f"{where}: {start} plus {duration} is beyond the calendar") from None


def resolve_intervals(event: Event, anchor: datetime) -> list[ResolvedInterval]:
    """Every interval of the event at absolute times (``anchor``: what 'now' means for it)."""
    default = event.interval_period
    resolved: list[ResolvedInterval] = []
    cursor: datetime | None = None
    for index, interval in enumerate(event.intervals or ()):
        where = f"event {event.id}.intervals[{index}]"
        own = interval.interval_period
        duration = own.duration if own is not None and own.duration is not None else \
            default.duration if default is not None else None
        if duration is None:
            raise InvalidEvent(f"{where}: no duration (neither the interval's intervalPeriod "
                               "nor the event's gives one)")
        start = own.start if own is not None else None
        if start is None or start == BEGINNING:
            if cursor is not None:
                start = cursor  # follows the interval before it
            else:
                base = default.start if default is not None else None
                start = anchor if base is None or base == BEGINNING else base
        end = _end(start, duration, where)
        resolved.append(ResolvedInterval(interval.id, start, end, tuple(interval.payloads)))
        cursor = end
    if event.duration is not None and timedelta(0) < event.duration < FOREVER and resolved:
        # event.duration shortens the event (looping beyond the intervals is not done)
        limit = resolved[0].start + event.duration
        resolved = [ResolvedInterval(r.id, r.start, min(r.end, limit), r.payloads)
                    for r in resolved if r.start < limit]
    return resolved


def _descriptor(event: Event, program: Program | None, payload_type: str
                ) -> PayloadDescriptor | None:
    for descriptors in (event.payload_descriptors, program.payload_descriptors
                        if program is not None else None):
        for descriptor in descriptors or ():
            if descriptor.payload_type.upper() == payload_type and \
                    (descriptor.object_type or "EVENT_PAYLOAD_DESCRIPTOR") \
                    == "EVENT_PAYLOAD_DESCRIPTOR":
                return descriptor
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass
class _Series:
    intervals: list[SignalInterval]
    problem: str | None = None


def _collect(resolved: list[ResolvedInterval], ignored: list[str]) -> dict[str, _Series]:
    """Each known payload type's values over time; a payload of n values is n sub-intervals."""
    series: dict[str, _Series] = {}
    for interval in resolved:
        for payload in interval.payloads:
            kind = payload.type.upper()
            if kind not in SIGNALS:
                why = f"{payload.type}: not a payload type drbridge acts on"
                if why not in ignored:
                    ignored.append(why)
                continue
            entry = series.setdefault(kind, _Series([]))
            if entry.problem is not None:
                continue
            numbers = [_number(v) for v in payload.values]
            if not numbers or None in numbers:
                bad = next((v for v in payload.values if _number(v) is None), None)
                entry.problem = (f"{kind}: interval {interval.id} holds "
                                 f"{'no value' if not numbers else repr(bad)[:40]}, not a "
                                 "finite number")
                continue
            span = interval.end - interval.start
            if len(numbers) > 1 and span >= OPEN_SPAN:
                entry.problem = f"{kind}: interval {interval.id} is open-ended but has " \
                                f"{len(numbers)} values"
                continue
            step = span / len(numbers)
            for k, number in enumerate(numbers):  # 3.1.0 compact form: equal sub-intervals
                entry.intervals.append(SignalInterval(
                    start=interval.start + k * step, duration=step, value=number,
                    uid=str(interval.id)))
    return series


def _signal(kind: str, series: _Series, descriptor: PayloadDescriptor | None
            ) -> tuple[EventSignal | None, str | None]:
    name, signal_type, nature = SIGNALS[kind]
    if series.problem is not None:
        return None, series.problem
    intervals = sorted(series.intervals, key=lambda i: i.start)
    units = (descriptor.units or "").strip().upper() if descriptor is not None else ""
    unit: str | None = None
    item: str | None = None
    if nature == "level":
        if any(i.value not in (0, 1, 2, 3) for i in intervals):
            return None, f"{kind}: levels must be 0, 1, 2 or 3"
    elif nature == "price":
        per = PRICE_PER.get(units or "KWH")
        if per is None:
            return None, f"{kind} per {units}: not a price of electricity per kWh"
        intervals = [i.model_copy(update={"value": i.value / per}) for i in intervals]
        unit = descriptor.currency if descriptor is not None else None
        item = "currencyPerKWh"
    else:
        if units and units not in POWER_UNITS:
            return None, f"{kind} in {units}: not a unit of power (KW, W, MW)"
        unit = POWER_UNITS.get(units) if units else None
        item = "powerReal"
        if kind != "DISPATCH_SETPOINT_RELATIVE" and any(i.value < 0 for i in intervals):
            return None, f"{kind}: a negative power makes no sense here"
    return EventSignal(name=name, type=signal_type, signal_id=kind, intervals=tuple(intervals),
                       unit=unit, item=item), None


def _targets(targets: list[Target] | None) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for target in targets or ():
        if isinstance(target, str):
            found.setdefault("targets", []).append(target)
        else:
            found.setdefault(target.type, []).extend(
                str(v) for v in target.values if isinstance(v, str | int)
                and not isinstance(v, bool))
    return {kind: tuple(values) for kind, values in found.items()}


def _randomize(event: Event) -> timedelta | None:
    periods = [event.interval_period]
    if event.intervals:
        periods.append(event.intervals[0].interval_period)
    for period in periods:
        if period is not None and period.randomize_start:
            if period.randomize_start > timedelta(days=1):
                raise InvalidEvent(f"event {event.id}: randomizeStart "
                                   f"{period.randomize_start} is longer than a day")
            return period.randomize_start
    return None


def map_event(event: Event, program: Program | None, anchor: datetime,
              now: datetime) -> DrEvent:
    """The DrEvent for an OpenADR 3 event, or :class:`InvalidEvent`.

    ``anchor`` stands for 'now' in the event's times (see the module). Modification
    number 0, the whole site: the VEN sets both. An event without intervals (report only)
    is refused here; the VEN does not hand those on.
    """
    resolved = resolve_intervals(event, anchor)
    if not resolved:
        raise InvalidEvent(f"event {event.id}: no intervals")
    ignored: list[str] = []
    signals: list[EventSignal] = []
    for kind, series in _collect(resolved, ignored).items():
        signal, why = _signal(kind, series, _descriptor(event, program, kind))
        if signal is not None:
            signals.append(signal)
        elif why is not None:
            ignored.append(why)
    start = min(r.start for r in resolved)
    end = max(r.end for r in resolved)
    mapped = DrEvent(
        event_id=event.id, modification_number=0, status=EventStatus.NONE, start=start,
        duration=end - start, signals=tuple(signals), ignored_signals=tuple(ignored),
        market_context=program.program_name if program is not None else event.program_id,
        priority=event.priority or 0, response_required=False, targets=_targets(event.targets),
        start_after=_randomize(event),
    )
    return mapped.model_copy(update={"status": mapped.status_at(now)})
