"""What the policy engine knows of the site and its stations, and what it answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.voltwatt import Floor, VoltHold


@dataclass(frozen=True)
class Circuit:
    """A panel or feeder between the site's connection and some stations."""

    circuit_id: str
    parent: str | None = None  # None: fed directly from the site's connection
    max_current_a: float | None = None  # per phase
    max_power_w: float | None = None


@dataclass(frozen=True)
class Site:
    capacity_w: float  # grid connection available to EV charging; never exceeded
    voltage_v: float = 230.0
    phases: int = 3
    max_current_a: float | None = None  # per phase at the connection, when it is rated so
    circuits: tuple[Circuit, ...] = ()


PHASES = (1, 2, 3)  # L1, L2, L3


@dataclass(frozen=True, slots=True)
class StationInfo:
    station_id: str
    phases: int
    voltage_v: float
    max_current_a: float  # hardware limit per phase
    circuit: str | None = None  # None: fed directly from the site's connection
    phase: int = 1  # the line (1..3 = L1..L3) a single-phase station is wired to
    max_power_w: float | None = None
    # per-connector hardware limits per phase (connector id, amps), where lower than the station's
    connector_max_a: tuple[tuple[int, float], ...] = ()

    def watts(self, amps_per_phase: float) -> float:
        return amps_per_phase * self.voltage_v * self.phases

    @property
    def max_w(self) -> float:
        hardware = self.watts(self.max_current_a)
        return hardware if self.max_power_w is None else min(hardware, self.max_power_w)

    def max_w_for(self, connectors: Sequence[int]) -> float:
        """The most the station can draw with sessions on these connectors."""
        if not self.connector_max_a:
            # each connector may draw the station's maximum: so may any one of them
            return self.max_w
        limits = dict(self.connector_max_a)
        total = sum(self.watts(min(limits.get(c, self.max_current_a), self.max_current_a))
                    for c in dict.fromkeys(connectors))
        return min(total, self.max_w) if connectors else self.max_w

    def amps_per_watt(self) -> tuple[float, float, float]:
        """Current on each line (L1, L2, L3) per watt the station draws."""
        if self.phases == 3:
            per = 1 / (3 * self.voltage_v)
            return (per, per, per)
        line = self.phase if self.phase in PHASES else 1
        return tuple(1 / self.voltage_v if p == line else 0.0 for p in PHASES)  # type: ignore[return-value]


@dataclass(frozen=True)
class Session:
    """A connector with an EV charging (a started transaction)."""

    station_id: str
    connector_id: int
    started_at: datetime
    # where known (from the EV, the driver or a fleet system): what it still needs, and by when
    energy_needed_wh: float | None = None
    departure: datetime | None = None


@dataclass(frozen=True, slots=True)
class Why:
    """One link of a reason chain: ``event``, ``signal``, ``rule``, ``allocation``, ``voltage``,
    ``external`` (another party's limit on a station)."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    """A limit holding from ``start`` until the next step of its series.

    ``reason`` is the chain in one line, for people and logs; ``chain`` keeps its links
    (event, rule, allocation step) apart, for the store and the dashboard.
    """

    start: datetime
    limit_w: float
    reason: str
    chain: tuple[Why, ...] = ()


def explain(chain: Sequence[Why]) -> str:
    return "; ".join(link.text for link in chain)


def step_of(start: datetime, limit_w: float, chain: Sequence[Why]) -> Step:
    return Step(start, limit_w, explain(chain), tuple(chain))


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
            result.append(Step(at, best.limit_w, best.reason, best.chain))
    return tuple(result)



def lower_envelope(*series: Sequence[Step]) -> tuple[Step, ...]:
    """The lowest of several series at every moment (a series not started yet is left out)."""
    times = sorted({step.start for steps in series for step in steps})
    result: list[Step] = []
    for at in times:
        least: Step | None = None
        for steps in series:
            step = value_at(steps, at)
            if step is not None and (least is None or step.limit_w < least.limit_w):
                least = step
        if least is not None and (not result or result[-1].limit_w != least.limit_w):
            result.append(Step(at, least.limit_w, least.reason, least.chain))
    return tuple(result)

@dataclass(frozen=True, slots=True)
class Reservation:
    """A station the bridge cannot steer right now, counted at what it may draw.

    A station that is offline keeps the last schedule it acknowledged; one that
    rejected our profiles may draw up to its hardware maximum.
    """

    station_id: str
    steps: tuple[Step, ...]
    # The station as found out where the configuration leaves it open (a single-phase
    # station on L2): the lines its draw counts on. None: as the fleet describes it.
    info: StationInfo | None = None


@dataclass(frozen=True)
class Fleet:
    stations: Mapping[str, StationInfo]
    sessions: tuple[Session, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    # What each station draws per its latest MeterValues (W), and when it last reported.
    measured_w: Mapping[str, float] = field(default_factory=dict)
    last_report: Mapping[str, datetime] = field(default_factory=dict)
    taken_at: datetime | None = None  # when this snapshot was current; None: now
    # Limits a station applies whatever the bridge sends (another party's: a building's
    # energy manager, the grid operator), each step from its start (``inf``: none then).
    # The plan gives the station no more, so what it cannot draw goes to the others.
    ceilings: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class StationState:
    """What the last plan decided for one station, carried into the next plan."""

    limit_w: float  # commanded at the plan's time
    charging: bool  # had a share (not paused)
    since: datetime  # when ``charging`` last changed
    restore_at: datetime | None = None  # random restore delay: held until then
    switched: bool = False  # ``since`` marks a switch on or off (not a session's arrival)
    paused_at_limit_w: float = 0.0  # the site limit when it was paused
    resume_until: datetime | None = None  # resumed after a pause: at its minimum until then
    # paused for its voltage or a targeted event: no minimum held for it until it charges
    hard_pause: bool = False
    # the state its schedule switches it to later (on or off, at ``then.since``), and so on:
    # the next plan starts from where the stations' profiles have taken them by its time
    then: StationState | None = None


@dataclass(frozen=True)
class PlanState:
    """The allocation state a plan hands to the next: make_plan stays a pure function."""

    at: datetime
    site_limit_w: float
    stations: Mapping[str, StationState] = field(default_factory=dict)
    # A restore in progress: the limit it started from, and when.
    ramp_from: tuple[datetime, float] | None = None
    # When each rise of the site limit in this plan began, so the next plan continues a
    # restore from its real start (the profiles may have carried out part of it already).
    rises: tuple[datetime, ...] = ()
    restore_began: datetime | None = None  # the restore (random delays) in progress
    # volt-watt restrictions in force (station id, or the site's key), for hysteresis and hold
    voltage: Mapping[str, VoltHold] = field(default_factory=dict)
    absorb: Floor | None = None  # the over-voltage floor under price limits


@dataclass(frozen=True)
class Plan:
    made_at: datetime
    site: tuple[Step, ...]  # the site limit over time
    stations: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    state: PlanState | None = None  # pass to the next make_plan
    paused: tuple[str, ...] = ()  # stations with a session but no share at ``made_at``
