"""Operator holds in the plan (pure): a paused station gets 0 W, an exempt one ignores DR."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.holds import EXEMPT_REASON, PAUSED_REASON, plan_with_holds
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Reservation, Session, Site, StationInfo, Step, value_at
from policies.model import parse_policy, preset_text

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SITE = Site(capacity_w=44_000)
POLICY = parse_policy(preset_text("default"), "default")
MAX_3PH = 32 * 230 * 3


def event(level: int, start: datetime = NOW, minutes: int = 30) -> DrEvent:
    interval = SignalInterval(start=start, duration=timedelta(minutes=minutes), value=level)
    return DrEvent(event_id="e1", modification_number=0, status=EventStatus.ACTIVE, start=start,
                   duration=timedelta(minutes=minutes),
                   signals=(EventSignal(name="SIMPLE", type="level", intervals=(interval,)),))


def fleet(n: int, reservations: tuple[Reservation, ...] = ()) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, 230.0, 32.0) for i in range(n)}
    sessions = tuple(Session(f"CP{i}", 1, NOW - timedelta(minutes=10 - i)) for i in range(n))
    return Fleet(stations=stations, sessions=sessions, reservations=reservations)


def at(plan_steps: tuple[Step, ...], when: datetime = NOW) -> Step:
    step = value_at(plan_steps, when)
    assert step is not None
    return step


def test_no_holds_is_the_policy_plan():
    plan = plan_with_holds([event(1)], POLICY, SITE, fleet(2), NOW, {})
    assert at(plan.site).limit_w == 22_000
    assert all(at(s).limit_w == 11_000 for s in plan.stations.values())


def test_paused_station_gets_zero_and_the_others_its_share():
    plan = plan_with_holds([], POLICY, SITE, fleet(3), NOW, {"CP0": "pause"})
    assert at(plan.stations["CP0"]) == Step(NOW, 0.0, PAUSED_REASON)
    assert [at(plan.stations[s]).limit_w for s in ("CP1", "CP2")] == [22_000, 22_000]


def test_exempt_station_keeps_charging_through_an_event_within_capacity():
    plan = plan_with_holds([event(2)], POLICY, SITE, fleet(3), NOW, {"CP2": "exempt"})
    # 25 % of 44 kW is 11 kW: the exempt station keeps its 22 kW maximum, the others pause
    exempt = at(plan.stations["CP2"])
    assert exempt.limit_w == MAX_3PH
    assert exempt.reason.startswith(EXEMPT_REASON)
    assert at(plan.stations["CP0"]).limit_w == 0
    assert at(plan.stations["CP1"]).limit_w == 0
    assert at(plan.site).limit_w == 11_000  # the event's limit is still what the site shows


def test_exempt_station_leaves_the_others_what_the_event_allows():
    plan = plan_with_holds([event(1)], POLICY, Site(capacity_w=88_000), fleet(3), NOW,
                           {"CP0": "exempt"})
    # event: 44 kW; the exempt station takes 22 kW, the other two share the remaining 22 kW
    assert at(plan.stations["CP0"]).limit_w == MAX_3PH
    assert at(plan.stations["CP1"]).limit_w + at(plan.stations["CP2"]).limit_w <= 44_000 - MAX_3PH


@given(
    n=st.integers(min_value=1, max_value=8),
    level=st.integers(min_value=0, max_value=3),
    capacity_kw=st.floats(min_value=1, max_value=200),
    modes=st.lists(st.sampled_from([None, "pause", "exempt"]), min_size=8, max_size=8),
    reserved_w=st.floats(min_value=0, max_value=30_000),
)
def test_commanded_total_never_exceeds_capacity(n, level, capacity_kw, modes, reserved_w):
    site = Site(capacity_w=capacity_kw * 1000)
    reservation = Reservation("OFFLINE", (Step(NOW, reserved_w, "held"),))
    holds = {f"CP{i}": mode for i, mode in enumerate(modes[:n]) if mode}
    plan = plan_with_holds([event(level, NOW + timedelta(minutes=5))], POLICY, site,
                           fleet(n, (reservation,)), NOW, holds)
    for when in (NOW, NOW + timedelta(minutes=6), NOW + timedelta(minutes=40)):
        total = sum(at(s, when).limit_w for s in plan.stations.values())
        assert total <= max(site.capacity_w - reserved_w, 0) + 1e-6
        for sid, mode in holds.items():
            if mode == "pause":
                assert at(plan.stations[sid], when).limit_w == 0


def test_an_exempt_station_keeps_its_volt_watt_hold_time():
    from policies.plan import Conditions
    from policies.voltwatt import VoltageReading

    policy = parse_policy("name: v\nvoltage:\n  hold_s: 300\n", "v.yaml")
    low = Conditions(voltages={"CP0": VoltageReading(NOW, (0.90 * 230,))})
    first = plan_with_holds([event(1)], policy, SITE, fleet(2), NOW, {"CP0": "exempt"},
                            None, low)
    held = at(first.stations["CP0"]).limit_w
    assert held == 6 * 230 * 3 and "voltage" in at(first.stations["CP0"]).reason
    # the voltage recovers a minute later: within the hold time the restriction stays
    later = NOW + timedelta(minutes=1)
    fine = Conditions(voltages={"CP0": VoltageReading(later, (230.0,))})
    second = plan_with_holds([event(1)], policy, SITE, fleet(2), later, {"CP0": "exempt"},
                             first.state, fine)
    assert at(second.stations["CP0"], later).limit_w == held


def test_an_operator_pause_is_zero_even_with_pause_minimum_and_resumes_at_the_minimum():
    policy = parse_policy("name: m\nallocation: {pause: minimum}\n", "m.yaml")
    held = plan_with_holds([], policy, SITE, fleet(3), NOW, {"CP0": "pause"})
    # plenty of room, and still a true 0 W: the operator's pause is not the policy's
    assert at(held.stations["CP0"]) == Step(NOW, 0.0, PAUSED_REASON)
    assert held.state is not None and not held.state.stations["CP0"].charging
    # five minutes later the hold is lifted: it resumes at its minimum, its share a minute on
    later = NOW + timedelta(minutes=5)
    lifted = plan_with_holds([], policy, SITE, fleet(3), later, {}, held.state)
    assert at(lifted.stations["CP0"], later).limit_w == 6 * 230 * 3
    assert "resuming after a pause" in at(lifted.stations["CP0"], later).reason
    assert at(lifted.stations["CP0"], later + timedelta(minutes=1)).limit_w == \
        pytest.approx(44_000 / 3)
