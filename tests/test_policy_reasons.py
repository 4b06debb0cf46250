"""Every limit in a plan carries its reason chain, and the store keeps it."""

from datetime import UTC, datetime, timedelta

from bridge.plan_json import ScheduleText, steps_to_json
from bridge.store import Store, steps_from_json
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Reservation, Session, Site, StationInfo, Step, Why
from policies.model import parse_policy, preset_text
from policies.plan import make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(preset_text("default"), "default")


def level_event(level: float) -> DrEvent:
    return DrEvent(
        event_id="ev-7", modification_number=0, status=EventStatus.ACTIVE, start=NOW,
        duration=timedelta(minutes=30),
        signals=(EventSignal(name="SIMPLE", type="level", intervals=(
            SignalInterval(start=NOW, duration=timedelta(minutes=30), value=level),)),))


def fleet(n: int, sessions: int) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, 230, 32) for i in range(n)}
    return Fleet(stations, tuple(Session(f"CP{i}", 1, NOW - timedelta(minutes=i))
                                 for i in range(sessions)))


def test_every_site_and_station_step_has_event_rule_and_allocation():
    plan = make_plan([level_event(2)], POLICY, Site(40_000), fleet(6, 5), NOW)
    site = plan.site[0]
    assert [w.kind for w in site.chain] == ["event", "signal", "rule"]
    assert site.reason == "event ev-7; SIMPLE level 2; simple.levels[2] -> 25% of capacity"
    for steps in plan.stations.values():
        for step in steps:
            kinds = [w.kind for w in step.chain]
            assert kinds[-1] == "allocation"
            if step.start < NOW + timedelta(minutes=30):
                assert kinds[:3] == ["event", "signal", "rule"]
                assert step.reason.startswith(site.reason)
            else:
                assert kinds[0] == "site"
    charging = [s[0] for s in plan.stations.values() if s[0].limit_w > 0]
    paused = [s[0] for s in plan.stations.values() if s[0].limit_w == 0]
    assert all("fair share, 2 of 5 charging" in s.chain[-1].text for s in charging)
    assert any("paused: the site limit cannot give it the minimum" in s.reason for s in paused)
    assert plan.stations["CP5"][0].chain[-1].text == "no charging session"
    assert set(plan.paused) == {"CP0", "CP1", "CP2"}  # first come, first served


def test_reservations_appear_in_the_chain():
    base = fleet(3, 3)
    held = Fleet(base.stations, base.sessions, (Reservation("CP0", (Step(NOW, 5_000, "x"),)),))
    plan = make_plan([], POLICY, Site(30_000), held, NOW)
    assert "5000 W held for stations the bridge cannot steer" in plan.stations["CP1"][0].reason
    assert plan.stations["CP0"][0].chain[-1].kind == "allocation"


def test_chain_survives_json_and_old_rows_still_read():
    step = Step(NOW, 1_000.0, "a; b", (Why("event", "a"), Why("allocation", "b")))
    assert steps_from_json(steps_to_json([step])) == (step,)
    old = '[["2026-11-25T12:00:00+00:00", 1000.0, "a; b"]]'
    assert steps_from_json(old) == (Step(NOW, 1_000.0, "a; b"),)


def test_store_keeps_the_plans_reasons(tmp_path):
    plan = make_plan([level_event(1)], POLICY, Site(40_000), fleet(2, 2), NOW)
    store = Store(tmp_path / "plans.db")
    try:
        store.save_plan(plan.made_at, plan.site, plan.stations)
        made_at, site, stations = store.last_plan()
    finally:
        store.close()
    assert made_at == NOW and site == plan.site
    assert stations == dict(plan.stations)
    assert stations["CP0"][0].chain[0] == Why("event", "event ev-7")


def test_store_keeps_the_allocation_state_and_baselines(tmp_path):
    from policies.fleet import PlanState, StationState

    state = PlanState(
        at=NOW, site_limit_w=12_000.0,
        stations={"CP0": StationState(4_140.0, True, NOW - timedelta(minutes=3), None, True,
                                      0.0),
                  "CP1": StationState(0.0, False, NOW, NOW + timedelta(seconds=90), True,
                                      12_000.0),
                  # paused for its voltage; its schedule resumes it, then pauses it again
                  "CP2": StationState(0.0, False, NOW, hard_pause=True, then=StationState(
                      4_140.0, True, NOW + timedelta(minutes=2), switched=True,
                      resume_until=NOW + timedelta(minutes=3), then=StationState(
                          0.0, False, NOW + timedelta(minutes=9), switched=True,
                          paused_at_limit_w=8_000.0)))},
        ramp_from=(NOW - timedelta(minutes=1), 6_000.0), rises=(NOW - timedelta(minutes=1),),
        restore_began=NOW - timedelta(minutes=1))
    store = Store(tmp_path / "state.db")
    try:
        assert store.plan_state() == (None, {})
        store.save_plan_state(state, {"ev-7": 33_000.0})
        store.save_plan_state(state, {"ev-7": 33_000.0})  # one row, replaced
        assert store.plan_state() == (state, {"ev-7": 33_000.0})
    finally:
        store.close()


def test_a_plan_encoded_ahead_is_stored_as_the_plan_and_its_state(tmp_path):
    """The planning thread encodes the plan; the store writes it, adding the events'
    baselines as they are when it is written."""
    from bridge.store import encode_plan

    plan = make_plan([level_event(1)], POLICY, Site(40_000), fleet(2, 2), NOW)
    assert plan.state is not None
    encoded = encode_plan(plan.made_at, plan.site, plan.stations, plan.state)
    store = Store(tmp_path / "plans.db")
    try:
        store.save_encoded_plan(encoded, {"ev-7": 33_000.0})
        made_at, site, stations = store.last_plan()
        assert store.plan_state() == (plan.state, {"ev-7": 33_000.0})
    finally:
        store.close()
    assert (made_at, site, stations) == (NOW, plan.site, dict(plan.stations))


def test_a_stored_state_from_before_resumes_and_holds_reads_as_without_them():
    from bridge.store import plan_state_from_json

    saved = ('{"at": "2026-11-25T12:00:00+00:00", "site_limit_w": 12000.0, "ramp_from": null,'
             ' "rises": [], "restore_began": null, "baselines": {},'
             ' "stations": {"CP0": [0.0, false, "2026-11-25T11:58:00+00:00", null, true, 9000.0]}}')
    state, _ = plan_state_from_json(saved)
    cp0 = state.stations["CP0"]
    assert (cp0.resume_until, cp0.hard_pause, cp0.then) == (None, False, None)
    assert cp0.paused_at_limit_w == 9_000.0 and not cp0.charging


def test_a_shared_schedule_is_encoded_once_and_as_steps_to_json_would():
    text_of = ScheduleText()
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    shared = (Step(at, 7_000.0, "plan"), Step(at + timedelta(hours=1), 3_500.0, "event"))
    first = text_of(shared)
    assert first == steps_to_json(shared) and text_of(shared) is first
    equal = tuple(shared)  # the same tuple (tuple() of a tuple is itself)
    assert text_of(equal) is first
    other = (Step(at, 5_000.0, "plan"),)
    assert text_of(other) == steps_to_json(other)
    assert text_of(list(other)) == steps_to_json(other)  # not a tuple: encoded each time
    for n in range(ScheduleText.KEPT + 5):  # many schedules: the oldest are dropped
        fresh = (Step(at, float(n), "plan"),)
        assert text_of(fresh) == steps_to_json(fresh)
