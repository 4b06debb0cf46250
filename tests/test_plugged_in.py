"""An EV plugged in whose session has not started yet (its driver has not presented a tag,
its StartTransaction is on its way) is planned as a session: its station gets its share at
once, instead of nothing and a raise a moment later; its share goes back to the others
when it leaves without a session."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from conftest import SiteHarness, wait_until

from bridge.runtime.stations import PLUGGED_IN

SHARE_W = 7_000.0  # half the 14 kW cap


async def _worst_site_draw_w(site: SiteHarness, stop: asyncio.Event) -> float:
    """The highest sum of what the stations draw, sampled every 5 ms until ``stop``."""
    worst = 0.0
    while not stop.is_set():
        worst = max(worst, sum(s.power_w for s in site.stations))
        await asyncio.sleep(0.005)
    return worst


async def test_a_station_with_an_ev_waiting_for_its_tag_gets_its_share(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=2 * SHARE_W / 1000)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_worst_site_draw_w(site, stop))
    try:
        charging = site.add_station("CHARGING", ev_max_current_a=32.0)
        waiting = site.add_station("WAITING", ev_max_current_a=32.0, waits_for_tag=True)
        await wait_until(lambda: len(bridge.station_events.sessions) == 1
                         and bridge.station_events.connector_status.get(("WAITING", 1),
                                                                        ("",))[0] == "Preparing",
                         timeout=30, what="one session, one EV waiting for its tag")
        # the plan splits the cap between both, before the waiting EV's session starts
        await wait_until(lambda: abs(waiting.composite_limit_w() - SHARE_W) < 50
                         and abs(charging.composite_limit_w() - SHARE_W) < 50,
                         timeout=30, what="both stations at half the cap")
        assert waiting.connectors[1].tx_id is None
        sets_before_tag = sum(1 for a, _ in waiting.received if a == "SetChargingProfile")

        waiting.present_tag()
        await wait_until(lambda: waiting.power_w > 0, timeout=30, what="the waiting EV charging")
        await asyncio.sleep(1.5)  # room for a profile that should not go
        # its session started at the share it held: no new limit was needed
        assert sum(1 for a, _ in waiting.received if a == "SetChargingProfile") \
            == sets_before_tag
        assert abs(waiting.composite_limit_w() - SHARE_W) < 50
    finally:
        stop.set()
    assert await watcher <= 2 * SHARE_W + 1


async def test_an_ev_that_leaves_without_a_session_frees_its_share(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=2 * SHARE_W / 1000)
    charging = site.add_station("CHARGING", ev_max_current_a=32.0)
    waiting = site.add_station("WAITING", ev_max_current_a=32.0, waits_for_tag=True)
    await wait_until(lambda: abs(charging.composite_limit_w() - SHARE_W) < 50,
                     timeout=30, what="the charging station at half the cap")
    waiting.unplug()  # the driver leaves without presenting a tag: Available
    await wait_until(lambda: charging.composite_limit_w() >= 2 * SHARE_W - 100,
                     timeout=30, what="the whole cap for the charging station")  # 0.1 A steps
    assert bridge.station_events.plugged_in() == []


async def test_a_status_of_the_session_that_ended_is_not_an_ev_waiting(site: SiteHarness):
    """A station may report its transaction's end before the connector's next status: the
    last status (Charging) is of the session that ended, not of an EV waiting for one."""
    bridge = await site.start_bridge()
    events = bridge.station_events
    at = datetime.now(UTC)
    events.status_changed("S1", 1, "Preparing")
    assert [(s.station_id, s.connector_id) for s in events.plugged_in()] == [("S1", 1)]
    tx = events.transaction_started("S1", 1, "TAG", 0, at)
    events.status_changed("S1", 1, "Charging")
    assert events.plugged_in() == []  # a session of its own now
    events.transaction_stopped("S1", tx, 1_000, at)
    assert events.plugged_in() == []  # Charging was of the session that ended
    events.status_changed("S1", 1, "Finishing")
    events.status_changed("S1", 1, "Preparing")  # the next EV
    assert [(s.station_id, s.connector_id) for s in events.plugged_in()] == [("S1", 1)]
    events.status_changed("S1", 1, "Available")
    assert events.plugged_in() == []


def test_the_statuses_that_mean_an_ev_is_plugged_in():
    # OCPP 1.6 ChargePointStatus while an EV is connected, and 2.0.1's Occupied; Finishing
    # is an EV whose session is over
    assert {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Occupied"} == PLUGGED_IN
    assert "Finishing" not in PLUGGED_IN and "Available" not in PLUGGED_IN
