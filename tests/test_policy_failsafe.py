"""Fail-safe limits, silent stations, and opting out (whole events or a priority group)."""

from datetime import UTC, datetime, timedelta

import pytest

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Session, Site, StationInfo, value_at
from policies.model import parse_policy
from policies.plan import Conditions, decide_opt, make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
SAFE = """name: safe
failsafe:
  vtn_silent_after_s: 600
  fleet_stale_after_s: 120
  limit: 20 kW
  station_silent_after_s: 300
"""


def fleet(n: int, **kw) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, V, 32) for i in range(n)}
    return Fleet(stations, tuple(Session(s, 1, NOW - timedelta(minutes=5)) for s in stations),
                 **kw)


def test_silent_vtn_applies_the_safe_limit():
    pol = parse_policy(SAFE, "safe.yaml")
    heard = Conditions(vtn_last_heard=NOW - timedelta(seconds=599))
    assert make_plan([], pol, Site(60_000), fleet(4), NOW, conditions=heard).site[0].limit_w \
        == 60_000
    silent = Conditions(vtn_last_heard=NOW - timedelta(seconds=601))
    plan = make_plan([], pol, Site(60_000), fleet(4), NOW, conditions=silent)
    assert plan.site[0].limit_w == 20_000
    assert plan.site[0].chain[0].kind == "failsafe"
    assert "VTN silent since 11:49:59" in plan.site[0].reason
    assert sum(s[0].limit_w for s in plan.stations.values()) <= 20_000 + 1e-6


def test_stale_fleet_snapshot_applies_the_safe_limit():
    pol = parse_policy(SAFE, "safe.yaml")
    plan = make_plan([], pol, Site(60_000), fleet(4, taken_at=NOW - timedelta(minutes=3)), NOW)
    assert plan.site[0].limit_w == 20_000 and "is stale" in plan.site[0].reason


def test_an_event_below_the_safe_limit_still_wins():
    pol = parse_policy(SAFE, "safe.yaml")
    event = DrEvent(event_id="e", modification_number=0, status=EventStatus.ACTIVE, start=NOW,
                    duration=timedelta(minutes=5), signals=(EventSignal(
                        name="SIMPLE", type="level", intervals=(SignalInterval(
                            start=NOW, duration=timedelta(minutes=5), value=3),)),))
    plan = make_plan([event], pol, Site(60_000), fleet(2), NOW,
                     conditions=Conditions(vtn_last_heard=NOW - timedelta(hours=1)))
    assert plan.site[0].limit_w == 0 and "event e" in plan.site[0].reason
    assert value_at(plan.site, NOW + timedelta(minutes=6)).limit_w == 20_000


def test_fail_safe_off_by_default():
    pol = parse_policy("name: p\n", "p.yaml")
    plan = make_plan([], pol, Site(60_000), fleet(2, taken_at=NOW - timedelta(days=1)), NOW,
                     conditions=Conditions(vtn_last_heard=NOW - timedelta(days=1)))
    assert plan.site[0].limit_w == 60_000


def test_a_station_that_stopped_reporting_counts_at_its_last_commanded_limit():
    pol = parse_policy(SAFE, "safe.yaml")
    first = make_plan([], pol, Site(30_000), fleet(3), NOW)
    last = first.stations["CP0"][0].limit_w
    assert last == pytest.approx(10_000)
    reports = {"CP0": NOW - timedelta(minutes=10), "CP1": NOW, "CP2": NOW}
    later = make_plan([], pol, Site(30_000), fleet(3, last_report=reports),
                      NOW + timedelta(minutes=1), first.state)
    step = later.stations["CP0"][0]
    assert step.limit_w == last and "not reporting" in step.reason
    others = later.stations["CP1"][0].limit_w + later.stations["CP2"][0].limit_w
    assert others + last <= 30_000 + 1e-6  # counted, not taken as zero
    # it stays counted through further plans
    again = make_plan([], pol, Site(30_000), fleet(3, last_report=reports),
                      NOW + timedelta(minutes=2), later.state)
    assert again.stations["CP0"][0].limit_w == last
    # a lower site limit is still sent to it, while it stays counted at its last limit
    low = make_plan([], pol, Site(5_000), fleet(3, last_report=reports),
                    NOW + timedelta(minutes=3), again.state)
    assert low.stations["CP0"][0].limit_w == 5_000
    assert low.stations["CP1"][0].limit_w == low.stations["CP2"][0].limit_w == 0
    assert low.state.stations["CP0"].limit_w == last


def test_opt_out_unsupported_keeps_its_old_spelling():
    event = DrEvent(event_id="p", modification_number=0, status=EventStatus.FAR, start=NOW,
                    duration=timedelta(minutes=5), signals=(EventSignal(
                        name="ELECTRICITY_PRICE", type="price", intervals=(SignalInterval(
                            start=NOW, duration=timedelta(minutes=5), value=0.3),)),))
    assert decide_opt(event, parse_policy("name: a\nopt_out_unsupported: false\n", "a"))[0] \
        == "optIn"
    assert decide_opt(event, parse_policy("name: a\nopt_out: {unsupported: false}\n", "a"))[0] \
        == "optIn"
    assert decide_opt(event, parse_policy("name: a\n", "a"))[0] == "optOut"


EXEMPT = """name: depot
allocation:
  strategy: priority
  groups:
    - {name: ambulances, stations: ["AMB-*"], rank: 0, exempt: true}
    - {name: staff, stations: ["S*"], rank: 1}
"""


def test_an_exempt_group_is_not_shed_and_the_plan_says_why():
    pol = parse_policy(EXEMPT, "depot.yaml")
    stations = {s: StationInfo(s, 3, V, 16) for s in ("AMB-1", "AMB-2", "S1", "S2")}
    fl = Fleet(stations, tuple(Session(s, 1, NOW) for s in stations))
    event = DrEvent(event_id="e", modification_number=0, status=EventStatus.ACTIVE, start=NOW,
                    duration=timedelta(minutes=5), signals=(EventSignal(
                        name="SIMPLE", type="level", intervals=(SignalInterval(
                            start=NOW, duration=timedelta(minutes=5), value=2),)),))
    plan = make_plan([event], pol, Site(44_000), fl, NOW)  # level 2: 11 kW
    amb = plan.stations["AMB-1"][0]
    assert amb.limit_w == pytest.approx(16 * 3 * V)  # full power despite the event
    assert "group ambulances is exempt from DR" in amb.reason
    assert plan.stations["S1"][0].limit_w == plan.stations["S2"][0].limit_w == 0
    # the site step says the exemption lifted the event's limit, and by how much
    site = plan.site[0]
    assert site.limit_w == pytest.approx(2 * 16 * 3 * V)
    assert "exempt groups keep 22.08 kW" in site.reason and "event e" in site.reason
    # never above the site's physical capacity
    small = make_plan([event], pol, Site(15_000), fl, NOW)
    assert sum(s[0].limit_w for s in small.stations.values()) <= 15_000 + 1e-6
