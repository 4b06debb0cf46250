"""What a paused session gets (allocation.pause) and how it resumes (at its minimum first)."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Circuit, Fleet, Session, Site, StationInfo, value_at
from policies.model import parse_policy
from policies.plan import Conditions, make_plan
from policies.tree import Load, allocate_tree
from policies.validation import InvalidDocument
from policies.voltwatt import VoltageReading

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
MIN_3PH = 6 * 3 * V  # 4140 W
MIN_1PH = 6 * V  # 1380 W
SECOND = timedelta(seconds=1)


def policy(pause: str = "zero", extra: str = "") -> object:
    line = "" if pause == "zero" else f"  pause: {pause}\n"  # zero: the default
    return parse_policy(f"name: t\nallocation:\n  strategy: fair\n{line}{extra}", "t.yaml")


def fleet(stations: dict[str, StationInfo], with_session: list[str]) -> Fleet:
    return Fleet(stations, tuple(Session(sid, 1, NOW - timedelta(minutes=10))
                                 for sid in with_session))


def three_phase(*ids: str) -> dict[str, StationInfo]:
    return {sid: StationInfo(sid, 3, V, 32) for sid in ids}


def limit(plan, sid: str, at: datetime) -> float:
    step = value_at(plan.stations[sid], at)
    assert step is not None
    return step.limit_w


def reason(plan, sid: str, at: datetime) -> str:
    step = value_at(plan.stations[sid], at)
    assert step is not None
    return step.reason


def level_event(level: float, start: datetime, minutes: float) -> DrEvent:
    return DrEvent(
        event_id="ev", modification_number=0, status=EventStatus.ACTIVE, start=start,
        duration=timedelta(minutes=minutes),
        signals=(EventSignal(name="SIMPLE", type="level", intervals=(SignalInterval(
            start=start, duration=timedelta(minutes=minutes), value=level),)),))


# -- the policy key -------------------------------------------------------------------------

def test_pause_is_zero_unless_the_policy_says_minimum():
    assert parse_policy("name: t\n", "t.yaml").allocation.pause == "zero"
    assert policy("minimum").allocation.pause == "minimum"
    assert parse_policy("name: t\n", "t.yaml").allocation.resume_s == 60


@pytest.mark.parametrize(("text", "line", "message"), [
    ("name: t\nallocation:\n  pause: sometimes\n", 3,
     "allocation.pause: Input should be 'zero' or 'minimum'"),
    ("name: t\nallocation:\n  min_current_a: 4\n  pause: minimum\n", 4,
     "allocation.pause: minimum holds paused EVs at min_current_a, and 4 A is below"),
    ("name: t\nallocation:\n  resume_s: 0\n", 3, "allocation.resume_s: Input should be greater"),
])
def test_a_wrong_pause_or_resume_names_file_line_and_key(text, line, message):
    with pytest.raises(InvalidDocument) as error:
        parse_policy(text, "mine.yaml")
    assert f"mine.yaml:{line}: {message}" in str(error.value)


# -- the allocator ------------------------------------------------------------------------

def test_the_allocator_keeps_alive_only_in_the_room_left_after_every_minimum():
    loads = [Load(k, None, (0.0, 0.0, 0.0), MIN_3PH, 22_080) for k in "ABC"]
    site = Site(100_000)
    # C is held back (say, a guard time): with room for a third minimum it holds it, and
    # A and B share the rest; without, it gets 0 W and they share everything
    roomy = allocate_tree(3.5 * MIN_3PH, loads, site, keep_paused={"C": "held"},
                          keep_alive={"C"})
    assert roomy["C"].watts == MIN_3PH and roomy["C"].held
    assert "paused: held; holds the minimum current" == roomy["C"].reason
    assert roomy["A"].watts == roomy["B"].watts == pytest.approx(1.25 * MIN_3PH)
    tight = allocate_tree(2.5 * MIN_3PH, loads, site, keep_paused={"C": "held"},
                          keep_alive={"C"})
    assert tight["C"].watts == 0 and not tight["C"].held
    assert tight["A"].watts == tight["B"].watts == pytest.approx(1.25 * MIN_3PH)
    # one paused because its minimum did not fit finds no room after the others' either
    short = allocate_tree(2.5 * MIN_3PH, loads, site, keep_alive={"A", "B", "C"})
    assert [short[k].watts for k in "ABC"] == [pytest.approx(1.25 * MIN_3PH)] * 2 + [0.0]


# -- resuming: the minimum first, its share a step later ---------------------------------------

def test_a_resuming_session_gets_its_minimum_first_and_its_share_a_minute_later():
    pol = policy()
    stations = three_phase("A", "B")
    both = fleet(stations, ["A", "B"])
    first = make_plan([], pol, Site(2 * MIN_3PH), both, NOW)
    low = make_plan([], pol, Site(MIN_3PH + 500), both, NOW + 30 * SECOND, first.state)
    paused = next(sid for sid in stations if limit(low, sid, NOW + 30 * SECOND) == 0)
    other = next(sid for sid in stations if sid != paused)
    # the limit rises: it may resume at once (a higher limit lifts the guard time) ...
    at = NOW + 60 * SECOND
    back = make_plan([], pol, Site(44_000), both, at, low.state)
    assert limit(back, paused, at) == MIN_3PH
    assert "resuming after a pause: the minimum current until 12:02:00" in \
        reason(back, paused, at)
    assert back.paused == ()
    # ... and the schedule raises it to its share at 12:02:00, by the station's own clock
    assert limit(back, paused, at + 60 * SECOND) == 22_000
    # its share is kept for it meanwhile: the other station does not rise and fall again
    assert limit(back, other, at) == limit(back, other, at + 60 * SECOND) == 22_000
    # a plan made meanwhile keeps the minimum until 12:02:00 too
    again = make_plan([], pol, Site(44_000), both, at + 30 * SECOND, back.state)
    assert limit(again, paused, at + 30 * SECOND) == MIN_3PH
    assert limit(again, paused, at + 60 * SECOND) == 22_000


def test_sessions_paused_by_an_event_resume_at_their_minimum_when_it_ends():
    pol = policy(extra="  resume_s: 120\n")
    plan = make_plan([level_event(3, NOW, 10)], pol, Site(100_000),
                     fleet(three_phase("A", "B"), ["A", "B"]), NOW)
    end = NOW + timedelta(minutes=10)
    for sid in ("A", "B"):
        assert limit(plan, sid, end - SECOND) == 0
        assert limit(plan, sid, end) == MIN_3PH
        assert limit(plan, sid, end + 119 * SECOND) == MIN_3PH
        assert limit(plan, sid, end + 120 * SECOND) == 22_080
    assert sum(limit(plan, sid, end) for sid in "AB") <= 100_000


def test_a_plan_made_after_a_scheduled_resume_keeps_its_end():
    pol = policy()
    both = fleet(three_phase("A", "B"), ["A", "B"])
    during = make_plan([level_event(3, NOW, 10)], pol, Site(100_000), both, NOW)
    end = NOW + timedelta(minutes=10)
    # 20 s after the event's end (forgotten by then): the schedule resumed both at its
    # end, so they hold the minimum until 60 s after it, not 60 s after this plan
    after = make_plan([], pol, Site(100_000), both, end + 20 * SECOND, during.state)
    for sid in ("A", "B"):
        assert limit(after, sid, end + 20 * SECOND) == MIN_3PH
        assert limit(after, sid, end + 60 * SECOND) == 22_080
    # ... and a plan made once that minute is over gives the share at once
    late = make_plan([], pol, Site(100_000), both, end + 90 * SECOND, during.state)
    assert limit(late, "A", end + 90 * SECOND) == 22_080


def test_a_plan_made_after_a_scheduled_pause_starts_from_it():
    pol = policy()
    start = NOW + 60 * SECOND
    # 25 % of 20 kW holds one minimum: the event's step pauses B (A came first)
    before = make_plan([level_event(2, start, 30)], pol, Site(20_000),
                       fleet(three_phase("A", "B"), ["A", "B"]), NOW)
    assert limit(before, "B", start) == 0 and limit(before, "A", start) > 0
    # A leaves 30 s into the event, before any other plan: B was paused by its profile
    # at the event's start, so the guard time holds it, and it resumes at its minimum
    at = start + 30 * SECOND
    only_b = fleet(three_phase("A", "B"), ["B"])
    plan = make_plan([level_event(2, start, 30)], pol, Site(20_000), only_b, at, before.state)
    assert limit(plan, "B", at) == 0
    assert "guard time until 12:06:00 (paused at 12:01:00)" in reason(plan, "B", at)
    assert limit(plan, "B", start + 300 * SECOND) == MIN_3PH
    assert limit(plan, "B", start + 360 * SECOND) == 5_000


# -- pause: minimum ---------------------------------------------------------------------------

def guard_held(pause: str, stations: dict[str, StationInfo], site: Site,
               low: Site, later: list[str]):
    """All charge; the limit drops and the last one (by id) pauses; 30 s later the
    sessions are ``later``: the paused one is still in its guard time."""
    every = list(stations)
    first = make_plan([], policy(pause), site, fleet(stations, every), NOW)
    dropped = make_plan([], policy(pause), low, fleet(stations, every), NOW + 30 * SECOND,
                        first.state)
    assert limit(dropped, every[-1], NOW + 30 * SECOND) == 0
    return make_plan([], policy(pause), low, fleet(stations, later), NOW + 60 * SECOND,
                     dropped.state)


def test_minimum_keeps_a_paused_session_at_its_minimum_when_room_allows():
    stations = three_phase("A", "B")
    # A leaves: room for B's minimum, but B was paused 30 s ago (the guard time holds it)
    plans = {pause: guard_held(pause, stations, Site(2 * MIN_3PH), Site(MIN_3PH + 500), ["B"])
             for pause in ("zero", "minimum")}
    at = NOW + 60 * SECOND
    for plan in plans.values():
        assert "guard time until 12:05:30" in reason(plan, "B", at)
    assert limit(plans["zero"], "B", at) == 0
    kept = plans["minimum"]
    assert limit(kept, "B", at) == MIN_3PH
    assert "holds the minimum current" in reason(kept, "B", at)
    assert kept.paused == ("B",)  # paused all the same: it has no share
    assert kept.state is not None and not kept.state.stations["B"].charging


def test_minimum_gives_a_paused_session_nothing_without_room():
    stations = three_phase("A", "B")
    # A still charges: the 500 W left cannot hold B's minimum
    plan = guard_held("minimum", stations, Site(2 * MIN_3PH), Site(MIN_3PH + 500), ["A", "B"])
    at = NOW + 60 * SECOND
    assert limit(plan, "B", at) == 0 and limit(plan, "A", at) == MIN_3PH + 500


@pytest.mark.parametrize(("line_limit_a", "kept"), [(11, 0.0), (16, MIN_1PH)])
def test_a_single_phase_minimum_counts_on_its_own_line(line_limit_a, kept):
    # X (three-phase, at the connection) and Z (single-phase on L1, panel c) charge; the
    # limit drops and Z pauses; X leaves and T (single-phase on L1, panel c) arrives.
    # The site has room for Z's minimum; panel c's L1 has it only when rated 16 A.
    stations = {"X": StationInfo("X", 3, V, 32),
                "Z": StationInfo("Z", 1, V, 32, "c", 1),
                "T": StationInfo("T", 1, V, 32, "c", 1)}
    panel = (Circuit("c", None, line_limit_a),)
    pol = policy("minimum")
    first = make_plan([], pol, Site(50_000, circuits=panel), fleet(stations, ["X", "Z"]), NOW)
    low = Site(MIN_3PH + 1_000, circuits=panel)
    dropped = make_plan([], pol, low, fleet(stations, ["X", "Z"]), NOW + 30 * SECOND,
                        first.state)
    assert limit(dropped, "Z", NOW + 30 * SECOND) == 0
    at = NOW + 60 * SECOND
    plan = make_plan([], pol, low, fleet(stations, ["Z", "T"]), at, dropped.state)
    assert limit(plan, "T", at) >= MIN_1PH
    assert limit(plan, "Z", at) == kept
    assert limit(plan, "T", at) + limit(plan, "Z", at) <= line_limit_a * V + 1e-6


def test_a_voltage_pause_stays_at_zero_with_pause_minimum():
    pol = parse_policy("name: t\nallocation: {pause: minimum}\nvoltage:\n"
                       "  curve: {0.95: 100%, 0.90: min}\n  pause_below: 0.88\n"
                       "  hold_s: 0\n  ease_step: null\n", "t.yaml")
    stations = three_phase("A", "B")
    both = fleet(stations, ["A", "B"])
    healthy = {sid: VoltageReading(NOW - 60 * SECOND, (V,)) for sid in stations}
    first = make_plan([], pol, Site(100_000), both, NOW - 60 * SECOND, None,
                      Conditions(voltages=healthy))
    sagging = {"A": VoltageReading(NOW, (V,)), "B": VoltageReading(NOW, (0.87 * V,))}
    paused = make_plan([], pol, Site(100_000), both, NOW, first.state,
                       Conditions(voltages=sagging))
    assert limit(paused, "B", NOW) == 0 and "voltage" in reason(paused, "B", NOW)
    # the voltage recovers; within the guard time B stays at 0 A, as with pause: zero
    later = NOW + 60 * SECOND
    recovered = {sid: VoltageReading(later, (0.99 * V,)) for sid in stations}
    held = make_plan([], pol, Site(100_000), both, later, paused.state,
                     Conditions(voltages=recovered))
    assert limit(held, "B", later) == 0 and "guard time" in reason(held, "B", later)


def test_with_minimum_a_session_waiting_for_its_restore_delay_holds_its_minimum():
    # both paused by a level-3 event; after it each waits its own random delay
    extra = "restore: {random_window_s: 300}\n"
    stations = three_phase("A", "B")
    end = NOW + timedelta(minutes=10)
    plans = {pause: make_plan([level_event(3, NOW, 10)],
                              parse_policy(f"name: t\nallocation: {{pause: {pause}}}\n{extra}",
                                           "t.yaml"),
                              Site(100_000), fleet(stations, ["A", "B"]), NOW,
                              conditions=Conditions(rng=random.Random(3)))
             for pause in ("zero", "minimum")}
    for sid in stations:
        # with pause: zero, 0 A until its own time, then the minimum (and its share later)
        zero = plans["zero"].stations[sid]
        own_time = next(s.start for s in zero if s.start > end and s.limit_w > 0)
        assert own_time > end + 30 * SECOND  # (the delays drawn here are longer)
        assert limit(plans["zero"], sid, own_time) == MIN_3PH
        # with pause: minimum, the minimum from the event's end
        assert limit(plans["minimum"], sid, end) == MIN_3PH
        assert "random restore delay" in reason(plans["minimum"], sid, end)
        assert "holds the minimum current" in reason(plans["minimum"], sid, end)
        # the random delay still spreads the rise to the share
        share = next(s.start for s in plans["minimum"].stations[sid] if s.limit_w > MIN_3PH)
        assert share >= own_time
