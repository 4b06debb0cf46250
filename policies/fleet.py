"""What the policy engine knows of the site and its stations, and what it answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Site:
    capacity_w: float  # grid connection available to EV charging; never exceeded
    voltage_v: float = 230.0
    phases: int = 3


@dataclass(frozen=True)
class StationInfo:
    station_id: str
    phases: int
    voltage_v: float
    max_current_a: float  # hardware limit per phase

    def watts(self, amps_per_phase: float) -> float:
        return amps_per_phase * self.voltage_v * self.phases

    @property
    def max_w(self) -> float:
        return self.watts(self.max_current_a)


@dataclass(frozen=True)
class Session:
    """A connector with an EV charging (a started transaction)."""

    station_id: str
    connector_id: int
    started_at: datetime


@dataclass(frozen=True)
class Step:
    """A limit holding from ``start`` until the next step of its series."""

    start: datetime
    limit_w: float
    reason: str


def value_at(steps: Sequence[Step], at: datetime) -> Step | None:
    """The step of a series in force at ``at`` (None before the first)."""
    current = None
    for step in steps:
        if step.start <= at:
            current = step
        else:
            break
    return current


def upper_envelope(*series: Sequence[Step]) -> tuple[Step, ...]:
    """The highest of several series at every moment (before a series starts, it counts 0)."""
    times = sorted({step.start for steps in series for step in steps})
    result: list[Step] = []
    for at in times:
        best: Step | None = None
        for steps in series:
            step = value_at(steps, at)
            if step is not None and (best is None or step.limit_w > best.limit_w):
                best = step
        if best is not None and (not result or result[-1].limit_w != best.limit_w):
            result.append(Step(at, best.limit_w, best.reason))
    return tuple(result)


@dataclass(frozen=True)
class Reservation:
    """A station the bridge cannot steer right now, counted at what it may draw.

    A station that is offline keeps the last schedule it acknowledged; one that
    rejected our profiles may draw up to its hardware maximum.
    """

    station_id: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Fleet:
    stations: Mapping[str, StationInfo]
    sessions: tuple[Session, ...] = ()
    reservations: tuple[Reservation, ...] = ()


@dataclass(frozen=True)
class Plan:
    made_at: datetime
    site: tuple[Step, ...]  # the site limit over time
    stations: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
