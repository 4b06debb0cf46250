"""OCPP 2.0.1 stations beside 1.6 ones on one bridge, over real websockets."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import websockets
from conftest import SiteHarness, wait_steered, wait_until
from websockets.typing import Subprotocol

from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.profiles import connector_profiles
from bridge.ocpp.v201 import parse_variables, profile_payload, sampled_values
from bridge.sim.station import StationSpec
from bridge.sim.station201 import SimulatedStation201
from policies.fleet import StationInfo, Step


def add_201(site: SiteHarness, station_id: str, **spec: object) -> SimulatedStation201:
    station = SimulatedStation201(StationSpec(station_id=station_id, **spec), site.url)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


def test_payloads_and_answers_in_201_form():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    built = connector_profiles((Step(now, 11_040, "share"),), {1: 7}, 1,
                               StationInfo("X", 3, 230, 32),
                               Capabilities(max_stack_level=3, known=True), now, 6)[1]
    payload = profile_payload(built, "station-tx-1")
    assert payload["chargingProfilePurpose"] == "TxProfile"
    assert payload["transactionId"] == "station-tx-1"
    assert payload["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 16.0
    caps = parse_variables([
        {"attributeStatus": "Accepted", "variable": {"name": "Enabled"}, "attributeValue": "true"},
        {"attributeStatus": "Accepted", "variable": {"name": "RateUnit"}, "attributeValue": "W"},
        {"attributeStatus": "Accepted", "variable": {"name": "ProfileStackLevel"},
         "attributeValue": "4"},
        {"attributeStatus": "UnknownVariable", "variable": {"name": "PeriodsPerSchedule"}},
        "junk",
    ], connectors=2)
    assert caps.rate_units == {"W"} and caps.max_stack_level == 4 and caps.smart_charging
    assert caps.max_periods == 24 and caps.connectors == 2
    disabled = parse_variables([{"attributeStatus": "Accepted", "variable": {"name": "Enabled"},
                                 "attributeValue": "false"}], connectors=1)
    assert not disabled.smart_charging
    sample = sampled_values({"timestamp": "t", "sampledValue": [
        {"value": 7.36, "measurand": "Power.Active.Import",
         "unitOfMeasure": {"unit": "W", "multiplier": 3}}]})
    assert float(sample["sampledValue"][0]["value"]) == 7360.0


async def test_16_and_201_stations_side_by_side(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    old = site.add_station("OLD")
    new = add_201(site, "NEW", rate_unit="Power")
    dumb = add_201(site, "NEW-DUMB", feature_profiles="Core")
    await wait_until(lambda: bridge.view.snapshot().station_status.get("NEW-DUMB")
                     == "unmanageable", what="the 2.0.1 station without smart charging found")
    caps_left = 40_000 - 32 * 230 * 3  # the unmanageable station counts at its maximum
    await wait_until(
        lambda: new.transaction_id is not None and old.transaction_id is not None
        and 0 < new.composite_limit_w() and 0 < old.composite_limit_w()
        and new.composite_limit_w() + old.composite_limit_w() <= caps_left,
        what="both steered within what the unmanageable one leaves")
    cap = new.installed_profiles[(0, "ChargingStationMaxProfile", 1)]
    assert cap["id"] == 9001 and cap["chargingSchedule"][0]["chargingRateUnit"] == "W"
    # its EVSEs from its device model, its smart charging variables, its installed profiles
    assert ("GetReport", "GetVariables", "GetChargingProfiles") == \
        tuple(a for a, _ in new.received[:3])
    await wait_until(lambda: bridge.view.snapshot().station_power_w.get("NEW", 0) > 0,
                     what="the 2.0.1 station's meter values read")
    session = next(s for s in bridge.station_events.sessions.values() if s.station_id == "NEW")
    assert session.connector_id == 1
    await wait_steered(bridge, "OLD", "NEW")
    assert not dumb.installed_profiles
    await wait_until(lambda: bridge.dispatcher.stations["NEW"].life.phase == "verified",
                     what="NEW verified by its composite schedule")
    assert timedelta(0) <= datetime.now(UTC) - session.started_at < timedelta(minutes=1)


async def test_201_station_without_smart_charging_is_counted_at_the_power_it_states(
        site: SiteHarness):
    """Undeclared, it would count at 32 A on three phases (22 kW); its device model says
    its EVSE gives 11 kW at most (Power's MaxSet), which the smart station is left."""
    bridge = await site.start_bridge(capacity_kw=30)
    dumb = add_201(site, "DUMB201", feature_profiles="Core", max_current_a=16)
    smart = site.add_station("SMART")
    await wait_until(lambda: smart.transaction_id is not None and smart.power_w >= 11_040,
                     timeout=20, what="the smart station's EV at its full 16 A")
    assert dumb.power_w + smart.power_w <= 30_000
    assert "at most 11.04 kW (ChargingStation.Power (MaxSet))" \
        in bridge.view.snapshot().station_detail["DUMB201"]
    asked = [p for a, p in dumb.received if a == "GetVariables"]
    assert any(item["variable"]["name"] == "Power" and item.get("attributeType") == "MaxSet"
               for p in asked for item in p["getVariableData"])
    # no profile, nor anything else of smart charging: only reads of its device model
    assert all(a in ("GetVariables", "SetVariables", "GetReport") for a, _ in dumb.received)


async def test_201_tx_profile_names_the_stations_transaction(site: SiteHarness):
    await site.start_bridge(capacity_kw=8)
    picky = add_201(site, "NEW-NOZERO", rejects_connector_zero=True)
    def tx_profile() -> dict | None:
        return next((p for k, p in picky.installed_profiles.items() if k[:2] == (1, "TxProfile")),
                    None)

    await wait_until(lambda: tx_profile() is not None, what="a TxProfile on the EVSE")
    tx = tx_profile()
    assert tx is not None
    assert tx["transactionId"] == picky.transaction_id == "NEW-NOZERO-tx1"
    await wait_until(lambda: 0 < picky.power_w <= 8_000, what="the EV held to the cap")


async def test_201_transaction_survives_a_reconnection(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=8)
    station = add_201(site, "NEW-FLAKY")
    await wait_until(lambda: any(s.station_id == "NEW-FLAKY"
                                 for s in bridge.station_events.sessions.values()),
                     what="the session known")
    before = dict(bridge.station_events.sessions)
    link = bridge.ocpp.links["NEW-FLAKY"]
    await station.drop_connection()
    await wait_until(lambda: bridge.ocpp.links.get("NEW-FLAKY") not in (None, link),
                     what="the station back on a new link")
    await wait_until(lambda: bridge.dispatcher.stations["NEW-FLAKY"].link is not link
                     and bridge.dispatcher.stations["NEW-FLAKY"].life.confirmed,
                     what="its limit confirmed again on the new link")
    seq = station._seq
    await wait_until(lambda: station._seq >= seq + 2, what="TransactionEvents on the new link")
    assert bridge.station_events.sessions == before  # the same transaction, not a new one
    assert 0 < station.power_w <= 8_000


async def test_201_frames_bad_and_harmless(site: SiteHarness):
    await site.start_bridge()
    async with await websockets.connect(f"{site.url}/RAW201",
                                        subprotocols=[Subprotocol("ocpp2.0.1")]) as ws:
        async def exchange(frame: object) -> list:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if reply[0] in (3, 4):
                    return reply

        assert (await exchange("{"))[2] == "FormatViolation"
        boot = [2, "b", "BootNotification", {"chargingStation": {"model": "m"}, "reason": "X"}]
        assert (await exchange(boot))[2] in ("OccurrenceConstraintViolation",
                                             "PropertyConstraintViolation", "FormatViolation")
        assert (await exchange([2, "c", "StartTransaction", {}]))[2] == "NotSupported"
        event = {"eventId": 1, "timestamp": "2026-11-25T12:00:00Z", "trigger": "Delta",
                 "actualValue": "Faulted", "eventNotificationType": "HardWiredNotification",
                 "component": {"name": "Connector"}, "variable": {"name": "Problem"}}
        notice = [2, "d", "NotifyEvent", {"generatedAt": "2026-11-25T12:00:00Z", "seqNo": 0,
                                          "eventData": [event]}]
        assert await exchange(notice) == [3, "d", {}]  # acknowledged, nothing to do
        heartbeat = await exchange([2, "e", "Heartbeat", {}])
        assert heartbeat[0] == 3 and "currentTime" in heartbeat[2]
