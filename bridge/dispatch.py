"""Reconcile what each station should hold with what it has acknowledged.

One path for everything: a new plan, a boot, a reconnect, a rejected profile
all end in :meth:`Dispatcher.wake` for a station, whose worker then reads the
station's capabilities if needed, builds the profile and sends it until the
station accepts. Each station has one worker, so one call at a time per
station and any number of stations in parallel; a plan's wave starts them a few hundred
per turn of the event loop (:data:`WAVE_STATIONS_PER_TURN`), so that the loop goes on
answering the stations meanwhile. Nothing goes to a station before
its boot is accepted (:data:`BOOT_WAIT_S`), and a profile of another party on it
is never replaced nor outranked (:meth:`Dispatcher._verify_composite`).

Each station's life is an explicit state machine (:mod:`bridge.station_life`): the worker
fires its events (registered, reading, sent, accepted, refused, verified, ...) and every
question of what a station allows, whether it is steered and how the planner counts it is
answered by the machine. An answer that comes after the station reconnected or rebooted
is late: it is booked (the station may hold that profile) but moves no phase.

Safety: a station is *steerable* while it is connected and has acknowledged
our profile on this connection. A station that is not is *reserved* when the
bridge has commanded it before (the planner counts it at its last acknowledged
schedule: a station keeps its profile while offline) or when it refused our
profile (counted at its hardware maximum). After a reconnection the station is
first sent the schedule it holds, to confirm it without pausing its EV. A
raise is sent only when no steerable station is still above its new limit, so
the sum of what the bridge has commanded never exceeds the site limit, even
in transition.

Profiles per station: the station cap on connector 0, and on stations with
several connectors or sessions also a 0 W TxDefaultProfile per connector and a
TxProfile per session with its part of the share (see :meth:`Dispatcher._built`);
within a station, decreases go out before raises. Stations speak to the
dispatcher through a :class:`~bridge.ocpp.link.ChargerLink`, in domain terms,
whatever their OCPP version.

Two more kinds of station are reserved: one without smart charging
(*unmanageable*, counted at its hardware maximum, as far as the configuration or the
station tells it: see :mod:`bridge.worst_case`) and one whose composite schedule or
meter values show that it does not apply what it accepted (*non-compliant*, counted at
the highest draw measured; see :mod:`bridge.compliance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from bridge.aio import TurnBatch, TurnGate, Wake, WaveTurns, cancel_and_wait, first_of
from bridge.clock import utcnow
from bridge.compliance import Compliance, ComplianceRule, Holdings, taken_at
from bridge.ocpp.capabilities import UNKNOWN as UNKNOWN_CAPS
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.link import (
    ACCEPTED,
    CallFailed,
    CapabilitiesRead,
    ChargerLink,
    CompositeSchedule,
)
from bridge.ocpp.profiles import (
    PREFERRED_STACK_LEVEL,
    STATION_MAX,
    STATION_MAX_PROFILE_ID,
    TX_DEFAULT,
    BuiltProfile,
    connector_profiles,
    free_level,
    from_unit,
    is_ours,
    is_raise,
    same_schedule,
    station_max_profile,
)
from bridge.ocpp.sampling import NOT_READ as SAMPLING_NOT_READ
from bridge.ocpp.sampling import Sampling
from bridge.ocpp.sampling import changes as sampling_changes
from bridge.ocpp.sampling import kept as sampling_kept
from bridge.station_life import Counting, Event, IllegalTransition, Phase, StationLife
from bridge.store import Store
from bridge.worst_case import Count, Declared, Told, count
from policies.fleet import (
    Reservation,
    StationInfo,
    Step,
    lower_envelope,
    upper_envelope,
    value_at,
)

log = logging.getLogger(__name__)
life_log = logging.getLogger("bridge.station_life")  # illegal transitions (tests fail on any)

# Retries after failed calls back off exponentially up to this many times retry_s.
MAX_BACKOFF = 16
VERIFY_WINDOW_S = 300  # how far ahead GetCompositeSchedule looks
# Follow-up calls (meter settings, the composite check) wait for the fleet's limits at most
# this long: a slow or silent station among many must not postpone them for ever.
FOLLOW_UP_MAX_WAIT_S = 10.0
# No call goes to a station before its BootNotification is accepted (OCPP 1.6 §4.2, 2.0.1
# B01-B03); a rebooting station sends its boot first thing, so its setup is sent once, after
# it. A station that only lost its websocket may reconnect without a boot: its first other
# request shows that, and a silent one is served after this long. Meanwhile it is counted
# at the schedule it holds, so waiting costs its re-confirmation a few seconds, no more.
BOOT_WAIT_S = 5.0
# How many stations' follow-up calls (the composite check after a new limit, the meter
# interval, the rating) start per turn of the event loop. They come due together once a
# wave is answered; a turn holding thousands of them held every station's replies. Between
# turns the loop reads the stations' own requests.
FOLLOW_UPS_PER_TURN = 64
# A wave's workers start (and, their sends out, go on) this many a turn of the event loop
# (see WaveTurns). A gate of this kind alone once made every station wait about a second
# longer for an event's limit: the answers read between turns were booked before the next
# sends; now they wait, unread, until the whole wave is out. A turn holds one group's first
# steps, the group before's sends and the answers and reports read in between. At 10,000
# stations the event window's reply p99 was 81-108 ms with 300 a turn and 121-127 ms with
# 500 (answers then taken up before the wait), 62-96 ms with 300 and 93-118 ms with 400
# (after it); the wave took 0.35-0.4 s longer than in one turn, then 0.1-0.15 s less
# (docs/benchmarks-notes.md).
WAVE_STATIONS_PER_TURN = 300

UNDECLARED = Declared()  # the configuration states nothing of the station (shared: frozen)

# Told each time a station's capabilities are known on a connection (read after its boot,
# or kept from before when it reconnects without one), so that what depends on them (its
# voltage monitors, its DER control) can follow without living here.
CapabilitiesKnown = Callable[[str, ChargerLink, Capabilities], None]
# Told each time a station's boot is accepted (or its boot wait is over), so that a station
# that joins holding nothing of ours can be given a limit before the plan covers it.
Registered = Callable[[str], None]


class OperatorLimits(Protocol):
    """Local-controller mode (:class:`bridge.upstream.controller.LocalController`): the
    operator's CSMS sets limits of its own on the stations, which drbridge's must hold too."""

    def stack_level(self, station_id: str, caps: Capabilities) -> int:
        """The stack level of drbridge's profiles: above any of the operator's."""
        ...

    def limited(self, station_id: str, profile: BuiltProfile, info: StationInfo,
                caps: Capabilities, now: datetime, min_current_a: float) -> BuiltProfile:
        """The profile holding the lower of its limit and the operator's, at every moment."""
        ...


NONE_FOREIGN: frozenset[tuple[str, int, int]] = frozenset()  # one object for every station


@dataclass(slots=True)
class ProfileHandling:
    """What the station showed of how it takes our profiles; learnt anew after each boot
    (new firmware may take what the old one refused, and may follow its profiles)."""

    stack_zero: bool = False  # it rejected a stack level above 0
    per_connector_only: bool = False  # it rejected profiles on connector 0
    # A profile of another party with our station cap's purpose outranks it, or would meet
    # it (its composite schedule showed more than ours, or the station listed one): that
    # profile is left as it is, and the limit goes on each connector, under it.
    cap_outranked: bool = False
    # Profiles of other parties the station holds, as (purpose, connector id, stack level);
    # None until asked (OCPP 2.0.1), empty where the protocol cannot tell (OCPP 1.6).
    foreign: frozenset[tuple[str, int, int]] | None = None
    composite_supported: bool = True  # it answers GetCompositeSchedule


@dataclass(slots=True)
class FollowUps:
    """Calls that do not change what it may draw, left until no station waits for a limit
    (so that a fleet booting at once gets its limits first)."""

    # the meter interval and measurands it does not hold yet, once its capabilities are read
    meter_setup: bool = False
    verify: BuiltProfile | None = None  # the composite check of the limit it accepted
    rating: bool = False  # its rated current, asked of a station that cannot be steered
    rating_asked: bool = False  # once per boot

    @property
    def due(self) -> bool:
        return self.meter_setup or self.verify is not None or self.rating


@dataclass(slots=True)
class StationRecord:
    """What the dispatcher keeps of one station: its link, where it is in its life (see
    :mod:`bridge.station_life`), what it should hold and what it has acknowledged."""

    info: StationInfo
    link: ChargerLink | None = None
    life: StationLife = field(default_factory=StationLife)
    declared: Declared = UNDECLARED  # what the configuration states
    # what it told of its hardware and its EV (its meter, a key): counted by it when unsteered
    told: Told = field(default_factory=Told)
    counted: Count | None = None  # what the planner counts it at while it is not steered
    counting: Counting | None = None  # how the planner counted it last (None: not yet)
    caps: Capabilities = UNKNOWN_CAPS
    # the highest connector id it reported a status or session for: a station that does
    # not say how many it has (or says too few) still has each it reports
    connectors_seen: int = 0
    # How its meter sampled when read (with its capabilities, or alone when they are known
    # from an earlier run); None until read in this run. Not kept with the capabilities: a
    # setting of the station's, which the bridge changes.
    sampling: Sampling | None = None
    handling: ProfileHandling = field(default_factory=ProfileHandling)
    desired: tuple[Step, ...] | None = None
    applied: tuple[Step, ...] | None = None  # last schedule the station accepted
    in_flight: tuple[Step, ...] | None = None  # sent, no answer yet: it may already apply
    uncertain: tuple[Step, ...] | None = None  # sent, answer lost: it may apply
    last_sent: tuple[Step, ...] | None = None  # the newest schedule sent, answered or not
    retry_s: float = 0.0  # the next retry's delay, doubled after each failure
    sessions: dict[int, int] = field(default_factory=dict)  # connector id -> transaction id
    # What the station accepted on this connection, by profile id.
    slots: dict[int, BuiltProfile] = field(default_factory=dict)
    compliance: Compliance = field(default_factory=Compliance)
    # what it may have applied lately, against which its meter values are judged
    holdings: Holdings = field(default_factory=Holdings)
    # Ids of our profiles the station accepted and may still hold; they outlive reboots
    # on most stations, so one we no longer send is cleared rather than left to apply.
    installed: set[int] = field(default_factory=set)
    follow_ups: FollowUps = field(default_factory=FollowUps)
    # set when its worker has something to do; the worker runs only until nothing is left
    wake: Wake = field(default_factory=Wake)
    task: asyncio.Task[None] | None = None
    starting: bool = False  # its worker waits to be started (see WaveTurns)

    @property
    def steerable(self) -> bool:
        return self.life.steerable

    @property
    def reserved(self) -> bool:
        """Counted by the planner at what it may hold, rather than given a share."""
        return self.life.reserved(acknowledged=self.applied is not None)

    @property
    def detail(self) -> str:
        """Why a station is not steered, in a sentence (empty when it is)."""
        life = self.life
        counted = f"; counted at {self.counted.reason}" if self.counted is not None else ""
        if life.unmanageable:
            return f"no SmartCharging among its feature profiles{counted}"
        if life.non_compliant:
            return f"{self.compliance.detail}; counted at {self.compliance.peak_w:.0f} W"
        if life.refuses and self.link is not None:
            return f"refuses our charging profiles; retrying{counted}"
        return ""

    @property
    def status(self) -> str:
        """One word for the operator."""
        return self.life.status

    def held(self) -> tuple[Step, ...] | None:
        """Everything the station may be applying now: acknowledged, in flight or unanswered."""
        applied, in_flight, uncertain = self.applied, self.in_flight, self.uncertain
        if in_flight is None and uncertain is None:
            return applied  # most of the time (asked for every meter value)
        series = [s for s in (applied, in_flight, uncertain) if s is not None]
        return series[0] if len(series) == 1 else upper_envelope(*series)

    def bounded_by(self) -> tuple[Step, ...] | None:
        """What bounds its draw now; None when nothing does for sure."""
        life = self.life  # (draw_bounded, read once: asked for every meter value)
        return self.held() if life.confirmed and not life.unmanageable else None

    @property
    def draw_bounded(self) -> bool:
        """Whether what it holds bounds its draw for sure: not before it has confirmed a
        schedule on this connection (after a reboot its profiles may be gone)."""
        return self.life.confirmed and not self.life.unmanageable


class Dispatcher:
    def __init__(
        self,
        store: Store,
        min_current_a: float,
        retry_s: float,
        on_change: Callable[[], None],
        meter_interval_s: int = 0,
        clock: Callable[[], datetime] = utcnow,
        compliance: ComplianceRule | None = None,
        measurands: tuple[str, ...] = (),
        boot_wait_s: float = BOOT_WAIT_S,
        peak_after: timedelta = timedelta(minutes=10),
        on_capabilities: CapabilitiesKnown | None = None,
        operator: OperatorLimits | None = None,
        on_registered: Registered | None = None,
    ) -> None:
        self._store = store
        self._on_registered = on_registered
        # schedules about to be sent, and schedules accepted: one commit per turn of the loop
        self._sent_records: TurnBatch[str, tuple[tuple[Step, ...], datetime]] = TurnBatch(
            functools.partial(_write_schedules, store.save_sent_many))
        self._applied_records: TurnBatch[str, tuple[tuple[Step, ...], datetime]] = TurnBatch(
            functools.partial(_write_schedules, store.save_applied_many))
        # follow-up calls start a few dozen stations per turn of the loop (see TurnGate)
        self._follow_ups_gate = TurnGate(FOLLOW_UPS_PER_TURN)
        # a plan's wave: its sends spread over turns, ahead of the upkeep of its answers
        self._wave = WaveTurns(WAVE_STATIONS_PER_TURN)
        self._closed = False
        self._on_capabilities = on_capabilities
        self._operator = operator  # local-controller mode: the operator's limits
        self._boot_wait_s = boot_wait_s
        # a station that cannot be steered is counted at its measured peak (and a margin)
        # once a session has drawn this long
        self._peak_after = peak_after
        self._measurands = measurands  # asked of each station with the meter interval
        self._min_current_a = min_current_a
        self._retry_s = retry_s
        self._meter_interval_s = meter_interval_s
        self._on_change = on_change  # the steerable set changed: the plan must be redone
        self._clock = clock
        self._rule = compliance or ComplianceRule(tolerance_w=500, grace=timedelta(seconds=20))
        # how far back a station's holdings are kept: two grace times (see observe_draw)
        self._holdings_kept = self._rule.grace * 2
        # Stations that may hold more than the plan now gives them; raises wait for none.
        self._above: set[str] = set()
        self._settle_event = asyncio.Event()
        # Workers reading capabilities or sending limits; follow-up calls wait for none.
        self._limiting = 0
        self._limits_sent = Wake()
        self._limits_sent.set()
        # Events a station's life had no transition for, by (phase, event): each is logged
        # once per station and kept here (a bug of ours: the station is served on).
        self.illegal_transitions: Counter[tuple[Phase, Event]] = Counter()
        self._illegal_logged: set[tuple[str, Phase, Event]] = set()
        self.stations: dict[str, StationRecord] = {}
        for station_id, steps in store.applied().items():
            self.stations[station_id] = StationRecord(
                info=StationInfo(station_id, 3, 230.0, 0.0), applied=steps
            )
        # Sent before the last run ended, its answer never stored: the station may hold it
        # (counted at the higher of both) or the one before (re-confirmed at the lower).
        for station_id, steps in store.sent().items():
            if station_id in self.stations:
                self.stations[station_id].uncertain = self.stations[station_id].last_sent = steps
        for station_id, profile_ids in store.installed().items():
            if station_id in self.stations:
                state = self.stations[station_id]
                state.installed = profile_ids
                # Limited per connector without our cap last time (a profile of another
                # party outranks it, or the station refuses connector 0): so again until
                # its next boot, rather than a cap it may not apply meanwhile.
                state.handling.cap_outranked = bool(profile_ids) \
                    and STATION_MAX_PROFILE_ID not in profile_ids
        # What each station answered last time: a station that reconnects without
        # rebooting is not asked again (a BootNotification refreshes it).
        self._cached_caps: dict[str, Capabilities] = {}
        for station_id, text in store.station_capabilities().items():
            caps = Capabilities.from_json(text)
            if caps is not None:
                self._cached_caps[station_id] = caps

    # connection lifecycle -------------------------------------------------------------------
    def _fire(self, state: StationRecord, event: Event) -> bool:
        """Move the station's life on ``event``; False (logged once, counted) when its phase
        has no transition for it: a bug of ours, which must not cost the station its
        service."""
        try:
            state.life.fire(event, self._clock())
        except IllegalTransition as error:
            self.illegal_transitions[(error.phase, error.event)] += 1
            key = (state.info.station_id, error.phase, error.event)
            if key not in self._illegal_logged:
                self._illegal_logged.add(key)
                life_log.error("%s: illegal transition: %s", state.info.station_id, error)
            return False
        return True

    def connected(self, info: StationInfo, link: ChargerLink,
                  declared: Declared | None = None) -> None:
        state = self.stations.get(info.station_id)
        if state is None:
            state = self.stations[info.station_id] = StationRecord(info=info)
        state.info, state.link = info, link
        self._fire(state, Event.CONNECTED)
        state.declared = declared or UNDECLARED
        state.slots = {}
        if not state.caps.known and info.station_id in self._cached_caps:
            self._use_caps(state, self._cached_caps[info.station_id])
        if state.caps.known and self._on_capabilities is not None:
            self._on_capabilities(info.station_id, link, state.caps)
        if state.wake.on_set is None:
            state.wake.on_set = functools.partial(self._serve, state)
        state.wake.set()
        self._refresh(state)
        self._on_change()

    def booted(self, station_id: str) -> None:
        """A (re)boot may have wiped the station's profiles: send them again."""
        state = self.stations.get(station_id)
        if state is not None:
            if state.life.non_compliant:
                self._store.save_compliance(station_id, "compliant", "rebooted", self._clock())
            self._fire(state, Event.BOOTED)
            state.caps = UNKNOWN_CAPS
            state.sampling = None  # read again with its capabilities
            state.slots = {}
            # new firmware may take what the old one refused, and may follow its profiles;
            # others' profiles may have changed too: asked again
            state.handling = ProfileHandling()
            state.compliance = Compliance()
            # new firmware may state another maximum: asked again if it cannot be steered
            state.told.rated = None
            state.follow_ups.rating = state.follow_ups.rating_asked = False
            self._cached_caps.pop(station_id, None)
            state.wake.set()
            self._refresh(state)
            self._on_change()

    def connector_seen(self, station_id: str, connector_id: int) -> None:
        """The station reported on this connector: where it has more connectors than it
        said, each gets its profiles from now on (a connector without a session must be
        held at 0 W on a station that applies its cap to each connector)."""
        state = self.stations.get(station_id)
        if state is None or connector_id <= state.connectors_seen:
            return
        grew = connector_id > max(state.caps.connectors, state.connectors_seen, 1)
        state.connectors_seen = connector_id
        if grew and state.desired is not None:
            state.wake.set()

    def disconnected(self, station_id: str, link: ChargerLink) -> None:
        state = self.stations.get(station_id)
        if state is not None and state.link is link:
            state.link = None
            self._fire(state, Event.DISCONNECTED)
            self._refresh(state)
            self._on_change()

    def forget(self, station_id: str) -> bool:
        """Drop a station that is gone and holds nothing of ours; True when dropped.

        For ids that never identified themselves (the caller checks that no BootNotification
        is on record): with open admission anyone may connect under any id, and an entry
        kept for each would grow without end and, with a session, hold capacity. A station
        that acknowledged a profile of ours may still apply it offline, so it is kept.
        """
        state = self.stations.get(station_id)
        if state is None or state.link is not None or state.applied is not None \
                or state.installed:
            return False
        self._fire(state, Event.FORGOTTEN)
        del self.stations[station_id]
        self._cached_caps.pop(station_id, None)
        if state.task is not None:
            state.task.cancel()
        if station_id in self._above:
            self._above.discard(station_id)
            if len(self._above) <= 1:
                self._settled()
        self._on_change()
        return True

    async def close(self) -> None:
        self._closed = True  # workers still waiting to be started never are
        await cancel_and_wait(s.task for s in self.stations.values() if s.task)

    async def limits_sent(self, timeout: float = FOLLOW_UP_MAX_WAIT_S) -> None:
        """Until no worker is reading capabilities or sending limits (at most ``timeout``
        seconds): calls that do not change what a station may draw go after them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._limits_sent.wait()

    # plan in, reservations out --------------------------------------------------------------
    def set_desired(self, schedules: Mapping[str, tuple[Step, ...]],
                    sessions: Mapping[str, Mapping[int, int]] | None = None) -> None:
        """Each station's share, and its sessions (connector id -> transaction id)."""
        now = self._clock()
        sessions = sessions or {}
        none: Mapping[int, int] = {}
        # A plan gives most stations schedules made of the same step objects (the same
        # share for the same reason), as did the plan before: each pair of old and new
        # schedule is compared once, not once per station (10,000 stations, every schedule
        # changed: about 68 -> 27 ms of the loop, bench.plan_apply).
        compared: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[bool, bool]] = {}
        # the old schedules stay referenced until the end, so their steps' ids stay theirs
        replaced: list[tuple[Step, ...]] = []
        for station_id, steps in schedules.items():
            state = self.stations.get(station_id)
            if state is None:
                continue
            running = sessions.get(station_id, none)
            same_sessions = state.sessions == running
            desired = state.desired
            if desired is None:
                same = same_limits = False
            else:
                key = (tuple(map(id, desired)), tuple(map(id, steps)))
                found = compared.get(key)
                if found is None:
                    found = compared[key] = (
                        desired == steps, _limits_from(desired, now) == _limits_from(steps, now))
                same, same_limits = found
            if same and same_sessions:
                continue
            # A new plan mostly gives a station the same limits with a newer start (and
            # reason): it is booked, but its worker has nothing to send, so it sleeps on.
            quiet = same_sessions and same_limits and station_id not in self._above
            if desired is not None:
                replaced.append(desired)
            state.desired = steps
            if not same_sessions:
                state.sessions = dict(running)
                if state.told.sessions(frozenset(running.values())) \
                        and state.counted is not None:
                    self._on_change()  # a new EV: counted at the hardware again
            if not quiet:
                state.wake.set()
                self._refresh(state)

    def reservations(self, with_session: set[str]) -> tuple[Reservation, ...]:
        """Stations the planner must count at what they may draw, not at what it would give."""
        result = []
        now = self._clock()
        for station_id, state in self.stations.items():
            state.counted = None
            state.counting = counting = state.life.counting(
                acknowledged=state.applied is not None, session=station_id in with_session)
            info = None
            if counting is Counting.SHARE:
                continue
            if counting is Counting.HARDWARE_MAXIMUM:
                # it may start charging at any moment, at whatever it can draw
                state.counted = self._count(state, now)
                why = (f"cannot be steered (no smart charging): {state.counted.reason}"
                       if state.life.unmanageable
                       else f"refuses our profiles: {state.counted.reason}")
                held, info = (Step(now, state.counted.watts, why),), state.counted.info
            elif counting is Counting.MEASURED_DRAW:
                peak = state.compliance.peak_w
                held = (Step(now, peak, "does not follow its profile"),)
                why = f"its measured draw ({peak:.0f} W; it ignores its profile)"
            else:  # stations keep their profiles: what it acknowledged, and any in flight
                held, why = state.held() or (), "its last acknowledged schedule"
            log.debug("%s counted at %s", station_id, why)
            result.append(Reservation(station_id, held, info))
        return tuple(result)

    def _count(self, state: StationRecord, now: datetime) -> Count:
        return count(state.info, state.declared, state.told, now, self._peak_after)

    # the worker -----------------------------------------------------------------------------
    def _refresh(self, state: StationRecord) -> None:
        """Keep the set of stations above their planned limits, and what each may have
        applied lately, up to date."""
        station_id = state.info.station_id
        now = self._clock()
        held = state.held()
        state.holdings.note(now, held if state.draw_bounded else None, self._holdings_kept)
        above = (not state.reserved and state.desired is not None and held is not None
                 and is_raise(held, state.desired, now))
        if above:
            self._above.add(station_id)
        elif station_id in self._above:
            self._above.discard(station_id)
            if len(self._above) <= 1:
                # a raise waits until no other station is above: with two or more still
                # above, none can go yet, so the waiting workers sleep on
                self._settled()

    def _settled(self) -> None:
        self._settle_event.set()
        self._settle_event = asyncio.Event()

    def _target(self, state: StationRecord) -> tuple[Step, ...] | None:
        """What to send: after a (re)connection, first re-confirm what the station holds.

        Until then the planner counts the station at that schedule and would offer
        it 0 W; re-sending its own schedule avoids pausing its EV for nothing.
        """
        if not state.life.confirmed and state.applied is not None:
            # It may hold a later schedule than the one it acknowledged (its answer was
            # lost, or the bridge died before storing it), lower at some moments: an
            # event's drop. Re-sending the acknowledged one would raise it there.
            if state.uncertain is not None and state.last_sent is not None:
                return lower_envelope(state.applied, state.last_sent)
            return state.applied
        return state.desired

    def _built(self, state: StationRecord, now: datetime,
               target: tuple[Step, ...] | None = None) -> tuple[BuiltProfile, list[BuiltProfile]]:
        """The station cap, and the profiles that carry it to this station.

        A one-connector station gets the cap alone. One with more connectors, or
        more sessions, also gets each session's part of the share on its connector:
        some stations apply a connector-0 cap to each connector, so two sessions
        would draw it twice. A station that refuses connector 0 gets only those.
        ``target``: what to carry, when not what the plan says (see :meth:`_dispatch`).
        """
        target = target or self._target(state)
        assert target is not None
        handling = state.handling
        level = 0 if handling.stack_zero else PREFERRED_STACK_LEVEL
        if self._operator is not None and not handling.stack_zero:
            level = self._operator.stack_level(state.info.station_id, state.caps)
        cap = station_max_profile(target, state.info, state.caps, now, self._min_current_a, level)
        per_connector = handling.per_connector_only or handling.cap_outranked
        profiles = [] if per_connector else [cap]
        room = state.caps.max_profiles
        known = max(state.caps.connectors, state.connectors_seen)
        connectors = max(known, *state.sessions, 1)
        own = 0 if per_connector else 1  # the station cap's place
        # Too few places for a default and a session limit on every connector: a session
        # limit takes its connector's default's place.
        one_place_each = room is not None and room < own + 2 * connectors
        if per_connector or known > 1 or len(state.sessions) > 1:
            profiles += connector_profiles(target, state.sessions, known,
                                           state.info, state.caps, now, self._min_current_a,
                                           level, one_place_each)
        if room is not None and room < own + connectors:
            # Not even one place per connector: the session limits matter more (a new
            # session waits for the plan instead).
            profiles = [p for p in profiles if p.purpose != TX_DEFAULT]
        if self._operator is not None:
            cap, profiles = self._with_operator_limits(state, cap, profiles, now)
        return cap, self._placed(state, profiles)

    def _with_operator_limits(self, state: StationRecord, cap: BuiltProfile,
                              profiles: list[BuiltProfile], now: datetime,
                              ) -> tuple[BuiltProfile, list[BuiltProfile]]:
        """Local-controller mode: each profile at most what the operator's own allow."""
        assert self._operator is not None
        station_id, info, caps = state.info.station_id, state.info, state.caps
        limited_cap = self._operator.limited(station_id, cap, info, caps, now,
                                             self._min_current_a)
        return limited_cap, [limited_cap if p is cap else
                             self._operator.limited(station_id, p, info, caps, now,
                                                    self._min_current_a) for p in profiles]

    def limits_changed(self, station_id: str) -> None:
        """The operator's limits on the station changed (local-controller mode): its
        profiles are built again."""
        state = self.stations.get(station_id)
        if state is not None:
            state.wake.set()

    def _placed(self, state: StationRecord, profiles: list[BuiltProfile]) -> list[BuiltProfile]:
        """Each profile at a stack level no profile of another party with its purpose uses on
        its connector; one without such a level is not sent (see :func:`free_level`)."""
        foreign = state.handling.foreign
        if not foreign:
            return profiles
        placed = []
        for profile in profiles:
            taken = {level for purpose, connector, level in foreign
                     if purpose == profile.purpose and connector == profile.connector_id}
            level = free_level(profile.stack_level, taken, state.caps.max_stack_level)
            if level is None:
                log.warning("%s: every stack level of %s on connector %d holds a profile of "
                            "another party; ours is not sent", state.info.station_id,
                            profile.purpose, profile.connector_id)
                continue
            placed.append(profile if level == profile.stack_level
                          else replace(profile, stack_level=level))
        return placed

    def _pending(self, state: StationRecord, profiles: list[BuiltProfile],
                 now: datetime) -> list[BuiltProfile]:
        """The profiles the station does not hold yet, decreases first."""
        def unchanged(new: BuiltProfile) -> bool:
            old = state.slots.get(new.profile_id)
            return (state.life.confirmed and old is not None and old.purpose == new.purpose
                    and old.transaction_id == new.transaction_id
                    and old.stack_level == new.stack_level and old.unit == new.unit
                    and same_schedule(old.applied, new.applied, now))

        def raises(new: BuiltProfile) -> bool:
            old = state.slots.get(new.profile_id)
            if old is None:  # a first profile restricts unless it allows something
                return any(step.limit_w > 0 for step in new.applied)
            return is_raise(new.applied, old.applied, now)

        return sorted((p for p in profiles if not unchanged(p)), key=raises)

    async def _wait_for_decreases(self, state: StationRecord) -> bool:
        """Wait until no other station may hold more than the plan gives it.

        False when this station's own plan changed meanwhile: its worker starts over.
        A station that cannot lower (offline, refusing) leaves the set by becoming
        reserved, so this wait cannot last for ever.
        """
        while len(self._above) > 1 or (self._above and state.info.station_id not in self._above):
            if state.wake.is_set():
                return False
            settled = asyncio.ensure_future(self._settle_event.wait())
            woken = asyncio.ensure_future(state.wake.wait())
            try:
                await asyncio.wait({settled, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                settled.cancel()
                woken.cancel()
        return True

    def _serve(self, state: StationRecord) -> None:
        """Start the station's worker unless it runs: woken, it has something to do.

        A worker per connected station that waited for its next wake would cost a task and
        its frame for each of thousands of idle stations; one runs only while there is work,
        and there is never more than one per station (its calls go one at a time)."""
        if state.task is not None or self.stations.get(state.info.station_id) is not state:
            return
        # a station whose draw nothing of ours bounds yet (one that just joined, or
        # reconnected) does not wait behind a wave to the others
        unbounded = not state.draw_bounded
        if state.starting:
            if unbounded:
                self._start(state)  # it reconnected while it waited (its place then does nothing)
            return
        state.starting = True
        # counted as limiting while it waits: follow-up calls do not go out mid-wave
        self._limiting_begins()
        self._wave.start(functools.partial(self._start, state), at_once=unbounded)

    def _start(self, state: StationRecord) -> None:
        if state.task is None and not self._closed \
                and self.stations.get(state.info.station_id) is state:
            state.task = asyncio.create_task(self._worker(state),
                                             name=f"dispatch {state.info.station_id}")
        if state.starting:
            state.starting = False
            self._limiting_ends()

    def _limiting_begins(self) -> None:
        """A station's limit is on its way (see :meth:`limits_sent`)."""
        self._limiting += 1
        self._limits_sent.clear()

    def _limiting_ends(self) -> None:
        self._limiting -= 1
        if not self._limiting:
            self._limits_sent.set()

    async def _worker(self, state: StationRecord) -> None:
        try:
            await self._work(state)
        finally:
            if state.task is asyncio.current_task():
                state.task = None

    async def _work(self, state: StationRecord) -> None:
        """Until it is not woken and has no follow-up call it may make now."""
        while True:
            # a station that joined has its capabilities read before the plan gives it a
            # limit; its follow-up calls wait for that limit
            if state.life.allows.calls and not state.wake.is_set() and state.follow_ups.due \
                    and self._target(state) is not None:
                await self._follow_up(state)
                continue
            if not state.wake.is_set():
                return  # woken again later: a new worker
            state.wake.clear()
            link = state.link
            if link is None:
                continue
            if not link.registered.is_set():
                await self._until_registered(link)
                if state.link is not link:
                    continue  # gone meanwhile; a new link wakes the worker again
            if state.life.phase is Phase.CONNECTED:
                self._registered(state, link)
            must_read = state.life.phase is Phase.REGISTERED \
                and (not state.caps.known or state.handling.foreign is None)
            if not must_read and self._target(state) is None:
                continue
            self._limiting_begins()
            try:
                if must_read:
                    # Read at once, without waiting for the plan to give it a limit: in a
                    # boot storm the reads then overlap the joins, and the plan's wave is
                    # one call per station rather than two in a row.
                    epoch = state.life.epoch
                    await self._read(state, link)
                    if state.life.epoch != epoch:
                        continue  # reconnected or rebooted meanwhile: woken again
                    if self._target(state) is None:
                        continue  # the plan wakes it with its limit
                await self._dispatch(state, link)
            finally:
                self._limiting_ends()

    async def _until_registered(self, link: ChargerLink) -> None:
        """Until the station's boot is accepted, or it shows it needs none (see BOOT_WAIT_S)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._boot_wait_s):
                await link.registered.wait()

    def _registered(self, state: StationRecord, link: ChargerLink) -> None:
        """Calls may go to it from now on: its boot is answered, it sent another request
        first, or it kept silent for the boot wait."""
        if not self._fire(state, Event.REGISTERED if link.registered.is_set()
                          else Event.BOOT_WAIT_OVER):
            return
        if state.caps.known and state.life.unmanageable:
            self._fire(state, Event.NO_SMART_CHARGING)  # known from an earlier connection
        elif self._on_registered is not None:
            self._on_registered(state.info.station_id)

    async def _read(self, state: StationRecord, link: ChargerLink) -> None:
        """Read what it can do and which profiles of others it holds, where not known yet."""
        epoch = state.life.epoch
        self._fire(state, Event.READING)
        if not state.caps.known:
            await self._read_capabilities(state, link, epoch)
        elif state.sampling is None:
            # Its capabilities are kept from an earlier run, its sampling is not (this run may
            # want another, or the last one stopped before setting it): read once, after the
            # limits. It stays known while this run lasts; a reboot reads both again.
            state.follow_ups.meter_setup = True
        if state.life.phase is Phase.READING and state.handling.foreign is None:
            await self._read_installed(state, link, epoch)
        if state.life.phase is Phase.READING and state.life.epoch == epoch:
            was_unmanageable = state.life.unmanageable
            self._fire(state, Event.READ)
            if was_unmanageable:  # new firmware with smart charging
                self._refresh(state)
                self._on_change()

    async def _read_capabilities(self, state: StationRecord, link: ChargerLink,
                                 epoch: int) -> None:
        station_id = state.info.station_id
        try:
            read: CapabilitiesRead | CallFailed = await link.read_capabilities()
        except CallFailed as error:
            read = error
        if state.life.epoch != epoch:
            return  # it rebooted or reconnected meanwhile: asked again
        if isinstance(read, CallFailed):
            # Not asked again before its next boot: a station that cannot answer
            # would otherwise delay every profile by a timeout.
            log.warning("%s: capabilities not read (%s); assuming amps, stack level 0, "
                        "24 periods until its next boot", station_id, read)
            self._use_caps(state, Capabilities(known=True))
            state.sampling = SAMPLING_NOT_READ
        else:
            caps = read.capabilities
            self._cached_caps[station_id] = caps
            self._store.save_station(station_id, {"capabilities": caps.to_json()})
            self._use_caps(state, caps)
            state.sampling = read.sampling
        state.follow_ups.meter_setup = True
        if self._on_capabilities is not None:
            self._on_capabilities(station_id, link, state.caps)

    async def _read_installed(self, state: StationRecord, link: ChargerLink,
                              epoch: int) -> None:
        """Learn the profiles of other parties the station holds, where it can tell (2.0.1):
        ours must never take their places, nor outrank their station limits."""
        station_id = state.info.station_id
        try:
            installed = await link.installed_profiles()
        except CallFailed as error:
            log.info("%s: installed profiles not listed (%s)", station_id, error)
            installed = None
        if state.life.epoch != epoch:
            return  # it rebooted or reconnected meanwhile: asked again
        handling = state.handling
        others = [p for p in installed or () if not is_ours(p.profile_id)]
        handling.foreign = frozenset((p.purpose, p.connector_id, p.stack_level)
                                     for p in others) if others else NONE_FOREIGN
        for profile in others:
            log.info("%s: holds profile %d of another party (%s, %s, connector %d, stack "
                     "level %d); left as it is", station_id, profile.profile_id, profile.source,
                     profile.purpose, profile.connector_id, profile.stack_level)
            below_ours = self._operator is not None \
                and profile.stack_level < self._operator.stack_level(station_id, state.caps)
            if (profile.purpose, profile.connector_id) == (STATION_MAX, 0) \
                    and not handling.cap_outranked and not below_ours:
                # ours beside it would hide it where it is lower, or be hidden where higher
                handling.cap_outranked = True
                log.warning("%s: the limit goes on each connector, under that profile",
                            station_id)

    async def _follow_up(self, state: StationRecord) -> None:
        """The calls that may wait, once no worker is sending limits (or after a while)."""
        await first_of((state.wake, self._limits_sent), FOLLOW_UP_MAX_WAIT_S)
        link = state.link
        follow = state.follow_ups
        if state.wake.is_set():
            return  # its limits first
        if link is None:
            follow.verify = None  # asked again on its next connection
            return
        if not state.life.allows.calls:
            return  # it reconnected meanwhile: after its boot
        # the fleet's follow-ups come due together, once its wave is answered
        await self._follow_ups_gate.enter()
        if state.link is not link or not state.life.allows.calls or state.wake.is_set():
            return  # it left, rebooted or has a new limit to take first
        if follow.verify is not None:
            cap, follow.verify = follow.verify, None
            if state.applied == cap.applied and state.life.phase is Phase.ACKNOWLEDGED \
                    and state.handling.composite_supported:
                await self._verify_composite(state, link, cap)
        elif follow.meter_setup:
            follow.meter_setup = False
            await self._set_up_sampling(state, link)
        elif follow.rating:
            follow.rating = False
            await self._ask_rating(state, link)

    async def _dispatch(self, state: StationRecord, link: ChargerLink) -> None:
        """Bring the station's profiles to what its plan says, or book that it holds them."""
        station_id = state.info.station_id
        if not state.life.allows.profiles:
            return
        epoch = state.life.epoch
        now = self._clock()
        cap, profiles = self._built(state, now)
        todo = self._pending(state, profiles, now)
        if not todo and state.life.confirmed and state.uncertain is None:
            if state.applied is None or not same_schedule(cap.applied, state.applied, now):
                # the station holds it already (its profiles round alike): book it only
                state.applied = cap.applied
                self._store.save_applied(station_id, cap.applied, now)
                self._refresh(state)
            return
        held = state.held()
        if is_raise(cap.applied, held, now):
            target = self._target(state)
            if held is not None and target is not None and station_id in self._above:
                # Lower than what it holds at some moments, higher at others (an event's
                # drop, then a ramp back). Its decrease must not wait for the others: they
                # may be waiting for it. The lower of both goes out now, the rest once no
                # station is above its limit any more.
                floor = lower_envelope(target, held)
                cap, profiles = self._built(state, now, floor)
                todo = self._pending(state, profiles, now)
                await self._send(state, link, cap, todo, {p.profile_id for p in profiles}, now)
                state.wake.set()
                return
            if not await self._wait_for_decreases(state):
                return  # its plan changed while it waited: start over with the new one
            if state.life.epoch != epoch or state.link is not link:
                return  # it went offline or rebooted meanwhile
            # the plan may have moved while we waited: send what it says now
            now = self._clock()
            cap, profiles = self._built(state, now)
            todo = self._pending(state, profiles, now)
        await self._send(state, link, cap, todo, {p.profile_id for p in profiles}, now)

    def _use_caps(self, state: StationRecord, caps: Capabilities) -> None:
        """Its capabilities, read or known from before. Without smart charging it cannot be
        steered; with it, it may be again once they are read after a boot (see :meth:`_read`)."""
        state.caps = caps
        if caps.smart_charging:
            return
        newly = not state.life.unmanageable
        self._fire(state, Event.NO_SMART_CHARGING)
        # asked once per boot: new firmware may state another maximum
        self._rating_wanted(state)
        if newly:
            log.warning("%s: no SmartCharging among its feature profiles (%s); counted at "
                        "its hardware maximum", state.info.station_id,
                        ",".join(sorted(caps.features)))
            self._refresh(state)
            self._on_change()

    def _rating_wanted(self, state: StationRecord) -> None:
        """It cannot be steered: what it states of its maximum current matters now."""
        if not state.follow_ups.rating_asked and not state.declared.max_current:
            state.follow_ups.rating = True

    async def _ask_rating(self, state: StationRecord, link: ChargerLink) -> None:
        """Read (never write) the maximum current a key of the station's own states."""
        state.follow_ups.rating_asked = True
        try:
            rated = await link.read_rated_current()
        except CallFailed as error:
            log.info("%s: configuration not read (%s); counted at the default maximum",
                     state.info.station_id, error)
            return
        if rated is not None and rated != state.told.rated:
            log.info("%s: states its maximum in %s (%s)", state.info.station_id, rated.source,
                     f"{rated.amps:g} A" if rated.amps is not None else f"{rated.watts:g} W")
            state.told.rated = rated
            self._on_change()

    async def _set_up_sampling(self, state: StationRecord, link: ChargerLink) -> None:
        """Ask for the meter interval and the measurands the bridge wants, where the station
        does not hold them already (see :mod:`bridge.ocpp.sampling`)."""
        station_id = state.info.station_id
        if not self._meter_interval_s and not self._measurands:
            return
        held = state.sampling
        if held is None:  # its capabilities are from an earlier run (see _read)
            epoch = state.life.epoch
            try:
                held = await link.read_sampling()
            except CallFailed as error:
                log.info("%s: meter settings not read (%s)", station_id, error)
                held = SAMPLING_NOT_READ
            if state.life.epoch != epoch or state.link is not link:
                state.follow_ups.meter_setup = True  # gone or rebooted: asked again
                return
            state.sampling = held
        for what in sampling_kept(held, self._meter_interval_s, self._measurands):
            log.info("%s: keeps its own %s (read-only)", station_id, what)
        change = sampling_changes(held, self._meter_interval_s, self._measurands)
        if change.empty:
            return
        reply = await link.set_sampling(change)
        if change.interval_s is not None and reply.interval != ACCEPTED:
            log.info("%s: keeps its own meter interval (%s)", station_id, reply.interval)
        if change.measurands is not None and reply.measurands != ACCEPTED:
            log.info("%s: keeps its own measurands (%s)", station_id, reply.measurands)

    async def _record_sent(self, station_id: str, steps: tuple[Step, ...],
                           at: datetime) -> None:
        """Store a schedule about to go to a station, and return once it is committed (with
        the others of this turn of the loop: see :class:`~bridge.aio.TurnBatch`)."""
        await self._sent_records.add(station_id, (steps, at))

    async def _send(self, state: StationRecord, link: ChargerLink, cap: BuiltProfile,
                    todo: list[BuiltProfile], wanted: set[int], now: datetime) -> None:
        station_id = state.info.station_id
        epoch = state.life.epoch
        bounded = state.draw_bounded  # (before this send: it may confirm it)
        # From here until the last answer, the station may already apply the new schedule;
        # stored first, so that a bridge killed before the answer knows it too.
        if state.applied is None or not same_schedule(cap.applied, state.applied, now):
            await self._record_sent(station_id, cap.applied, now)
            if state.life.epoch != epoch or state.link is not link:
                return  # it went away or rebooted while the record was written
        state.in_flight = state.last_sent = cap.applied
        self._fire(state, Event.SENT)
        self._refresh(state)
        failed: tuple[BuiltProfile, str, str] | None = None
        new_ids = False
        # The rest of the wave goes out before its answers are booked: the last profile's
        # answer is taken up once the wave lets it (one that comes meanwhile waits unread,
        # and wakes nothing). A station nothing bounded yet is confirmed at once: the plan
        # counts it at its worst until then.
        held = False

        async def hold() -> None:
            nonlocal held
            held = True
            await self._wave.after_send()

        try:
            for built in todo:
                try:
                    status = await link.set_profile(
                        built, hold if bounded and built is todo[-1] else None)
                    detail = ""
                except CallFailed as error:
                    status, detail = "Failed", str(error)
                    if error.unsupported:  # no smart charging, although it did not say so
                        status = "NotSupported"
                self._store.record_profile(station_id, now, built.unit, built.payload_json,
                                           built.applied, status, detail)
                if status != ACCEPTED:
                    failed = (built, status, detail)
                    if status == "Failed" or built is not todo[0]:
                        # no answer, or part of the wave applies: count the higher of both
                        state.uncertain = state.held()
                    break
                if state.life.epoch == epoch:  # what it holds on this connection
                    state.slots[built.profile_id] = built
                if built.profile_id not in state.installed:
                    state.installed.add(built.profile_id)
                    new_ids = True
            if bounded and not held:
                # its last call never reached the hold (an earlier one failed, or it was
                # refused before it went out): it waits for the wave all the same
                await self._wave.after_send()
            if failed is None:
                # on record before anything goes on from it, in one commit with the other
                # answers of this turn of the loop (still counted in flight meanwhile)
                await self._applied_records.add(station_id, (cap.applied, now))
        finally:
            state.in_flight = None
            if new_ids:
                self._store.save_installed(station_id, state.installed)
        # It reconnected, rebooted or left meanwhile: the answers speak of what it held
        # before, and move nothing of this connection's life (its worker is woken again).
        late = state.life.epoch != epoch
        handling = state.handling
        if failed is None:
            was_steerable = state.steerable
            # a new limit: its composite schedule is asked again (once the fleet's limits
            # are out), so that "verified" speaks of the limit in force
            same = state.applied is not None and state.life.confirmed \
                and same_schedule(cap.applied, state.applied, now)
            state.applied, state.uncertain, state.retry_s = cap.applied, None, 0.0
            if log.isEnabledFor(logging.DEBUG):  # the description costs more than the rest
                log.debug("%s: profiles accepted (%s)", station_id, _describe(cap.applied))
            if late:
                state.life.late_answer(accepted=True)
                self._on_change()
            else:
                self._fire(state, Event.ACCEPTED_SAME if same else Event.ACCEPTED)
                if not was_steerable:
                    state.wake.set()  # it may have been a re-confirmation: now the plan's turn
                    self._on_change()
                state.slots = {i: b for i, b in state.slots.items() if i in wanted}
                await self._clear_stale(state, link, wanted)
                if state.life.phase is Phase.ACKNOWLEDGED and state.life.epoch == epoch \
                        and handling.composite_supported:
                    state.follow_ups.verify = cap
        else:
            built, status, detail = failed
            if late:
                log.info("%s: SetChargingProfile %s after it reconnected or rebooted %s",
                         station_id, status, detail)
                newly = not state.life.refuses
                state.life.late_answer(accepted=False)
                if newly:
                    self._rating_wanted(state)
                    self._on_change()  # count it at what it may draw from now on
            elif status == "NotSupported":
                log.warning("%s: does not support SetChargingProfile; counted at its hardware "
                            "maximum until its next boot", station_id)
                self._fire(state, Event.NO_SMART_CHARGING)
                self._rating_wanted(state)
                self._on_change()
            elif status == "Rejected" and built.stack_level > 0 and not handling.stack_zero:
                log.info("%s: rejected stack level %d; using 0", station_id, built.stack_level)
                handling.stack_zero = True
                self._fire(state, Event.FALLBACK)
                state.wake.set()
            elif status == "Rejected" and built.connector_id == 0 \
                    and not handling.per_connector_only:
                log.info("%s: rejected a profile on connector 0; limiting each connector",
                         station_id)
                handling.per_connector_only = True
                self._fire(state, Event.FALLBACK)
                state.wake.set()
            else:
                state.retry_s = min(state.retry_s * 2, self._retry_s * MAX_BACKOFF) \
                    or self._retry_s
                log.warning("%s: SetChargingProfile %s on connector %d %s; retrying in %.1f s",
                            station_id, status, built.connector_id, detail, state.retry_s)
                if status == "Rejected":
                    # the fallbacks did not help either: start from the top next time
                    handling.stack_zero = handling.per_connector_only = False
                newly = not state.life.refuses
                self._fire(state, Event.REFUSED)
                if newly:
                    self._rating_wanted(state)
                    self._on_change()  # count it at what it may draw from now on
                self._retry_later(state)
        self._refresh(state)

    async def _clear_stale(self, state: StationRecord, link: ChargerLink, wanted: set[int]) -> None:
        """Clear our profiles the station may hold but the current strategy no longer sends.

        Run after the new profiles are in place, so the station is never without a limit.
        """
        cleared = False
        for profile_id in sorted(state.installed - wanted):
            try:
                status = await link.clear_charging_profile(profile_id)
            except CallFailed as error:
                log.info("%s: ClearChargingProfile %d failed (%s); retried after the next "
                         "profile", state.info.station_id, profile_id, error)
                break
            log.debug("%s: cleared profile %d (%s)", state.info.station_id, profile_id, status)
            state.installed.discard(profile_id)  # Accepted, or Unknown: it is gone either way
            cleared = True
        if cleared:
            self._store.save_installed(state.info.station_id, state.installed)

    async def _verify_composite(self, state: StationRecord, link: ChargerLink,
                                cap: BuiltProfile) -> None:
        """Ask the station what limit it computes, after each new limit it accepted.

        It costs a call, so it waits until the fleet's limits are out (``_follow_up``), and
        a limit replaced meanwhile is not checked: only the one in force.

        The whole window is compared, not one moment: a profile of another party may allow
        more now and less later. Where the station computes more than we set, a profile of
        another party with our cap's purpose outranks our cap. It is never replaced nor
        outranked in turn (it may be a fuse or a tariff limit, lower later): the limit goes
        on each connector instead, which the station caps by that profile in turn. A
        station that still computes more than we set is flagged, and counted at the most
        its composite schedule allows.
        """
        station_id = state.info.station_id
        epoch = state.life.epoch
        try:
            composite = await link.composite_schedule(0, VERIFY_WINDOW_S, cap.unit)
        except CallFailed as error:
            if state.life.epoch == epoch:
                log.info("%s: no composite schedule (%s); meter values will tell", station_id,
                         error)
                state.handling.composite_supported = error.error_code is None
            return
        if state.life.epoch != epoch:
            return  # it reconnected or rebooted meanwhile: asked again after its next limit
        handling = state.handling
        if composite is None:
            handling.composite_supported = False
            return
        end = composite.start + timedelta(seconds=VERIFY_WINDOW_S)
        excess = composite_above(composite, cap.applied, state.info, end,
                                 self._rule.tolerance_w)
        if excess is None:
            self._fire(state, Event.VERIFIED)
            return
        at, theirs_w, mine_w = excess
        if not handling.cap_outranked and not handling.per_connector_only:
            log.warning("%s: computes %.0f W at %s where we set %.0f W: a profile of another "
                        "party outranks our station cap; it is left as it is, and the limit "
                        "goes on each connector, under it", station_id, theirs_w,
                        f"{at:%H:%M:%S}", mine_w)
            handling.cap_outranked = True
            state.wake.set()
            return
        peak_w = max(from_unit(limit, cap.unit, state.info)
                     for start, limit in composite.periods_at() if start < end)
        self._flag(state, f"its composite schedule gives {theirs_w:.0f} W at {at:%H:%M:%S} "
                          f"where we set {mine_w:.0f} W", max(peak_w, theirs_w))

    def _flag(self, state: StationRecord, detail: str, peak_w: float) -> None:
        state.compliance.flag(detail, peak_w)
        self._flagged(state)

    def _flagged(self, state: StationRecord) -> None:
        self._fire(state, Event.FLAGGED)
        station_id = state.info.station_id
        log.warning("%s: non-compliant: %s; counted at %.0f W", station_id,
                    state.compliance.detail, state.compliance.peak_w)
        self._store.save_compliance(station_id, "non-compliant", state.compliance.detail,
                                    self._clock())
        self._refresh(state)
        self._on_change()

    # meter values ---------------------------------------------------------------------------
    def observe_draw(self, station_id: str, measured_w: float,
                     stamped: datetime | None = None, lines: frozenset[int] = frozenset(),
                     now: datetime | None = None) -> None:
        """The station's total draw just measured (taken at ``stamped`` by its clock, its
        meter naming current on ``lines``): does it follow what it may hold? And for one
        that cannot be steered, what does it tell of what it may draw?

        It is judged against the highest limit it may have applied over the grace time
        before the reading, whatever changed meanwhile: waiting for its limits to settle
        would never judge it in a fleet whose limits change every few seconds. ``now``:
        when it was received, if the caller read the clock already.
        """
        state = self.stations.get(station_id)
        if state is None:
            return
        if now is None:
            now = self._clock()
        state.told.observe(now, measured_w, lines)
        if state.counted is not None:
            before, after = state.counted, self._count(state, now)
            if measured_w > before.watts or after.info != before.info \
                    or abs(after.watts - before.watts) > self._rule.tolerance_w:
                self._on_change()  # counted otherwise now
        rule = self._rule
        state.holdings.note(now, state.bounded_by(), self._holdings_kept)
        taken = taken_at(rule, now, stamped)
        limit = state.holdings.highest(taken, now)
        # the grace time before matters only to a reading above the limit (most are not)
        window = state.holdings.highest(taken - rule.grace, now) \
            if limit is not None and rule.exceeds(measured_w, limit) else limit
        was_flagged = state.compliance.flagged
        if state.compliance.observe(rule, now, measured_w, limit, window):
            if not was_flagged:
                self._flagged(state)
                return
            if not state.compliance.flagged:
                self._fire(state, Event.CLEARED)
                log.info("%s: follows its limit again", station_id)
                self._store.save_compliance(station_id, "compliant",
                                            state.compliance.detail, now)
                self._refresh(state)
            self._on_change()  # counted higher now, or given a share again

    def _retry_later(self, state: StationRecord) -> None:
        asyncio.get_running_loop().call_later(state.retry_s or self._retry_s, state.wake.set)


def composite_above(composite: CompositeSchedule, steps: tuple[Step, ...], info: StationInfo,
                    end: datetime, tolerance_w: float) -> tuple[datetime, float, float] | None:
    """Where, before ``end``, a station's composite schedule allows more than ``steps`` by
    over ``tolerance_w``: the moment of the largest excess, its limit then and ours (W);
    None when nowhere.

    Each stretch between changes of either is judged at its middle; stretches shorter than
    two seconds are left out, since stations round their periods to whole seconds.
    """
    edges = {start for start, _ in composite.periods_at()}
    edges |= {step.start for step in steps if composite.start < step.start}
    times = sorted(t for t in edges | {end} if composite.start <= t <= end)
    worst: tuple[datetime, float, float] | None = None
    for begin, until in zip(times, times[1:], strict=False):
        if until - begin < timedelta(seconds=2):
            continue
        middle = begin + (until - begin) / 2
        theirs, mine = composite.limit_at(middle), value_at(steps, middle)
        if theirs is None or mine is None:
            continue
        theirs_w = from_unit(theirs, composite.unit, info)
        if theirs_w > mine.limit_w + tolerance_w and \
                (worst is None or theirs_w - mine.limit_w > worst[1] - worst[2]):
            worst = (middle, theirs_w, mine.limit_w)
    return worst


def _limits_from(steps: tuple[Step, ...], now: datetime) -> list[tuple[datetime, float]]:
    """The limits a schedule gives from ``now`` on, exactly (its first moment is ``now``)."""
    current = value_at(steps, now)
    head = [(now, current.limit_w)] if current is not None else []
    return head + [(s.start, s.limit_w) for s in steps if s.start > now]


def _describe(steps: tuple[Step, ...]) -> str:
    return ", ".join(f"{s.start:%H:%M:%S} {s.limit_w / 1000:.1f} kW" for s in steps)


def _write_schedules(write: Callable[[list[tuple[str, tuple[Step, ...], datetime]]], None],
                     items: Iterable[tuple[str, tuple[tuple[Step, ...], datetime]]]) -> None:
    write([(station_id, steps, at) for station_id, (steps, at) in items])
