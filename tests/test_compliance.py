"""Judging a station's meter against what it may hold, while its limits keep changing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.compliance import ComplianceRule, Holdings, taken_at
from bridge.dispatch import Dispatcher, StationRecord
from bridge.station_life import Event
from bridge.store import Store
from policies.fleet import StationInfo, Step

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEEP = timedelta(seconds=40)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def flat(watts: float, start: datetime = T0, why: str = "share") -> tuple[Step, ...]:
    return (Step(start, watts, why),)


def test_holdings_give_the_highest_limit_over_a_window():
    held = Holdings()
    held.note(at(0), None, KEEP)  # connected, not confirmed yet
    held.note(at(1), flat(11_000), KEEP)
    held.note(at(10), flat(4_000, at(10)), KEEP)
    # an event's step inside a schedule counts from its start
    event = (Step(at(20), 6_000, "x"), Step(at(25), 2_000, "event"))
    held.note(at(20), event, KEEP)
    assert held.highest(at(-5), at(0)) is None  # before anything was known
    assert held.highest(at(0.5), at(3)) is None  # not confirmed then: anything
    assert held.highest(at(2), at(9)) == 11_000
    assert held.highest(at(2), at(12)) == 11_000
    assert held.highest(at(10.5), at(19)) == 4_000
    assert held.highest(at(11), at(30)) == 6_000
    assert held.highest(at(26), at(30)) == 2_000
    held.note(at(30), tuple(event), KEEP)  # the same schedule again: no new entry
    assert len(held.entries) == 4
    # a minute on, what it held before is forgotten, but the entry in force is kept
    held.note(at(90), flat(3_000, at(90)), KEEP)
    assert [since for since, _ in held.entries] == [at(20), at(90)]
    assert held.highest(at(60), at(95)) == 3_000


def dispatcher(tmp_path: Path, clock: list[datetime], grace_s: float = 20) -> Dispatcher:
    rule = ComplianceRule(tolerance_w=500, grace=timedelta(seconds=grace_s))
    result = Dispatcher(Store(tmp_path / "bridge.db"), min_current_a=6, retry_s=1,
                        on_change=lambda: None, clock=lambda: clock[0], compliance=rule)
    for sid in ("DEAF", "HONEST", "RAISING"):
        state = result.stations[sid] = StationRecord(info=StationInfo(sid, 3, 230.0, 32.0))
        state.link = object()  # type: ignore[assignment]
    return result


def accepted(dispatch: Dispatcher, station_id: str, steps: tuple[Step, ...]) -> None:
    """What the dispatcher books when a station answers Accepted."""
    state = dispatch.stations[station_id]
    if not state.life.confirmed:
        for event in (Event.CONNECTED, Event.REGISTERED, Event.SENT, Event.ACCEPTED):
            state.life.fire(event, dispatch._clock())
    state.applied, state.in_flight = steps, None
    dispatch._refresh(state)


def test_a_station_ignoring_limits_that_change_every_few_seconds_is_flagged(tmp_path):
    """Its limit changes every 5 s (joins, rotation); meter values come every 10 s."""
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    flagged_at = None
    for second in range(0, 120):
        clock[0] = at(second)
        if second % 5 == 0:
            share = 4_000.0 if (second // 5) % 2 else 5_000.0
            accepted(dispatch, "DEAF", flat(share, clock[0]))
        if second % 10 == 9:
            dispatch.observe_draw("DEAF", 7_360.0)  # 32 A on one phase, whatever it holds
        if flagged_at is None and dispatch.stations["DEAF"].compliance.flagged:
            flagged_at = second
    assert flagged_at is not None
    assert flagged_at <= 30  # the first reading is judged at once, the second flags it
    assert dispatch.stations["DEAF"].status == "non-compliant"
    assert dispatch.stations["DEAF"].compliance.peak_w == 7_360.0


def test_an_honest_station_coming_down_late_is_not_flagged(tmp_path):
    """Its meter lags: a reading taken before the decrease arrives after it, and the EV
    takes seconds to ramp down."""
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    accepted(dispatch, "HONEST", flat(11_000))
    for second in range(1, 100):
        clock[0] = at(second)
        if second == 30:
            accepted(dispatch, "HONEST", flat(4_000, clock[0]))  # a DR event's decrease
        if second % 10 == 9:
            # the sample of 10 s ago, sent late; the EV still at 11 kW until 45 s
            sample_at = at(second - 10)
            draw = 11_000.0 if sample_at < at(45) else 4_000.0
            dispatch.observe_draw("HONEST", draw, sample_at)
    assert not dispatch.stations["HONEST"].compliance.flagged


def test_a_raise_in_flight_may_already_apply(tmp_path):
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    accepted(dispatch, "RAISING", flat(4_000))
    state = dispatch.stations["RAISING"]
    clock[0] = at(30)
    state.in_flight = flat(11_000, clock[0])  # sent, not answered yet: it may apply
    dispatch._refresh(state)
    for second in range(31, 60, 2):
        clock[0] = at(second)
        dispatch.observe_draw("RAISING", 10_500.0, clock[0])
    assert not state.compliance.flagged
    state.uncertain, state.in_flight = state.in_flight, None  # the answer was lost
    dispatch._refresh(state)
    for second in range(61, 90, 2):
        clock[0] = at(second)
        dispatch.observe_draw("RAISING", 10_500.0, clock[0])
    assert not state.compliance.flagged


def reference_highest(entries: list, start: datetime, end: datetime) -> float | None:
    """Holdings.highest by its definition: every entry in force at some moment of
    [start, end], each schedule's highest step over the part it was in force."""
    if not entries or entries[0][0] > start:
        return None
    best = 0.0
    for index, (since, held) in enumerate(entries):
        until = entries[index + 1][0] if index + 1 < len(entries) else end
        if until < start or since > end:
            continue
        if held is None:
            return None
        lo, hi = max(since, start), min(until, end)
        in_force = [s for s in held if s.start <= lo][-1:] or list(held[:1])
        best = max([best, *(s.limit_w for s in in_force),
                    *(s.limit_w for s in held if lo < s.start <= hi)])
    return best


seconds = st.integers(0, 60).map(lambda s: T0 + timedelta(seconds=s))
schedules = st.none() | st.lists(
    st.tuples(seconds, st.sampled_from([0.0, 1_400.0, 7_000.0, 11_000.0])), max_size=3,
).map(lambda steps: tuple(Step(at, w, "") for at, w in sorted(steps, key=lambda x: x[0])))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.tuples(seconds, schedules), max_size=5), seconds, seconds)
def test_holdings_answer_as_their_definition_says(noted: list, start: datetime,
                                                  end: datetime):
    start, end = min(start, end), max(start, end)
    holdings = Holdings()
    for at, held in sorted(noted, key=lambda x: x[0]):
        holdings.note(at, held, timedelta(hours=1))
    assert holdings.highest(start, end) == reference_highest(holdings.entries, start, end)


def test_holdings_answer_by_their_definition_when_the_clock_steps_back():
    """An entry noted at an earlier time than the one before it is kept as noted, and the
    answer is the definition's (not the newest entry's alone) until it is forgotten."""
    eleven, four = (Step(T0, 11_000.0, ""),), (Step(T0, 4_000.0, ""),)
    holdings = Holdings()
    holdings.note(at(10), eleven, timedelta(hours=1))
    holdings.note(at(5), four, timedelta(hours=1))
    assert not holdings.in_order
    assert holdings.highest(at(10), at(12)) == reference_highest(
        holdings.entries, at(10), at(12)) == 4_000.0
    holdings.note(at(9_000), eleven, timedelta(hours=1))  # the two old ones are forgotten
    assert holdings.in_order and len(holdings.entries) == 2
    # the newest began before the window, but an older one noted later reaches into it
    stepped = Holdings()
    for when, held in ((0, eleven), (20, None), (5, four)):
        stepped.note(at(when), held, timedelta(hours=1))
    assert stepped.highest(at(10), at(12)) == reference_highest(
        stepped.entries, at(10), at(12)) == 11_000.0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(seconds, schedules), max_size=5), seconds, seconds)
def test_holdings_noted_out_of_order_answer_as_their_definition_says(
        noted: list, start: datetime, end: datetime):
    start, end = min(start, end), max(start, end)
    holdings = Holdings()
    for when, held in noted:  # as noted, not sorted: the clock may step back
        holdings.note(when, held, timedelta(hours=1))
    assert holdings.highest(start, end) == reference_highest(holdings.entries, start, end)


@given(st.none() | st.integers(-100, 100).map(lambda s: T0 + timedelta(seconds=s)))
def test_a_reading_is_taken_at_its_stamp_trusted_up_to_the_grace_time(stamped):
    rule = ComplianceRule(tolerance_w=500, grace=timedelta(seconds=20))
    want = T0 if stamped is None else min(max(stamped, T0 - rule.grace), T0)
    assert taken_at(rule, T0, stamped) == want
