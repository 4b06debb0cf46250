"""Boot shares: a station that joins holding nothing of ours gets a limit at once, and the
limits of every station never add up to more than the site limit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, wait_until, worst_site_draw_w
from hypothesis import given
from hypothesis import strategies as st
from test_ocpp_201 import add_201

from bridge.dispatch import Dispatcher, StationRecord
from bridge.runtime.admission import Admission
from bridge.station_life import Event
from bridge.store import Store
from policies.boot_shares import Joiner, highest_within, lowest_within, split_room
from policies.fleet import Plan, PlanState, Site, StationInfo, StationState, Step
from policies.voltwatt import VoltHold

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_the_room_is_split_evenly_among_the_stations_joining():
    joining = {f"S{i}": Joiner(22_080, 4_140) for i in range(10)}
    assert split_room(70_000, joining) == {f"S{i}": 7_000 for i in range(10)}


def test_stations_still_booting_keep_their_part_for_a_later_batch():
    joining = {"A": Joiner(22_080), "B": Joiner(22_080)}
    assert split_room(40_000, joining, waiting=2) == {"A": 10_000, "B": 10_000}


def test_a_station_that_draws_less_leaves_the_rest_to_the_others():
    joining = {"small": Joiner(3_680), "A": Joiner(22_080), "B": Joiner(22_080)}
    shares = split_room(30_000, joining)
    assert shares["small"] == 3_680
    assert shares["A"] == shares["B"] == (30_000 - 3_680) / 2


def test_no_room_or_a_part_below_the_minimum_pauses():
    joining = {"A": Joiner(22_080, 4_140), "B": Joiner(22_080, 4_140)}
    assert split_room(-5_000, joining) == {"A": 0.0, "B": 0.0}  # others hold more already
    assert split_room(8_000, joining) == {"A": 0.0, "B": 0.0}  # 4,000 W each: below 6 A
    assert split_room(10_000, {}) == {}


@given(room=st.floats(-1e6, 1e7, allow_nan=False),
       maxima=st.lists(st.tuples(st.floats(0, 1e5), st.floats(0, 1e4)), max_size=40),
       waiting=st.integers(0, 100))
def test_the_shares_never_add_up_to_more_than_the_room(room, maxima, waiting):
    joining = {f"S{i}": Joiner(m, lo) for i, (m, lo) in enumerate(maxima)}
    shares = split_room(room, joining, waiting)
    assert shares.keys() == joining.keys()
    assert sum(shares.values()) <= max(room, 0.0) * (1 + 1e-9) + 1e-6
    for sid, watts in shares.items():
        assert 0 <= watts <= joining[sid].max_w
        assert watts == 0 or watts >= joining[sid].min_w


def test_schedules_are_judged_over_the_horizon_from_now():
    steps = (Step(T0, 9_000, "a"), Step(T0 + 5 * MINUTE, 4_000, "b"),
             Step(T0 + 10 * MINUTE, 11_000, "c"))
    assert lowest_within(steps, T0, MINUTE) == 9_000  # the drop is beyond the horizon
    assert lowest_within(steps, T0, 6 * MINUTE) == 4_000
    assert highest_within(steps, T0, 20 * MINUTE) == 11_000
    assert highest_within(steps, T0 + 6 * MINUTE, MINUTE) == 4_000
    assert lowest_within((), T0, MINUTE) is None and highest_within(None, T0, MINUTE) == 0


async def test_stations_joining_at_once_never_draw_more_than_the_cap(site: SiteHarness):
    """A dozen stations (OCPP 1.6 and 2.0.1) join at once, each with an EV that would
    draw 22 kW against a cap of 7 kW a station, while the plan waits (as it does in a boot
    storm): what they draw never adds up to more than the cap, from the first connection
    on; each ends at its share, with a single profile since its boot share was its share."""
    count, share_w = 12, 7_000.0
    bridge = await site.start_bridge(capacity_kw=count * share_w / 1000)
    await wait_until(lambda: bridge.planner.plan is not None, what="the first plan")
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
    try:
        async with bridge.planner._one_plan:  # the storm's plan waits
            stations = [site.add_station(f"J{i:02d}", ev_max_current_a=32.0,
                                         rate_unit="Power") for i in range(count - 4)]
            stations += [add_201(site, f"K{i:02d}", ev_max_current_a=32.0)
                         for i in range(4)]
            await wait_until(lambda: len(bridge.station_events.sessions) == count,
                             timeout=60, what="every station charging")
            await asyncio.sleep(1.0)
            limited_before_the_plan = sum(1 for s in stations if s.installed_profiles)
        await bridge.planner.replan()  # the storm's plan
        await wait_until(lambda: all(abs(s.composite_limit_w() - share_w) < 50
                                     and s.power_w > 0 for s in stations),
                         timeout=60, what="every station at its share, charging")
        await asyncio.sleep(1.5)  # room for a profile that should not go
    finally:
        stop.set()
    assert await watcher <= count * share_w + 1
    assert limited_before_the_plan == count
    assert all(abs(s.composite_limit_w() - share_w) < 50 for s in stations)
    assert bridge.admission.admitted == count
    sets = {s.spec.station_id: sum(1 for a, _ in s.received if a == "SetChargingProfile")
            for s in stations}
    assert sets == dict.fromkeys(sets, 1)  # the boot share was the plan's share


async def test_with_the_room_taken_a_station_joining_waits_for_the_plan(site: SiteHarness):
    """Stations hold the whole cap; one more joins while the plan waits: its boot share is
    0 W, and the plan then lowers the others before it raises the newcomer. What the
    stations draw never adds up to more than the cap."""
    bridge = await site.start_bridge(capacity_kw=28)
    first = [site.add_station(f"F{i}", ev_max_current_a=32.0) for i in range(4)]
    await wait_until(lambda: all(abs(s.composite_limit_w() - 7_000) < 50 and s.power_w > 0
                                 for s in first), timeout=30, what="the first stations' shares")
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
    try:
        async with bridge.planner._one_plan:  # the plan waits
            late = site.add_station("LATE", ev_max_current_a=32.0)
            await wait_until(lambda: late.transaction_id is not None,
                             timeout=30, what="the late station charging")
            await asyncio.sleep(0.5)
            paused = bool(late.installed_profiles) and late.composite_limit_w() == 0
        await bridge.planner.replan()
        await wait_until(lambda: all(abs(s.composite_limit_w() - 5_600) < 50 and s.power_w > 0
                                     for s in [*first, late]),
                         timeout=30, what="every station at its new share")
    finally:
        stop.set()
    assert await watcher <= 28_000 + 1
    assert paused  # its boot share: 0 W


def _admission(tmp_path, capacity_w: float) -> tuple[Admission, Dispatcher, list[Plan]]:
    dispatcher = Dispatcher(Store(tmp_path / "bridge.db"), min_current_a=6, retry_s=1,
                            on_change=lambda: None, clock=lambda: T0)
    plans = [Plan(T0, (Step(T0, capacity_w, "capacity"),))]
    admission = Admission(Site(capacity_w), 6, dispatcher, lambda: plans[-1], {}, dict,
                          lambda now: False, lambda: T0)
    return admission, dispatcher, plans


def _joined(dispatcher: Dispatcher, station_id: str, registered: bool = True) -> None:
    record = dispatcher.stations[station_id] = StationRecord(
        info=StationInfo(station_id, 3, 230.0, 32.0), link=object())  # type: ignore[arg-type]
    record.life.fire(Event.CONNECTED, T0)
    if registered:
        record.life.fire(Event.REGISTERED, T0)


async def test_a_batch_shares_the_room_others_leave_and_keeps_a_part_for_stations_booting(
        tmp_path):
    admission, dispatcher, plans = _admission(tmp_path, 50_000)
    for station_id in ("A", "C"):
        _joined(dispatcher, station_id)
    _joined(dispatcher, "D", registered=False)  # booting: keeps its part
    _joined(dispatcher, "B")
    dispatcher.set_desired({"B": (Step(T0, 20_000, "plan"),)})  # about to be sent
    assert admission.admit({"A", "C", "B"}, T0) == 2  # B has its plan's limit
    assert [dispatcher.stations[s].desired[0].limit_w for s in "AC"] == [10_000, 10_000]
    # a plan whose inputs were taken before A and C joined gives B 30 kW: A and C are
    # fitted into the 20 kW it leaves (D still booting keeps a third)
    plans.append(Plan(T0, plans[0].site, {"B": (Step(T0, 30_000, "plan"),)}))
    dispatcher.set_desired(plans[-1].stations)
    assert admission.after_plan(plans[-1]) == 2
    assert [round(dispatcher.stations[s].desired[0].limit_w) for s in "AC"] == [6_667, 6_667]
    total = sum(r.desired[0].limit_w for r in dispatcher.stations.values() if r.desired)
    assert total <= 50_000


async def test_under_a_dr_event_the_boot_shares_fit_the_events_limit(site: SiteHarness):
    """An event holds the site to 11 kW (of 44 kW); two stations join while the plan
    waits: their boot shares split the event's limit, not the site's capacity."""
    bridge = await site.start_bridge(capacity_kw=44)
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    site.vtn.add_simple_event(site.vtn.ven_id("test-site"), start,  # type: ignore[arg-type]
                              [(timedelta(minutes=5), 2)])
    await wait_until(lambda: datetime.now(UTC) > start and (step := bridge.planner.site_step(
        datetime.now(UTC))) is not None and step.limit_w == 11_000,
        timeout=20, what="the event's limit in force")
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
    try:
        async with bridge.planner._one_plan:  # the plan waits
            joined = [site.add_station(f"E{i}", ev_max_current_a=32.0) for i in range(2)]
            await wait_until(lambda: all(s.transaction_id is not None for s in joined),
                             timeout=30, what="both charging")
            await asyncio.sleep(0.5)
            limits = [s.composite_limit_w() for s in joined]
    finally:
        stop.set()
    assert await watcher <= 11_000 + 1
    assert all(5_400 < w <= 5_500 for w in limits)  # in amps, rounded down


async def test_a_session_that_begins_while_the_plan_waits_gets_its_share_at_once(
        site: SiteHarness):
    """A station that joined without an EV was given 0 W by the plan; its EV arrives while
    the next plan waits (as it does in a boot storm): it gets the room the others leave at
    once, not after that plan, and the site's draw never goes above the cap."""
    bridge = await site.start_bridge(capacity_kw=60)
    full = [site.add_station(f"S{i}", ev_max_current_a=32.0) for i in range(2)]
    idle = site.add_station("IDLE", ev_max_current_a=32.0, plugged_in=False)
    await wait_until(lambda: (plan := bridge.planner.plan) is not None
                     and plan.state is not None and {"S0", "S1"} <= plan.state.stations.keys()
                     and all(s.composite_limit_w() == 22_080 and s.power_w > 0 for s in full)
                     and idle.installed_profiles and idle.composite_limit_w() == 0,
                     timeout=30, what="two stations charging at their maximum, one at 0 W")
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
    try:
        async with bridge.planner._one_plan:  # the plan waits
            idle.plug_in()
            await wait_until(lambda: idle.power_w > 0, timeout=30,
                             what="the new session charging before the plan")
            share_w = idle.composite_limit_w()
        await bridge.planner.replan()
        await wait_until(lambda: all(abs(s.composite_limit_w() - 20_000) < 100
                                     for s in [*full, idle]),
                         timeout=30, what="the plan's three shares")
    finally:
        stop.set()
    assert await watcher <= 60_000 + 1
    # the room the two others leave (60 kW - 2 x 22,080 W), in amps rounded down
    assert 15_700 < share_w <= 60_000 - 2 * 22_080


async def test_a_session_the_plan_did_not_see_is_given_the_room_left(tmp_path):
    capacity_w = 30_000.0
    inputs_at, began_at = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    clock = [began_at]
    dispatcher = Dispatcher(Store(tmp_path / "bridge.db"), min_current_a=6, retry_s=1,
                            on_change=lambda: None, clock=lambda: clock[0])
    sessions: dict[str, dict[int, int]] = {}
    names = ("NEW", "EARLY", "KNOWN", "OTHER", "HELD", "LOW_VOLTAGE")
    for station_id in names:
        _joined(dispatcher, station_id)
    nothing = (Step(inputs_at, 0.0, "no session"),)
    # HELD reconnected holding a limit it accepted before: counted at it until confirmed
    dispatcher.stations["HELD"].applied = (Step(T0, 10_000, "earlier"),)
    assert dispatcher.stations["HELD"].reserved
    # the plan saw a session at OTHER (10 kW) and at KNOWN (paused); LOW_VOLTAGE is held
    # down for its voltage; NEW's session began after the plan's inputs were taken
    plan = Plan(inputs_at, (Step(inputs_at, capacity_w, "capacity"),),
                {**dict.fromkeys(names, nothing), "OTHER": (Step(inputs_at, 10_000, "s"),)},
                state=PlanState(inputs_at, capacity_w,
                                {"OTHER": StationState(10_000, True, inputs_at)},
                                voltage={"LOW_VOLTAGE": VoltHold(0.0, T0, "under-voltage")}),
                paused=("KNOWN",))
    plans = [plan]
    admission = Admission(Site(capacity_w), 6, dispatcher, lambda: plans[-1], {},
                          lambda: sessions, lambda now: False, lambda: clock[0])
    dispatcher.set_desired(plan.stations)
    sessions.update({sid: {1: n} for n, sid in enumerate(names)})
    clock[0] = T0  # EARLY's session began before the plan's inputs were taken
    admission.session_started("EARLY")
    clock[0] = began_at
    for station_id in names:
        if station_id != "EARLY":
            admission.session_started(station_id)
    assert admission.admit(set(names), began_at) == 1  # NEW only
    # the room OTHER (10 kW) and HELD (the 10 kW it may still hold) leave
    assert dispatcher.stations["NEW"].desired[0].limit_w == 10_000
    assert all(dispatcher.stations[sid].desired == nothing
               for sid in names if sid not in ("NEW", "OTHER"))
    # a plan made from the same inputs gives NEW 0 W again: its share is given back,
    # fitted into the room that plan leaves
    plans.append(replace(plan, stations={**plan.stations,
                                         "OTHER": (Step(inputs_at, 15_000, "s"),)},
                         state=replace(plan.state, stations={
                             "OTHER": StationState(15_000, True, inputs_at)})))
    dispatcher.set_desired(plans[-1].stations)
    admission.after_plan(plans[-1])
    assert dispatcher.stations["NEW"].desired[0].limit_w == 5_000
    # a plan that saw its session: its share is the plan's, nothing more is given
    later = began_at + timedelta(seconds=1)
    plans.append(Plan(later, plan.site, {"NEW": (Step(later, 7_000, "s"),)},
                      state=PlanState(later, capacity_w,
                                      {"NEW": StationState(7_000, True, later)})))
    dispatcher.set_desired(plans[-1].stations)
    admitted = admission.admitted
    admission.after_plan(plans[-1])
    assert admission.admitted == admitted
    assert dispatcher.stations["NEW"].desired[0].limit_w == 7_000
