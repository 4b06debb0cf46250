"""After an event: ramped restore, random per-station restore delays, recovery periods."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Session, Site, StationInfo, value_at
from policies.model import parse_policy
from policies.plan import Conditions, make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0


def policy(restore: str):
    return parse_policy(f"name: t\nrestore: {restore}\nallocation:\n  rotation: {{guard_s: 0}}\n",
                        "t.yaml")


def level_event(level: float, start: datetime, minutes: float, recovery: float | None = None):
    return DrEvent(
        event_id="ev", modification_number=0, status=EventStatus.ACTIVE, start=start,
        duration=timedelta(minutes=minutes),
        recovery=None if recovery is None else timedelta(minutes=recovery),
        signals=(EventSignal(name="SIMPLE", type="level", intervals=(SignalInterval(
            start=start, duration=timedelta(minutes=minutes), value=level),)),))


def fleet(n: int) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, V, 16) for i in range(n)}
    return Fleet(stations, tuple(Session(s, 1, NOW - timedelta(hours=1)) for s in stations))


def total(plan, at):
    return sum(value_at(steps, at).limit_w for steps in plan.stations.values())


def test_limit_ramps_up_in_steps_after_the_event():
    pol = policy("{ramp_kw_per_min: 10, step_s: 60}")
    end = NOW + timedelta(minutes=10)
    plan = make_plan([level_event(3, NOW, 10)], pol, Site(100_000), fleet(10), NOW)
    rising = [(int((s.start - end).total_seconds()), s.limit_w) for s in plan.site
              if s.start >= end]
    assert rising[:3] == [(60, 10_000), (120, 20_000), (180, 30_000)]
    assert rising[-1][1] == 100_000
    assert "ramp 10 kW/min from 0 kW" in value_at(plan.site, end + timedelta(minutes=1)).reason
    for step in plan.site:
        assert total(plan, step.start) <= step.limit_w + 1e-6


def test_ramp_continues_across_plans_through_the_state():
    pol = policy("{ramp_kw_per_min: 6, step_s: 30}")
    during = make_plan([level_event(3, NOW, 5)], pol, Site(50_000), fleet(5),
                       NOW + timedelta(minutes=4))
    # the event is over and gone from the list; the state still knows where the site was
    # and that the ramp began at the event's end (as the stations' profiles carried it out)
    after = make_plan([], pol, Site(50_000), fleet(5), NOW + timedelta(minutes=6), during.state)
    assert after.site[0].limit_w == 6_000  # one minute into the ramp, not at capacity at once
    assert value_at(after.site, NOW + timedelta(minutes=6, seconds=30)).limit_w == 9_000
    for at in (NOW + timedelta(minutes=6), NOW + timedelta(minutes=8)):
        assert total(after, at) == total(during, at)  # both plans command the same
    again = make_plan([], pol, Site(50_000), fleet(5), NOW + timedelta(minutes=7), after.state)
    assert again.site[0].limit_w == 12_000


def test_a_replan_after_the_event_keeps_the_random_restore_times():
    pol = policy("{ramp_kw_per_min: 30, step_s: 30, random_window_s: 240}")
    event = level_event(1, NOW, 5)
    during = make_plan([event], pol, Site(66_000), fleet(6), NOW + timedelta(minutes=4))
    after = make_plan([], pol, Site(66_000), fleet(6), NOW + timedelta(minutes=5, seconds=40),
                      during.state)
    for minutes in (5.7, 6, 7, 9, 12):
        at = NOW + timedelta(minutes=minutes)
        for sid, steps in after.stations.items():
            assert value_at(steps, at).limit_w == value_at(during.stations[sid], at).limit_w, \
                (sid, minutes)


def test_no_ramp_configured_restores_at_once():
    plan = make_plan([level_event(3, NOW, 10)], policy("{}"), Site(100_000), fleet(3), NOW)
    assert [s.limit_w for s in plan.site] == [0, 100_000]


def test_random_restore_window_spreads_stations_and_is_seeded():
    pol = policy("{random_window_s: 300}")
    end = NOW + timedelta(minutes=10)
    state = make_plan([level_event(1, NOW, 10)], pol, Site(66_000), fleet(6), NOW).state

    def restore_plan(seed):
        return make_plan([level_event(1, NOW, 10)], pol, Site(66_000), fleet(6),
                         end - timedelta(seconds=1), state,
                         Conditions(rng=random.Random(seed)))

    plan = restore_plan(7)
    assert restore_plan(7) == plan  # pure: the same rng seed, the same plan
    raised_at = {}
    for sid, steps in plan.stations.items():
        before = value_at(steps, end - timedelta(seconds=1)).limit_w
        assert value_at(steps, end).limit_w <= before + 1e-6  # held at the event's limit ...
        raised_at[sid] = next(s.start for s in steps if s.limit_w > before + 1e-6)
        assert end < raised_at[sid] <= end + timedelta(seconds=300)  # ... until its own time
    assert len(set(raised_at.values())) == 6
    assert restore_plan(8) != plan


def test_recovery_period_of_the_event_is_honoured():
    pol = policy("{step_s: 60}")
    event = level_event(3, NOW, 10, recovery=5)
    end = NOW + timedelta(minutes=10)
    plan = make_plan([event], pol, Site(100_000), fleet(10), NOW)
    values = [value_at(plan.site, end + timedelta(minutes=m)).limit_w for m in range(7)]
    assert values == [0, 20_000, 40_000, 60_000, 80_000, 100_000, 100_000]
    assert "recovery period" in value_at(plan.site, end + timedelta(minutes=2)).reason


@settings(max_examples=25, deadline=None)
@given(level=st.integers(1, 3), minutes=st.integers(1, 20), rate=st.floats(5, 50),
       step_s=st.sampled_from([10, 30, 60]), stations=st.integers(1, 12),
       window=st.sampled_from([0, 120]), replan_s=st.sampled_from([20, 45, 120]))
def test_restores_never_raise_the_site_faster_than_the_ramp(level, minutes, rate, step_s,
                                                           stations, window, replan_s):
    pol = policy(f"{{ramp_kw_per_min: {rate}, step_s: {step_s}, random_window_s: {window}}}")
    site = Site(60_000)
    event = level_event(level, NOW, minutes)
    end = NOW + timedelta(minutes=minutes)
    state = None
    at = NOW
    samples = []
    while at < end + timedelta(minutes=60_000 / 1000 / rate + 4):
        events = [event] if at < end else []  # the bridge forgets an event once it is over
        plan = make_plan(events, pol, site, fleet(stations), at, state,
                         Conditions(rng=random.Random(1)))
        state = plan.state
        samples.append((at, total(plan, at), plan))
        at += timedelta(seconds=replan_s)
    floor = max(w for t, w, _ in samples if t < end)  # what the site drew during the event
    for t, watts, plan in samples:
        if t >= end:
            allowed = floor + rate * 1000 / 60 * (t - end).total_seconds()
            assert watts <= allowed + 1e-6
            # ... and the plan's own future steps keep to it too
            for step in plan.site:
                if step.start >= end:
                    assert total(plan, step.start) <= floor + rate * 1000 / 60 * (
                        step.start - end).total_seconds() + 1e-6
    assert samples[-1][1] == pytest.approx(min(stations * 16 * 3 * V, 60_000))
