"""Profiles of other parties on a station: never replaced, never outranked, still in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from conftest import SiteHarness, wait_steered, wait_until
from test_ocpp_201 import add_201

from bridge.app import Bridge
from bridge.dispatch import VERIFY_WINDOW_S, composite_above
from bridge.ocpp.link import CompositeSchedule
from bridge.ocpp.profiles import free_level, is_ours
from bridge.sim.station import FACTORY_PROFILE_ID, SimulatedStation
from bridge.sim.station201 import STATION_MAX, SimulatedStation201
from policies.fleet import StationInfo, Step, value_at

INFO = StationInfo("X", 3, 230.0, 32.0)
AMPS = 230.0 * 3  # watts per amp of a three-phase station

# Generous: these tests must hold on a shared machine under load.
wait = partial(wait_until, timeout=30)


def test_a_level_for_ours_is_never_one_another_party_uses():
    assert free_level(1, set(), 5) == 1
    assert free_level(1, {1}, 5) == 2
    assert free_level(1, {1, 2, 3, 4, 5}, 5) == 0
    assert free_level(0, {0}, 0) is None
    assert free_level(7, set(), 3) == 3
    assert is_ours(9001) and is_ours(9101) and is_ours(9203)
    assert not is_ours(1) and not is_ours(9000) and not is_ours(9300)


def test_the_whole_composite_window_is_compared_not_one_moment():
    t0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
    end = t0 + timedelta(seconds=300)
    ours = (Step(t0 - timedelta(seconds=5), 8_000, "share"),)
    # equal now, more later: a profile of another party that rises after two minutes
    later = CompositeSchedule(t0, "A", ((0, 11.5), (120, 32.0)))
    found = composite_above(later, ours, INFO, end, 500)
    assert found is not None
    at, theirs_w, mine_w = found
    assert at >= t0 + timedelta(seconds=120) and theirs_w == 32 * AMPS and mine_w == 8_000
    # lower later is fine: the station applies less than we allow
    lower = CompositeSchedule(t0, "A", ((0, 11.5), (120, 8.0)))
    assert composite_above(lower, ours, INFO, end, 500) is None
    # our own decrease one second before the station's rounding shows it is no excess
    steps = (Step(t0 - timedelta(seconds=5), 16 * AMPS, "a"), Step(t0 + timedelta(seconds=60),
                                                                     8 * AMPS, "b"))
    rounded = CompositeSchedule(t0, "A", ((0, 16.0), (61, 8.0)))
    assert composite_above(rounded, steps, INFO, end, 500) is None


def assert_both_in_force(station: SimulatedStation | SimulatedStation201,
                         bridge: Bridge) -> None:
    """Over the composite window the station allows no more than the lower of its own
    profile and ours, at every moment."""
    applied = bridge.dispatcher.stations[station.id].applied
    assert applied is not None
    now = datetime.now(UTC)
    for second in range(0, VERIFY_WINDOW_S, 5):
        at = now + timedelta(seconds=second)
        theirs = station.profile_limit_a(FACTORY_PROFILE_ID, at)
        ours = value_at(applied, at)
        assert theirs is not None and ours is not None
        allowed = station.composite_limit_a(at)
        assert allowed <= min(theirs, ours.limit_w / AMPS) + 0.1, (second, allowed, theirs, ours)


async def test_a_profile_of_the_station_that_is_lower_later_stays_in_force(site: SiteHarness):
    """The station's own cap at its top stack level allows 32 A for a minute, then 8 A (a
    tariff or fuse limit). Ours cannot go above it without replacing it (same level and
    purpose), and must not: the limit goes per connector, which the station caps by its
    own profile in turn."""
    bridge = await site.start_bridge(capacity_kw=8)
    station = site.add_station("FUSE", max_stack_level=5,
                               factory_schedule=((0, 32.0), (60, 8.0)))
    await wait(lambda: "FUSE" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["FUSE"].handling.cap_outranked,
                     what="its own profile found above ours")
    await wait(lambda: bridge.dispatcher.stations["FUSE"].life.phase == "verified",
                     what="the limit per connector verified by its composite schedule")
    await wait_steered(bridge, "FUSE")
    own = station.installed_profiles.get((0, "ChargePointMaxProfile", 5))
    assert own is not None and own["chargingProfileId"] == FACTORY_PROFILE_ID
    assert all(p["chargingProfileId"] == FACTORY_PROFILE_ID or p["stackLevel"] < 5
               for p in station.installed_profiles.values())
    assert 9001 not in {p["chargingProfileId"] for p in station.installed_profiles.values()}
    assert_both_in_force(station, bridge)
    await wait(lambda: 0 < station.power_w <= 8_000, what="the EV held to the cap")
    assert bridge.view.snapshot().station_status["FUSE"] == "steered"


async def test_201_a_listed_station_limit_of_another_party_is_never_met_nor_hidden(
        site: SiteHarness):
    """A 2.0.1 station lists its profiles: one of another party, a ChargingStationMaxProfile
    at stack level 1 (where ours would go), 32 A for a minute and 8 A after. Sending ours
    there is forbidden (K01.FR.06) and above it would hide its lower limit: the limit goes
    on the EVSE, under it, from the first profile on."""
    bridge = await site.start_bridge(capacity_kw=8)
    station = add_201(site, "FUSE201", max_stack_level=5, factory_stack_level=1,
                      factory_schedule=((0, 32.0), (60, 8.0)))
    await wait(lambda: "FUSE201" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["FUSE201"].life.phase == "verified",
                     what="its limit verified by its composite schedule")
    await wait_steered(bridge, "FUSE201")
    assert bridge.dispatcher.stations["FUSE201"].handling.cap_outranked
    sent = [payload["chargingProfile"] for action, payload in station.received
            if action == "SetChargingProfile" and payload["evseId"] == 0]
    assert not any(p["stackLevel"] == 1 and p["chargingProfilePurpose"] == STATION_MAX
                   for p in sent)  # never beside the other party's
    own = station.installed_profiles.get((0, STATION_MAX, 1))
    assert own is not None and own["id"] == FACTORY_PROFILE_ID
    assert_both_in_force(station, bridge)
    await wait(lambda: 0 < station.power_w <= 8_000, what="the EV held to the cap")


async def test_after_a_restart_the_limit_stays_under_the_stations_own_profile(site: SiteHarness):
    """The bridge stored that it limits this station per connector: a restarted bridge does
    not send it a cap its own profile would outrank (until it reboots)."""
    bridge = await site.start_bridge(capacity_kw=8)
    station = site.add_station("KEEP", max_stack_level=5, factory_cap_a=32,
                               boots_on_reconnect=False)
    await wait(lambda: "KEEP" in bridge.dispatcher.stations
               and bridge.dispatcher.stations["KEEP"].handling.cap_outranked
               and bridge.dispatcher.stations["KEEP"].life.phase == "verified",
               what="limited per connector")
    await wait(lambda: 9001 not in bridge.store.installed().get("KEEP", {9001}),
               what="its profile ids stored")
    await site.stop_bridge()
    sent = len(station.received)
    bridge = await site.start_bridge()
    await wait(lambda: "KEEP" in bridge.ocpp.links, what="the station back")
    await wait_steered(bridge, "KEEP")
    await wait(lambda: bridge.dispatcher.stations["KEEP"].life.phase == "verified",
               what="verified again")
    ids = [p["csChargingProfiles"]["chargingProfileId"] for a, p in station.received[sent:]
           if a == "SetChargingProfile"]
    assert ids and 9001 not in ids
    assert_both_in_force(station, bridge)
