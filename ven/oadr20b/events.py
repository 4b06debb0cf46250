"""OpenADR 2.0b events, as openleadr parses them, turned into the policy's :class:`DrEvent`.

openleadr hands a VEN each ``oadrEvent`` as a nested dict with optional keys
and intervals that often carry no start time of their own. Normalisation validates it,
makes every time zone-aware and resolves every interval's absolute start. Pure (no I/O,
no clock).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from policies.events import (
    SI_SCALE,
    DrEvent,
    EventSignal,
    EventStatus,
    InvalidEvent,
    SignalInterval,
)

# The signal names and types OpenADR 2.0b defines (signalName -> allowed signalType).
SIGNAL_TYPES: dict[str, frozenset[str]] = {
    "SIMPLE": frozenset({"level"}),
    "simple": frozenset({"level"}),
    "ELECTRICITY_PRICE": frozenset({"price", "priceRelative", "priceMultiplier"}),
    "ENERGY_PRICE": frozenset({"price", "priceRelative", "priceMultiplier"}),
    "DEMAND_CHARGE": frozenset({"price", "priceRelative", "priceMultiplier"}),
    "BID_PRICE": frozenset({"price"}),
    "BID_LOAD": frozenset({"setpoint"}),
    "BID_ENERGY": frozenset({"setpoint"}),
    "CHARGE_STATE": frozenset({"setpoint", "delta", "multiplier"}),
    "LOAD_DISPATCH": frozenset({"setpoint", "delta", "multiplier"}),
    "LOAD_CONTROL": frozenset({"x-loadControlCapacity", "x-loadControlLevelOffset",
                               "x-loadControlPercentOffset", "x-loadControlSetpoint"}),
}
SIMPLE_LEVELS = (0, 1, 2, 3)


def _aware(value: datetime, where: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidEvent(f"{where}: expected a date-time, got {value!r}")
    if value.tzinfo is None:
        # OpenADR date-times are UTC; a missing offset means UTC, not local time.
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _duration(value: Any, where: str) -> timedelta:
    if not isinstance(value, timedelta):
        raise InvalidEvent(f"{where}: expected a duration, got {value!r}")
    if value < timedelta(0):
        raise InvalidEvent(f"{where}: negative duration {value}")
    return value


def _optional_duration(value: Any, where: str) -> timedelta | None:
    return None if value is None else _duration(value, where)


def _item_base(signal: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """The itemBase's element name, units and scale, in either shape openleadr leaves it.

    openleadr rewrites a signal's itemBase to ``measurement: {name, unit, scale, ...}``, but
    stops doing so at the first signal without one; later signals keep it under its element
    name (currencyPerKWh, powerReal, ...) with ``item_units`` / ``si_scale_code``.
    """
    measurement = signal.get("measurement")
    if isinstance(measurement, Mapping) and "unit" in measurement:
        return measurement.get("name"), measurement.get("unit"), measurement.get("scale")
    for key, value in signal.items():
        if isinstance(value, Mapping) and "item_units" in value:
            return str(key), value.get("item_units"), value.get("si_scale_code")
    return None, None, None


def _signal(raw: Mapping[str, Any], start: datetime, where: str) -> EventSignal:
    name = raw.get("signal_name")
    if not name:
        raise InvalidEvent(f"{where}: signal without signalName")
    raw_intervals = raw.get("intervals") or []
    if not raw_intervals:
        raise InvalidEvent(f"{where}: signal {name} has no intervals")
    intervals: list[SignalInterval] = []
    # Intervals without their own dtstart follow each other from the active period's start.
    cursor = start
    for index, item in enumerate(raw_intervals):
        here = f"{where}.intervals[{index}]"
        duration = _duration(item.get("duration"), f"{here}.duration")
        begin = _aware(item["dtstart"], f"{here}.dtstart") if item.get("dtstart") else cursor
        payload = item.get("signal_payload")
        if (
            isinstance(payload, bool)
            or not isinstance(payload, int | float)
            or not math.isfinite(payload)
        ):  # xs:float admits NaN and INF, which no signal can mean
            raise InvalidEvent(f"{here}: signal payload must be a finite number, got {payload!r}")
        uid = item.get("uid")
        intervals.append(
            SignalInterval(
                start=begin,
                duration=duration,
                value=float(payload),
                uid="" if uid is None else str(uid),
            )
        )
        cursor = begin + duration
    item, unit, scale = _item_base(raw)
    current = raw.get("current_value")
    if isinstance(current, float) and not math.isfinite(current):
        raise InvalidEvent(f"{where}: currentValue must be a finite number, got {current!r}")
    return EventSignal(
        name=str(name),
        type=str(raw.get("signal_type") or ""),
        signal_id=str(raw.get("signal_id") or ""),
        intervals=tuple(intervals),
        unit=unit,
        scale=scale,
        current_value=float(current) if isinstance(current, int | float) else None,
        item=item,
    )


def unsupported(signal: EventSignal) -> str | None:
    """Why a signal is left out of the event (logged and ignored), or None to keep it."""
    types = SIGNAL_TYPES.get(signal.name)
    if types is None:
        return f"{signal.name}: not an OpenADR 2.0b signal name"
    if signal.type not in types:
        return f"{signal.name}/{signal.type}: not a type of {signal.name}"
    if signal.name in ("SIMPLE", "simple") and any(
            i.value not in SIMPLE_LEVELS for i in signal.intervals):
        return f"{signal.name}: levels must be 0, 1, 2 or 3"
    if signal.scale is not None and signal.scale not in SI_SCALE:
        return f"{signal.name}: unknown siScaleCode {signal.scale!r}"
    return None


def _targets(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        return {}
    targets: dict[str, tuple[str, ...]] = {}
    for kind, values in raw.items():
        items = values if isinstance(values, list) else [values]
        targets[str(kind)] = tuple(str(v) for v in items if isinstance(v, str | int))
    return targets


def normalise_event(raw: Mapping[str, Any], vtn_id: str = "") -> DrEvent:
    """Turn one openleadr event dict into a :class:`DrEvent`, or raise :class:`InvalidEvent`."""
    if not isinstance(raw, Mapping):
        raise InvalidEvent(f"event: expected a mapping, got {type(raw).__name__}")
    descriptor = raw.get("event_descriptor")
    if not isinstance(descriptor, Mapping) or not descriptor.get("event_id"):
        raise InvalidEvent("event: missing eventDescriptor/eventID")
    event_id = str(descriptor["event_id"])
    where = f"event {event_id}"
    period = raw.get("active_period")
    if not isinstance(period, Mapping) or "dtstart" not in period:
        raise InvalidEvent(f"{where}: missing eiActivePeriod/dtstart")
    start = _aware(period["dtstart"], f"{where}.active_period.dtstart")
    duration = _duration(period.get("duration", timedelta(0)), f"{where}.active_period.duration")

    raw_signals = raw.get("event_signals")
    if isinstance(raw_signals, Mapping):  # openleadr nests them when there is a baseline
        raw_signals = raw_signals.get("event_signals")
    if not raw_signals:
        raise InvalidEvent(f"{where}: no event signals")
    signals: list[EventSignal] = []
    ignored: list[str] = []
    for index, raw_signal in enumerate(raw_signals):
        signal = _signal(raw_signal, start, f"{where}.signals[{index}]")
        why = unsupported(signal)
        if why is None:
            signals.append(signal.model_copy(update={"name": signal.name.upper()}))
        else:
            ignored.append(why)

    status_text = str(descriptor.get("event_status") or "none")
    try:
        status = EventStatus(status_text)
    except ValueError as error:
        raise InvalidEvent(f"{where}: unknown eventStatus {status_text!r}") from error
    modification = descriptor.get("modification_number", 0)
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        raise InvalidEvent(f"{where}: bad modificationNumber {modification!r}")
    tolerance = period.get("tolerance") or {}
    start_after = (tolerance.get("tolerate") or {}).get("startafter")
    return DrEvent(
        event_id=event_id,
        modification_number=modification,
        status=status,
        start=start,
        duration=duration,
        signals=tuple(signals),
        ignored_signals=tuple(ignored),
        market_context=str(descriptor.get("market_context") or ""),
        priority=int(descriptor.get("priority") or 0),
        response_required=raw.get("response_required", "always") != "never",
        test_event=bool(descriptor.get("test_event") or False),
        vtn_id=vtn_id,
        targets=_targets(raw.get("targets_by_type")),
        start_after=_optional_duration(start_after, f"{where}.tolerance.startafter"),
        ramp_up=_optional_duration(
            period.get("ramp_up") or period.get("ramp_up_period"), f"{where}.ramp_up"
        ),
        recovery=_optional_duration(
            period.get("recovery") or period.get("recovery_period"), f"{where}.recovery"
        ),
    )
