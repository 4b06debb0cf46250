"""Property tests of whole plans over random fleets, site trees and events."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.fleet import Circuit, Fleet, Reservation, Session, Site, StationInfo, Step, value_at
from policies.model import parse_policy
from policies.plan import make_plan
from policies.tree import FixedLoad, Load, blocking, overloads
from ven.events import DrEvent, EventSignal, EventStatus, SignalInterval

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
POLICIES = {
    "fair": parse_policy("name: f\nsimple: {levels: {0: 100%, 1: 60%, 2: 30 kW, 3: 0%}}\n"
                         "load_dispatch: {}\n", "f"),
    "priority": parse_policy(
        "name: p\nload_dispatch: {}\nallocation:\n  strategy: priority\n  groups:\n"
        "    - {name: a, stations: ['S1*'], rank: 0, weight: 3}\n"
        "    - {name: b, stations: ['*'], rank: 1}\n", "p"),
}


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
            # charging at or above its minimum (within its maximum), or paused
            assert step.limit_w == 0 or \
                min(info.watts(min_a), info.max_w) - 1e-6 <= step.limit_w <= info.max_w + 1e-6
        # no node's limit (nor the site limit) is exceeded, reservations included; where
        # what the bridge cannot steer already fills a node, nothing more is commanded there
        assert not [o for o in overloads(site, site_limit, loads, watts, fixed, slack=1e-6)
                    if o.used > max(o.cap, 0.0) + 1e-6]
        # a paused session had no room for its minimum somewhere on its path
        for item in loads:
            if watts[item.key] == 0 and at == NOW:
                assert blocking(site, site_limit, loads, watts, item, fixed) is not None
        # on a flat site, when demand exceeds the limit, less than one minimum is left
        if not site.circuits and site.max_current_a is None and loads and at == NOW:
            demand = sum(item.max_w for item in loads) + sum(f.watts for f in fixed)
            if demand > site_limit:
                left = site_limit - sum(watts.values()) - sum(f.watts for f in fixed)
                assert left < max(item.min_w for item in loads) + 1e-6


STATEFUL = parse_policy("""
name: s
load_dispatch: {}
allocation:
  strategy: priority
  groups: [{name: a, stations: ['S1*'], rank: 0, weight: 2}, {name: b, stations: ['*'], rank: 1}]
  demand_aware: {enabled: true, margin_a: 2}
  rotation: {period_s: 600, guard_s: 120}
restore: {ramp_kw_per_min: 20, step_s: 30, random_window_s: 90}
failsafe: {station_silent_after_s: 60}
""", "s")


@settings(max_examples=40, deadline=None)
@given(scenarios(), st.lists(st.tuples(st.integers(5, 120), st.floats(0, 1), st.booleans()),
                             min_size=3, max_size=12))
def test_plans_made_one_after_another_hold_every_node(scenario, steps):
    """Turns, guard times, demand-aware caps, restores and silent stations across plans."""
    site, fleet, events, _ = scenario
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
        plan = make_plan(events, STATEFUL, site, now_fleet, at, state)
        state = plan.state
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
        assert not [o for o in overloads(site, limit, loads, watts, fixed, slack=1e-6)
                    if o.used > max(o.cap, 0.0) + 1e-6]
