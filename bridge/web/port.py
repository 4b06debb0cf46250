"""What the web layer may read of the running bridge, and what it may ask of it.

The dashboard, the JSON API and the metrics see the runtime through the two protocols
below and the frozen views they hand out: never a part of the runtime, a dispatcher's
record of a station or the store. The runtime implements them
(:mod:`bridge.runtime.view` and :mod:`bridge.runtime.operator`); this module imports
nothing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from policies.events import DrEvent
from policies.fleet import Step
from policies.voltwatt import Floor, VoltageReading

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.holds import HoldMode

LoadRow = tuple[datetime, float, float]  # (at, measured site load W, site limit W)


class UnknownEvent(KeyError):
    """No event with this id has been received from the VTN."""


class EventOver(ValueError):
    """The event has ended or was cancelled; there is nothing left to opt out of."""


@dataclass(frozen=True)
class Snapshot:
    """What an operator (or the demo) sees at one moment."""

    at: datetime
    site_limit_w: float
    site_limit_reason: str
    load_w: float
    station_limits_w: dict[str, float]
    station_power_w: dict[str, float]
    active_events: list[str]
    # steered, connecting, offline, refusing, unmanageable or non-compliant (see Dispatcher)
    station_status: dict[str, str] = field(default_factory=dict)
    station_detail: dict[str, str] = field(default_factory=dict)  # why, where not steered


@dataclass(frozen=True)
class SiteNow:
    """The site's own figures at one moment, without any per-station ones: what /metrics
    reads every scrape, at the same cost for any number of stations."""

    at: datetime
    site_limit_w: float
    site_limit_reason: str
    load_w: float
    active_events: list[str]


@dataclass(frozen=True)
class VtnLink:
    url: str
    registered: bool
    ven_id: str | None  # None until registered
    last_contact: datetime | None  # the VTN's last answer
    protocol: str = "2.0b"  # the OpenADR version spoken: 2.0b, 3.0.1 or 3.1.0
    programs: tuple[str, ...] = ()  # the programs the VTN shows this VEN (OpenADR 3)


@dataclass(frozen=True)
class StationCounts:
    connected: int  # with an open OCPP connection
    known: int  # seen since the bridge started (or holding a profile of ours from before)
    sessions: int  # open charging transactions
    # stations the dispatcher works on now: sending a limit, waiting to raise one until
    # others are lower, or a follow-up call (0 once every station holds what the plan says)
    dispatching: int = 0


@dataclass(frozen=True)
class SiteVoltages:
    nominal_v: float
    phases: tuple[tuple[str, float, float], ...]  # (L1..L3, lowest V, mean V), fresh readings
    floor: Floor | None  # the over-voltage floor the plan holds (None: none)


@dataclass(frozen=True)
class KnownEvent:
    """An event as the VTN last sent it, and the site's answer to it."""

    event: DrEvent
    opt: str
    opt_reason: str


@dataclass(frozen=True)
class OptOut:
    """The operator's standing opt-out of one event."""

    opt_id: str
    reason: str
    requested_at: datetime
    acknowledged_at: datetime | None  # when the VTN acknowledged it


@dataclass(frozen=True)
class Hold:
    mode: str  # pause or exempt
    reason: str
    since: datetime


@dataclass(frozen=True)
class Counted:
    """What the planner counts a station at while it cannot be steered, and why."""

    watts: float
    reason: str


@dataclass(frozen=True)
class Life:
    """Where a station is in its life as the dispatcher follows it (see
    :mod:`bridge.station_life`)."""

    # offline, connected, registered, reading, limit_in_flight, refusing, acknowledged,
    # verified or unmanageable
    phase: str
    since: datetime | None  # None: since before the bridge started
    # how the planner counted it last: share, last_acknowledged, hardware_maximum or
    # measured_draw (None: not planned yet)
    counted_as: str | None


@dataclass(frozen=True)
class Steering:
    """What the bridge holds of a station's limits since it started."""

    connected: bool
    status: str  # steered, connecting, offline, refusing, unmanageable or non-compliant
    applied: tuple[Step, ...] | None  # the schedule it last accepted
    desired: tuple[Step, ...] | None  # the schedule the plan gives it
    confirmed: bool  # accepted on this connection
    refused: bool  # its last profile was rejected, or the call failed
    unmanageable: bool  # no smart charging
    awaiting_answer: bool  # a profile is in flight, or its answer was lost
    non_compliant: bool  # draws above what it accepted, for longer than the grace time
    compliance_detail: str  # why it is non-compliant
    counted: Counted | None
    verified: bool  # its composite schedule confirms the limit
    max_w: float | None  # its hardware maximum, where known
    life: Life


@dataclass(frozen=True)
class ConnectorView:
    connector_id: int
    status: str | None  # the last StatusNotification
    status_since: datetime | None
    latest_w: tuple[datetime, float] | None  # the last power reading, fresh or not
    profile: tuple[Step, ...] | None  # the schedule of a profile of its own it accepted
    profile_purpose: str | None
    transaction_id: int | None
    session_started_at: datetime | None


@dataclass(frozen=True)
class VoltageNotice:
    """What a station told of its voltage outside its meter values."""

    at: datetime
    source: str  # monitor (a variable monitor's event) or der-control (its own DER control)
    volts: float | None  # None for a DER notice
    phase: str | None  # L1..L3, where the station named one
    detail: str
    returned_to_normal: bool


@dataclass(frozen=True)
class VoltageControl:
    """How the volt-watt rule reaches a station (see bridge.runtime.voltage_controls)."""

    source: str  # where the rule gets its voltage: meter values, monitors or der-control
    monitors: str  # off, pending, installed, refused, not-supported
    monitors_detail: str
    monitors_held: int
    der: str  # off, pending, in-force, superseded, mismatch, refused, not-supported, ...
    der_detail: str


NO_VOLTAGE_CONTROL = VoltageControl("meter values", "off", "", 0, "off", "")


@dataclass(frozen=True)
class OperatorProfile:
    """Local-controller mode: one of the operator's charging profiles a station holds."""

    profile_id: int  # as the operator knows it
    purpose: str
    connector_id: int
    stack_level: int  # as the operator set it
    installed_as: int  # its id on the station
    installed_level: int  # its stack level on the station


@dataclass(frozen=True)
class StationUpstream:
    """Local-controller mode: a station's link to the operator's CSMS."""

    link: str  # connecting, up, replaying, down, or closed (the station is not connected)
    queue: int  # its messages waiting to be delivered to the operator
    limit: Step | None  # what the operator's profiles alone let it draw now, and whose
    profiles: tuple[OperatorProfile, ...]


@dataclass(frozen=True)
class StationView:
    station_id: str
    steering: Steering | None  # None: not connected since the bridge started
    last_seen: datetime | None
    hold: Hold | None
    voltage: VoltageReading | None  # the latest, fresh or not
    connectors: tuple[ConnectorView, ...]
    voltage_control: VoltageControl = NO_VOLTAGE_CONTROL
    voltage_event: VoltageNotice | None = None  # the latest monitor event or DER notice
    der_notice: VoltageNotice | None = None  # the latest notice of its own DER control
    upstream: StationUpstream | None = None  # None: drbridge is the central system


@dataclass(frozen=True)
class Upstream:
    """Local-controller mode: the operator's CSMS behind drbridge, for the whole site."""

    url: str
    links: Mapping[str, int]  # the stations' links by state
    queue: int  # messages waiting to be delivered to the operator
    offline_authorization: str  # cache, accept or reject
    messages: Mapping[tuple[str, str], int]  # (direction, how) -> messages
    # the time a forwarded message spent in drbridge: (upper bound s, messages), cumulative,
    # and their sum (s) and count
    added_buckets: tuple[tuple[float, int], ...]
    added_sum_s: float
    added_count: int


@dataclass(frozen=True)
class Counters:
    started_at: datetime
    messages_in: Mapping[str, int]  # OCPP requests from stations, by action
    calls_out: Mapping[str, int]  # OCPP calls to stations, by action
    lenient: Mapping[tuple[str, str], int]  # requests read after a repair: (action, kind)
    samples_ignored: Mapping[tuple[str, str], int]  # meter samples left out: (measurand, why)
    # voltage notices outside meter values, by source (monitor, der-control)
    voltage_events: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HistogramView:
    """A histogram as Prometheus shows it: cumulative counts per upper bound, then +Inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # len(bounds) + 1: observations <= each bound, then all
    total: float  # the sum of the observations
    count: int


@dataclass(frozen=True)
class Timings:
    """How long the bridge kept its stations waiting (see :mod:`bridge.timings`)."""

    loop_lag: HistogramView  # seconds the event loop woke a sampling task late
    plan_seconds: HistogramView  # how long each plan took (inputs taken to schedules out)
    last_plan_ended_at: datetime | None
    plans_in_process: int = 0  # plans the planning process made (the rest: the thread)
    planning_process_up: bool = False
    planning_process_failures: int = 0  # times it failed or could not start


class SiteReader(Protocol):
    """What the web may read."""

    @property
    def config(self) -> Config: ...

    def now(self) -> datetime: ...

    def snapshot(self) -> Snapshot: ...

    def site_now(self) -> SiteNow: ...

    def vtn(self) -> VtnLink: ...

    def counts(self) -> StationCounts: ...

    def voltages(self, now: datetime) -> SiteVoltages: ...

    def site_load(self, since: datetime) -> list[LoadRow]:
        """The stored site-load rows since ``since``."""
        ...

    def site_load_between(self, start: datetime, end: datetime) -> list[LoadRow]: ...

    def events(self) -> list[KnownEvent]: ...

    def baselines_w(self) -> Mapping[str, float]:
        """Per event: the measured load when it arrived (LOAD_DISPATCH deltas count from it)."""
        ...

    def standing_opt_outs(self) -> Mapping[str, OptOut]:
        """Event id -> the operator's opt-out of it that is not withdrawn."""
        ...

    def stations(self) -> list[StationView]:
        """Every station known or held by the operator, by id."""
        ...

    def has_station(self, station_id: str) -> bool:
        """Known to the bridge, or held by the operator."""
        ...

    def voltage_control_states(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """How many of :meth:`stations` are in each state of their voltage monitors, and of
        their DER control (as each :class:`StationView`'s ``voltage_control`` tells)."""
        ...

    def profile_counts(self) -> Mapping[str, int]:
        """Charging profiles sent, by the station's answer."""
        ...

    def counters(self) -> Counters: ...

    def timings(self) -> Timings: ...

    def upstream(self) -> Upstream | None:
        """Local-controller mode: the operator's CSMS; None when drbridge is the central
        system."""
        ...


class OperatorControls(Protocol):
    """What the web may ask, on the operator's behalf."""

    async def opt_out_event(self, event_id: str, reason: str) -> None:
        """Raises :class:`UnknownEvent` or :class:`EventOver`."""
        ...

    async def cancel_opt(self, opt_id: str) -> None: ...

    async def set_hold(self, station_id: str, mode: HoldMode, reason: str) -> None: ...

    async def clear_hold(self, station_id: str) -> None: ...
