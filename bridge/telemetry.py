"""Meter values -> power per connector -> measured site load (pure).

A sample that cannot be a reading of a charger's meter (not a number, NaN or infinite,
a negative import, beyond any charger) is ignored, and said so in :attr:`Reading.ignored`:
it never reaches the site load, the energy, the voltages or the store. Ignoring a
reading keeps the connector's last good one until it goes stale, which errs on the side
of the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

POWER = "Power.Active.Import"
ENERGY = "Energy.Active.Import.Register"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
FREQUENCY = "Frequency"
# The measurands the bridge asks stations to sample (grid support needs the per-phase ones).
GRID_MEASURANDS = (ENERGY, POWER, CURRENT, VOLTAGE, FREQUENCY)
_LINES = ("L1", "L2", "L3")

_UNIT_SCALE = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "V": 1.0,
               "kV": 1000.0}
# Beyond any charger's meter (in W, Wh, A, V, Hz): a megawatt charger draws 3.75 MW at
# 3,000 A and 1,250 V; a register of a terawatt-hour is decades of such charging.
PLAUSIBLE_MAX = {POWER: 10e6, ENERGY: 1e12, CURRENT: 10_000.0, VOLTAGE: 10_000.0,
                 FREQUENCY: 1_000.0}
# Why a sample was ignored (Reading.ignored, and the operator's metrics)
UNREADABLE, NOT_FINITE, NEGATIVE, OUT_OF_RANGE = "unreadable", "not_finite", "negative", \
    "out_of_range"


# The lines a reading names a current on, one instance of each (a station keeps the last).
NO_LINES: frozenset[int] = frozenset()
LINE_SETS: dict[tuple[bool, ...], frozenset[int]] = {
    (l1, l2, l3): frozenset(n for n, named in ((1, l1), (2, l2), (3, l3)) if named)
    for l1 in (False, True) for l2 in (False, True) for l3 in (False, True)}


class Reading(NamedTuple):
    """What one MeterValue element says about a connector. (A named tuple, not a frozen
    dataclass: one is made for each meter value a station sends, and a tuple is made in a
    third of the time.)"""

    at: datetime
    power_w: float | None  # measured, or derived from per-phase current
    energy_wh: float | None
    # per line L1, L2, L3 (None: not reported): line-to-neutral voltage, current drawn
    voltages_v: tuple[float | None, float | None, float | None] = (None, None, None)
    currents_a: tuple[float | None, float | None, float | None] = (None, None, None)
    frequency_hz: float | None = None
    # (measurand, why) of each sample left out (UNREADABLE, NOT_FINITE, NEGATIVE, OUT_OF_RANGE)
    ignored: tuple[tuple[str, str], ...] = ()
    # The lines (1..3 for L1..L3) it named a Current.Import for: a three-phase meter names
    # all three (an idle line at 0 A), a single-phase one only its own. Empty when it
    # reported no current, or current without naming the phase.
    current_lines: frozenset[int] = frozenset()

    @property
    def has_voltage(self) -> bool:
        voltages = self.voltages_v  # (count runs in C: read for every reading)
        return voltages.count(None) != len(voltages)


def _line(phase: str | None) -> int | None:
    """L1..L3 (as 0..2) of a phase name: ``L2``, ``L2-N``; line-to-line ones are skipped."""
    if not phase:
        return 0  # a single-phase meter names no phase
    name = phase.upper()
    if name in _LINES:
        return _LINES.index(name)
    if name.endswith("-N") and name[:-2] in _LINES:
        return _LINES.index(name[:-2])
    return None


# the phase names meters use, to their line (None: not a line's; others go through _line)
_LINE_OF: dict[str | None, int | None] = {
    None: 0, "": 0, "L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2,
    "N": None, "L1-L2": None, "L2-L3": None, "L3-L1": None}


def _line_of(phase: Any) -> int | None:
    """:func:`_line`, looked up for the usual names."""
    try:
        return _LINE_OF[phase]
    except (KeyError, TypeError):  # another spelling, or not a name at all
        return _line(phase)


def implausible(measurand: str, value: float) -> str | None:
    """Why a value (in W, Wh, A, V or Hz) cannot be a reading of this measurand; None when
    it can. Voltage and frequency of 0 are left to the caller (a meter without them)."""
    if not math.isfinite(value):
        return NOT_FINITE
    if value < 0:
        return NEGATIVE  # all the measurands read here are imports or magnitudes
    if value > PLAUSIBLE_MAX.get(measurand, math.inf):
        return OUT_OF_RANGE
    return None


def parse_timestamp(text: str) -> datetime | None:
    """An aware time; one without offset is UTC, as OCPP means."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def read_meter_value(meter_value: Mapping[str, Any], voltage_v: float) -> Reading | None:
    """Power and energy from one 1.6 MeterValue, as on the wire (camelCase keys).

    Power.Active.Import wins; otherwise per-phase Current.Import times the
    nominal voltage. Power from energy deltas needs two readings, see
    :class:`ConnectorMeter`.
    """
    # (thousands of these a second at a large site: the common case takes one dict lookup
    # per step, and :func:`implausible` is asked only for the reason of a value left out)
    at = parse_timestamp(meter_value.get("timestamp", ""))
    if at is None:
        return None
    power = energy = None
    phase_powers: dict[str, float] = {}
    phase_amps: dict[str, float] = {}
    volts: list[float | None] = [None, None, None]
    frequency = None
    ignored: list[tuple[str, str]] = []
    phaseless = False  # a current that names no phase: which lines it has is unknown
    for sampled in meter_value.get("sampledValue") or ():
        measurand = sampled.get("measurand", ENERGY)
        highest = PLAUSIBLE_MAX.get(measurand)
        if highest is None:
            continue  # not one read here
        try:
            value = float(sampled.get("value"))
        except (TypeError, ValueError, OverflowError):
            ignored.append((measurand, UNREADABLE))
            continue
        unit = sampled.get("unit")
        if unit:
            value *= _UNIT_SCALE.get(unit, 1.0)
        if not 0.0 <= value <= highest:  # also false for NaN
            ignored.append((measurand, implausible(measurand, value) or OUT_OF_RANGE))
            continue
        phase = sampled.get("phase")
        if measurand == POWER:
            if phase:
                phase_powers[phase] = value
            else:
                power = value
        elif measurand == ENERGY:
            if not phase:
                energy = value
        elif measurand == CURRENT:
            phase_amps[phase or "L1"] = value
            phaseless = phaseless or not phase
        elif measurand == VOLTAGE:
            line = _line_of(phase)
            if line is not None and value > 0:
                volts[line] = value
        elif measurand == FREQUENCY and value > 0:
            frequency = value
    if power is None and phase_powers:
        power = sum(phase_powers.values())
    elif power is None and phase_amps:
        power = sum(phase_amps.values()) * voltage_v
    amps: list[float | None] = [None, None, None]
    for phase, value in phase_amps.items():
        line = _line_of(phase)
        if line is not None:
            amps[line] = value
    lines = NO_LINES if phaseless else LINE_SETS[
        (amps[0] is not None, amps[1] is not None, amps[2] is not None)]
    return Reading(at, power, energy, tuple(volts), tuple(amps),  # type: ignore[arg-type]
                   frequency, tuple(ignored) if ignored else (), lines)


@dataclass(slots=True)
class ConnectorMeter:
    """The latest power of one connector, deriving it from energy when power is missing."""

    last_energy: tuple[datetime, float] | None = None
    latest: tuple[datetime, float] | None = None

    def update(self, reading: Reading) -> float | None:
        power = reading.power_w
        if power is None and reading.energy_wh is not None and self.last_energy is not None:
            then, energy = self.last_energy
            seconds = (reading.at - then).total_seconds()
            if seconds > 0 and reading.energy_wh >= energy:
                power = (reading.energy_wh - energy) * 3600 / seconds
                if power > PLAUSIBLE_MAX[POWER]:  # a register that jumped, not a draw
                    power = None
        if reading.energy_wh is not None:
            self.last_energy = (reading.at, reading.energy_wh)
        if power is not None:
            self.latest = (reading.at, max(power, 0.0))
        return power


def site_load_w(
    latest: Iterable[tuple[datetime, float] | None], now: datetime, stale_after: timedelta
) -> float:
    """Sum of the connectors' latest power; readings older than ``stale_after`` count as 0."""
    return sum(p for item in latest if item is not None
               for at, p in [item] if now - at <= stale_after)
