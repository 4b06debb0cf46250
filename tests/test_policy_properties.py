"""Property tests of whole plans over random fleets, site trees and events."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Circuit, Fleet, Reservation, Session, Site, StationInfo, Step, value_at
from policies.model import parse_policy
from policies.plan import make_plan
from policies.tree import FixedLoad, Load, blocking, overloads

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
POLICIES = {
    f"{name}-{pause}": parse_policy(text.format(pause=pause), name)
    for name, text in {
        "fair": "name: f\nsimple: {{levels: {{0: 100%, 1: 60%, 2: 30 kW, 3: 0%}}}}\n"
                "load_dispatch: {{}}\nallocation: {{pause: {pause}}}\n",
        "priority": "name: p\nload_dispatch: {{}}\nallocation:\n  strategy: priority\n"
                    "  pause: {pause}\n  groups:\n"
                    "    - {{name: a, stations: ['S1*'], rank: 0, weight: 3}}\n"
                    "    - {{name: b, stations: ['*'], rank: 1}}\n",
    }.items()
    for pause in ("zero", "minimum")
}
KEPT_ALIVE = "holds the minimum current"


def floor_of(info: StationInfo, min_a: float) -> float:
    return min(info.watts(min_a), info.max_w)


def assert_kept_alive_at_the_minimum(step: Step, info: StationInfo, min_a: float) -> None:
    if KEPT_ALIVE in step.reason:
        assert step.limit_w == floor_of(info, min_a)


def assert_no_room_for_a_paused_minimum(site, limit, loads, watts, fixed, min_a, fleet) -> None:
    """pause: minimum: a session at 0 W had no room for its minimum, even with every
    session that draws (charging or kept alive) counted at its own minimum only."""
    floors = {key: min(w, floor_of(fleet.stations[key], min_a)) for key, w in watts.items()}
    for item in loads:
        if watts[item.key] == 0:
            assert blocking(site, limit, loads, floors, item, fixed) is not None, item.key


def assert_resumes_at_the_minimum_first(steps, info: StationInfo, policy) -> None:
    """Within a schedule (pause: zero): from 0 W a session comes back at its minimum,
    and rises above it no sooner than allocation.resume_s later."""
    floor = floor_of(info, policy.allocation.min_current_a)
    resumed = None
    for before, step in zip(steps, steps[1:], strict=False):
        if before.limit_w == 0 and step.limit_w > 0:
            assert step.limit_w <= floor + 1e-6, "resumed above its minimum"
            resumed = step.start
        elif resumed is not None and step.limit_w > floor + 1e-6:
            assert step.start - resumed >= timedelta(seconds=policy.allocation.resume_s)
            resumed = None


@st.composite
def scenarios(draw):
    circuits: list[Circuit] = []
    for i in range(draw(st.integers(0, 4))):
        parent = draw(st.sampled_from([None, *[c.circuit_id for c in circuits]]))
        circuits.append(Circuit(f"c{i}", parent, draw(st.one_of(st.none(), st.floats(6, 100))),
                                draw(st.one_of(st.none(), st.floats(1_500, 60_000)))))
    site = Site(draw(st.floats(1_000, 150_000)), V,
                max_current_a=draw(st.one_of(st.none(), st.floats(16, 200))),
                circuits=tuple(circuits))
    stations = {}
    for i in range(draw(st.integers(1, 16))):
        sid = f"S{i}"
        phases = draw(st.sampled_from([1, 3]))
        stations[sid] = StationInfo(
            sid, phases, V, draw(st.floats(6, 40)),
            draw(st.sampled_from([None, *[c.circuit_id for c in circuits]])),
            draw(st.integers(1, 3)),
            draw(st.one_of(st.none(), st.floats(1_000, 22_000))))
    with_session = draw(st.lists(st.sampled_from(sorted(stations)), unique=True))
    sessions = tuple(Session(sid, 1, NOW - timedelta(minutes=draw(st.integers(0, 300))))
                     for sid in with_session)
    reservations = ()
    if with_session and draw(st.booleans()):
        sid = with_session[0]
        reservations = (Reservation(sid, (Step(NOW, draw(st.floats(0, 10_000)), "held"),)),)
    events = []
    for index in range(draw(st.integers(0, 3))):
        start = NOW + timedelta(minutes=draw(st.integers(-30, 60)))
        name, kind = draw(st.sampled_from([("SIMPLE", "level"), ("LOAD_DISPATCH", "setpoint"),
                                           ("LOAD_DISPATCH", "delta")]))
        values = draw(st.lists(st.floats(0, 100 if name != "SIMPLE" else 3), min_size=1,
                               max_size=4))
        intervals = tuple(SignalInterval(start=start + timedelta(minutes=15 * i),
                                         duration=timedelta(minutes=15), value=v)
                          for i, v in enumerate(values))
        events.append(DrEvent(
            event_id=f"e{index}", modification_number=0, status=EventStatus.ACTIVE,
            start=start, duration=timedelta(minutes=15 * len(values)),
            signals=(EventSignal(name=name, type=kind, unit="kW", intervals=intervals),)))
    policy = POLICIES[draw(st.sampled_from(sorted(POLICIES)))]
    return site, Fleet(stations, sessions, reservations), events, policy


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_plans_hold_every_node_floor_and_leave_no_headroom_stranded(scenario):
    site, fleet, events, policy = scenario
    plan = make_plan(events, policy, site, fleet, NOW)
    min_a = policy.allocation.min_current_a
    reserved = {r.station_id for r in fleet.reservations}
    charging = {s.station_id for s in fleet.sessions} - reserved
    times = sorted({s.start for steps in plan.stations.values() for s in steps} |
                   {s.start for s in plan.site})
    for at in times:
        site_limit = value_at(plan.site, at).limit_w
        assert site_limit <= site.capacity_w + 1e-6
        fixed = []
        for reservation in fleet.reservations:
            info = fleet.stations[reservation.station_id]
            held = value_at(reservation.steps, at)
            fixed.append(FixedLoad(info.circuit, info.amps_per_watt(), held.limit_w))
        loads, watts = [], {}
        for sid, steps in plan.stations.items():
            info = fleet.stations[sid]
            step = value_at(steps, at)
            assert step.reason and step.chain
            if sid in reserved or sid not in charging:
                assert step.limit_w == 0  # held (counted above) or no session: 0 W
                continue
            loads.append(Load(sid, info.circuit, info.amps_per_watt(), info.watts(min_a),
                              info.max_w))
            watts[sid] = step.limit_w
            # charging at or above its minimum (within its maximum), or paused; paused and
            # kept alive (pause: minimum): at its minimum
            assert step.limit_w == 0 or \
                min(info.watts(min_a), info.max_w) - 1e-6 <= step.limit_w <= info.max_w + 1e-6
            assert_kept_alive_at_the_minimum(step, info, min_a)
        # no node's limit (nor the site limit) is exceeded, reservations included; where
        # what the bridge cannot steer already fills a node, nothing more is commanded there
        assert not [o for o in overloads(site, site_limit, loads, watts, fixed, slack=1e-6)
                    if o.used > max(o.cap, 0.0) + 1e-6]
        # a paused session had no room for its minimum somewhere on its path
        for item in loads:
            if watts[item.key] == 0 and at == NOW:
                assert blocking(site, site_limit, loads, watts, item, fixed) is not None
        if policy.allocation.pause == "minimum":
            assert_no_room_for_a_paused_minimum(site, site_limit, loads, watts, fixed, min_a,
                                                fleet)
        # on a flat site, when demand exceeds the limit, less than one minimum is left
        if not site.circuits and site.max_current_a is None and loads and at == NOW:
            demand = sum(item.max_w for item in loads) + sum(f.watts for f in fixed)
            if demand > site_limit:
                left = site_limit - sum(watts.values()) - sum(f.watts for f in fixed)
                assert left < max(item.min_w for item in loads) + 1e-6
    if policy.allocation.pause == "zero":
        for sid in charging:
            assert_resumes_at_the_minimum_first(plan.stations[sid], fleet.stations[sid], policy)


STATEFUL = {pause: parse_policy(f"""
name: s
load_dispatch: {{}}
allocation:
  strategy: priority
  pause: {pause}
  groups:
    - {{name: a, stations: ['S1*'], rank: 0, weight: 2}}
    - {{name: b, stations: ['*'], rank: 1}}
  demand_aware: {{enabled: true, margin_a: 2}}
  rotation: {{period_s: 600, guard_s: 120}}
  resume_s: 45
restore: {{ramp_kw_per_min: 20, step_s: 30, random_window_s: 90}}
failsafe: {{station_silent_after_s: 60}}
""", "s") for pause in ("zero", "minimum")}


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.lists(st.tuples(st.integers(5, 120), st.floats(0, 1), st.booleans()),
                             min_size=3, max_size=12), st.sampled_from(sorted(STATEFUL)))
def test_plans_made_one_after_another_hold_every_node(scenario, steps, pause):
    """Turns, guard times, demand-aware caps, restores, silent stations, pauses and
    resumes across plans."""
    site, fleet, events, _ = scenario
    policy = STATEFUL[pause]
    resume = timedelta(seconds=policy.allocation.resume_s)
    reserved = {r.station_id for r in fleet.reservations}
    with_session = {s.station_id for s in fleet.sessions} - reserved
    state = None
    at = NOW
    reports = {}
    for seconds, draw_share, silent in steps:
        at += timedelta(seconds=seconds)
        measured = {sid: draw_share * info.max_w for sid, info in fleet.stations.items()}
        for sid in fleet.stations:
            if not (silent and sid.endswith("0")):
                reports[sid] = at
        now_fleet = Fleet(fleet.stations, fleet.sessions, fleet.reservations,
                          measured_w=measured, last_report=dict(reports))
        plan = make_plan(events, policy, site, now_fleet, at, state)
        before, state = state, plan.state
        assert state is not None
        limit = value_at(plan.site, at).limit_w
        fixed = [FixedLoad(fleet.stations[r.station_id].circuit,
                           fleet.stations[r.station_id].amps_per_watt(),
                           value_at(r.steps, at).limit_w if value_at(r.steps, at) else 0.0)
                 for r in fleet.reservations]
        loads, watts = [], {}
        for sid, steps_ in plan.stations.items():
            info = fleet.stations[sid]
            watts[sid] = value_at(steps_, at).limit_w
            loads.append(Load(sid, info.circuit, info.amps_per_watt(), 0.0, info.max_w))
            assert watts[sid] == 0 or watts[sid] >= min(info.watts(6), info.max_w) - 1e-6 \
                or "not reporting" in value_at(steps_, at).reason
            for step in steps_:
                assert_kept_alive_at_the_minimum(step, info, 6)
        assert not [o for o in overloads(site, limit, loads, watts, fixed, slack=1e-6)
                    if o.used > max(o.cap, 0.0) + 1e-6]
        steered = [sid for sid in with_session
                   if "not reporting" not in value_at(plan.stations[sid], at).reason]
        if pause == "minimum":
            floors = [Load(sid, fleet.stations[sid].circuit,
                           fleet.stations[sid].amps_per_watt(),
                           fleet.stations[sid].watts(6), fleet.stations[sid].max_w)
                      for sid in steered]
            silent_load = [FixedLoad(fleet.stations[sid].circuit,
                                     fleet.stations[sid].amps_per_watt(), watts[sid])
                           for sid in with_session if sid not in steered]
            assert_no_room_for_a_paused_minimum(
                site, limit, floors, {sid: watts[sid] for sid in steered},
                fixed + silent_load, 6, fleet)
        # a session resuming after a pause holds its minimum for resume_s, by its schedule
        for sid in steered:
            info, now_state = fleet.stations[sid], state.stations.get(sid)
            old = before.stations.get(sid) if before is not None else None
            while old is not None and old.then is not None and old.then.since <= at:
                old = old.then  # where the previous plan's schedule has taken it by now
            if now_state is None or not now_state.charging:
                continue
            until = now_state.resume_until
            if old is not None and not old.charging:
                assert until == at + resume, sid  # it resumes now
            if until is not None and until > at:
                assert until <= at + resume
                for step in plan.stations[sid]:
                    if step.start < until and value_at(plan.stations[sid], step.start) is step:
                        assert step.start < at or step.limit_w <= floor_of(info, 6) + 1e-6
                assert watts[sid] <= floor_of(info, 6) + 1e-6
            if pause == "zero":
                assert_resumes_at_the_minimum_first(plan.stations[sid], info, policy)


@settings(max_examples=80, deadline=None)
@given(scenarios(), st.floats(0.05, 0.9), st.lists(st.booleans(), min_size=16, max_size=16))
def test_a_paused_session_holds_its_minimum_only_where_every_limit_has_room(scenario, drop,
                                                                           leaves):
    """pause: minimum. Everyone charges; the limit drops and some pause; 30 s later some
    sessions end, so room opens while the guard time still holds the paused ones back:
    they hold their minimum where every node has room for it after the others' minimums,
    and 0 W elsewhere. Once the guard time is over they resume at their minimum."""
    site, fleet, _, chosen = scenario
    policy = POLICIES[("fair" if chosen.name == "f" else "priority") + "-minimum"]
    min_a = policy.allocation.min_current_a
    low = replace(site, capacity_w=site.capacity_w * drop)
    first = make_plan([], policy, site, fleet, NOW)
    dropped = make_plan([], policy, low, fleet, NOW + timedelta(seconds=30), first.state)
    left = replace(fleet, sessions=tuple(
        s for i, s in enumerate(fleet.sessions) if not leaves[i]))
    at = NOW + timedelta(seconds=60)
    later = make_plan([], policy, low, left, at, dropped.state)
    reserved = {r.station_id for r in fleet.reservations}
    fixed = [FixedLoad(fleet.stations[r.station_id].circuit,
                       fleet.stations[r.station_id].amps_per_watt(), r.steps[0].limit_w)
             for r in fleet.reservations]
    steered = sorted({s.station_id for s in left.sessions} - reserved)
    loads = [Load(sid, fleet.stations[sid].circuit, fleet.stations[sid].amps_per_watt(),
                  fleet.stations[sid].watts(min_a), fleet.stations[sid].max_w)
             for sid in steered]
    watts = {sid: value_at(later.stations[sid], at).limit_w for sid in steered}
    assert not [o for o in overloads(low, low.capacity_w, loads, watts, fixed, slack=1e-6)
                if o.used > max(o.cap, 0.0) + 1e-6]
    for sid in steered:
        assert_kept_alive_at_the_minimum(value_at(later.stations[sid], at),
                                         fleet.stations[sid], min_a)
    assert_no_room_for_a_paused_minimum(low, low.capacity_w, loads, watts, fixed, min_a, fleet)
    # after the guard time: whoever resumes, resumes at its minimum
    after = at + timedelta(seconds=policy.allocation.rotation.guard_s)
    resumed = make_plan([], policy, low, left, after, later.state)
    assert resumed.state is not None and later.state is not None
    for sid in steered:
        before, now_state = later.state.stations.get(sid), resumed.state.stations.get(sid)
        if before is not None and not before.charging and now_state is not None and \
                now_state.charging:
            assert value_at(resumed.stations[sid], after).limit_w <= \
                floor_of(fleet.stations[sid], min_a) + 1e-6
