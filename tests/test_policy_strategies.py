"""Allocation strategies: fair, priority groups and weights, demand-aware, rotation and guard."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.fleet import Fleet, Session, Site, StationInfo
from policies.model import parse_policy
from policies.plan import make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
MIN_3PH = 6 * 3 * V


def policy(extra: str = "", strategy: str = "fair"):
    return parse_policy(f"name: t\nallocation:\n  strategy: {strategy}\n{extra}", "t.yaml")


def fleet(ids, started=None, measured=None) -> Fleet:
    stations = {s: StationInfo(s, 3, V, 32) for s in ids}
    return Fleet(stations, tuple(
        Session(s, 1, (started or {}).get(s, NOW - timedelta(minutes=i)))
        for i, s in enumerate(ids)), measured_w=measured or {})


def limits(plan) -> dict[str, float]:
    return {sid: steps[0].limit_w for sid, steps in plan.stations.items()}


PRIORITY = """  groups:
    - {name: fleet, stations: ["DEPOT-*"], rank: 0, weight: 2}
    - {name: visitors, stations: ["V*"], rank: 1, weight: 1}
"""


def test_priority_admits_the_higher_rank_first():
    # room for two minimums; the visitors came first but the depot vehicles go first
    ids = ["V1", "V2", "DEPOT-1", "DEPOT-2"]
    plan = make_plan([], policy(PRIORITY, "priority"), Site(2 * MIN_3PH + 100),
                     fleet(ids, started={"V1": NOW - timedelta(hours=2),
                                         "V2": NOW - timedelta(hours=1),
                                         "DEPOT-1": NOW, "DEPOT-2": NOW}), NOW)
    got = limits(plan)
    assert got["V1"] == got["V2"] == 0
    assert got["DEPOT-1"] > 0 and got["DEPOT-2"] > 0
    assert "group fleet (rank 0, weight 2)" in plan.stations["DEPOT-1"][0].reason


def test_priority_weights_share_the_headroom():
    plan = make_plan([], policy(PRIORITY, "priority"), Site(30_000),
                     fleet(["V1", "DEPOT-1"]), NOW)
    got = limits(plan)
    assert got["DEPOT-1"] == pytest.approx(20_000)
    assert got["V1"] == pytest.approx(10_000)
    assert "priority share" in plan.stations["V1"][0].reason


def test_fair_ignores_groups():
    plan = make_plan([], policy(PRIORITY), Site(30_000), fleet(["V1", "DEPOT-1"]), NOW)
    assert limits(plan) == {"V1": pytest.approx(15_000), "DEPOT-1": pytest.approx(15_000)}


def test_demand_aware_gives_unused_headroom_to_others():
    rule = "  demand_aware: {enabled: true, margin_a: 2}\n"
    ids = ["A", "B", "C"]
    first = make_plan([], policy(rule), Site(30_000), fleet(ids), NOW)
    assert limits(first)["A"] == pytest.approx(10_000)
    # A's EV draws only 3 kW of its 10 kW: A keeps 3 kW + 2 A margin, B and C get the rest
    later = make_plan([], policy(rule), Site(30_000), fleet(ids, measured={"A": 3_000}),
                      NOW + timedelta(seconds=30), first.state)
    got = limits(later)
    margin = 2 * 3 * V
    assert got["A"] == pytest.approx(max(3_000 + margin, MIN_3PH))
    assert got["B"] == got["C"] == pytest.approx((30_000 - got["A"]) / 2)
    assert sum(got.values()) <= 30_000 + 1e-6
    # an EV drawing close to its limit is not capped
    busy = make_plan([], policy(rule), Site(30_000),
                     fleet(ids, measured={"A": got["A"] - 100}), NOW + timedelta(seconds=60),
                     later.state)
    assert limits(busy)["A"] >= got["A"] - 1e-6


def test_demand_aware_off_by_default():
    first = make_plan([], policy(), Site(30_000), fleet(["A", "B"]), NOW)
    later = make_plan([], policy(), Site(30_000), fleet(["A", "B"], measured={"A": 1_000}),
                      NOW + timedelta(seconds=30), first.state)
    assert limits(later)["A"] == pytest.approx(15_000)


def run(pol, site, fl, start, minutes, step_s=30, events=()):
    """Plans every ``step_s``, and at each step a plan schedules (stations switch there by
    their profiles), with the state carried over: which stations charge when."""
    state = None
    timeline = []
    at = start
    while at < start + timedelta(minutes=minutes):
        plan = make_plan(list(events), pol, site, fl, at, state)
        state = plan.state
        timeline.append((at, limits(plan), plan))
        planned = [s.start for steps in plan.stations.values() for s in steps if s.start > at]
        at = min([at + timedelta(seconds=step_s), *planned])
    return timeline


def test_rotation_gives_paused_sessions_a_turn():
    pol = policy("  rotation: {period_s: 1800, guard_s: 300}\n")
    ids = [f"CP{i}" for i in range(6)]
    timeline = run(pol, Site(2 * MIN_3PH + 500), fleet(ids), NOW, minutes=40)
    charged = {sid for _, got, _ in timeline for sid, w in got.items() if w > 0}
    assert charged == set(ids)
    for _, got, _ in timeline:
        assert sum(got.values()) <= 2 * MIN_3PH + 500 + 1e-6
        assert sum(1 for w in got.values() if w > 0) == 2  # the cap never goes stranded


def test_guard_time_stops_fast_toggling():
    pol = policy("  rotation: {period_s: 120, guard_s: 300}\n")  # asks for turns faster
    ids = [f"CP{i}" for i in range(4)]
    timeline = run(pol, Site(MIN_3PH + 500), fleet(ids), NOW, minutes=30, step_s=20)
    for sid in ids:
        states = [(at, got[sid] > 0) for at, got, _ in timeline]
        changes = [at for (at, on), (_, before) in zip(states[1:], states, strict=False)
                   if on != before]
        for a, b in zip(changes, changes[1:], strict=False):
            assert b - a >= timedelta(seconds=300)


def test_a_higher_limit_lets_a_just_paused_session_resume():
    pol = policy()
    ids = ["A", "B"]
    first = make_plan([], pol, Site(2 * MIN_3PH), fleet(ids), NOW)
    low = make_plan([], pol, Site(MIN_3PH), fleet(ids), NOW + timedelta(seconds=30), first.state)
    assert sorted(limits(low).values())[0] == 0
    back = make_plan([], pol, Site(2 * MIN_3PH), fleet(ids), NOW + timedelta(seconds=60),
                     low.state)
    assert all(w > 0 for w in limits(back).values())


def test_rotation_disabled_is_first_come_first_served():
    pol = policy("  rotation: {enabled: false}\n")
    ids = [f"CP{i}" for i in range(4)]
    timeline = run(pol, Site(MIN_3PH + 500), fleet(ids), NOW, minutes=60, step_s=60)
    assert {sid for _, got, _ in timeline for sid, w in got.items() if w > 0} == {"CP3"}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), fit=st.integers(1, 4), guard_min=st.integers(0, 5))
def test_rotation_gives_every_session_a_turn_within_the_period(n, fit, guard_min):
    fit = min(fit, n - 1)
    rounds = -(-n // fit)
    period = max(rounds * guard_min * 60, 600)  # a period the guard time allows
    pol = policy(f"  rotation: {{period_s: {period}, guard_s: {guard_min * 60}}}\n")
    ids = [f"CP{i}" for i in range(n)]
    step = 30
    timeline = run(pol, Site(fit * MIN_3PH + 1), fleet(ids), NOW,
                   minutes=2 * period / 60, step_s=step)
    for sid in ids:
        paused_since = NOW
        longest = timedelta(0)
        for at, got, plan in timeline:
            assert not plan.paused or sum(1 for w in got.values() if w > 0) == fit
            if got[sid] > 0:
                if paused_since is not None:
                    longest = max(longest, at - paused_since)
                paused_since = None
            elif paused_since is None:
                paused_since = at
        if paused_since is not None:
            longest = max(longest, timeline[-1][0] - paused_since)
        assert longest <= timedelta(seconds=period), sid


def test_a_session_held_by_the_guard_time_says_until_when():
    pol = policy("  rotation: {guard_s: 300}\n")
    ids = ["A", "B"]
    first = make_plan([], pol, Site(2 * MIN_3PH), fleet(ids), NOW)
    low = make_plan([], pol, Site(MIN_3PH), fleet(ids), NOW + timedelta(seconds=30), first.state)
    paused = next(sid for sid, w in limits(low).items() if w == 0)
    # the limit stays low: the paused session may not come back before the guard time ends
    later = make_plan([], pol, Site(MIN_3PH), fleet(ids), NOW + timedelta(seconds=60), low.state)
    assert limits(later)[paused] == 0
    assert "guard time until 12:05:30 (paused at 12:00:30)" in later.stations[paused][0].reason
