from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from policies.allocation import Demand, allocate_fair
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Reservation, Session, Site, StationInfo, Step, value_at
from policies.model import parse_policy, preset_text
from policies.plan import decide_opt, make_plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MIN_3PH = 6 * 230 * 3  # 4140 W
MAX_3PH = 32 * 230 * 3  # 22080 W
POLICY = parse_policy(preset_text("default"), "default")


def demand(i: int, min_w: float = MIN_3PH, max_w: float = MAX_3PH) -> Demand:
    return Demand(key=i, min_w=min_w, max_w=max_w)


def test_equal_split_when_everyone_fits():
    shares = allocate_fair(66_000, [demand(i) for i in range(10)])
    assert {round(s.watts) for s in shares.values()} == {6600}


def test_small_limit_charges_as_many_as_fit_without_stranding():
    # 25 % of 66 kW over 20 EVs: three get a minimum or more, the rest pause, ~16.5 kW used.
    shares = allocate_fair(16_500, [demand(i) for i in range(20)])
    charging = [s.watts for s in shares.values() if s.watts > 0]
    assert len(charging) == 3
    assert min(charging) >= MIN_3PH
    assert 16_400 <= sum(charging) <= 16_500


def test_station_maximum_caps_the_share():
    shares = allocate_fair(100_000, [demand(0, max_w=7_000), demand(1)])
    assert shares[0].watts == 7_000
    assert shares[1].watts == MAX_3PH


def test_zero_limit_pauses_all():
    shares = allocate_fair(0, [demand(i) for i in range(3)])
    assert all(s.watts == 0 for s in shares.values())


@given(
    limit=st.floats(min_value=0, max_value=500_000, allow_nan=False),
    phases=st.lists(st.sampled_from([1, 3]), min_size=0, max_size=40),
    maxima=st.lists(st.floats(min_value=6, max_value=63), min_size=40, max_size=40),
)
def test_allocation_invariants(limit, phases, maxima):
    pairs = zip(phases, maxima, strict=False)
    demands = [Demand(i, 6 * 230 * p, m * 230 * p) for i, (p, m) in enumerate(pairs)]
    shares = allocate_fair(limit, demands)
    assert set(shares) == {d.key for d in demands}
    # never above the limit
    assert sum(s.watts for s in shares.values()) <= limit + 1e-6
    for d in demands:
        w = shares[d.key].watts
        # paused, or between the minimum and the session's maximum
        assert w == 0 or d.min_w - 1e-6 <= w <= d.max_w + 1e-6
    # no stranded headroom: a paused session would not have fitted at its minimum
    unused = limit - sum(s.watts for s in shares.values())
    for d in demands:
        if shares[d.key].watts == 0:
            assert unused < d.min_w


def simple_event(level: float, start: datetime, minutes: int = 30, **kw) -> DrEvent:
    return DrEvent(
        event_id=kw.pop("event_id", "e1"), modification_number=0, status=EventStatus.FAR,
        start=start, duration=timedelta(minutes=minutes),
        signals=(EventSignal(name="SIMPLE", type="level", intervals=(
            SignalInterval(start=start, duration=timedelta(minutes=minutes), value=level),)),),
        **kw,
    )


def fleet_of(n: int, sessions: int | None = None) -> Fleet:
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, 230, 32) for i in range(n)}
    chosen = list(stations)[: n if sessions is None else sessions]
    return Fleet(stations, tuple(Session(s, 1, NOW - timedelta(minutes=i))
                                 for i, s in enumerate(chosen)))


def test_plan_holds_capacity_without_event():
    plan = make_plan([], POLICY, Site(66_000), fleet_of(10), NOW)
    assert len(plan.site) == 1 and plan.site[0].limit_w == 66_000
    assert sum(steps[0].limit_w for steps in plan.stations.values()) <= 66_000


def test_plan_follows_event_and_restores_after():
    start = NOW + timedelta(minutes=10)
    plan = make_plan([simple_event(2, start)], POLICY, Site(66_000), fleet_of(20), NOW)
    assert [s.limit_w for s in plan.site] == [66_000, 16_500, 66_000]
    assert [s.start for s in plan.site] == [NOW, start, start + timedelta(minutes=30)]
    assert "SIMPLE level 2" in plan.site[1].reason
    for at in (NOW, start, start + timedelta(minutes=31)):
        total = sum(value_at(steps, at).limit_w for steps in plan.stations.values())
        assert total <= value_at(plan.site, at).limit_w + 1e-6
    # the event's turn goes to sessions that waited: each resumes at its minimum first,
    # and a minute later (allocation.resume_s) the limit is shared out in full
    at_start = [value_at(s, start).limit_w for s in plan.stations.values()]
    assert sorted(w for w in at_start if w > 0) == [6 * 3 * 230] * 3
    during = sum(value_at(s, start + timedelta(seconds=60)).limit_w
                 for s in plan.stations.values())
    assert during > 16_000


def test_most_restrictive_event_wins():
    events = [simple_event(1, NOW, event_id="a"), simple_event(3, NOW, event_id="b")]
    plan = make_plan(events, POLICY, Site(66_000), fleet_of(4), NOW)
    assert plan.site[0].limit_w == 0
    assert "event b" in plan.site[0].reason


def test_station_without_session_gets_zero():
    plan = make_plan([], POLICY, Site(66_000), fleet_of(4, sessions=2), NOW)
    assert plan.stations["CP3"][0].limit_w == 0
    assert "no charging session" in plan.stations["CP3"][0].reason


def test_reserved_station_is_counted_and_held_at_zero():
    fleet = fleet_of(3)
    fleet = Fleet(fleet.stations, fleet.sessions,
                  (Reservation("CP0", (Step(NOW, 22_080, "hardware maximum"),)),))
    plan = make_plan([], POLICY, Site(30_000), fleet, NOW)
    assert plan.stations["CP0"][0].limit_w == 0
    others = plan.stations["CP1"][0].limit_w + plan.stations["CP2"][0].limit_w
    assert others <= 30_000 - 22_080 + 1e-6


def test_reserved_single_phase_station_counts_on_its_own_line():
    """Found single-phase on L1: 7.4 kW is 32 A on L1, not 10.7 A on each line."""
    site = Site(30_000, max_current_a=40)  # per line at the connection
    stations = {"DUMB": StationInfo("DUMB", 3, 230.0, 32.0),  # as configured (defaults)
                "SMART": StationInfo("SMART", 3, 230.0, 32.0)}
    sessions = tuple(Session(sid, 1, NOW) for sid in stations)
    found = StationInfo("DUMB", 1, 230.0, 32.0, phase=1)
    held = Reservation("DUMB", (Step(NOW, 32 * 230, "its hardware"),), found)
    plan = make_plan([], POLICY, site, Fleet(stations, sessions, (held,)), NOW)
    assert plan.stations["SMART"][0].limit_w <= (40 - 32) * 230 * 3 + 1e-6  # L1 is full


def test_opt_out_when_no_signal_is_understood():
    event = simple_event(1, NOW)
    price = event.model_copy(update={"signals": (event.signals[0].model_copy(
        update={"name": "ELECTRICITY_PRICE", "type": "price"}),)})
    assert decide_opt(event, POLICY)[0] == "optIn"
    assert decide_opt(price, POLICY)[0] == "optOut"


def test_level_shares_from_preset():
    assert [POLICY.simple.share(level) for level in (0, 1, 2, 3, 4)] == [1, .5, .25, 0, 0]


def test_upper_envelope_takes_the_highest_at_every_moment():
    from policies.fleet import upper_envelope

    a = (Step(NOW, 10, "a"), Step(NOW + timedelta(seconds=60), 2, "a2"))
    b = (Step(NOW + timedelta(seconds=30), 5, "b"),)
    env = upper_envelope(a, b)
    assert [(int((s.start - NOW).total_seconds()), s.limit_w) for s in env] == [(0, 10), (60, 5)]


def test_a_station_with_two_sessions_gets_one_share_within_its_maximum():
    stations = {"CP0": StationInfo("CP0", 3, 230, 32), "CP1": StationInfo("CP1", 3, 230, 32)}
    sessions = (Session("CP0", 1, NOW), Session("CP0", 2, NOW), Session("CP1", 1, NOW))
    plan = make_plan([], POLICY, Site(100_000), Fleet(stations, sessions), NOW)
    assert plan.stations["CP0"][0].limit_w == MAX_3PH  # not two sessions' worth
    plan = make_plan([], POLICY, Site(10_000), Fleet(stations, sessions), NOW)
    assert plan.stations["CP0"][0].limit_w == plan.stations["CP1"][0].limit_w == 5_000
