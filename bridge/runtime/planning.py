"""The planning loop: when to plan, and a plan from what the runtime knows.

:class:`ReplanLoop` decides when: a change asks for a plan, changes within a second share
one, a boot storm makes one once it pauses, and a plan is made at least every
:data:`REPLAN_PERIOD_S`. :class:`Planner` makes it: the fleet as observed, the events the
plan follows, the operator's holds and the grid's conditions are taken on the event loop
(:class:`~bridge.runtime.plan_inputs.PlanInputs`), :func:`~bridge.holds.plan_with_holds`
runs on them in the planning process (:mod:`bridge.runtime.plan_process`; a thread for a
small fleet) while the loop goes on serving the stations, and each station's schedule
goes to the dispatcher back on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol

from bridge.clock import Clock
from bridge.config import Config
from bridge.dispatch import Dispatcher, StationRecord
from bridge.external_ceilings import station_ceiling
from bridge.ocpp.external_limits import ExternalLimit
from bridge.runtime.collector_pause import CollectorPause
from bridge.runtime.dr import DrEvents
from bridge.runtime.plan_inputs import PlanInputs
from bridge.runtime.plan_process import PlanningProcess, PlanningProcessLost
from bridge.runtime.stations import StationEvents
from bridge.store import EncodedPlan, Store
from bridge.timings import PLAN_BUCKETS_S, Histogram
from policies.fleet import Fleet, Plan, PlanState, StationInfo, Step, value_at
from policies.plan import Conditions
from ven.interface import VenDriver

log = logging.getLogger(__name__)

# While a plan runs in its thread, the interpreter switches threads after this long rather
# than the default 5 ms (see Planner.replan).
PLANNING_SWITCH_INTERVAL_S = 0.0005
# From this many stations on, plans are made in the planning process. Below it a plan is
# under a tenth of a second of CPU and the event loop is seldom busy enough to keep it
# from the thread: at 1,000 stations a process made dispatch no faster in the benchmark,
# and cost 40 MB (docs/benchmarks-notes.md).
PROCESS_FROM_STATIONS = 2_000
# No collection from a large fleet's plan asked for until this long after it was handed
# over (bridge.runtime.collector_pause)
WAVE_S = 3.0
REPLAN_PERIOD_S = 30.0  # also replans on every change; this only catches event boundaries
# Changes within this window share one plan: each plan may re-send a profile to every
# station. (A DR event is planned at once, without waiting.)
REPLAN_COALESCE_S = 1.0
# A boot storm (stations joining by the hundred) would make one plan a second, each
# changing every station's share. From STORM_CHANGES_PER_S changes a second on, a plan
# waits until changes pause for REPLAN_QUIET_S, but not longer than REPLAN_SETTLE_MAX_S:
# one plan for the whole storm. Stations known before keep what they hold meanwhile.
STORM_CHANGES_PER_S = 50
REPLAN_QUIET_S = 0.5
REPLAN_SETTLE_MAX_S = 5.0
# A change that must not wait for the coalescing (a station's voltage monitor saw a sag)
# is planned at once, but no sooner than this after the plan before: a sag that sets off
# the monitors of a whole feeder makes a few plans, not one per station.
URGENT_GAP_S = 0.1
# How often the VTN's silence is compared with the policy's fail-safe time.
FAILSAFE_CHECK_S = 1.0

Hold = tuple[str, str, datetime]  # (mode, reason, since), as the store keeps them


class Timer(Protocol):
    """The loop's time: monotonic seconds, and waiting on them."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, wake: asyncio.Event, timeout: float) -> bool:
        """True as soon as ``wake`` is set; False once ``timeout`` seconds passed without."""
        ...


class AsyncioTimer:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, wake: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            return False
        return True


class ReplanLoop:
    """When to plan: soon after a change (coalesced), at once after one that cannot wait,
    once per storm, at least periodically."""

    def __init__(self, timer: Timer | None = None) -> None:
        self._timer = timer or AsyncioTimer()
        self._monotonic = self._timer.monotonic
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._changes: deque[float] = deque()  # when plans were asked, the last second

    def request(self, urgent: bool = False) -> None:
        """Something the plan depends on changed: plan soon; ``urgent``: without waiting
        for the coalescing (at most :data:`URGENT_GAP_S` after the plan before)."""
        self._changes.append(self._monotonic())
        self._wake.set()
        if urgent:
            self._urgent.set()

    def _changes_last_second(self) -> int:
        now = self._monotonic()
        while self._changes and now - self._changes[0] > 1.0:
            self._changes.popleft()
        return len(self._changes)

    async def run(self, plan: Callable[[], Awaitable[None]]) -> None:
        timer = self._timer
        while True:
            await timer.wait(self._wake, REPLAN_PERIOD_S)
            self._wake.clear()
            if self._changes_last_second() >= STORM_CHANGES_PER_S:
                await self._settle(timer.monotonic() + REPLAN_SETTLE_MAX_S)
            self._urgent.clear()  # this plan covers it
            try:
                await plan()
            except Exception:  # a planning bug must not stop the bridge; the stations keep limits
                log.exception("planning failed; stations keep their current profiles")
            # changes meanwhile share the next plan, unless one cannot wait
            await timer.sleep(URGENT_GAP_S)
            await timer.wait(self._urgent, REPLAN_COALESCE_S - URGENT_GAP_S)

    async def _settle(self, deadline: float) -> None:
        """Wait until changes pause (or the deadline passes), so a burst makes one plan."""
        timer = self._timer
        while (left := deadline - timer.monotonic()) > 0:
            if not await timer.wait(self._wake, min(REPLAN_QUIET_S, left)):
                return
            self._wake.clear()


# The stations as the planner counts them, from their configured details, the sessions
# (station -> connector -> transaction) and the time: see LocalController.with_ceilings.
OperatorCeilings = Callable[[Mapping[str, StationInfo], Mapping[str, Mapping[int, int]], datetime],
                    dict[str, StationInfo]]


class Planner:
    """Makes the plan from the runtime's state, hands the dispatcher each station's
    schedule, and stores a plan that changed."""

    def __init__(self, config: Config, store: Store, clock: Clock, dispatcher: Dispatcher,
                 fleet: StationEvents, dr: DrEvents, holds: Mapping[str, Hold], ven: VenDriver,
                 resumed_state: PlanState | None, started_at: datetime,
                 request_replan: Callable[[], None],
                 replan_urgently: Callable[[], None] | None = None,
                 operator_ceilings: OperatorCeilings | None = None,
                 after_apply: Callable[[Plan], object] | None = None,
                 log_level: str = "INFO") -> None:
        self.config = config
        # told each plan once its schedules are handed over (boot shares it did not cover)
        self._after_apply = after_apply
        self._store = store
        self._clock = clock
        self._dispatcher = dispatcher
        self._fleet = fleet
        self._dr = dr
        self._holds = holds  # the operator's, as they change
        self._ven = ven
        self._started_at = started_at  # the fail-safe counts the VTN's silence from here
        self._request_replan = request_replan
        self._replan_urgently = replan_urgently or request_replan
        # local-controller mode: no station counted above what the operator lets it draw
        self._operator_ceilings = operator_ceilings
        self.plan: Plan | None = None
        self.resumed_state = resumed_state  # the allocation state of the last run
        # how long each plan took, from its inputs taken to its schedules handed over, and
        # when the last one ended (/metrics)
        self.durations = Histogram(PLAN_BUCKETS_S)
        self.collector = CollectorPause()  # no collection around a large fleet's plan
        self.last_ended_at: datetime | None = None
        self._planned_silent = False  # whether the last plan saw the VTN silent too long
        # A plan for 10,000 stations is about half a second of pure-Python CPU; made on the
        # event loop, it would hold every station's replies that long. For a fleet of
        # PROCESS_FROM_STATIONS or more it is made in a process of its own (see
        # bridge.runtime.plan_process for why a thread is not enough there), and in this
        # one thread for a smaller fleet, or while that process is not running. In the
        # thread the loop still gets the interpreter: it drops it at every frame it sends
        # and waits the switch interval to have it back, so the interval is lowered while a
        # plan runs (see _switching_often).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner")
        self.process = PlanningProcess(log_level)
        self._one_plan = asyncio.Lock()
        self._asked = 0  # plans asked for so far
        self._covered = 0  # of those, how many the last applied plan took its inputs after

    def site_step(self, now: datetime) -> Step | None:
        """The site limit the plan holds now (None before the first plan)."""
        return value_at(self.plan.site, now) if self.plan else None

    def _vtn_silent(self, now: datetime) -> bool:
        """Whether the VTN has been silent longer than the policy's fail-safe time (never,
        with no such time). Silence counts from the VEN's last contact, or from the start."""
        after = self.config.policy.failsafe.vtn_silent_after_s
        heard = self._ven.last_contact or self._started_at
        return after is not None and (now - heard).total_seconds() > after

    async def watch_vtn_silence(self, every_s: float = FAILSAFE_CHECK_S) -> None:
        """Ask for a plan as soon as the VTN's silence crosses the fail-safe time, either
        way: the fail-safe then holds, or lifts, within about a second rather than at the
        next periodic plan. (OpenADR 2.0b and 3 alike: the VEN's last contact ages while
        the VTN is away and is renewed by its first answer after, which need not change
        any event.)"""
        if self.config.policy.failsafe.vtn_silent_after_s is None:
            return
        while True:
            await asyncio.sleep(every_s)
            if self._vtn_silent(self._clock()) != self._planned_silent:
                self._request_replan()

    def voltage_changed(self, station_id: str, at_once: bool = False) -> None:
        """A station's voltage reading is newer: plan soon if it may change a restriction.

        ``at_once``: the station reported it the moment it crossed a threshold (a variable
        monitor's event); where it tightens the restriction, the plan does not wait for
        the coalescing, so the station's limit drops within a second of the crossing.
        """
        rule = self.config.policy.voltage
        grid = self._fleet.grid
        if not grid.worth_a_plan(rule, station_id, self.plan):
            return
        if at_once and rule is not None:
            min_share = 0.0  # the site's minimum depends on the sessions: asked loosely
            if rule.scope == "station":
                info = self.config.station_info(station_id)
                min_w = info.watts(self.config.policy.allocation.min_current_a)
                min_share = min(1.0, min_w / info.max_w) if info.max_w > 0 else 1.0
            if grid.tightens(rule, station_id, self.plan, min_share):
                self._replan_urgently()
                return
        self._request_replan()

    async def replan(self, urgent: bool = False) -> None:
        """Plan from the runtime's state as it is now, and apply the plan.

        Returns once a plan whose inputs were taken after this call has been applied. One
        plan is made at a time; calls made while one is made share the next one.
        ``urgent``: a DR signal or an operator's limit changed (see :class:`CollectorPause`).
        """
        self._asked += 1
        asked = self._asked
        async with self._one_plan:
            if self._covered >= asked:
                return  # a plan that began after this call was applied meanwhile
            covers = self._asked
            began = time.perf_counter()
            inputs = self._inputs(self._clock())
            large = len(inputs.fleet.stations) >= PROCESS_FROM_STATIONS
            if large:
                self.collector.hold(urgent)
            try:
                plan, encoded = await self._make(inputs)
                if encoded is not None:
                    # stored in a turn of the loop of its own: at 5,000 stations storing
                    # and handing over each hold the loop for about a tenth of a second
                    self._store_changed(encoded)
                    await asyncio.sleep(0)
                self._apply(plan)
                self._covered = covers
            except asyncio.CancelledError:
                # the caller gave up (shutting down, or its request was dropped); what it
                # asked a plan for is planned by the loop soon after
                self._request_replan()
                raise
            finally:
                if large:
                    # the wave of profiles the plan set off: at 10,000 stations about 1.5 s
                    self.collector.release_after(WAVE_S)
                self.durations.observe(time.perf_counter() - began)
                self.last_ended_at = self._clock()

    async def _make(self, inputs: PlanInputs) -> tuple[Plan, EncodedPlan | None]:
        """The plan, made in the planning process where it runs, else in the thread."""
        process = self.process
        if len(inputs.fleet.stations) >= PROCESS_FROM_STATIONS:
            process.start_soon()  # once it runs, it makes every plan, whatever the size
        if process.started:
            try:
                return await process.plan(inputs)
            except PlanningProcessLost:
                # logged; made in the thread, from inputs as they are now (the process
                # may have taken seconds to fail)
                inputs = self._inputs(self._clock())
        with _switching_often():
            return await asyncio.get_running_loop().run_in_executor(self._thread, inputs.plan)

    async def close(self) -> None:
        """Stop the planning process, then the thread (a plan under way in the thread is
        finished and dropped)."""
        self.collector.release()  # first: whatever else fails, collections run again
        await self.process.close()
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _inputs(self, now: datetime) -> PlanInputs:
        dispatcher = self._dispatcher
        fleet_state = self._fleet
        sessions = fleet_state.sessions
        stations = {sid: self.config.station_info(sid) for sid in dispatcher.stations}
        running = fleet_state.running()  # station -> connector -> transaction
        if self._operator_ceilings is not None:
            stations = self._operator_ceilings(stations, running, now)
        # an EV plugged in whose transaction has not started is planned as a session, where
        # the station's cap is what lets it draw (see bridge.runtime.plugged)
        plugged = [s for s in fleet_state.plugged_in()
                   if _capped_as_one(dispatcher.stations.get(s.station_id))]
        planned_sessions = [*sessions.values(), *plugged]
        with_session = {s.station_id for s in planned_sessions}
        measured: dict[str, float] = {}
        reported: dict[str, datetime] = {}
        for (station_id, _), meter in fleet_state.meters.items():
            if meter.latest:
                at, watts = meter.latest
                measured[station_id] = measured.get(station_id, 0.0) + watts
                reported[station_id] = max(at, reported.get(station_id, at))
        fleet = Fleet(
            stations=stations,
            sessions=tuple(s for s in planned_sessions if s.station_id in stations),
            reservations=dispatcher.reservations(with_session),
            measured_w=measured,
            last_report=reported,
            # as fresh as the newest reading while EVs charge (failsafe.fleet_stale_after_s)
            taken_at=max(reported.values()) if reported and sessions else None,
            ceilings=self._ceilings(stations, now),
        )
        holds = {sid: hold[0] for sid, hold in self._holds.items()}
        planned = tuple(self._dr.planned_events(now))
        scopes = {event.event_id: targeted for event in planned
                  if (targeted := self._dr.event_stations(event)) is not None}
        self._planned_silent = self._vtn_silent(now)
        conditions = Conditions(baselines_w=dict(self._dr.baselines),  # a DR event adds one
                                vtn_last_heard=self._ven.last_contact or self._started_at,
                                event_stations=scopes,
                                voltages=fleet_state.grid.readings(stations))
        return PlanInputs(planned, self.config.policy, self.config.site, fleet, now,
                          holds, self.plan.state if self.plan else self.resumed_state,  # type: ignore[arg-type]
                          conditions, self.plan)

    def _apply(self, plan: Plan) -> None:
        """Hand the dispatcher each station's schedule."""
        self.plan = plan
        # The sessions as they are now, not as the plan saw them: profiles go to live
        # transactions. A session that began or ended meanwhile asked for the next plan.
        self._dispatcher.set_desired(plan.stations, self._fleet.running())
        if self._after_apply is not None:
            self._after_apply(plan)

    def _store_changed(self, encoded: EncodedPlan) -> None:
        """The plan, and its state with the events' baselines, in one commit."""
        if encoded.state is not None:
            self._dr.prune_baselines()
        self._store.save_encoded_plan(encoded, self._dr.baselines)

    def _ceilings(self, stations: Mapping[str, StationInfo], now: datetime
                  ) -> dict[str, tuple[Step, ...]]:
        """The limits other parties hold stations to (their external constraints), as the
        ceilings the plan gives them no more than."""
        by_station: dict[str, list[ExternalLimit]] = {}
        for (station_id, _, _), limit in self._fleet.external_limits.items():
            if station_id in stations:
                by_station.setdefault(station_id, []).append(limit)
        if not by_station:
            return {}
        connectors: dict[str, list[int]] = {}
        for session in self._fleet.sessions.values():
            connectors.setdefault(session.station_id, []).append(session.connector_id)
        ceilings = {}
        for station_id, limits in by_station.items():
            steps = station_ceiling(limits, stations[station_id],
                                    connectors.get(station_id, []), now)
            if steps:
                ceilings[station_id] = steps
        return ceilings


def _capped_as_one(record: StationRecord | None) -> bool:
    """One connector as far as it said, limited by our cap on connector 0 (not per
    connector, where a connector without a session is held at 0 W until it has one)."""
    return record is not None and record.caps.connectors <= 1 \
        and not record.handling.per_connector_only and not record.handling.cap_outranked


@contextlib.contextmanager
def _switching_often() -> Iterator[None]:
    """While a plan runs in its thread: the event loop's thread gives the interpreter up at
    each call into the system (each frame it sends), the planning thread takes it, and the
    loop's thread waits the switch interval to have it back. At the default 5 ms, a loop
    answering a few hundred stations a second spent most of a plan waiting."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, PLANNING_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
