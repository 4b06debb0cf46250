"""What following each station's life adds, end to end: real simulated stations over real
websockets. No call before a station's boot is accepted, whatever the bridge already knows
of it; an answer that comes after the station rebooted moves nothing of its new life; a
station without smart charging is asked its rated current again after each boot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from conftest import SiteHarness, sent_limit_w, wait_steered, wait_until

from bridge.ocpp.profiles import STATION_MAX_PROFILE_ID
from bridge.sim.station import SimulatedStation
from bridge.web.views import stations_view

# Generous: these tests must hold on a shared machine under load.
wait = partial(wait_until, timeout=30)


def count(station: SimulatedStation, action: str) -> int:
    return sum(1 for a, _ in station.received if a == action)


def capability_reads(station: SimulatedStation) -> int:
    """GetConfiguration of the keys that say what it can do."""
    return sum(1 for a, payload in station.received if a == "GetConfiguration" and payload)


def rating_reads(station: SimulatedStation) -> int:
    """GetConfiguration of all its keys: the name of its rated current is the vendor's."""
    return sum(1 for a, payload in station.received
               if a == "GetConfiguration" and not payload)


async def test_a_station_known_to_lack_smart_charging_is_asked_nothing_before_its_boot(
        site: SiteHarness):
    """After a restart the bridge knows from the capabilities it stored that the station
    cannot be steered, and wants its rated current before anything is planned for it: that
    call too waits until the station's boot is accepted (its life is ``connected`` until
    then). After the boot both are read again: new firmware may say otherwise."""
    bridge = await site.start_bridge(capacity_kw=20)
    dumb = site.add_station("DUMB", feature_profiles="Core", plugged_in=False,
                            boot_delay_s=1.5)
    await wait(lambda: rating_reads(dumb) == 1, what="its rated current asked")
    await dumb.stop()
    await site.stop_bridge()
    capabilities, ratings = capability_reads(dumb), rating_reads(dumb)
    bridge = await site.start_bridge()
    # It connects just after a plan (made for another station, which connected first), so
    # that the next one, a second later at the soonest, gives it nothing to send before its
    # boot: all the bridge knows of it then is that it cannot be steered, and its rated
    # current is wanted.
    site.add_station("OTHER", plugged_in=False, boot_delay_s=1.5)
    await wait(lambda: "OTHER" in bridge.dispatcher.stations
               and bridge.dispatcher.stations["OTHER"].desired is not None,
               what="a plan for the other station")
    running = asyncio.create_task(dumb.run())  # dumb.stop() ends it with the site
    await wait(lambda: dumb.booted and capability_reads(dumb) == capabilities + 1,
               what="its capabilities read again after its boot")
    assert dumb.calls_before_boot == []
    await wait(lambda: rating_reads(dumb) == ratings + 1,
               what="its rated current read again after its boot")
    assert dumb.calls_before_boot == []
    assert bridge.view.snapshot().station_status["DUMB"] == "unmanageable"
    assert count(dumb, "SetChargingProfile") == 0
    assert not running.done()


def holds_our_cap(station: SimulatedStation) -> bool:
    return any(connector == 0 and profile["chargingProfileId"] == STATION_MAX_PROFILE_ID
               for (connector, _, _), profile in station.installed_profiles.items())


@pytest.mark.parametrize("composite", [True, False], ids=["composite", "no-composite"])
async def test_an_answer_from_before_a_reboot_does_not_stand_for_the_limit_after_it(
        site: SiteHarness, composite: bool):
    """The station accepts its limit, but its answer comes only after its controller
    restarted (a BootNotification over the same websocket) and lost every profile. That
    answer speaks of the station before its boot: the limit is sent again. Taken as held,
    the station would hold nothing and could draw its hardware maximum; a station that
    answers GetCompositeSchedule would show that, but be misjudged as outranked by a
    profile of another party, and lose its station cap until its next boot."""
    bridge = await site.start_bridge(capacity_kw=5)
    slow = site.add_station("SLOW", plugged_in=False, held_profile_answers=1,
                            supports_composite_schedule=composite)
    await wait(lambda: count(slow, "SetChargingProfile") == 1, what="its first limit sent")
    assert holds_our_cap(slow)  # installed; its answer held back
    await slow.restart_in_place()
    assert slow.installed_profiles == {}
    await slow.release_answers()  # "Accepted", from before its restart
    await wait(lambda: holds_our_cap(slow), what="its station cap sent again after its boot")
    await wait_steered(bridge, "SLOW")
    assert slow.composite_limit_w() <= 5_000
    if composite:
        await wait(lambda: stations_view(bridge.view)["stations"][0]["verified"],
                   what="its limit confirmed by its composite schedule")
        assert holds_our_cap(slow)


async def test_a_station_without_smart_charging_is_asked_its_rating_after_each_boot(
        site: SiteHarness):
    """New firmware may state another maximum: the planner counts the station at what it
    states after each boot, not at the default after its first."""
    bridge = await site.start_bridge(capacity_kw=40)
    rated = site.add_station("RATED", feature_profiles="Core", plugged_in=False,
                             vendor_keys={"Station.MaxCurrentA": "16"})

    def counted() -> str:
        return bridge.view.snapshot().station_detail.get("RATED", "")

    await wait(lambda: "11.0 kW: 16 A (its configuration key Station.MaxCurrentA)"
               in counted(), what="counted at the 16 A it states")
    rated.spec.vendor_keys["Station.MaxCurrentA"] = "10"  # its new firmware says 10 A
    await rated.reboot()
    await wait(lambda: rating_reads(rated) == 2, what="its rated current asked again")
    await wait(lambda: "6.9 kW: 10 A (its configuration key Station.MaxCurrentA)"
               in counted(), what="counted at the 10 A it states now")
    assert rated.calls_before_boot == []
    assert count(rated, "SetChargingProfile") == 0


async def test_a_lost_answer_to_an_events_drop_is_not_undone_on_reconnection(
        site: SiteHarness):
    """A station takes an event's lower limit, and the link drops before its answer comes:
    when it is back, what the bridge re-confirms is not the limit from before the event."""
    bridge = await site.start_bridge(capacity_kw=44)
    stations = [site.add_station(f"CP{i}", rate_unit="Current") for i in range(2)]
    await wait(lambda: all(s.installed_profiles and s.composite_limit_w() >= 4_140
                           for s in stations), what="stations under the bridge's profiles")
    await wait(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    first = stations[0]
    first.hold_profile_answers(1)
    start = datetime.now(UTC) + timedelta(seconds=2)
    site.vtn.add_simple_event(site.vtn.ven_id("test-site"), start, [(timedelta(minutes=10), 2)])
    during = start + timedelta(seconds=5)
    await wait(lambda: first.composite_limit_w(during) <= 11_000, what="CP0 under the event")
    sent_before = count(first, "SetChargingProfile")
    await first.drop_connection()  # the answer it held is lost with the link
    await wait(lambda: count(first, "SetChargingProfile") > sent_before and first.connected,
               what="a profile after the reconnection")
    later = max(during, datetime.now(UTC) + timedelta(seconds=1))
    offered = [sent_limit_w(first, payload, later)
               for action, payload in first.received if action == "SetChargingProfile"]
    assert all(w is None or w <= 11_000 for w in offered[sent_before:]), offered
    assert bridge.dr.active_events(later)
