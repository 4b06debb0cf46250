"""The policy engine inside the running bridge: real VTN, real stations, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, site_config, wait_steered, wait_until
from test_end_to_end import registered, start_fleet, total_limit_w

from bridge.sim.station import SimulatedStation
from bridge.store import Store


async def test_the_stored_plan_explains_each_limit_and_the_state_carries_over(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Current", "Current"])
    ven_id = await registered(site)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    event_id = site.vtn.add_simple_event(ven_id, start, [(timedelta(seconds=30), 2)])

    def event_in_stored_plan() -> bool:
        stored = bridge.store.last_plan()
        return stored is not None and any(
            link.text == f"event {event_id}" for step in stored[1] for link in step.chain)

    await wait_until(event_in_stored_plan, what="a stored plan naming the event")
    _, site_steps, station_steps = bridge.store.last_plan()
    during = next(s for s in site_steps if s.limit_w == 11_000)
    assert [w.kind for w in during.chain] == ["event", "signal", "rule"]
    for steps in station_steps.values():
        step = next(s for s in steps if s.start == during.start)
        assert step.chain[0].text == f"event {event_id}" and step.chain[-1].kind == "allocation"
    # the bridge hands each plan's state to the next: who charges, since when
    assert bridge.planner.plan is not None and bridge.planner.plan.state is not None
    assert set(bridge.planner.plan.state.stations) == {"CP0", "CP1", "CP2"}
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=1)) <= 11_000,
                     what="profiles carrying the event")


async def test_a_restarted_bridge_resumes_the_allocation_state(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=44)
    await start_fleet(site, ["Current", "Current"])
    await wait_until(lambda: bridge.store.plan_state()[0] is not None
                     and len(bridge.store.plan_state()[0].stations) == 2,
                     what="the allocation state saved")
    path = bridge.config.storage_path
    await site.stop_bridge()
    # what the stopped bridge saved last (a replan may still have saved one while stopping)
    with contextlib.closing(Store(path)) as store:
        saved, _ = store.plan_state()
    again = await site.start_bridge()
    assert again.planner.resumed_state == saved


async def test_with_pause_minimum_a_paused_session_holds_6_a_within_the_event_limit(
        site: SiteHarness):
    # the default preset's SIMPLE levels; paused sessions keep 6 A where room allows
    (site.tmp_path / "keep-alive.yaml").write_text("name: keep-alive\n"
                                                   "allocation: {pause: minimum}\n")
    site.config_path.write_text(site_config(site.vtn.url, site.ocpp_port, capacity_kw=44)
                                .replace("policy: default", "policy: keep-alive.yaml"))
    bridge = await site.start_bridge()
    stations = await start_fleet(site, ["Current", "Current", "Current"])
    ven_id = await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=2)
    site.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=10), 2)])  # 11 kW

    def paused() -> list[SimulatedStation]:
        return [s for s in stations if s.composite_limit_a() == 0]

    # 11 kW holds two 6 A minimums (4.14 kW each) but not three: one session pauses
    await wait_until(lambda: datetime.now(UTC) > start and len(paused()) == 1, timeout=20,
                     what="one session paused by the event")
    waiting = paused()[0]
    leaving, staying = (s for s in stations if s is not waiting)
    # an EV leaves: room for the paused session's minimum, while the guard time (300 s)
    # keeps it from its share; with pause: minimum it holds 6 A rather than 0 A
    leaving.unplug()
    await wait_until(lambda: waiting.composite_limit_a() == 6.0 and waiting.power_w > 0,
                     timeout=20, what="the paused session holding 6 A")
    await wait_until(lambda: bridge.planner.plan is not None and
                     waiting.spec.station_id in bridge.planner.plan.paused,
                     what="the plan saying so")
    plan = bridge.planner.plan
    assert plan is not None
    step = plan.stations[waiting.spec.station_id][0]
    assert "guard time until" in step.reason and "holds the minimum current" in step.reason
    await wait_steered(bridge, waiting.spec.station_id, staying.spec.station_id)
    # what the stations draw (their EVs, by their own profiles) stays within the 11 kW
    for _ in range(20):
        assert sum(s.power_w for s in stations) <= 11_000
        await asyncio.sleep(0.1)
    assert waiting.power_w == 6 * 230 * 3
    assert staying.power_w > 6 * 230 * 3


async def test_an_event_reaches_every_station_with_a_ramped_and_randomised_restore(
        site: SiteHarness):
    """With a restore ramp and a random delay per station, each station's new schedule falls
    at the event's start and rises again at its own moment after: the fall must reach every
    station before the event starts (the stations' own limits, summed, hold the event's)."""
    (site.tmp_path / "ramped.yaml").write_text(
        "name: ramped\nsimple:\n  levels: {0: 100%, 1: 50%, 2: 25%, 3: 0%}\n"
        "restore: {ramp_kw_per_min: 15, step_s: 60, random_window_s: 300}\n")
    site.config_path.write_text(site_config(site.vtn.url, site.ocpp_port, capacity_kw=44)
                                .replace("policy: default", "policy: ramped.yaml"))
    await site.start_bridge()
    stations = await start_fleet(site, ["Current", "Current", "Current"])
    ven_id = await registered(site)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    site.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=5), 2)])  # 11 kW
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=1)) <= 11_000,
                     timeout=30, what="every station's profile carrying the event")
    await wait_until(lambda: datetime.now(UTC) > start + timedelta(seconds=2), timeout=20)
    assert sum(s.power_w for s in stations) <= 11_000
