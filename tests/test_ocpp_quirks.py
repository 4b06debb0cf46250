"""Chargers as they exist: each quirk a simulated station has, and what the bridge makes of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conftest import SiteHarness, wait_steered, wait_until

from bridge.app import Bridge
from bridge.compliance import Compliance, ComplianceRule
from bridge.ocpp.capabilities import Capabilities, parse_configuration
from bridge.sim.station import SimulatedStation
from bridge.web.views import stations_view

HARDWARE_MAX_W = 32 * 230 * 3


def max_profile(station: SimulatedStation) -> dict | None:
    return next((p for k, p in station.installed_profiles.items()
                 if k[1] == "ChargePointMaxProfile"), None)


def test_compliance_flags_two_readings_in_a_row_above_what_it_may_hold():
    rule = ComplianceRule(tolerance_w=500, grace=timedelta(seconds=10))
    assert rule.exceeds(11_501, 10_000) and not rule.exceeds(11_500, 10_000)
    t0 = datetime(2026, 11, 25, 12, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    seen = Compliance()
    assert not seen.observe(rule, t0, 11_000, None, None)  # nothing it holds for sure
    assert not seen.observe(rule, t0, 11_500, 10_000, 10_000)  # within 10 % + 500 W
    assert not seen.observe(rule, at(1), 12_000, 10_000, 10_000)  # one reading: a glitch?
    assert not seen.observe(rule, at(2), 9_000, 10_000, 10_000)  # it was
    assert not seen.observe(rule, at(3), 12_000, 10_000, 10_000)
    assert not seen.observe(rule, at(3.2), 12_000, 10_000, 10_000)  # the same sample
    assert seen.observe(rule, at(4), 12_000, 10_000, 10_000)  # the second in a row
    assert seen.flagged and seen.peak_w == 12_000 and "10000 W" in seen.detail
    assert not seen.observe(rule, at(5), 12_200, 10_000, 10_000)
    assert seen.observe(rule, at(6), 22_000, 10_000, 10_000)  # counted higher now
    assert seen.peak_w == 22_000
    # following its limit for a whole grace time clears the flag (slow, not deaf)
    assert not seen.observe(rule, at(7), 0, 0, 0)
    assert not seen.observe(rule, at(12), 12_000, 0, 0)  # not yet
    assert not seen.observe(rule, at(13), 0, 0, 0)
    assert seen.flagged
    assert seen.observe(rule, at(23), 300, 0, 0)
    assert not seen.flagged and seen.detail == "follows its limit again"


def test_compliance_spares_a_station_coming_down_from_a_higher_limit():
    """Above its new limit, but not above the highest of the grace time before: ramping."""
    rule = ComplianceRule(tolerance_w=500, grace=timedelta(seconds=10))
    t0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
    seen = Compliance()
    for second in range(0, 30, 2):
        assert not seen.observe(rule, t0 + timedelta(seconds=second), 11_000, 4_000, 11_000)
    assert not seen.flagged
    # once the old limit is out of the window, two readings decide
    assert seen.observe(rule, t0 + timedelta(seconds=31), 11_000, 4_000, 4_000)


def test_capabilities_survive_a_round_trip_and_read_any_dialect():
    caps = parse_configuration([
        {"key": "ChargingScheduleAllowedChargingRateUnit", "value": "current, POWER"},
        {"key": "ChargeProfileMaxStackLevel", "value": 8},
        {"key": "ChargingScheduleMaxPeriods", "value": "10.0"},
        {"key": "MaxChargingProfilesInstalled", "value": " 4 "},
        {"key": "SupportedFeatureProfiles", "value": "core;smartcharging"},
        {"key": "NumberOfConnectors", "value": 2},
    ])
    assert caps.rate_units == {"A", "W"} and caps.smart_charging
    assert (caps.max_stack_level, caps.max_periods, caps.max_profiles, caps.connectors) == \
        (8, 10, 4, 2)
    assert Capabilities.from_json(caps.to_json()) == caps
    assert Capabilities.from_json("Capabilities(...)") is None
    dumb = parse_configuration([{"key": "SupportedFeatureProfiles", "value": "Core,Reservation"}])
    assert not dumb.smart_charging
    assert parse_configuration([]).smart_charging  # one that does not say is tried


async def smart_held_beside_unmanageable(bridge: Bridge, unmanageable_id: str,
                                         smart: SimulatedStation, capacity_w: float) -> None:
    """The one station found unmanageable, the smart one held to what it leaves."""
    await wait_until(lambda: bridge.view.snapshot().station_status.get(unmanageable_id)
                     == "unmanageable", what=f"{unmanageable_id} found unmanageable")
    await wait_until(lambda: smart.transaction_id is not None
                     and 0 < smart.composite_limit_w() <= capacity_w - HARDWARE_MAX_W,
                     what="the smart station held to what the other leaves")


async def test_station_without_smart_charging_is_counted_at_its_maximum(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=30)
    dumb = site.add_station("DUMB", feature_profiles="Core,FirmwareManagement")
    smart = site.add_station("SMART")
    await smart_held_beside_unmanageable(bridge, "DUMB", smart, 30_000)
    assert not any(action == "SetChargingProfile" for action, _ in dumb.received)
    await wait_steered(bridge, "SMART")
    assert dumb.power_w + smart.composite_limit_w() <= 30_000


async def test_station_without_smart_charging_is_counted_by_what_it_tells(site: SiteHarness):
    """Neither station is declared, so each starts at 32 A on three phases (22 kW): two
    of them would take the whole site. One's meter names L1 only (single-phase), the
    other states 16 A in a key of its own; the smart station gets what they leave."""
    bridge = await site.start_bridge(capacity_kw=40)
    single = site.add_station("SINGLE", feature_profiles="Core", phases=1)  # 16 A on L1
    rated = site.add_station("RATED", feature_profiles="Core",
                             vendor_keys={"Station.MaxCurrentA": "16"})
    smart = site.add_station("SMART")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_power([single, rated, smart], stop))
    try:
        await wait_until(lambda: smart.transaction_id is not None
                         and smart.power_w >= 11_040, timeout=30,
                         what="the smart station's EV at its full 16 A")
        assert smart.composite_limit_w() <= 40_000 - 32 * 230 - 16 * 230 * 3
    finally:
        stop.set()
    assert await watcher <= 40_000
    detail = bridge.view.snapshot().station_detail
    assert "7.4 kW: 32 A (ocpp.default_max_current_a: not declared) on 1 phase, L1 " \
           "(its meter reports current on L1 only)" in detail["SINGLE"]
    assert "11.0 kW: 16 A (its configuration key Station.MaxCurrentA) on 3 phases" \
           in detail["RATED"]
    rows = {row["station_id"]: row for row in stations_view(bridge.view)["stations"]}
    assert rows["RATED"]["counted"]["watts"] == 11_040
    assert rows["RATED"]["limit_reason"].startswith("counted at 11.0 kW: 16 A (its config")
    assert rows["SMART"]["counted"] is None
    # the key was read, never written; no profile was sent to either
    assert ("GetConfiguration", {}) in rated.received
    for dumb in (single, rated):
        assert not any(action in ("SetChargingProfile", "ChangeConfiguration")
                       and payload.get("key") != "MeterValueSampleInterval"
                       and payload.get("key") != "MeterValuesSampledData"
                       for action, payload in dumb.received)


async def test_station_without_smart_charging_is_counted_at_its_measured_peak(site: SiteHarness):
    """After its session has drawn a while, at its peak and a margin; a new EV starts
    from the hardware maximum again."""
    site.write_config(capacity_kw=30)
    site.config_path.write_text(site.config_path.read_text().replace(
        "  meter_interval_s: 1\n", "  meter_interval_s: 1\n  learn_peak_after_s: 5\n"))
    bridge = await site.start_bridge()
    dumb = site.add_station("DUMB", feature_profiles="Core")  # its EV: 16 A, 3 phases
    smart = site.add_station("SMART")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_power([dumb, smart], stop))

    def counted() -> str:
        return bridge.view.snapshot().station_detail.get("DUMB", "")

    def smart_caps_a(since: int) -> list[float]:
        """The limits of the caps SMART was sent since its ``since``-th call, as they stood
        when sent (a schedule starts 5 s in the past)."""
        return [[period["limit"] for period in payload["csChargingProfiles"]
                 ["chargingSchedule"]["chargingSchedulePeriod"] if period["startPeriod"] <= 5][-1]
                for action, payload in smart.received[since:]
                if action == "SetChargingProfile" and payload["connectorId"] == 0]

    low_a = (30_000 - HARDWARE_MAX_W) / (230 * 3)
    try:
        await wait_until(lambda: "13.8 kW: its peak of 11.0 kW" in counted(), timeout=30,
                         what="DUMB counted at its peak and 25 %")
        await wait_until(lambda: smart.power_w >= 11_040, what="SMART's EV at its full 16 A")
        mark = len(smart.received)
        dumb.unplug()
        await asyncio.sleep(0.5)
        dumb.plug_in()  # another EV: counted at the hardware maximum until known
        await wait_until(lambda: any(amps <= low_a for amps in smart_caps_a(mark)),
                         timeout=30, what="SMART held to what the new EV may take")
        await wait_until(lambda: smart_caps_a(mark)[-1] > low_a
                         and "13.8 kW: its peak" in counted(), timeout=30,
                         what="the new EV's peak learned, SMART raised again")
    finally:
        stop.set()
    assert await watcher <= 30_000


async def test_rate_units_in_any_case_and_off_schema_replies(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    sloppy = site.add_station("SLOPPY", rate_unit="power", sloppy_replies=True)
    amps = site.add_station("AMPS", rate_unit="CURRENT")
    both = site.add_station("BOTH", rate_unit="current,Power")
    stations = [sloppy, amps, both]
    await wait_until(lambda: all(max_profile(s) and s.composite_limit_w() >= 4_140
                                 for s in stations), what="every station steered")
    units = [max_profile(s)["chargingSchedule"]["chargingRateUnit"] for s in stations]
    assert units == ["W", "A", "A"]
    assert bridge.dispatcher.stations["SLOPPY"].caps.rate_units == {"W"}
    await wait_steered(bridge, "SLOPPY", "AMPS", "BOTH")


async def test_stack_level_stays_within_what_the_station_takes(site: SiteHarness):
    await site.start_bridge(capacity_kw=40)
    flat = site.add_station("FLAT", max_stack_level=0, max_periods=1)
    await wait_until(lambda: max_profile(flat) is not None, what="a profile")
    profile = max_profile(flat)
    assert profile is not None and profile["stackLevel"] == 0
    assert len(profile["chargingSchedule"]["chargingSchedulePeriod"]) == 1


def profiles_of(station: SimulatedStation, purpose: str) -> dict[int, dict]:
    return {k[0]: p for k, p in station.installed_profiles.items() if k[1] == purpose}


async def watch_power(stations: list[SimulatedStation], stop: asyncio.Event) -> float:
    """The highest total draw seen, sampled every 5 ms."""
    worst = 0.0
    while not stop.is_set():
        worst = max(worst, sum(s.power_w for s in stations))
        await asyncio.sleep(0.005)
    return worst


async def test_cap_applied_per_connector_is_split_between_sessions(site: SiteHarness):
    """MicroOcpp applies a connector-0 ChargePointMaxProfile to each connector."""
    await site.start_bridge(capacity_kw=12)
    twin = site.add_station("TWIN", connectors=2, plugged_in=False, cp_max_per_connector=True)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_power([twin], stop))
    try:
        twin.plug_in(1)
        await wait_until(lambda: twin.connector_power_w(1) > 0
                         and 2 in profiles_of(twin, "TxDefaultProfile"),
                         what="the first EV charging, the idle connector held")
        # the idle connector waits at 0 until its session has a share
        idle = profiles_of(twin, "TxDefaultProfile").get(2)
        assert idle is not None and idle["chargingProfileId"] == 9102
        assert idle["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 0
        twin.plug_in(2)
        await wait_until(lambda: twin.connector_power_w(1) > 0 and twin.connector_power_w(2) > 0,
                         what="both EVs charging")
        tx = profiles_of(twin, "TxProfile")
        assert {c: p["transactionId"] for c, p in tx.items()} == \
            {c: twin.connectors[c].tx_id for c in (1, 2)}
        assert {p["chargingProfileId"] for p in tx.values()} == {9201, 9202}
        assert twin.power_w <= 12_000
    finally:
        stop.set()
    assert await watcher <= 12_000


async def test_station_refusing_connector_zero_is_limited_per_connector(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    picky = site.add_station("NOZERO", rejects_connector_zero=True)
    await wait_until(lambda: 1 in profiles_of(picky, "TxProfile"), what="a TxProfile")
    assert profiles_of(picky, "TxProfile")[1]["transactionId"] == picky.transaction_id
    assert not profiles_of(picky, "ChargePointMaxProfile")
    await wait_until(lambda: 0 < picky.power_w <= 8_000, what="the EV held to the cap")
    await wait_steered(bridge, "NOZERO")


async def test_station_taking_stack_level_zero_only(site: SiteHarness):
    await site.start_bridge(capacity_kw=8)
    low = site.add_station("LOW", max_stack_level=8, accepted_stack_level=0)
    await wait_until(lambda: max_profile(low) is not None, what="the cap installed")
    assert max_profile(low)["stackLevel"] == 0  # type: ignore[index]
    await wait_until(lambda: 0 < low.power_w <= 8_000, what="the EV held to the cap")


def with_compliance(site: SiteHarness, capacity_kw: float, grace_s: float = 2) -> None:
    site.write_config(capacity_kw=capacity_kw)
    site.config_path.write_text(site.config_path.read_text().replace(
        "  meter_interval_s: 1\n",
        f"  meter_interval_s: 1\n  compliance_grace_s: {grace_s}\n"
        "  compliance_tolerance_w: 500\n"))


async def test_station_that_accepts_and_ignores_is_flagged_and_counted_at_its_draw(
        site: SiteHarness):
    with_compliance(site, capacity_kw=16)
    bridge = await site.start_bridge()
    deaf = site.add_station("DEAF", ignores_profiles=True)
    good = site.add_station("GOOD")
    await wait_until(lambda: bridge.view.snapshot().station_status.get("DEAF") == "non-compliant",
                     timeout=20, what="the station flagged non-compliant")
    # its EV draws 16 A on three phases whatever it accepted; the other gets the rest
    await wait_until(lambda: 0 < good.composite_limit_w() <= 16_000 - deaf.power_w,
                     what="the compliant station held to what the other leaves")
    assert good.power_w + deaf.power_w <= 16_000
    assert bridge.view.snapshot().station_status["GOOD"] == "steered"
    assert "above" in bridge.view.snapshot().station_detail["DEAF"]
    row = bridge.store.db["compliance"].get("DEAF")
    assert row["status"] == "non-compliant" and "above" in row["detail"]
    assert not list(bridge.store.db["compliance"].rows_where("station_id = 'GOOD'"))


async def test_station_ignoring_limits_that_keep_changing_is_flagged_and_the_cap_holds(
        site: SiteHarness):
    """Sessions come and go every second or two, so every station's limit keeps changing;
    a single-phase 32 A station ignores all of them. Judged against the highest limit
    of its grace time, it is flagged within a few meter intervals, and from then on the
    stations' own draw stays within the site's cap."""
    capacity_w = 24_000
    listed = "".join(f"    - {{id: H{n}, max_current_a: 32}}\n" for n in range(1, 6))
    site.write_config(capacity_kw=capacity_w / 1000)
    site.config_path.write_text(site.config_path.read_text().replace(
        "  meter_interval_s: 1\n",
        "  meter_interval_s: 1\n  compliance_grace_s: 3\n  compliance_tolerance_w: 500\n"
        "  stations:\n    - {id: DEAF, phases: 1, max_current_a: 32}\n" + listed))
    bridge = await site.start_bridge()
    honest = [site.add_station(f"H{n}") for n in range(1, 5)]
    deaf = site.add_station("DEAF", phases=1, ev_max_current_a=32, ignores_profiles=True)
    stations = [deaf, *honest]
    await wait_until(lambda: all(s.transaction_id is not None for s in stations),
                     timeout=30, what="every EV charging")
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, float]] = []  # (time, what the stations draw)
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append((loop.time(), sum(s.power_w for s in stations)))
            await asyncio.sleep(0.02)

    async def churn() -> None:
        """An EV leaves, another arrives: the shares, so the limits, change every ~1.5 s."""
        turn = 0
        while not stop.is_set():
            station = honest[turn % len(honest)]
            station.unplug()
            await asyncio.sleep(1.5)
            station.plug_in()
            await asyncio.sleep(1.5)
            turn += 1

    tasks = [asyncio.create_task(sample()), asyncio.create_task(churn())]
    try:
        # 3 s of grace and two readings (how soon exactly: tests/test_compliance.py)
        await wait_until(lambda: bridge.view.snapshot().station_status.get("DEAF")
                         == "non-compliant", timeout=30, what="DEAF flagged non-compliant")
        # a station joins (no EV yet: before its first profile it would draw its hardware
        # maximum, see README "Current limits") and charges once it holds one
        late = site.add_station("H5", plugged_in=False)
        stations.append(late)
        honest.append(late)
        await wait_until(lambda: bridge.view.snapshot().station_status.get("H5") == "steered",
                         timeout=30, what="H5 holding its first profile")
        await wait_until(lambda: sum(s.power_w for s in honest) <= capacity_w - deaf.power_w,
                         timeout=30, what="the honest stations held to what DEAF leaves")
        settled = loop.time()
        late.plug_in()
        await asyncio.sleep(10)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    after = [watts for when, watts in samples if when >= settled]
    assert after and max(after) <= capacity_w
    assert bridge.view.snapshot().station_detail["DEAF"].startswith("draws 7360 W")
    flagged = {row["station_id"] for row in bridge.store.db["compliance"].rows}
    assert flagged == {"DEAF"}  # the honest stations, coming down after each change, are not


async def test_profile_of_its_own_at_a_higher_stack_level_is_kept_and_capped_under(
        site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    vendor = site.add_station("VENDOR", max_stack_level=5, factory_cap_a=32)
    await wait_until(lambda: "VENDOR" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["VENDOR"].handling.cap_outranked
                     and bridge.dispatcher.stations["VENDOR"].life.phase == "verified",
                     what="the limit per connector, confirmed by its composite schedule")
    assert max_profile(vendor)["chargingProfileId"] == 1  # type: ignore[index]
    assert max_profile(vendor)["stackLevel"] == 5  # type: ignore[index]
    await wait_until(lambda: 0 < vendor.power_w <= 8_000, what="the EV held to the cap")
    assert any(action == "GetCompositeSchedule" for action, _ in vendor.received)
    assert bridge.view.snapshot().station_status["VENDOR"] == "steered"


async def test_composite_schedule_is_asked_again_after_each_new_limit(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=12)
    first = site.add_station("FIRST")

    def checks() -> int:
        return sum(1 for action, _ in first.received if action == "GetCompositeSchedule")

    await wait_until(lambda: "FIRST" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["FIRST"].life.phase == "verified"
                     and first.composite_limit_w() > 6_000, what="FIRST alone, verified")
    before = checks()
    site.add_station("SECOND")  # FIRST's share halves
    await wait_until(lambda: first.composite_limit_w() <= 6_000 and checks() > before
                     and bridge.dispatcher.stations["FIRST"].life.phase == "verified",
                     what="FIRST's new limit confirmed by a new composite schedule")


async def test_station_without_composite_schedules_is_still_steered(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    plain = site.add_station("PLAIN", supports_composite_schedule=False)
    await wait_until(lambda: not bridge.dispatcher.stations["PLAIN"].handling.composite_supported
                     if "PLAIN" in bridge.dispatcher.stations else False,
                     what="composite schedules found unsupported")
    await wait_until(lambda: 0 < plain.power_w <= 8_000, what="the EV held to the cap")
    assert bridge.view.snapshot().station_status["PLAIN"] == "steered"


async def test_profiles_of_an_abandoned_strategy_are_cleared_by_id(site: SiteHarness):
    """After a refusal of connector 0 the station got per-connector profiles; once it takes
    connector 0 again (after a reboot), those are cleared, and only those."""
    await site.start_bridge(capacity_kw=8)
    station = site.add_station("FLIP", rejects_connector_zero=True)
    await wait_until(lambda: 1 in profiles_of(station, "TxProfile"), what="a TxProfile")
    station.installed_profiles[(1, "TxDefaultProfile", 7)] = {  # the installer's own
        "chargingProfileId": 77, "stackLevel": 7, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": "2020-01-01T00:00:00Z", "chargingRateUnit": "A",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32}]}}
    station.spec.rejects_connector_zero = False
    await station.reboot()
    await wait_until(lambda: max_profile(station) is not None, what="the cap on connector 0")
    await wait_until(lambda: {p["chargingProfileId"] for p in station.installed_profiles.values()}
                     == {9001, 77}, what="our per-connector profiles cleared, theirs kept")
    cleared = [p for a, p in station.received if a == "ClearChargingProfile"]
    assert cleared and all(set(p) == {"id"} and p["id"] in (9101, 9201) for p in cleared)
    await wait_until(lambda: 0 < station.power_w <= 8_000, what="the EV held to the cap")


async def test_profiles_of_an_earlier_run_are_cleared_after_a_restart(site: SiteHarness):
    """The ids a station accepted are kept in the database: a bridge that starts again
    clears those it no longer sends, although it never sent them itself."""
    bridge = await site.start_bridge(capacity_kw=8)
    station = site.add_station("FLIP", rejects_connector_zero=True)
    await wait_until(lambda: 1 in profiles_of(station, "TxProfile"), what="a TxProfile")
    await wait_until(lambda: bridge.store.installed().get("FLIP", set()) >= {9201},
                     what="the accepted ids stored")
    await site.stop_bridge()
    station.spec.rejects_connector_zero = False  # e.g. a firmware update while we were away
    await site.start_bridge()
    await wait_until(lambda: {p["chargingProfileId"] for p in station.installed_profiles.values()}
                     == {9001}, what="the earlier run's per-connector profiles cleared")
    cleared = [p for a, p in station.received if a == "ClearChargingProfile"]
    assert cleared and all(set(p) == {"id"} and p["id"] in (9101, 9201) for p in cleared)
    await wait_until(lambda: site.bridge is not None
                     and site.bridge.store.installed().get("FLIP") == {9001},
                     what="the stored ids brought up to date")


async def test_lost_answers_time_out_and_the_profile_is_sent_again(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    mute = site.add_station("MUTE", unanswered_profiles=2)

    def statuses() -> list[str]:
        rows = bridge.store.db["profiles"].rows_where("station_id = 'MUTE'", order_by="id")
        return [r["status"] for r in rows]

    await wait_until(lambda: "Accepted" in statuses(), timeout=30, what="an answered profile")
    assert statuses()[:3] == ["Failed", "Failed", "Accepted"]
    await wait_until(lambda: bridge.view.snapshot().station_status["MUTE"] == "steered",
                     what="the station steered")
    await wait_until(lambda: 0 < mute.power_w <= 8_000, what="the EV held to the cap")


async def test_cap_holds_in_transitions_with_multi_connector_stations(site: SiteHarness):
    """Sessions start and stop on several connectors; sample what the stations allow.

    A station applying its cap per connector allows the sum of its connectors' limits,
    which is what ``composite_limit_w`` gives for it.
    """
    await site.start_bridge(capacity_kw=30)
    twin = site.add_station("TWIN", connectors=2, plugged_in=False, cp_max_per_connector=True)
    duo = site.add_station("DUO", connectors=2, plugged_in=False)
    solo = site.add_station("SOLO")
    stations = [twin, duo, solo]
    worst = 0.0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal worst
        while not stop.is_set():
            commanded = [s for s in stations if s.installed_profiles]
            worst = max(worst, sum(s.composite_limit_w() for s in commanded))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        await wait_until(lambda: solo.power_w > 0, what="the single station charging")
        for station, connector in ((twin, 1), (duo, 1), (twin, 2), (duo, 2)):
            station.plug_in(connector)
            await wait_until(lambda s=station, c=connector: s.connector_power_w(c) > 0,
                             what=f"{station.id}/{connector} charging")
        twin.unplug(1)
        await wait_until(lambda: twin.composite_limit_w(connector_id=1) == 0,
                         what="the freed connector back at 0")
        await wait_until(lambda: twin.connector_power_w(2) >= 7_000, what="its share to the other")
    finally:
        stop.set()
        await watcher
    assert worst <= 30_000


async def test_station_without_get_configuration_gets_cautious_profiles(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    quiet = site.add_station("QUIET", supports_get_configuration=False, rate_unit="Current")
    await wait_until(lambda: max_profile(quiet) is not None, what="a profile")
    profile = max_profile(quiet)
    assert profile is not None and profile["stackLevel"] == 0
    assert profile["chargingSchedule"]["chargingRateUnit"] == "A"
    await wait_until(lambda: 0 < quiet.power_w <= 8_000, what="the EV held to the cap")
    asked = [a for a, _ in quiet.received if a == "GetConfiguration"]
    # asked on connecting and on its boot, not again before every profile
    assert 1 <= len(asked) <= 2
    await wait_steered(bridge, "QUIET")


async def test_station_holding_few_profiles_keeps_the_session_limits(site: SiteHarness):
    await site.start_bridge(capacity_kw=12)
    small = site.add_station("SMALL", connectors=2, max_profiles=3, cp_max_per_connector=True)
    await wait_until(lambda: small.connector_power_w(1) > 0 and small.connector_power_w(2) > 0
                     and len(profiles_of(small, "TxProfile")) == 2, what="both EVs charging")
    assert len(small.installed_profiles) <= 3
    assert small.power_w <= 12_000


async def test_station_with_few_places_gives_a_new_session_its_default_first(site: SiteHarness):
    """Three places (cap and two connectors): a session limit takes its default's place."""
    await site.start_bridge(capacity_kw=12)
    small = site.add_station("SMALL", connectors=2, max_profiles=3, plugged_in=False,
                             cp_max_per_connector=True)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_power([small], stop))
    try:
        small.plug_in(1)
        await wait_until(lambda: small.connector_power_w(1) > 0 and 1 in profiles_of(
            small, "TxProfile") and 2 in profiles_of(small, "TxDefaultProfile"),
            what="the first EV charging, the idle connector at its default")
        assert len(small.installed_profiles) == 3
        # the session's limit replaced its connector's default, id and all
        assert profiles_of(small, "TxProfile")[1]["chargingProfileId"] == 9101
        assert 1 not in profiles_of(small, "TxDefaultProfile")
        # an EV on the idle connector waits at 0 W for its share, instead of drawing the
        # station cap beside the first one
        small.plug_in(2)
        await wait_until(lambda: small.connector_power_w(1) > 0
                         and small.connector_power_w(2) > 0, what="both EVs charging")
        assert {c: p["transactionId"] for c, p in profiles_of(small, "TxProfile").items()} == \
            {c: small.connectors[c].tx_id for c in (1, 2)}
        assert len(small.installed_profiles) == 3
        # the first leaves: its connector gets its default back
        small.unplug(1)
        await wait_until(lambda: 1 in profiles_of(small, "TxDefaultProfile"),
                         what="the default back on the freed connector")
        assert len(small.installed_profiles) <= 3
    finally:
        stop.set()
    assert await watcher <= 12_000


async def test_station_silent_about_features_that_refuses_profiles_is_unmanageable(
        site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=30)
    site.add_station("MUM", feature_profiles="")  # lists none; SetChargingProfile: CALLERROR
    smart = site.add_station("SMART")
    await smart_held_beside_unmanageable(bridge, "MUM", smart, 30_000)

    def statuses() -> set[str]:
        return {r["status"] for r in bridge.store.db["profiles"].rows_where("station_id = 'MUM'")}

    await wait_until(lambda: statuses() != set(), what="the profile log written")
    assert statuses() == {"NotSupported"}
