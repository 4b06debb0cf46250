"""From DR events, site, fleet and time to a plan: the site limit and each station's schedule.

Pure: the caller passes ``now``, what it measured (baselines, when the VTN was last
heard) and the previous plan's :class:`PlanState`; the plan hands back the next state.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from policies.allocation import Demand, allocate_fair
from policies.events import DrEvent, EventStatus, OptType
from policies.fleet import (
    Fleet,
    Plan,
    PlanState,
    Site,
    StationInfo,
    StationState,
    Step,
    Why,
    explain,
    step_of,
    value_at,
)
from policies.model import Group, Policy
from policies.signals import Need, event_ask, last_ask
from policies.tree import FixedLoad, Load, Share, allocate_tree, count_fitting
from policies.voltwatt import (
    SITE_KEY,
    Floor,
    VoltageReading,
    VoltHold,
    absorb,
    respond,
    site_reading,
)

HELD_REASON = "held at 0 W until it acknowledges a limit (counted at what it may draw)"
# Future steps a plan may hold for rotations and ramps, so a long event cannot make it huge.
MAX_STEPS = 400


@dataclass(frozen=True)
class Conditions:
    """What the caller knows besides the events and the fleet."""

    # per event id: the site load measured before the event (for deltas and offsets)
    baselines_w: Mapping[str, float] = field(default_factory=dict)
    vtn_last_heard: datetime | None = None  # None: never checked (no fail-safe on it)
    rng: random.Random | None = None  # draws restore delays; None: seeded from the time
    # per event id: the stations it targets, when it names only some of the site's resources
    # or groups (absent: the whole site)
    event_stations: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # each station's latest line-to-neutral voltages (policy.voltage acts on them)
    voltages: Mapping[str, VoltageReading] = field(default_factory=dict)


# -- opting in or out -------------------------------------------------------------------------

def decide_opt(event: DrEvent, policy: Policy, site: Site | None = None,
               baseline_w: float | None = None) -> tuple[OptType, str]:
    """Opt in unless the site cannot respond to the event, or a rule says to stay out."""
    names = {signal.name for signal in event.signals}
    handled = sorted({s.name for s in event.signals if policy.handles(s.name, s.type)})
    if policy.opts_out_unsupported and not handled:
        return "optOut", f"no signal this policy acts on (got {', '.join(sorted(names))})"
    below = policy.opt_out.simple_below
    if below is not None and handled == ["SIMPLE"]:
        highest = max(i.value for s in event.signals if s.name == "SIMPLE" for i in s.intervals)
        if highest < below:
            return "optOut", (f"SIMPLE level {highest:g} is below {below}, the lowest level "
                              f"this site responds to (opt_out.simple_below)")
    limit = policy.opt_out.shed_exceeds
    if limit is not None and site is not None:
        baselines = {} if baseline_w is None else {event.event_id: baseline_w}
        normal = site.capacity_w if baseline_w is None else baseline_w
        starts = sorted({i.start for s in event.signals for i in s.intervals})
        for at in starts:
            ask = event_ask(event, policy, site, at, baselines)
            if ask is None:
                continue
            shed = normal - ask.limit_w
            if shed > limit * site.capacity_w + 1e-6:
                return "optOut", (
                    f"the event asks to shed {shed / 1000:g} kW at {at:%H:%M}, more than the "
                    f"{limit:.0%} of capacity ({limit * site.capacity_w / 1000:g} kW) "
                    f"the site can give (opt_out.shed_exceeds)")
    if not handled:
        return "optIn", "opted in by policy without a signal it acts on"
    return "optIn", f"policy {policy.name} acts on {', '.join(handled)}"


# -- the site limit ---------------------------------------------------------------------------

def _recovery_ask(event: DrEvent, policy: Policy, site: Site, at: datetime,
                  baselines: Mapping[str, float], price_floor: tuple[float, Why] | None = None,
                  ) -> tuple[float, tuple[Why, ...]] | None:
    """During an event's recovery period its limit rises in steps from its last to capacity."""
    end = event.end
    if end is None or not event.recovery or event.status == EventStatus.CANCELLED:
        return None
    if not end <= at < end + event.recovery:
        return None
    last = last_ask(event, policy, site, baselines, price_floor)
    if last is None:
        return None
    step = timedelta(seconds=policy.restore.step_s)
    done = math.floor((at - end) / step) * step
    fraction = min(done / event.recovery, 1.0)
    limit = last.limit_w + (site.capacity_w - last.limit_w) * fraction
    return limit, (Why("event", f"event {event.event_id}"),
                   Why("restore", f"recovery period until {end + event.recovery:%H:%M:%S}, "
                                  f"{fraction:.0%} restored"))


def _failsafe(policy: Policy, site: Site, fleet: Fleet, now: datetime,
              conditions: Conditions) -> tuple[float, Why] | None:
    rule = policy.failsafe
    limit = rule.limit.watts_of(site.capacity_w)
    heard = conditions.vtn_last_heard
    if rule.vtn_silent_after_s is not None and heard is not None and \
            (now - heard).total_seconds() > rule.vtn_silent_after_s:
        return limit, Why("failsafe", f"fail-safe: VTN silent since {heard:%H:%M:%S} "
                                      f"-> {rule.limit.describe()}")
    taken = fleet.taken_at
    if rule.fleet_stale_after_s is not None and taken is not None and \
            (now - taken).total_seconds() > rule.fleet_stale_after_s:
        return limit, Why("failsafe", f"fail-safe: fleet snapshot from {taken:%H:%M:%S} "
                                      f"is stale -> {rule.limit.describe()}")
    return None


def _target_at(events: Sequence[DrEvent], policy: Policy, site: Site, at: datetime,
               baselines: Mapping[str, float], failsafe: tuple[float, Why] | None,
               needs: Sequence[Need] = (),
               voltage: tuple[float, Why] | None = None,
               price_floor: tuple[float, Why] | None = None) -> tuple[float, tuple[Why, ...]]:
    """The smallest of the capacity, the fail-safe, the site's volt-watt restriction and
    every event's limit at ``at`` (a price signal's at least ``price_floor``)."""
    limit, chain = site.capacity_w, (Why("site", "site capacity"),)
    if failsafe is not None and failsafe[0] < limit:
        limit, chain = failsafe[0], (failsafe[1],)
    if voltage is not None and voltage[0] < limit:
        limit, chain = voltage[0], (voltage[1],)
    for event in events:
        ask = event_ask(event, policy, site, at, baselines, needs, price_floor)
        if ask is not None and ask.limit_w < limit:
            limit, chain = ask.limit_w, ask.chain
        recovery = _recovery_ask(event, policy, site, at, baselines, price_floor)
        if recovery is not None and recovery[0] < limit:
            limit, chain = recovery
    return limit, chain


def site_limit_at(events: Sequence[DrEvent], policy: Policy, site: Site, at: datetime,
                  baselines: Mapping[str, float] | None = None) -> tuple[float, str]:
    """The minimum of the capacity and every event's limit at ``at``, with its reason."""
    limit, chain = _target_at(events, policy, site, at, baselines or {}, None)
    return limit, explain(chain)


def _event_times(events: Sequence[DrEvent], policy: Policy, now: datetime) -> set[datetime]:
    times = set()
    step = timedelta(seconds=policy.restore.step_s)
    for event in events:
        for signal in event.signals:
            for interval in signal.intervals:
                times.update(t for t in (interval.start, interval.end) if t > now)
        if event.end is not None and event.recovery:
            at = event.end
            while at <= event.end + event.recovery:
                if at > now:
                    times.add(at)
                at += step
    return times


def _rise_since(state: PlanState | None, now: datetime) -> datetime | None:
    """When the previous plan began to raise the site limit, between its time and ``now``."""
    if state is None:
        return None
    return next((at for at in state.rises if state.at < at <= now), None)


def _ramped(targets: list[tuple[datetime, float, tuple[Why, ...]]], policy: Policy,
            state: PlanState | None, now: datetime,
            rise_at: datetime | None) -> tuple[list[Step], tuple | None, list[datetime]]:
    """The target series with every rise limited to the ramp rate (in steps).

    A rise found at ``now`` began at ``rise_at`` when the previous plan scheduled it.
    Returns the steps, the ramp in progress at ``now`` and when each rise began.
    """
    rule = policy.restore
    current = state.site_limit_w if state else None
    if rule.ramp_kw_per_min is None:
        rises = []
        for index, (at, target, _) in enumerate(targets):
            if current is not None and target > current + 1e-6:
                rises.append(rise_at if index == 0 and rise_at else at)
            current = target
        return [step_of(t, w, c) for t, w, c in targets], None, rises
    rate = rule.ramp_kw_per_min * 1000 / 60  # W/s
    step = timedelta(seconds=rule.step_s)
    anchor: tuple[datetime, float] | None = state.ramp_from if state else None
    steps: list[Step] = []
    rises: list[datetime] = []
    ramp_at_now: tuple | None = None
    for index, (at, target, chain) in enumerate(targets):
        until = targets[index + 1][0] if index + 1 < len(targets) else None
        if current is not None and target > current + 1e-6 and anchor is None:
            anchor = (rise_at if index == 0 and rise_at else at, current)
            rises.append(anchor[0])
        t = at
        while True:
            if anchor is None:
                value, links = target, chain
            else:
                elapsed = math.floor((t - anchor[0]) / step) * step.total_seconds()
                ramp = anchor[1] + rate * elapsed
                if ramp >= target - 1e-6:
                    anchor = None
                    value, links = target, chain
                else:
                    value = ramp
                    links = (*chain, Why("restore", f"ramp {rule.ramp_kw_per_min:g} kW/min from "
                                                    f"{anchor[1] / 1000:g} kW"))
            steps.append(step_of(t, value, links))
            current = value
            if t == now:
                ramp_at_now = anchor
            if anchor is None or len(steps) > MAX_STEPS:
                break
            done = math.floor((t - anchor[0]) / step) + 1
            t = anchor[0] + done * step
            if until is not None and t >= until:
                break
    return steps, ramp_at_now, rises


def _needs(fleet: Fleet) -> list[Need]:
    """Sessions whose remaining energy and departure are known."""
    needs = []
    for session in fleet.sessions:
        info = fleet.stations.get(session.station_id)
        if info is None or session.energy_needed_wh is None or session.departure is None:
            continue
        needs.append(Need(session.energy_needed_wh, session.departure, info.max_w))
    return needs


# -- volt-watt ---------------------------------------------------------------------------------

def voltage_holds(policy: Policy, site: Site, fleet: Fleet,
                  readings: Mapping[str, VoltageReading], previous: Mapping[str, VoltHold],
                  now: datetime) -> dict[str, VoltHold]:
    """The volt-watt restriction of each station (or of the site) after these readings."""
    rule = policy.voltage
    if rule is None:
        return {}
    min_a = policy.allocation.min_current_a
    sessions: dict[str, list[int]] = {}
    for session in fleet.sessions:
        sessions.setdefault(session.station_id, []).append(session.connector_id)
    holds: dict[str, VoltHold] = {}
    if rule.scope == "site":
        if rule.release_after_s is not None:
            # a station silent this long no longer holds the site's restriction
            gone = timedelta(seconds=rule.release_after_s)
            readings = {sid: r for sid, r in readings.items() if now - r.at <= gone}
        reading, complete = site_reading(readings, now, timedelta(seconds=rule.stale_after_s))
        min_w = sum(fleet.stations[sid].watts(min_a) for sid in sessions if sid in fleet.stations)
        min_share = min(1.0, min_w / site.capacity_w) if site.capacity_w > 0 else 1.0
        hold = respond(rule, reading, site.voltage_v, min_share, previous.get(SITE_KEY), now,
                       may_ease=complete)
        if hold is not None:
            holds[SITE_KEY] = hold
        return holds
    for sid, info in fleet.stations.items():
        max_w = info.max_w_for(sessions.get(sid, []))
        min_share = min(1.0, info.watts(min_a) / max_w) if max_w > 0 else 1.0
        hold = respond(rule, readings.get(sid), site.voltage_v, min_share, previous.get(sid), now)
        if hold is not None:
            holds[sid] = hold
    return holds


def _floor_until(now: datetime, stale_after_s: float) -> datetime:
    """Until when the schedules sent carry the over-voltage floor.

    Its readings are fresh only so long: a station whose bridge falls silent must drop
    the floor too. The end moves in whole blocks of ``stale_after_s`` (between one and two
    ahead), so that stations get a new schedule once a block, not on every plan.
    """
    block = stale_after_s
    blocks = math.ceil(now.timestamp() / block) + 1
    return datetime.fromtimestamp(blocks * block, now.tzinfo)


def _floor_at(floor: Floor | None, at: datetime, until: datetime) -> Floor | None:
    """The floor where it holds at ``at`` (None where it does not)."""
    return floor if floor is not None and floor.share > 0 and at < until else None


def _price_floor(floor: Floor | None, capacity_w: float) -> tuple[float, Why] | None:
    """What event_ask takes: the floor in watts of ``capacity_w``, and why."""
    return None if floor is None else (floor.share * capacity_w, Why("voltage", floor.reason))


def voltage_floor(policy: Policy, site: Site, readings: Mapping[str, VoltageReading],
                  previous: Floor | None, now: datetime) -> Floor | None:
    """The over-voltage floor under price limits (site-wide, as price signals are)."""
    if policy.voltage is None:
        return None
    return absorb(policy.voltage, readings, site.voltage_v, previous, now)


# -- sharing among the stations ---------------------------------------------------------------

@dataclass
class _Station:
    info: StationInfo
    group: Group | None
    started: datetime
    connectors: list[int]
    # what does not change between the plan's steps, worked out once per plan
    load: Load | None = None  # its share's bounds before any per-step cap
    min_w: float = 0.0


def _group_label(group: Group | None) -> str:
    return f"group {group.name}" if group is not None else ""


def make_plan(events: Sequence[DrEvent], policy: Policy, site: Site, fleet: Fleet,
              now: datetime, state: PlanState | None = None,
              conditions: Conditions | None = None) -> Plan:
    """The plan from ``now`` on. ``events`` are those the site has opted in to.

    Stations with a charging session share the limit (one share per station, within its
    hardware and every circuit above it); stations without a session get 0 W, so an EV
    that arrives while the bridge is away cannot break the site limit.
    """
    conditions = conditions or Conditions()
    rule = policy.allocation
    failsafe = _failsafe(policy, site, fleet, now, conditions)
    volts = voltage_holds(policy, site, fleet, conditions.voltages,
                          state.voltage if state else {}, now)
    site_volts = volts.get(SITE_KEY)
    site_cap = None
    if site_volts is not None and site_volts.share < 1.0:
        site_cap = (site_volts.share * site.capacity_w, Why("voltage", site_volts.reason))
    floor = voltage_floor(policy, site, conditions.voltages, state.absorb if state else None,
                          now)
    floor_until = _floor_until(now, policy.voltage.stale_after_s) \
        if floor is not None and policy.voltage is not None else now

    # the site limit: targets at every event boundary, then ramped; an event that targets
    # only some stations limits those stations instead (see _scoped_caps)
    scoped = [e for e in events if e.event_id in conditions.event_stations]
    site_events = [e for e in events if e.event_id not in conditions.event_stations]
    times = sorted({now, floor_until} | _event_times(events, policy, now))
    needs = _needs(fleet)
    targets = [(at, *_target_at(site_events, policy, site, at, conditions.baselines_w,
                                failsafe, needs, site_cap,
                                _price_floor(_floor_at(floor, at, floor_until),
                                             site.capacity_w)))
               for at in times]
    rise_at = _rise_since(state, now)
    site_series, ramp_now, rise_times = _ramped(targets, policy, state, now, rise_at)

    sessions = sorted(fleet.sessions, key=lambda s: (s.started_at, s.station_id, s.connector_id))
    charging: dict[str, _Station] = {}
    for session in sessions:
        info = fleet.stations.get(session.station_id)
        if info is None:
            continue
        entry = charging.setdefault(session.station_id, _Station(
            info, rule.group_of(info.station_id), session.started_at, []))
        entry.connectors.append(session.connector_id)
    for sid, entry in charging.items():
        info = entry.info
        weight = entry.group.weight if entry.group and rule.strategy == "priority" else 1.0
        entry.min_w = info.watts(rule.min_current_a)
        entry.load = Load(sid, info.circuit, info.amps_per_watt(), entry.min_w,
                          info.max_w_for(entry.connectors), weight)
    reserved_ids = {r.station_id for r in fleet.reservations}
    previous = dict(state.stations) if state else {}
    silent_after = timedelta(seconds=policy.failsafe.station_silent_after_s)
    silent = {
        sid: previous[sid].limit_w for sid, seen in fleet.last_report.items()
        if sid in previous and sid in fleet.stations and sid not in reserved_ids
        and now - seen > silent_after
    }

    # restores after a rise of the site limit: each station waits a random delay
    unsteered = silent.keys() | reserved_ids
    window = policy.restore.random_window_s
    # the plan step at which each rise starts (a rise found now may have begun earlier);
    # the first rise after a drop begins a restore, and each station draws its delay once
    rises = {max(at, now): at for at in rise_times} if window > 0 else {}
    drops = set()
    before = state.site_limit_w if state else None
    for step in site_series:
        if before is not None and step.limit_w < before - 1e-6:
            drops.add(step.start)
        before = step.limit_w
    restore_began = state.restore_began if state else None
    restore_now = restore_began
    # where the previous plan's schedules have taken each session by now: switched on or
    # off at a step after that plan was made (the stations followed their profiles)
    advanced = {sid: _advance(old, now) for sid, old in previous.items()}

    queue = [*(s.start for s in site_series)]
    for reservation in fleet.reservations:
        queue.extend(s.start for s in reservation.steps if s.start > now)
    for ceiling in fleet.ceilings.values():
        queue.extend(s.start for s in ceiling if s.start > now)
    horizon = max(queue) + timedelta(seconds=rule.rotation.period_s)
    heap = sorted(set(queue))
    heapq.heapify(heap)

    site_steps: list[Step] = []
    station_steps: dict[str, list[Step]] = {sid: [] for sid in fleet.stations}
    states: dict[str, StationState] = {sid: advanced[sid] if sid not in silent else old
                                       for sid, old in previous.items()}
    state_now: dict[str, StationState] = {}
    paused_now: tuple[str, ...] = ()
    switches: dict[str, list[StationState]] = {}  # each session's switches after now
    done: set[datetime] = set()
    while heap and len(site_steps) < MAX_STEPS:
        at = heapq.heappop(heap)
        if at in done:
            continue
        done.add(at)
        site_step = value_at(site_series, at)
        assert site_step is not None
        if at in drops:
            restore_began = None
        if at in rises and restore_began is None:
            # a rise the previous plan scheduled keeps its time, so the same delays follow
            began = restore_began = rises[at]
            rng = conditions.rng or random.Random(began.isoformat())
            for sid in sorted(charging):
                old = states.get(sid)
                if old is None:
                    continue
                delay = timedelta(seconds=rng.uniform(0, window))
                if began + delay <= at:
                    continue  # its restore time has passed already
                states[sid] = replace(old, restore_at=began + delay)
                heapq.heappush(heap, began + delay)
        caps = _scoped_caps(scoped, conditions.event_stations, policy, site, fleet, charging,
                            silent, at, conditions.baselines_w,
                            _floor_at(floor, at, floor_until))
        step_at = _allocate_at(
            at, site_step, site, fleet, policy, charging, states, silent, reserved_ids, caps,
            {sid: hold for sid, hold in volts.items() if sid != SITE_KEY})
        chosen, site_step, extra = step_at.stations, step_at.site, step_at.extra
        # Later turns come with later plans: a schedule that both lowers and raises a
        # station is harder to apply safely than one plan per turn.
        for when in extra if at == now else ():
            if when <= horizon and when not in done:
                heapq.heappush(heap, when)
        site_steps.append(site_step)
        for station_id, step in chosen.items():
            station_steps[station_id].append(step)
            old = states.get(station_id)
            # charging: it has a share (a paused session holding its minimum has none)
            on = step.limit_w > 0 and station_id not in step_at.kept_alive
            if station_id in charging and station_id not in unsteered:
                restore_at = old.restore_at if old and old.restore_at and old.restore_at > at \
                    else None
                resume_until = step_at.resume_until.get(station_id) if on else None
                if old is None:  # a new session: paused is not a switch, it never charged
                    since, switched = (at, True) if on else (charging[station_id].started, False)
                elif old.charging == on:
                    since, switched = old.since, old.switched
                else:
                    since, switched = at, True
                    if resume_until is not None and resume_until <= horizon:
                        heapq.heappush(heap, resume_until)  # its share, by its own schedule
                paused_at = old.paused_at_limit_w if old and not on and old.charging == on \
                    else site_step.limit_w
                hard = not on and station_id in step_at.hard
                if old is None or old.limit_w != step.limit_w or old.charging != on or \
                        old.since != since or old.restore_at != restore_at or \
                        old.switched != switched or old.paused_at_limit_w != paused_at or \
                        old.resume_until != resume_until or old.hard_pause != hard:
                    states[station_id] = StationState(step.limit_w, on, since, restore_at,
                                                      switched, paused_at, resume_until, hard)
                    if at > now and old is not None and old.charging != on:
                        switches.setdefault(station_id, []).append(states[station_id])
            elif station_id not in silent:
                states.pop(station_id, None)
        if at == now:
            state_now = dict(states)
            restore_now = restore_began
            paused_now = tuple(sid for sid in charging if sid not in reserved_ids and
                               (chosen[sid].limit_w == 0 or sid in step_at.kept_alive))
    for sid, later in switches.items():
        # the next plan starts from where these schedules have taken the session by then
        if sid in state_now:
            chain = None
            for switch in reversed(later):
                chain = replace(switch, then=chain)
            state_now[sid] = replace(state_now[sid], then=chain)
    return Plan(
        made_at=now,
        site=_merge(site_steps),
        stations={sid: _merge(steps) for sid, steps in station_steps.items() if steps},
        state=PlanState(at=now, site_limit_w=site_series[0].limit_w, stations=state_now,
                        ramp_from=ramp_now, rises=tuple(rise_times),
                        restore_began=restore_now, voltage=volts, absorb=floor),
        paused=paused_now,
    )


@dataclass(frozen=True)
class _Allocated:
    """One step of the plan: what :func:`_allocate_at` decided."""

    stations: dict[str, Step]
    site: Step  # the site step (an exemption may lift it)
    extra: list[datetime]  # moments a rotation, a restore or a resume asks to plan again
    kept_alive: set[str]  # paused sessions holding their minimum (pause: minimum)
    hard: set[str]  # paused for a reason that asks for 0 A (voltage, targeted event)
    resume_until: dict[str, datetime]  # sessions that charge at their minimum until then


def _allocate_at(at: datetime, site_step: Step, site: Site, fleet: Fleet, policy: Policy,
                 charging: Mapping[str, _Station], states: Mapping[str, StationState],
                 silent: Mapping[str, float], reserved_ids: set[str],
                 caps: Mapping[str, tuple[float, tuple[Why, ...]]] | None = None,
                 voltage: Mapping[str, VoltHold] | None = None,
                 ) -> _Allocated:
    """Every station's step at ``at`` and the site step (an exemption may lift it)."""
    rule = policy.allocation
    caps = caps or {}
    fixed: list[FixedLoad] = []
    for reservation in fleet.reservations:
        step = value_at(reservation.steps, at)
        if step is None:
            continue
        info = reservation.info or fleet.stations.get(reservation.station_id)
        if info is not None:
            fixed.append(FixedLoad(info.circuit, info.amps_per_watt(), step.limit_w))
        else:
            # a station the plan knows nothing of (not described, not connected): counted at
            # the site's root, on every line at once, which is never less than what it draws
            per_line = 1 / site.voltage_v
            fixed.append(FixedLoad(None, (per_line, per_line, per_line), step.limit_w))
    for sid, watts in silent.items():
        info = fleet.stations[sid]
        fixed.append(FixedLoad(info.circuit, info.amps_per_watt(), watts))
    reserved = sum(f.watts for f in fixed)
    # limits other parties hold stations to now (those that limit anything)
    ceilings = {sid: step for sid, steps in fleet.ceilings.items()
                if (step := value_at(steps, at)) is not None and math.isfinite(step.limit_w)}

    loads: dict[str, Load] = {}
    keep_paused: dict[str, str] = {}
    # paused for a reason that asks for 0 A whatever the room: never kept alive
    zero: set[str] = set()
    # what a resuming session is given meanwhile, why, and until when
    resuming: dict[str, tuple[float, Why, datetime]] = {}
    guard = timedelta(seconds=rule.rotation.guard_s)
    resume = timedelta(seconds=rule.resume_s)
    extra: list[datetime] = []
    for sid, entry in charging.items():
        if sid in reserved_ids or sid in silent:
            continue
        info, base, min_w = entry.info, entry.load, entry.min_w
        assert base is not None
        max_w = base.max_w
        old = states.get(sid)
        if old is not None and not old.charging and old.hard_pause:
            # so is one such a reason paused, until it charges again (its guard time after
            # a voltage pause, say, keeps it at 0 A as with pause: zero)
            zero.add(sid)
        measured = fleet.measured_w.get(sid)
        aware = rule.demand_aware
        if aware.enabled and measured is not None and old is not None and old.charging:
            margin = info.watts(aware.margin_a)
            # an EV at its cap may want more: it gets it back at the next plan; one that
            # stays a margin below (its own limit, a full battery) keeps the cap
            if measured + margin <= old.limit_w + 1.0:
                max_w = min(max_w, max(min_w, measured + margin))
        if old is not None and old.restore_at is not None and at < old.restore_at:
            # held where it was; paused below its minimum, it may hold that (pause: minimum)
            max_w = min(max_w, max(old.limit_w, min_w))
            if old.limit_w < min_w:
                keep_paused[sid] = f"random restore delay until {old.restore_at:%H:%M:%S}"
            extra.append(old.restore_at)
        if old is not None and not old.charging and old.switched and at - old.since < guard \
                and site_step.limit_w <= old.paused_at_limit_w + 1e-6:
            # paused by a turn or a lower limit only just now; a higher site limit since
            # (an event's end) takes away the reason it was paused, so it may resume
            keep_paused[sid] = f"guard time until {old.since + guard:%H:%M:%S} " \
                               f"(paused at {old.since:%H:%M:%S})"
            extra.append(old.since + guard)
        until = _resume_until(old, at, resume)
        if until is not None:
            # after a pause, the minimum first: the EV wakes and starts at the current it
            # is sure to take, and rises to its share at a step of the schedule later on.
            # Its share is kept for it meanwhile, so no other station's limit rises only
            # to fall again when it takes its share.
            resuming[sid] = (min_w, Why("allocation", f"resuming after a pause: the minimum "
                                                      f"current until {until:%H:%M:%S}"),
                             until)
            if old is not None and old.charging:
                extra.append(until)  # (a session resuming here has its step pushed then)
        if sid in caps:
            cap_w = caps[sid][0]
            if cap_w < min_w:
                keep_paused[sid] = "its targeted event leaves it no room"
                zero.add(sid)
            max_w = min(max_w, max(cap_w, min_w))
        volts = (voltage or {}).get(sid)
        if volts is not None and volts.share < 1.0:
            if volts.share <= 0:
                keep_paused[sid] = volts.reason
                zero.add(sid)
            else:
                max_w = min(max_w, max(min_w, volts.share * info.max_w_for(entry.connectors)))
        ceiling = ceilings.get(sid)
        if ceiling is not None and ceiling.limit_w < max_w:
            if ceiling.limit_w < min_w:  # its EV cannot charge below the minimum anyway
                keep_paused[sid] = f"{ceiling.reason}, below the minimum current"
                zero.add(sid)
            max_w = min(max_w, max(ceiling.limit_w, min_w))
        loads[sid] = base if max_w == base.max_w else \
            Load(sid, base.circuit, base.amps_per_w, min_w, max_w, base.weight)

    # pause: minimum keeps a paused session at its minimum where every limit still has room
    alive = loads.keys() - zero if rule.pause == "minimum" else set()
    exempt = {sid for sid, e in charging.items() if sid in loads and e.group and e.group.exempt}
    chosen: dict[str, Step] = {}
    limit = site_step.limit_w
    site_chain = site_step.chain
    exempt_used = 0.0
    kept_alive: set[str] = set()
    if exempt:
        # exempt groups charge as if there were no event, within the physical limits
        # first come, first served when not all of them fit, as for everyone else
        first = sorted(exempt, key=lambda sid: (charging[sid].started, sid))
        shares = allocate_tree(site.capacity_w, [loads[s] for s in first], site,
                               fixed, label="exempt from DR", keep_paused=keep_paused,
                               keep_alive=alive)
        for sid in exempt:
            share = shares[sid]
            group = charging[sid].group
            volts = (voltage or {}).get(sid)
            volt_link = (Why("voltage", volts.reason),) \
                if volts is not None and volts.share < 1.0 else ()
            watts, resume_link = _resumed(share, resuming.get(sid))
            chain = (*site_chain, Why("optout", f"{_group_label(group)} is exempt from DR"),
                     *volt_link, *_held_by_ceiling(share, ceilings.get(sid)), *resume_link,
                     Why("allocation", share.reason))
            chosen[sid] = step_of(at, watts, chain)
            if share.held:
                kept_alive.add(sid)
            info = charging[sid].info
            # counted at its share: kept for it while it resumes at less
            fixed.append(FixedLoad(info.circuit, info.amps_per_watt(), share.watts))
            exempt_used += share.watts
        if exempt_used + reserved > limit:
            limit = exempt_used + reserved
            site_chain = (*site_chain, Why("optout", f"exempt groups keep "
                                                     f"{exempt_used / 1000:g} kW"))
    steered = [sid for sid in charging if sid in loads and sid not in exempt]
    order = _order(at, steered, charging, states, policy, limit, loads, site, fixed, extra)
    label = "priority share" if rule.strategy == "priority" else "fair share"
    shares = allocate_tree(limit, [loads[s] for s in order], site,
                           fixed, label=label, keep_paused=keep_paused, keep_alive=alive)
    kept_alive.update(sid for sid, share in shares.items() if share.held)
    # Most stations get the same step (the same share for the same reason): each distinct
    # one is made once, as steps are immutable.
    made: dict[tuple, Step] = {}
    held: Step | None = None
    priority = rule.strategy == "priority"
    voltages = voltage or {}
    for sid in fleet.stations:
        if sid in chosen:
            continue
        if sid in reserved_ids:
            if held is None:
                held = step_of(at, 0.0, (*site_chain, Why("allocation", HELD_REASON)))
            chosen[sid] = held
            continue
        if sid in silent:
            # counted at what it was last told; told no more than the site limit, should
            # it still listen
            last = silent[sid]
            chosen[sid] = step_of(at, min(last, limit), (*site_chain, Why(
                "failsafe", f"not reporting: counted at its last commanded "
                            f"{last / 1000:g} kW")))
            continue
        share = shares.get(sid)
        if share is None:
            watts, why, resume_link, external = 0.0, "no charging session", (), ()
        else:
            # (most stations neither resume nor have another party's limit: no call)
            resumed = resuming.get(sid)
            watts, resume_link = (share.watts, ()) if resumed is None \
                else _resumed(share, resumed)
            why = share.reason
            ceiling = ceilings.get(sid)
            external = () if ceiling is None else _held_by_ceiling(share, ceiling)
        entry = charging.get(sid)
        group = entry.group if entry is not None and priority else None
        scoped = caps[sid][1] if sid in caps else ()
        volts = voltages.get(sid)
        volt_why = Why("voltage", volts.reason) \
            if entry is not None and volts is not None and volts.share < 1.0 else None
        key = (watts, why, group.name if group is not None else None, scoped, volt_why,
               resume_link, external)
        step = made.get(key)
        if step is None:
            links = [*site_chain, *scoped]
            if group is not None:
                links.append(Why("rule", f"{_group_label(group)} (rank {group.rank}, "
                                         f"weight {group.weight:g})"))
            if volt_why is not None:
                links.append(volt_why)
            links.extend(external)
            links.extend(resume_link)
            links.append(Why("allocation", why))
            if reserved:
                links.append(Why("allocation",
                                 f"{reserved:.0f} W held for stations the bridge cannot steer"))
            step = made[key] = step_of(at, watts, links)
        chosen[sid] = step
    site_step = Step(site_step.start, limit, explain(site_chain), site_chain) \
        if limit != site_step.limit_w else site_step
    return _Allocated(chosen, site_step, extra, kept_alive, zero,
                      {sid: until for sid, (_, _, until) in resuming.items()})


def _held_by_ceiling(share: Share, ceiling: Step | None) -> tuple[Why, ...]:
    """The link that says another party's limit on the station holds its share (empty
    where it does not: the share is lower for another reason)."""
    if ceiling is None or share.watts <= 0 or share.watts < ceiling.limit_w - 1.0:
        return ()
    return (Why("external", ceiling.reason),)


def _advance(state: StationState, at: datetime) -> StationState:
    """A session's state at ``at``: the last switch its schedule made by then."""
    while state.then is not None and state.then.since <= at:
        state = state.then
    # most sessions switch nothing later: kept as they are (dataclasses.replace costs a
    # few microseconds a station, and every plan advances every station)
    return state if state.then is None else replace(state, then=None)


def _resume_until(old: StationState | None, at: datetime, resume: timedelta) -> datetime | None:
    """Until when a session charging at ``at`` (or resuming there) gets its minimum only."""
    if old is None:
        return None  # a new session: never paused
    if old.charging:
        return old.resume_until if old.resume_until is not None and at < old.resume_until \
            else None
    return at + resume


def _resumed(share: Share, resuming: tuple[float, Why, datetime] | None,
             ) -> tuple[float, tuple[Why, ...]]:
    """What a session is given of its share, and why: a session resuming after a pause
    gets its minimum (``resuming``) and no more until its resume ends."""
    if resuming is None or share.watts <= 0 or share.held:
        return share.watts, ()
    return min(share.watts, resuming[0]), (resuming[1],)


def _scoped_caps(events: Sequence[DrEvent], scopes: Mapping[str, frozenset[str]],
                 policy: Policy, site: Site, fleet: Fleet, charging: Mapping[str, _Station],
                 silent: Mapping[str, float], at: datetime,
                 baselines: Mapping[str, float] | None = None, floor: Floor | None = None,
                 ) -> dict[str, tuple[float, tuple[Why, ...]]]:
    """The most each station may get at ``at`` from events that target only some stations.

    Such an event's limit holds for the sum of its stations: a share of their hardware
    capacity (instead of the site's), the absolute power it names, or a reduction from
    their baseline (``baselines``: the event's, measured over its stations). It is shared among
    the stations of the group that charge, as the whole site's limit is (minimum floor,
    first come first served), after what its unsteerable stations may draw. The site
    allocation afterwards never gives a station more than this.
    """
    caps: dict[str, tuple[float, tuple[Why, ...]]] = {}
    min_a = policy.allocation.min_current_a
    for event in events:
        scope = scopes[event.event_id]
        members = [sid for sid in sorted(scope) if sid in fleet.stations]
        capacity = sum(fleet.stations[sid].max_w for sid in members)
        if capacity <= 0:
            continue
        ask = event_ask(event, policy, Site(capacity_w=capacity, voltage_v=site.voltage_v,
                                            phases=site.phases), at, baselines or {},
                        price_floor=_price_floor(floor, capacity))
        if ask is None:
            continue
        held = sum(silent.get(sid, 0.0) for sid in members)
        for reservation in fleet.reservations:
            if reservation.station_id in scope:
                step = value_at(reservation.steps, at)
                held += step.limit_w if step is not None else 0.0
        steered = sorted((sid for sid in members if sid in charging and sid not in silent),
                         key=lambda sid: (charging[sid].started, sid))
        demands = [Demand(sid, charging[sid].info.watts(min_a),
                          charging[sid].info.max_w_for(charging[sid].connectors))
                   for sid in steered]
        shares = allocate_fair(max(ask.limit_w - held, 0.0), demands)
        scope_why = Why("target", f"event {event.event_id} targets {len(members)} station(s):"
                                  f" {ask.limit_w / 1000:g} kW for them")
        for sid in steered:
            share = shares[sid]
            if sid not in caps or share.watts < caps[sid][0]:
                caps[sid] = (share.watts, (*ask.chain, scope_why,
                                           Why("allocation", f"within the group: {share.reason}")))
    return caps


def _order(at: datetime, steered: list[str], charging: Mapping[str, _Station],
           states: Mapping[str, StationState], policy: Policy, available_w: float,
           loads: Mapping[str, Load], site: Site, fixed: list[FixedLoad],
           extra: list[datetime]) -> list[str]:
    """Who is admitted first: guarded sessions, then by rank; taking turns when not all fit."""
    rule = policy.allocation
    rotation = rule.rotation
    guard = timedelta(seconds=rotation.guard_s)

    priority = rule.strategy == "priority"

    def rank(sid: str) -> int:  # (asked under the priority strategy only)
        group = charging[sid].group
        return group.rank if group is not None else 0

    # ``steered`` comes in the order of ``charging``: by session start, then station id
    # (see make_plan), so ranking keeps first come, first served within a rank
    fcfs = sorted(steered, key=rank) if priority else steered
    # how many fit at their minimum, if all of them asked
    fit = count_fitting(available_w, [loads[s] for s in fcfs], site, fixed) \
        if rotation.enabled else 0
    rotating = rotation.enabled and 0 < fit < len(steered)
    slot = timedelta(0)
    if rotating:
        rounds = math.ceil(len(steered) / fit)
        slot = max(guard, timedelta(seconds=rotation.period_s / rounds))

    def key(sid: str) -> tuple:
        old = states.get(sid)
        on = old is not None and old.charging
        since = old.since if old is not None else charging[sid].started
        rank_ = rank(sid) if priority else 0
        if on and old is not None and old.switched and at - since < guard:
            return (0, rank_, since, sid)
        if not rotating:
            return (1, rank_, charging[sid].started, sid)
        if on and at - since < slot:
            extra.append(since + slot)
            return (1, rank_, 0, since, sid)
        if not on:
            return (1, rank_, 1, since, sid)  # waited longest first
        return (1, rank_, 2, -since.timestamp(), sid)  # charged longest last

    return sorted(steered, key=key)


def _merge(steps: Sequence[Step]) -> tuple[Step, ...]:
    merged: list[Step] = []
    for step in steps:
        if merged and abs(merged[-1].limit_w - step.limit_w) < 1e-6:
            continue
        merged.append(step)
    return tuple(merged)
