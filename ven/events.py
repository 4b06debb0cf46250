"""Typed DR events, and their normalisation from openleadr's parsed dicts.

openleadr hands a VEN each ``oadrEvent`` as a nested dict with optional keys
and intervals that often carry no start time of their own. Everything past
the VEN works with :class:`DrEvent`: validated, timezone-aware, with every
interval's absolute start resolved. Normalisation is pure (no I/O, no clock).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

OptType = Literal["optIn", "optOut"]

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
# siScaleCode -> factor to the unit itself (powerReal W with scale k: kW).
SI_SCALE: dict[str, float] = {
    "p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "none": 1.0,
}


class InvalidEvent(ValueError):
    """An event whose content makes no sense; the VEN refuses it."""


class EventStatus(StrEnum):
    NONE = "none"
    FAR = "far"
    NEAR = "near"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class SignalInterval(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    duration: timedelta
    value: float
    uid: str = ""

    @property
    def end(self) -> datetime:
        return self.start + self.duration


class EventSignal(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # SIMPLE, ELECTRICITY_PRICE, LOAD_DISPATCH, LOAD_CONTROL, ...
    type: str  # level, price, setpoint, delta, x-loadControlCapacity, ...
    signal_id: str = ""
    intervals: tuple[SignalInterval, ...]
    unit: str | None = None  # itemUnits of the itemBase (W, kWh, USD, ...), when it has one
    scale: str | None = None  # siScaleCode of the itemBase (k, M, none, ...)
    current_value: float | None = None
    item: str | None = None  # the itemBase element: powerReal, currencyPerKWh, energyReal, ...

    @property
    def multiplier(self) -> float:
        """Factor from interval values to ``unit`` (1000 for powerReal W with scale k)."""
        return SI_SCALE.get(self.scale or "none", 1.0)

    @property
    def currency(self) -> str | None:
        """ISO 4217 code of a price signal (itemUnits of currencyPerKWh and the like)."""
        return self.unit if self.item and self.item.startswith("currency") else None

    def base_value_at(self, at: datetime) -> float | None:
        """:meth:`value_at` with the scale applied: in W for powerReal, not kW."""
        value = self.value_at(at)
        return None if value is None else value * self.multiplier

    def value_at(self, at: datetime) -> float | None:
        """The payload of the interval covering ``at``, or None outside all intervals."""
        for interval in self.intervals:
            if interval.start <= at < interval.end:
                return interval.value
        return None


class DrEvent(BaseModel):
    """One OpenADR event as the rest of drbridge sees it."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    modification_number: int
    status: EventStatus
    start: datetime
    duration: timedelta  # zero means open-ended, as in OpenADR
    signals: tuple[EventSignal, ...]
    market_context: str = ""
    priority: int = 0
    response_required: bool = True
    test_event: bool = False
    vtn_id: str = ""
    targets: dict[str, tuple[str, ...]] = {}
    start_after: timedelta | None = None  # tolerance: randomisation window for the start
    ramp_up: timedelta | None = None
    recovery: timedelta | None = None
    # The VEN's draw within start_after; start and every interval are already shifted by it.
    random_offset: timedelta = timedelta(0)
    # Targeting as the VEN resolved it: empty both = the whole site; otherwise only these of
    # the site's configured resources / groups (the bridge maps them to stations).
    matched_resources: tuple[str, ...] = ()
    matched_groups: tuple[str, ...] = ()
    ignored_signals: tuple[str, ...] = ()  # "name/type: why" for signals left out

    @property
    def end(self) -> datetime | None:
        """End of the active period; None for an open-ended event."""
        if self.duration <= timedelta(0):
            return None
        return self.start + self.duration

    @property
    def whole_site(self) -> bool:
        return not self.matched_resources and not self.matched_groups

    def is_over(self, now: datetime) -> bool:
        if self.status == EventStatus.CANCELLED:
            return True
        end = self.end
        if end is None:
            ends = [i.end for s in self.signals for i in s.intervals]
            return bool(ends) and max(ends) <= now
        return end <= now

    def status_at(self, now: datetime, near: timedelta = timedelta(0)) -> EventStatus:
        """The status by the clock: cancelled stays cancelled; otherwise completed after the
        end, active from the (randomised) start, near within ``near`` or the ramp-up period
        before it, far before that."""
        if self.status == EventStatus.CANCELLED:
            return EventStatus.CANCELLED
        if self.is_over(now):
            return EventStatus.COMPLETED
        if self.start <= now:
            return EventStatus.ACTIVE
        if self.start - max(near, self.ramp_up or timedelta(0)) <= now:
            return EventStatus.NEAR
        return EventStatus.FAR

    def randomised(self, offset: timedelta) -> DrEvent:
        """This event with its start (and every interval) moved by ``offset``."""
        if offset == self.random_offset:
            return self
        shift = offset - self.random_offset
        signals = tuple(
            s.model_copy(update={"intervals": tuple(
                i.model_copy(update={"start": i.start + shift}) for i in s.intervals)})
            for s in self.signals
        )
        return self.model_copy(update={"start": self.start + shift, "signals": signals,
                                       "random_offset": offset})


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
