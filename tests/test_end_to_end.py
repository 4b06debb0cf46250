"""The whole path on loopback: openleadr VTN -> VEN -> policy -> OCPP 1.6J stations -> back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import SiteHarness, wait_until

from bridge.runtime import planning
from bridge.sim.station import SimulatedStation

MAX_PROFILE = (0, "ChargePointMaxProfile")


def total_limit_w(stations: list[SimulatedStation], at: datetime | None = None) -> float:
    return sum(s.composite_limit_w(at) for s in stations)


def has_profile(station: SimulatedStation) -> bool:
    return any(key[:2] == MAX_PROFILE for key in station.installed_profiles)


def profile_unit(station: SimulatedStation) -> str:
    profile = next(p for k, p in station.installed_profiles.items() if k[:2] == MAX_PROFILE)
    return profile["chargingSchedule"]["chargingRateUnit"]


async def start_fleet(site: SiteHarness, units: list[str], **spec: object
                      ) -> list[SimulatedStation]:
    stations = [site.add_station(f"CP{i}", rate_unit=unit, **spec)
                for i, unit in enumerate(units)]
    # Each station is held at 0 W until it has acknowledged a limit, then gets its share.
    await wait_until(
        lambda: all(s.transaction_id and has_profile(s) and s.composite_limit_w() >= 4_140
                    for s in stations),
        what="every station charging under a profile",
    )
    return stations


async def registered(site: SiteHarness) -> str:
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    ven_id = site.vtn.ven_id("test-site")
    assert ven_id is not None
    return ven_id


async def test_registration_is_persisted(site: SiteHarness):
    bridge = await site.start_bridge()
    ven_id = await registered(site)
    await wait_until(lambda: bridge.store.registration(site.vtn.url) is not None,
                     what="stored registration")
    stored = bridge.store.registration(site.vtn.url)
    assert stored is not None and stored.ven_id == ven_id
    assert stored.registration_id == f"reg-{ven_id}"


async def test_cap_holds_without_event_for_amp_and_watt_stations(site: SiteHarness):
    await site.start_bridge(capacity_kw=20)
    # stations that sample every 10 s of their own
    stations = await start_fleet(site, ["Current", "Current", "Power", "Power"],
                                 meter_interval_s=10)
    # Four EVs of 11 kW under a 20 kW cap: each station must be held to its share.
    await wait_until(lambda: all(4_140 <= s.composite_limit_w() <= 5_000 for s in stations),
                     what="an equal share of the cap for each station")
    assert total_limit_w(stations) <= 20_000
    assert [profile_unit(s) for s in stations] == ["A", "A", "W", "W"]
    # every station was asked for meter values at the configured interval, after its
    # limit: setup calls wait until no station is waiting for one
    wanted = ("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "1"})
    await wait_until(lambda: all(wanted in s.received for s in stations),
                     what="the meter interval asked")
    for station in stations:
        actions = [action for action, _ in station.received]
        assert actions.index("SetChargingProfile") < actions.index("ChangeConfiguration")
    await wait_until(lambda: sum(s.power_w for s in stations) > 0, what="charging")
    assert sum(s.power_w for s in stations) <= 20_000


@pytest.mark.parametrize("planned_in", ["thread", "process"])
async def test_event_lowers_limits_by_its_start_and_restores_after(
        site: SiteHarness, planned_in: str, monkeypatch: pytest.MonkeyPatch):
    if planned_in == "process":  # as for a fleet of thousands
        monkeypatch.setattr(planning, "PROCESS_FROM_STATIONS", 0)
    bridge = await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Power", "Current,Power", "Current"])
    ven_id = await registered(site)
    process = bridge.planner.process
    if planned_in == "process":
        await wait_until(lambda: process.ready, timeout=30, what="the planning process")
    plans_there = process.plans
    # which plans pause the collector as urgent ones (see CollectorPause)
    urgent_holds: list[bool] = []
    monkeypatch.setattr(bridge.planner.collector, "hold", urgent_holds.append)
    # 10 s ahead: room for a 1 s poll and the profiles on a slow machine
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    end = start + timedelta(seconds=6)
    event_id = site.vtn.add_simple_event(ven_id, start, [(timedelta(seconds=6), 2)])

    # Before the event starts, every station already holds the event's limits.
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=1)) <= 11_000,
                     timeout=9.5, what="profiles carrying the event")
    assert datetime.now(UTC) < start
    # the event's plan was made where the fleet's size says, as an urgent one
    assert (process.plans > plans_there) == (planned_in == "process")
    assert (True in urgent_holds) == (planned_in == "process")
    # not in force before its time (a lower limit takes effect a second early)
    assert total_limit_w(stations, start - timedelta(seconds=2)) > 11_000
    await wait_until(lambda: (ven_id, event_id, "optIn") in site.vtn.received.opts,
                     what="the VEN's optIn at the VTN")
    # ... and the schedule itself gives capacity back when the event ends: the two
    # sessions it paused resume at their minimum first, and a minute later at their share
    after = [s.composite_limit_w(end + timedelta(seconds=1)) for s in stations]
    assert sorted(after)[:2] == [4_140, 4_140] and sum(after) > 28_000
    assert total_limit_w(stations, end + timedelta(seconds=61)) > 40_000

    await wait_until(lambda: datetime.now(UTC) > start + timedelta(seconds=1.5), timeout=15,
                     what="start")
    assert total_limit_w(stations) <= 11_000
    assert sum(s.power_w for s in stations) <= 11_000
    assert bridge.view.snapshot().site_limit_w == 11_000

    await wait_until(lambda: datetime.now(UTC) > end + timedelta(seconds=0.5), what="end")
    assert total_limit_w(stations) > 28_000
    assert total_limit_w(stations, end + timedelta(seconds=61)) > 40_000
    stored = {e.event.event_id: e for e in bridge.store.events()}
    assert stored[event_id].opt == "optIn"
    child = process._process
    await site.stop_bridge()
    assert child is None or child.returncode is not None  # stopped with the bridge


async def test_cancelled_event_gives_capacity_back(site: SiteHarness):
    await site.start_bridge(capacity_kw=44)
    stations = await start_fleet(site, ["Current", "Current"])
    ven_id = await registered(site)
    start = datetime.now(UTC) + timedelta(seconds=1)
    event_id = site.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=5), 3)])
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=2)) == 0,
                     what="level 3 pausing every station")
    site.vtn.cancel_event(ven_id, event_id)
    # (a session paused by then resumes at its minimum for a minute, then at its share)
    await wait_until(lambda: total_limit_w(stations, start + timedelta(seconds=90)) > 20_000,
                     what="capacity restored after the cancellation")


async def test_reconnect_and_reboot_reapply_limits(site: SiteHarness):
    await site.start_bridge(capacity_kw=20)
    stations = await start_fleet(site, ["Current", "Current"])
    station = stations[0]
    sent_before = [a for a, _ in station.received].count("SetChargingProfile")
    # A station that lost its profiles (a factory reset, a firmware update) and reconnects
    station.installed_profiles.clear()
    assert station.composite_limit_w() > 20_000
    await station.drop_connection()
    await wait_until(lambda: has_profile(station), what="the profile sent again")
    assert [a for a, _ in station.received].count("SetChargingProfile") > sent_before
    await wait_until(lambda: total_limit_w(stations) <= 20_000, what="the cap again")
    # A reboot starts a new transaction; the limit follows it.
    old_tx = station.transaction_id
    await station.reboot()
    await wait_until(lambda: station.transaction_id not in (None, old_tx), what="a new session")
    await wait_until(lambda: total_limit_w(stations) <= 20_000 and has_profile(station),
                     what="limits after the reboot")


async def test_telemetry_report_carries_measured_load(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=20, telemetry_interval_s=1)
    stations = await start_fleet(site, ["Current", "Power"])
    await wait_until(lambda: sum(s.power_w for s in stations) > 0, what="charging")
    await wait_until(lambda: bridge.reports.measured_load_w() > 0, what="meter values")
    ven_id = await registered(site)

    def report_matches_load() -> bool:
        # The site's reports carry real power (W) beside energy (Wh): one recent value must be
        # the stations' draw. Stations send MeterValues on their own clocks, so a report may
        # still miss one of them; a later report must not.
        measured = sum(s.power_w for s in stations)
        site_values = [r for r in site.vtn.received.reports if r[:2] == (ven_id, "test-site")]
        return measured > 0 and any(abs(r[3] - measured) <= 0.05 * measured
                                    for r in site_values[-6:])

    await wait_until(report_matches_load, timeout=10, what="a report carrying the measured load")
