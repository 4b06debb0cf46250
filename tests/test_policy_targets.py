"""Events that target some of the site's stations limit those stations only (pure)."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Session, Site, StationInfo, value_at
from policies.model import parse_policy, preset_text
from policies.plan import Conditions, make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(preset_text("default"), "default")
MAX_3PH = 32 * 230 * 3  # 22,080 W


def simple(event_id: str, level: int, start: datetime = NOW) -> DrEvent:
    interval = SignalInterval(start=start, duration=timedelta(minutes=30), value=level)
    return DrEvent(event_id=event_id, modification_number=0, status=EventStatus.ACTIVE,
                   start=start, duration=timedelta(minutes=30),
                   signals=(EventSignal(name="SIMPLE", type="level", intervals=(interval,)),))


def fleet(n: int) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, 230.0, 32.0) for i in range(n)}
    sessions = tuple(Session(f"CP{i}", 1, NOW - timedelta(minutes=30 - i)) for i in range(n))
    return Fleet(stations=stations, sessions=sessions)


def limit(plan, sid: str, at: datetime = NOW) -> float:
    step = value_at(plan.stations[sid], at)
    assert step is not None
    return step.limit_w


def test_a_group_event_limits_the_group_and_leaves_the_site_limit_alone():
    site = Site(capacity_w=44_000)
    scope = {"ev": frozenset({"CP0", "CP1"})}
    plan = make_plan([simple("ev", 2)], POLICY, site, fleet(4), NOW,
                     conditions=Conditions(event_stations=scope))
    # 25 % of the group's hardware (2 x 22,080 W), shared by its two sessions
    assert limit(plan, "CP0") + limit(plan, "CP1") <= 0.25 * 2 * MAX_3PH + 1e-6
    assert limit(plan, "CP0") == limit(plan, "CP1") > 0
    # the other two share what the site has left
    assert limit(plan, "CP2") == limit(plan, "CP3") == (44_000 - 0.25 * 2 * MAX_3PH) / 2
    site_step = value_at(plan.site, NOW)
    assert site_step is not None and site_step.limit_w == 44_000
    assert "ev" in value_at(plan.stations["CP0"], NOW).reason  # type: ignore[union-attr]


def test_a_group_event_at_level_3_pauses_only_the_group():
    scope = {"ev": frozenset({"CP0"})}
    plan = make_plan([simple("ev", 3)], POLICY, Site(capacity_w=66_000), fleet(3), NOW,
                     conditions=Conditions(event_stations=scope))
    assert limit(plan, "CP0") == 0
    assert limit(plan, "CP1") == limit(plan, "CP2") == MAX_3PH


def test_a_group_event_and_a_site_event_the_lower_wins():
    scope = {"vans": frozenset({"CP0", "CP1"})}
    events = [simple("vans", 1), simple("site", 2)]  # vans: 50 % of theirs; site: 25 % of 44 kW
    plan = make_plan(events, POLICY, Site(capacity_w=44_000), fleet(2), NOW,
                     conditions=Conditions(event_stations=scope))
    assert limit(plan, "CP0") + limit(plan, "CP1") <= 11_000 + 1e-6


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 8), level=st.integers(0, 3), capacity_kw=st.floats(5, 200),
       members=st.sets(st.integers(0, 7), min_size=1), later=st.booleans())
def test_group_and_site_limits_both_hold(n, level, capacity_kw, members, later):
    site = Site(capacity_w=capacity_kw * 1000)
    scope = frozenset(f"CP{i}" for i in members if i < n)
    start = NOW + timedelta(minutes=5) if later else NOW
    plan = make_plan([simple("ev", level, start)], POLICY, site, fleet(n), NOW,
                     conditions=Conditions(event_stations={"ev": scope}))
    group_limit = POLICY.simple.share(level) * len(scope) * MAX_3PH
    for at in (NOW, NOW + timedelta(minutes=6), NOW + timedelta(minutes=40)):
        total = sum(limit(plan, f"CP{i}", at) for i in range(n))
        assert total <= site.capacity_w + 1e-6
        if start <= at < start + timedelta(minutes=30):
            assert sum(limit(plan, sid, at) for sid in scope) <= group_limit + 1e-6


def test_a_group_delta_counts_from_the_groups_baseline():
    # the group's two stations drew 30 kW when the event came: 10 kW less is 20 kW for them
    pol = parse_policy("name: p\nload_dispatch: {}\n", "p.yaml")
    interval = SignalInterval(start=NOW, duration=timedelta(minutes=30), value=10)
    event = DrEvent(event_id="vans", modification_number=0, status=EventStatus.ACTIVE,
                    start=NOW, duration=timedelta(minutes=30), signals=(EventSignal(
                        name="LOAD_DISPATCH", type="delta", unit="W", scale="k",
                        intervals=(interval,)),))
    plan = make_plan([event], pol, Site(capacity_w=88_000), fleet(4), NOW,
                     conditions=Conditions(event_stations={"vans": frozenset({"CP0", "CP1"})},
                                           baselines_w={"vans": 30_000}))
    assert limit(plan, "CP0") + limit(plan, "CP1") == 20_000
    assert "baseline 30 kW less 10 kW" in value_at(plan.stations["CP0"], NOW).reason  # type: ignore[union-attr]
    assert limit(plan, "CP2") == limit(plan, "CP3") == MAX_3PH
