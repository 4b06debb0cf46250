"""The policy engine inside the running bridge: real VTN, real stations, real SQLite."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from conftest import Site, wait_until
from test_end_to_end import registered, start_fleet, total_limit_w

from bridge.store import Store


async def test_the_stored_plan_explains_each_limit_and_the_state_carries_over(site: Site):
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
    assert bridge.plan is not None and bridge.plan.state is not None
    assert set(bridge.plan.state.stations) == {"CP0", "CP1", "CP2"}
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=1)) <= 11_000,
                     what="profiles carrying the event")


async def test_a_restarted_bridge_resumes_the_allocation_state(site: Site):
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
    assert again._resumed_state == saved
