"""Limits other parties hold a station to (its external constraints) as ceilings in the plan:
the station gets no more, the others get what it cannot draw (pure)."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from policies.fleet import Fleet, Session, Site, StationInfo, Step, Why, step_of
from policies.model import parse_policy
from policies.plan import make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
POLICY = parse_policy("name: t\n", "t")
SITE = Site(capacity_w=22_000)
STATIONS = {sid: StationInfo(sid, 3, V, 16) for sid in ("A", "B", "C")}  # 11 kW each
SESSIONS = tuple(Session(sid, 1, NOW) for sid in STATIONS)


def ceiling(watts: float, start: datetime = NOW, source: str = "EMS") -> Step:
    text = f"station's external constraint ({source}): {watts / 1000:.1f} kW"
    return step_of(start, watts, (Why("external", text),))


def plan(ceilings):
    fleet = Fleet(stations=STATIONS, sessions=SESSIONS, ceilings=ceilings)
    return make_plan((), POLICY, SITE, fleet, NOW)


def first(made, sid):
    return made.stations[sid][0]


def test_a_station_held_below_its_share_leaves_the_rest_to_the_others():
    assert first(plan({}), "A").limit_w == pytest.approx(22_000 / 3)
    made = plan({"A": (ceiling(4_600),)})
    a, b, c = (first(made, sid) for sid in "ABC")
    assert a.limit_w == pytest.approx(4_600)
    assert b.limit_w == c.limit_w == pytest.approx((22_000 - 4_600) / 2)
    assert "station's external constraint (EMS): 4.6 kW" in a.reason
    assert "external" not in b.reason
    assert sum(s.limit_w for s in (a, b, c)) <= 22_000 + 1e-6


def test_a_ceiling_above_the_share_changes_nothing_and_is_not_named():
    made = plan({"A": (ceiling(9_000),)})
    assert first(made, "A").limit_w == pytest.approx(22_000 / 3)
    assert "external" not in first(made, "A").reason


def test_a_ceiling_below_the_minimum_pauses_the_station():
    made = plan({"A": (ceiling(2_000),)})  # under 6 A: its EV cannot charge
    a = first(made, "A")
    assert a.limit_w == 0 and "station's external constraint (EMS): 2.0 kW" in a.reason
    assert first(made, "B").limit_w == pytest.approx(11_000)


def test_a_ceiling_later_or_ending_is_a_step_of_the_schedule():
    later = NOW + timedelta(minutes=10)
    made = plan({"A": (ceiling(4_600, later),)})
    steps = made.stations["A"]
    assert steps[0].limit_w == pytest.approx(22_000 / 3)
    at_later = [s for s in steps if s.start == later]
    assert at_later and at_later[0].limit_w == pytest.approx(4_600)
    assert next(s for s in made.stations["B"] if s.start == later).limit_w == \
        pytest.approx((22_000 - 4_600) / 2)
    made = plan({"A": (ceiling(4_600), step_of(later, math.inf, ()))})
    ends = made.stations["A"]
    assert ends[0].limit_w == pytest.approx(4_600)
    assert next(s for s in ends if s.start == later).limit_w == pytest.approx(22_000 / 3)
