"""An EV plugged in whose session has not started yet (its driver has not presented a tag,
its StartTransaction is on its way) is planned as a session: its station gets its share at
once, instead of nothing and a raise a moment later; its share goes back to the others
when it leaves without a session."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, wait_until, worst_site_draw_w

from bridge.runtime.plugged import HOLD, LONGEST, PLUGGED_IN, PluggedConnectors

SHARE_W = 7_000.0  # half the 14 kW cap


async def test_a_station_with_an_ev_waiting_for_its_tag_gets_its_share(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=2 * SHARE_W / 1000)
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
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


T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def counted(plugged: PluggedConnectors, at: datetime) -> list[tuple[str, int]]:
    return [(sid, cid) for sid, cid, _ in plugged.counted(at)]


def test_an_ev_counts_once_it_has_waited_a_moment_and_not_for_ever():
    plugged = PluggedConnectors()
    assert plugged.status("S1", 1, "Preparing", T0, tx_open=False)  # began to wait
    assert counted(plugged, T0) == []  # a flapping connector changes no plan
    assert counted(plugged, T0 + HOLD) == [("S1", 1)]
    # the same status again, or another plugged-in one, keeps when it began
    assert not plugged.status("S1", 1, "SuspendedEV", T0 + HOLD, tx_open=False)
    assert counted(plugged, T0 + LONGEST - SECOND) == [("S1", 1)]
    assert counted(plugged, T0 + LONGEST) == []  # no tag after all this time: released


def test_the_status_of_a_session_that_ended_is_not_an_ev_waiting():
    """A station may report its transaction's end before the connector's next status, and
    a 2.0.1 station repeats an EVSE's Occupied whenever one of its connectors reports."""
    plugged = PluggedConnectors()
    plugged.status("S1", 1, "Occupied", T0, tx_open=False)
    plugged.transaction("S1", 1, True, T0 + SECOND)
    assert counted(plugged, T0 + 10 * SECOND) == []  # a session of its own now
    plugged.transaction("S1", 1, False, T0 + 20 * SECOND)
    assert not plugged.status("S1", 1, "Occupied", T0 + 21 * SECOND, tx_open=False)
    assert counted(plugged, T0 + 30 * SECOND) == []  # parked after its session
    plugged.status("S1", 1, "Available", T0 + 40 * SECOND, tx_open=False)
    assert plugged.status("S1", 1, "Occupied", T0 + 50 * SECOND, tx_open=False)  # the next EV
    assert counted(plugged, T0 + 60 * SECOND) == [("S1", 1)]


def test_only_stations_of_one_connector_and_never_connector_zero():
    plugged = PluggedConnectors()
    assert not plugged.status("S1", 0, "Charging", T0, tx_open=False)  # the station itself
    plugged.status("S1", 1, "Preparing", T0, tx_open=False)
    plugged.status("TWO", 1, "Preparing", T0, tx_open=False)
    plugged.status("TWO", 2, "Available", T0, tx_open=False)
    assert counted(plugged, T0 + HOLD) == [("S1", 1)]
    plugged.forget("S1")  # rebooted: its connectors report afresh
    assert counted(plugged, T0 + HOLD) == []


def test_an_open_transaction_the_caller_knows_of_is_a_session_not_a_wait():
    """After a reboot the station's connectors report afresh, while its transactions are
    still open: Charging there is that session, not a second one."""
    plugged = PluggedConnectors()
    plugged.forget("S1")
    assert not plugged.status("S1", 1, "Charging", T0, tx_open=True)
    assert counted(plugged, T0 + HOLD) == []


async def test_statuses_and_transactions_through_the_bridge(site: SiteHarness):
    bridge = await site.start_bridge()
    events = bridge.station_events
    at = datetime.now(UTC)
    events.status_changed("S1", 1, "Preparing")
    await wait_until(lambda: [(s.station_id, s.connector_id) for s in events.plugged_in()]
                     == [("S1", 1)], what="the waiting EV counted after its hold")
    tx = events.transaction_started("S1", 1, "TAG", 0, at)
    events.status_changed("S1", 1, "Charging")
    assert events.plugged_in() == []  # a session of its own now
    events.transaction_stopped("S1", tx, 1_000, at)
    assert events.plugged_in() == []


async def test_two_connectors_that_each_take_the_cap_never_draw_above_it(site: SiteHarness):
    """A station that applies a cap to each connector and does not say how many it has
    (no GetConfiguration), an EV waiting on each: the cap must not rise for them before
    their sessions start, or both would draw it once they do."""
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_site_draw_w(site, stop))
    try:
        await site.start_bridge(capacity_kw=22)
        station = site.add_station("TWO", connectors=2, cp_max_per_connector=True,
                                   supports_get_configuration=False, waits_for_tag=True,
                                   ev_max_current_a=32.0)
        await wait_until(lambda: station.connectors[2].last_status == "Preparing",
                         what="both EVs waiting")
        await asyncio.sleep(HOLD.total_seconds() + 2.0)  # a plan after they count
        station.present_tag(1)
        station.present_tag(2)
        await wait_until(lambda: all(c.tx_id is not None for c in station.connectors.values()),
                         what="both sessions started")
        await asyncio.sleep(3.0)
    finally:
        stop.set()
    assert await watcher <= 22_000 + 1


def test_the_statuses_that_mean_an_ev_is_plugged_in():
    # OCPP 1.6 ChargePointStatus while an EV is connected, and 2.0.1's Occupied; Finishing
    # is an EV whose session is over
    assert {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Occupied"} == PLUGGED_IN
    assert "Finishing" not in PLUGGED_IN and "Available" not in PLUGGED_IN
