"""The DR event as the policy engine reads it, whatever protocol brought it.

Both VENs (OpenADR 2.0b and 3.x, in :mod:`ven`) turn what their VTN sends into a
:class:`DrEvent`: validated, timezone-aware, with every interval's absolute start resolved.
The signal names are the policy's vocabulary (SIMPLE levels, ELECTRICITY_PRICE, LOAD_DISPATCH,
IMPORT_CAPACITY_LIMIT, ...); each VEN maps its protocol's payloads onto them. Nothing here
knows a wire format, and nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

OptType = Literal["optIn", "optOut"]

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
    model_config = ConfigDict(frozen=True, defer_build=True)

    start: datetime
    duration: timedelta
    value: float
    uid: str = ""

    @property
    def end(self) -> datetime:
        return self.start + self.duration


class EventSignal(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

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

    model_config = ConfigDict(frozen=True, defer_build=True)

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


def build_validators() -> None:
    """Build the event models' validators now, not when the first event is validated.

    They are built lazily (``defer_build``) so that the planning process, which only
    unpickles events, never builds them; the bridge calls this at start-up, or its first
    DR event would wait about 20 ms for them.
    """
    for model in (SignalInterval, EventSignal, DrEvent):
        model.model_rebuild(force=True)
