"""Local-controller mode: the operator's limits and drbridge's compose, and the site cap holds
whatever the operator sends. Judged by what the simulated stations apply and draw."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from conftest import SiteHarness, wait_steered, wait_until
from lc_helpers import add_station201, upstream_config

from bridge.sim.csms import UpstreamCsms
from bridge.sim.station import SimulatedStation

WATTS_PER_AMP = 230.0 * 3
DR_LIMIT_W = 11_000  # SIMPLE level 2 of the default policy: 25 % of 44 kW
TOLERANCE_W = 100


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms(id_tags={"ALLOWED": "Accepted"})
    await server.start()
    yield server
    await server.stop()


def station_max(profile_id: int, level: int, amps: float, id_key: str = "chargingProfileId",
                ) -> dict:
    schedule = {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": amps}]}
    if id_key == "id":  # 2.0.1
        return {"id": profile_id, "stackLevel": level,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Absolute", "chargingSchedule": [
                    {"id": 1, "startSchedule": "2024-01-01T00:00:00Z", **schedule}]}
    return {"chargingProfileId": profile_id, "stackLevel": level,
            "chargingProfilePurpose": "ChargePointMaxProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule}


async def dr_event(site: SiteHarness, level: int = 2) -> None:
    """A SIMPLE event from the VTN, in force from about now for ten minutes."""
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    ven_id = site.vtn.ven_id("test-site")
    assert ven_id is not None
    site.vtn.add_simple_event(ven_id, datetime.now(UTC) + timedelta(seconds=1),
                              [(timedelta(minutes=10), level)])


def within(station: SimulatedStation, watts: float) -> bool:
    """The station applies and draws at most ``watts`` over the next minutes."""
    now = datetime.now(UTC)
    return station.power_w <= watts + TOLERANCE_W and all(
        station.composite_limit_w(now + timedelta(seconds=s)) <= watts + TOLERANCE_W
        for s in (2, 30, 300))


async def test_the_lower_of_the_operators_limit_and_the_dr_limit_holds(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED", ev_max_current_a=32)
    await wait_steered(bridge, "CP1")
    await dr_event(site)
    await wait_until(lambda: within(station, DR_LIMIT_W) and station.power_w > 10_000,
                     what="the DR limit")

    # lower than the DR limit: the operator's limit holds
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(3, 8, 8.0)}))["status"] \
        == "Accepted"
    await wait_until(lambda: within(station, 8 * WATTS_PER_AMP) and station.power_w > 5_000,
                     what="the operator's lower limit")
    # the operator's profile is really installed (one level below drbridge's), and the
    # station's own composite schedule, as the CSMS reads it, says the lower of both
    theirs = station.installed_profiles[(0, "ChargePointMaxProfile", 7)]
    assert theirs["chargingProfileId"] == 3
    ours = station.installed_profiles[(0, "ChargePointMaxProfile", 8)]
    assert ours["chargingProfileId"] == 9001
    composite = await csms.request("CP1", "GetCompositeSchedule", {
        "connectorId": 0, "duration": 60, "chargingRateUnit": "A"})
    assert max(p["limit"] for p in composite["chargingSchedule"]["chargingSchedulePeriod"]) \
        <= 8.0

    # higher than the DR limit: the DR limit holds
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(3, 8, 25.0)}))["status"] \
        == "Accepted"
    assert station.installed_profiles[(0, "ChargePointMaxProfile", 7)]["chargingSchedule"][
        "chargingSchedulePeriod"][0]["limit"] == 25.0
    await wait_until(lambda: station.power_w > 10_000, what="the DR limit again")
    assert within(station, DR_LIMIT_W)
    [view] = [s.upstream for s in bridge.view.stations() if s.station_id == "CP1"]
    assert view is not None and view.link == "up"
    assert view.limit is not None and view.limit.limit_w == 25 * WATTS_PER_AMP


async def test_nothing_the_operator_sends_breaks_the_site_cap(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="bridge.ocpp.upstream_link")
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED", ev_max_current_a=32)
    await wait_steered(bridge, "CP1")
    await dr_event(site)
    await wait_until(lambda: within(station, DR_LIMIT_W) and station.power_w > 10_000,
                     what="the DR limit")
    transaction = station.transaction_id
    assert transaction == 5000

    async def holds() -> None:
        await wait_until(lambda: within(station, DR_LIMIT_W), what="the DR limit held")
        assert station.installed_profiles[(0, "ChargePointMaxProfile", 8)][
            "chargingProfileId"] == 9001

    # a station-wide profile at the top level, above the DR limit (it would replace ours)
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(4, 8, 32.0)}))["status"] \
        == "Accepted"
    await holds()
    # one with drbridge's own profile id
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(9001, 2, 32.0)}))["status"] \
        == "Accepted"
    await holds()
    assert [p["chargingProfileId"] for (c, _, level), p in station.installed_profiles.items()
            if level == 2] == [1_900_009_001]
    # a TxProfile for the running session, above the DR limit
    tx_profile = {**station_max(5, 8, 32.0), "chargingProfilePurpose": "TxProfile",
                  "transactionId": transaction}
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 1, "csChargingProfiles": tx_profile}))["status"] == "Accepted"
    await holds()
    # the smart-charging keys that hold drbridge's place, and a sampling too slow for it
    assert (await csms.request("CP1", "ChangeConfiguration", {
        "key": "ChargeProfileMaxStackLevel", "value": "0"}))["status"] == "Rejected"
    assert (await csms.request("CP1", "ChangeConfiguration", {
        "key": "MeterValueSampleInterval", "value": "300"}))["status"] == "Accepted"
    changes = [p for action, p in station.received if action == "ChangeConfiguration"
               and p["key"] in ("ChargeProfileMaxStackLevel", "MeterValueSampleInterval")]
    assert {"key": "MeterValueSampleInterval", "value": "1"} in changes
    assert all(p["key"] != "ChargeProfileMaxStackLevel" for p in changes)
    # clearing everything clears the operator's profiles, not drbridge's
    assert (await csms.request("CP1", "ClearChargingProfile", {}))["status"] == "Accepted"
    await holds()
    assert {p["chargingProfileId"] for p in station.installed_profiles.values()} == {9001}
    # what drbridge changed, and why, is in the log
    log = caplog.text
    assert "stack level 8 is the site limit's: installed at 7" in log
    assert "profile id 9001 is drbridge's: installed as 1900009001" in log
    assert "ChargeProfileMaxStackLevel is read-only" in log
    assert "MeterValueSampleInterval '300' set as '1'" in log
    assert "the clear could reach the site limit's profiles" in log


async def test_a_remote_start_on_a_paused_station_draws_nothing(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="bridge.ocpp.upstream_link")
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED", plugged_in=False)
    await wait_steered(bridge, "CP1")
    await bridge.operator.set_hold("CP1", "pause", "cable check")
    await wait_until(lambda: station.composite_limit_w() == 0, what="the pause")
    station.connectors[1].plugged = True  # the EV is there; the operator starts it remotely
    assert (await csms.request("CP1", "RemoteStartTransaction", {
        "idTag": "ALLOWED", "connectorId": 1}))["status"] == "Accepted"
    await wait_until(lambda: station.transaction_id == 5000, what="the remote start")
    await wait_until(lambda: bool(bridge.station_events.sessions),
                     what="drbridge reading the session")
    assert station.power_w == 0 and within(station, 0)
    assert "the station is paused by the site's limit" in caplog.text


async def test_201_the_operator_cannot_disable_smart_charging_nor_outrank_the_dr_limit(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="bridge.ocpp.upstream_link")
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = add_station201(site, "EV1", id_tag="ALLOWED", ev_max_current_a=32)
    await wait_steered(bridge, "EV1")
    await dr_event(site)
    await wait_until(lambda: station.composite_limit_w() <= DR_LIMIT_W + TOLERANCE_W
                     and station.power_w > 10_000, what="the DR limit")
    answer = await csms.request("EV1", "SetVariables", {"setVariableData": [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Enabled"},
         "attributeValue": "false"},
        {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
         "attributeValue": "1"}]})
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Rejected", "Accepted"]
    # at the top level a 2.0.1 station would refuse it beside ours (K01.FR.06): it goes
    # one level lower, is accepted, and holds where it is lower
    assert (await csms.request("EV1", "SetChargingProfile", {
        "evseId": 0, "chargingProfile": station_max(6, 8, 8.0, "id")}))["status"] == "Accepted"
    assert station.installed_profiles[(0, "ChargingStationMaxProfile", 7)]["id"] == 6
    await wait_until(lambda: station.composite_limit_w() <= 8 * WATTS_PER_AMP + TOLERANCE_W
                     and station.power_w > 5_000, what="the operator's lower limit")
    # its report to the operator shows the operator's profile where the operator put it
    assert (await csms.request("EV1", "GetChargingProfiles", {
        "requestId": 9, "chargingProfile": {"chargingProfileId": [6]}}))["status"] == "Accepted"
    [report] = await csms.wait_for("ReportChargingProfiles", station_id="EV1")
    assert [(p["id"], p["stackLevel"]) for p in report.payload["chargingProfile"]] == [(6, 8)]
    assert "SmartChargingCtrlr.Enabled: smart charging holds the site's limit" in caplog.text


async def test_the_capacity_the_operator_blocks_goes_to_the_other_stations(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(capacity_kw=22, ocpp_extra=upstream_config(csms))
    limited = site.add_station("CP1", id_tag="ALLOWED", ev_max_current_a=32)
    other = site.add_station("CP2", id_tag="ALLOWED", ev_max_current_a=32)
    await wait_steered(bridge, "CP1", "CP2")
    await wait_until(lambda: other.power_w > 10_000 and limited.power_w > 10_000,
                     what="an even share")
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(3, 0, 8.0)}))["status"] \
        == "Accepted"
    # CP1 draws at most 5.5 kW, and the plan gives CP2 what CP1 cannot use
    await wait_until(lambda: limited.power_w <= 8 * WATTS_PER_AMP + TOLERANCE_W
                     and other.power_w >= 22_000 - 8 * WATTS_PER_AMP - TOLERANCE_W,
                     what="CP2 given the rest")
    assert limited.power_w + other.power_w <= 22_000 + TOLERANCE_W
    # the operator's view: each station's link and limit, and forwarding in /metrics
    assert site.bridge is not None and site.bridge.web is not None
    url = f"http://127.0.0.1:{site.bridge.web.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/stations") as response:
            rows = {r["station_id"]: r for r in (await response.json())["stations"]}
        async with http.get(f"{url}/api/site") as response:
            site_view = await response.json()
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
    assert rows["CP1"]["upstream"]["link"] == "up"
    assert rows["CP1"]["upstream"]["limit_w"] == 8 * WATTS_PER_AMP
    assert rows["CP1"]["upstream"]["profiles"][0]["id"] == 3
    assert rows["CP2"]["upstream"] == {"link": "up", "queue": 0, "limit_w": None,
                                       "limit_reason": None, "profiles": []}
    assert site_view["upstream"]["links"] == {"up": 2}
    assert site_view["upstream"]["queue"] == 0
    assert 'drbridge_upstream_links{state="up"} 2' in metrics
    assert "drbridge_upstream_queue_length 0" in metrics
    assert "# TYPE drbridge_upstream_forward_added_seconds histogram" in metrics
    count = next(line for line in metrics.splitlines()
                 if line.startswith("drbridge_upstream_forward_added_seconds_count"))
    assert float(count.split()[-1]) > 0


async def test_the_operators_profiles_are_remembered_across_a_restart(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED", ev_max_current_a=32)
    await wait_steered(bridge, "CP1")
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 0, "csChargingProfiles": station_max(3, 8, 8.0)}))["status"] \
        == "Accepted"
    await wait_until(lambda: within(station, 8 * WATTS_PER_AMP), what="the operator's limit")
    await site.stop_bridge()
    bridge = await site.start_bridge()
    await wait_until(lambda: station.connected, what="the station back")
    await wait_steered(bridge, "CP1")
    # drbridge sends its profile again after the restart: still within the operator's
    await wait_until(lambda: bridge.station_events.calls_out["SetChargingProfile"] >= 1,
                     what="a profile")
    await wait_until(lambda: within(station, 8 * WATTS_PER_AMP) and station.power_w > 5_000,
                     what="the operator's limit after the restart")
    assert bridge.upstream is not None
    assert bridge.upstream.operator_limit("CP1", bridge.config.station_info("CP1"), {},
                                          datetime.now(UTC)) is not None
