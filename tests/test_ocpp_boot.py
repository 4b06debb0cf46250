"""No call to a station before its BootNotification is accepted, and one setup per boot."""

from __future__ import annotations

import asyncio
from functools import partial

from conftest import SiteHarness, wait_steered, wait_until
from test_ocpp_201 import add_201

from bridge.dispatch import BOOT_WAIT_S
from bridge.sim.station import SimulatedStation

# Generous: these tests must hold on a shared machine under load.
wait = partial(wait_until, timeout=30)


def count(station: SimulatedStation, action: str) -> int:
    return sum(1 for a, _ in station.received if a == action)


async def test_a_station_that_boots_late_is_set_up_once_after_its_boot(site: SiteHarness):
    """Its websocket opens well before its BootNotification (firmware still starting).

    Setting it up on connect would read its capabilities and send its profile twice, once
    before the boot (which OCPP forbids) and once after it.
    """
    bridge = await site.start_bridge(capacity_kw=20)
    late = site.add_station("LATE", boot_delay_s=1.5, plugged_in=False)
    await wait(lambda: late.booted, what="the late boot")
    await wait_steered(bridge, "LATE")
    await wait(lambda: bridge.dispatcher.stations["LATE"].life.phase == "verified",
                     what="its profile verified by its composite schedule")
    assert late.calls_before_boot == []
    assert count(late, "GetConfiguration") == 1
    assert count(late, "SetChargingProfile") == 1


async def test_a_station_that_reconnects_without_a_boot_keeps_its_limit(site: SiteHarness):
    """A station that only lost its link sends no BootNotification; silent (no session, no
    status to repeat), it is served after the boot wait, from its cached capabilities."""
    bridge = await site.start_bridge(capacity_kw=20)
    quiet = site.add_station("QUIET", boots_on_reconnect=False, plugged_in=False)
    await wait_steered(bridge, "QUIET")
    boots, sets = count(quiet, "BootNotification"), count(quiet, "SetChargingProfile")
    link = bridge.ocpp.links["QUIET"]
    await quiet.drop_connection()
    await wait(lambda: bridge.ocpp.links.get("QUIET") not in (None, link),
                     what="the station back on a new link")
    await wait(lambda: count(quiet, "SetChargingProfile") > sets,
                     timeout=BOOT_WAIT_S + 10, what="its schedule re-confirmed")
    await wait_steered(bridge, "QUIET")
    assert count(quiet, "BootNotification") == boots  # it did not boot again
    assert count(quiet, "GetConfiguration") == 1  # its capabilities come from the cache
    assert quiet.composite_limit_w() == bridge.view.snapshot().station_limits_w["QUIET"]


async def test_a_station_that_reboots_is_set_up_again_once(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=20)
    cycling = site.add_station("CYCLE", plugged_in=False, boot_delay_s=0.5)
    await wait_steered(bridge, "CYCLE")
    await wait(lambda: bridge.dispatcher.stations["CYCLE"].life.phase == "verified",
               what="verified")
    link = bridge.ocpp.links["CYCLE"]
    cycling.installed_profiles.clear()  # a reboot that loses its profiles
    await cycling.reboot()
    await wait(lambda: bridge.ocpp.links.get("CYCLE") not in (None, link)
                     and cycling.booted, what="the station back after its boot")
    await wait_steered(bridge, "CYCLE")
    await wait(lambda: bridge.dispatcher.stations["CYCLE"].life.phase == "verified",
               what="verified")
    assert cycling.calls_before_boot == []
    assert count(cycling, "GetConfiguration") == 2  # once per boot
    assert count(cycling, "SetChargingProfile") == 2


async def test_a_201_station_that_boots_late_is_set_up_once_after_its_boot(site: SiteHarness):
    """OCPP 2.0.1 B01-B03: nothing for the station before its boot is accepted."""
    bridge = await site.start_bridge(capacity_kw=20)
    late = add_201(site, "LATE201", boot_delay_s=1.5, plugged_in=False)
    await wait_steered(bridge, "LATE201")
    await wait(lambda: bridge.dispatcher.stations["LATE201"].life.phase == "verified",
                     what="its profile verified by its composite schedule")
    assert late.calls_before_boot == []
    assert [a for a, _ in late.received].count("GetVariables") == 1
    assert [a for a, _ in late.received].count("SetChargingProfile") == 1



async def test_a_joining_station_is_read_then_given_its_boot_share_before_the_plan(
        site: SiteHarness):
    """In a boot storm the plan waits for the joins to pause; meanwhile each joined station's
    capabilities are read and its boot share sent (here the whole site limit: no other
    station), one call each. Its follow-up calls (meter interval, composite check) wait for
    that limit; the plan that gives it the same limit sends nothing more."""
    bridge = await site.start_bridge(capacity_kw=20)
    async with bridge.planner._one_plan:  # no plan is applied meanwhile
        joining = site.add_station("JOIN", plugged_in=False)
        await wait(lambda: "JOIN" in bridge.dispatcher.stations
                   and bridge.dispatcher.stations["JOIN"].applied is not None,
                   what="its boot share accepted before any plan covers it")
        await asyncio.sleep(0.5)  # room for a call that should not go
        assert 19_900 < joining.composite_limit_w() <= 20_000  # in amps, rounded down
        assert count(joining, "GetConfiguration") == 1
        assert count(joining, "SetChargingProfile") == 1
    await wait_steered(bridge, "JOIN")
    await wait(lambda: bridge.dispatcher.stations["JOIN"].life.phase == "verified",
               what="its profile verified by its composite schedule")
    assert count(joining, "GetConfiguration") == 1
    assert count(joining, "SetChargingProfile") == 1
