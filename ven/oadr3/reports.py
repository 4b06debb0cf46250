"""The reports an OpenADR 3 event asks for: when each is due, and what it says. Pure.

An event asks for reports with ``reportDescriptors`` (User Guide 7.5); the program's
report payload descriptors may say the units. The VEN samples the site every few seconds
(:class:`Sample`) and answers, per descriptor:

- ``DEMAND``: power over each event interval (``readingType`` PEAK: the highest sample,
  otherwise the mean), in KW (default) or W;
- ``USAGE``: energy over each interval (mean power times its length), in KWH (default) or WH;
- ``READING``: the last sample in each interval: power (KW, W), the energy register (KWH,
  WH), or, with units VOLTS, the site's lowest and mean voltage per phase (resources
  ``<site>-L1-min``, ``<site>-L1-mean``, ...).

Each report covers the site's resource and, unless ``aggregate`` is set (then one resource
``AGGREGATED_REPORT``), each group's resource (power and energy only). Timing follows the
descriptor's ``startInterval``, ``numIntervals``, ``frequency`` and ``repeat`` for
historical reports: a report is due at the end of the last interval it covers. Forecasts
(``historical: false``) and other payload types are not offered: logged, not answered.
Intervals without samples are left out (no data is not zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ven.oadr3.mapping import ResolvedInterval
from ven.oadr3.wire import Program, ReportDescriptor

AGGREGATED = "AGGREGATED_REPORT"
PHASES = ("L1", "L2", "L3")
POWER_FACTOR = {"KW": 1e-3, "W": 1.0}  # from W
ENERGY_FACTOR = {"KWH": 1e-3, "WH": 1.0}  # from Wh


@dataclass(frozen=True)
class Sample:
    """What the site measured at one moment."""

    at: datetime
    site_w: float
    energy_wh: float
    groups_w: Mapping[str, float] = field(default_factory=dict)
    voltages: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # (min, mean)


@dataclass(frozen=True)
class Batch:
    """One report of one descriptor: the intervals it covers, due when the last one ends."""

    due: datetime
    members: tuple[int, ...]  # indices into the event's intervals

    def key(self, event_id: str, descriptor_index: int, intervals: Sequence[ResolvedInterval]
            ) -> str:
        return f"{event_id}/{descriptor_index}/{intervals[self.members[-1]].id}"


def batches(descriptor: ReportDescriptor, intervals: Sequence[ResolvedInterval]) -> list[Batch]:
    """When the reports a descriptor asks for are due, and what each covers (historical)."""
    count = len(intervals)
    if count == 0 or descriptor.historical is False:
        return []
    start = descriptor.start_interval
    first = start if start is not None and 0 <= start < count else count - 1
    span = descriptor.num_intervals if descriptor.num_intervals and \
        descriptor.num_intervals > 0 else first + 1
    step = descriptor.frequency if descriptor.frequency and descriptor.frequency > 0 else span
    repeat = descriptor.repeat if descriptor.repeat is not None else 1
    found: list[Batch] = []
    last = first
    while last < count and (repeat < 0 or len(found) < max(repeat, 1)):
        members = tuple(range(max(0, last - span + 1), last + 1))
        found.append(Batch(intervals[last].end, members))
        last += step
    return found


def _units(descriptor: ReportDescriptor, program: Program | None) -> str | None:
    if descriptor.units:
        return descriptor.units.strip().upper()
    for given in (program.payload_descriptors if program is not None else None) or ():
        if given.object_type == "REPORT_PAYLOAD_DESCRIPTOR" and \
                given.payload_type.upper() == descriptor.payload_type.upper() and given.units:
            return given.units.strip().upper()
    return None


@dataclass(frozen=True)
class Kind:
    """What a descriptor asks for, as the VEN can answer it."""

    payload_type: str  # DEMAND, USAGE, READING
    units: str
    reading_type: str
    measure: str  # power, energy, voltage


def understand(descriptor: ReportDescriptor, program: Program | None) -> Kind | str:
    """The report a descriptor asks for, or why the VEN does not offer it."""
    payload = descriptor.payload_type.upper()
    units = _units(descriptor, program)
    reading = (descriptor.reading_type or "").upper()
    if descriptor.historical is False or reading == "FORECAST":
        return f"{payload}: forecasts are not offered"
    if payload == "DEMAND" and (units or "KW") in POWER_FACTOR:
        return Kind(payload, units or "KW", reading or "MEAN", "power")
    if payload == "USAGE" and (units or "KWH") in ENERGY_FACTOR:
        return Kind(payload, units or "KWH", reading or "DIRECT_READ", "energy")
    if payload == "READING":
        units = units or "KW"
        measure = "power" if units in POWER_FACTOR else "energy_register" \
            if units in ENERGY_FACTOR else "voltage" if units == "VOLTS" else None
        if measure is not None:
            return Kind(payload, units, reading or "DIRECT_READ", measure)
    return f"{payload} in {units or 'default units'}: not a report drbridge offers"


def _within(samples: Iterable[Sample], start: datetime, end: datetime) -> list[Sample]:
    return [s for s in samples if start <= s.at < end]


def _value(kind: Kind, values: list[float], seconds: float) -> float | None:
    """One interval's payload from the samples' values (W, Wh or V)."""
    if not values:
        return None
    if kind.measure == "energy":  # mean power over the interval's length
        return round(sum(values) / len(values) * seconds / 3600 * ENERGY_FACTOR[kind.units], 6)
    if kind.measure == "energy_register":
        return round(values[-1] * ENERGY_FACTOR[kind.units], 6)
    if kind.measure == "voltage":
        return round(values[-1] if kind.payload_type == "READING" else
                     sum(values) / len(values), 3)
    if kind.payload_type == "READING":
        value = values[-1]
    elif kind.reading_type == "PEAK":
        value = max(values)
    else:
        value = sum(values) / len(values)
    return round(value * POWER_FACTOR[kind.units], 6)


def _series(kind: Kind, resource: str, site: str, groups: Iterable[str]
            ) -> list[tuple[str, Any]]:
    """(resource name, how to read a sample) for every resource the report covers."""
    if kind.measure == "voltage":
        return [(f"{site}-{phase}-{stat}", (phase, index)) for phase in PHASES
                for index, stat in enumerate(("min", "mean"))]
    reading = "energy" if kind.measure == "energy_register" else "site"
    return [(resource, reading)] + [(g, ("group", g)) for g in groups]


def _read(sample: Sample, how: Any) -> float | None:
    if how == "site":
        return sample.site_w
    if how == "energy":
        return sample.energy_wh
    if how[0] == "group":
        return sample.groups_w.get(how[1])
    values = sample.voltages.get(how[0])
    return None if values is None else values[how[1]]


def report_body(*, event_id: str, program_id: str, event_name: str | None, client_name: str,
                kind: Kind, aggregate: bool, site: str, groups: Iterable[str],
                intervals: Sequence[ResolvedInterval], batch: Batch,
                samples: Sequence[Sample], with_program_id: bool) -> dict[str, Any] | None:
    """The report (a POST /reports body), or None when no interval has data."""
    resource = AGGREGATED if aggregate else site
    resources = []
    for name, how in _series(kind, resource, site, () if aggregate else groups):
        rows = []
        for index in batch.members:
            interval = intervals[index]
            values = [v for s in _within(samples, interval.start, interval.end)
                      if (v := _read(s, how)) is not None]
            value = _value(kind, values, (interval.end - interval.start).total_seconds())
            if value is not None:
                rows.append({
                    "id": interval.id,
                    "intervalPeriod": {"start": _iso(interval.start),
                                       "duration": _iso_duration(interval.end - interval.start)},
                    "payloads": [{"type": kind.payload_type, "values": [value]}],
                })
        if rows:
            resources.append({"resourceName": name, "intervals": rows})
    if not resources:
        return None
    body: dict[str, Any] = {
        "eventID": event_id, "clientName": client_name,
        "reportName": f"{kind.payload_type} {event_name or event_id}"[:128],
        "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                                "payloadType": kind.payload_type,
                                "readingType": kind.reading_type, "units": kind.units}],
        "resources": resources,
    }
    if with_program_id:  # required by 3.0.1, gone from 3.1.0
        body = {"programID": program_id, **body}
    return body


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds == int(seconds):
        return f"PT{int(seconds)}S"
    return f"PT{seconds:.3f}S"
