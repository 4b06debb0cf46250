"""OCPP 2.1 stations on the bridge, over real websockets: steered with charging profiles as
2.0.1 ones are, their external limits and DER notices read into domain terms."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from conftest import SiteHarness, wait_steered, wait_until
from websockets.typing import Subprotocol

from bridge.ocpp import der_control as der
from bridge.ocpp.external_limits import (
    ExternalLimit,
    read_cleared_charging_limit,
    read_notify_charging_limit,
)
from bridge.ocpp.v21 import StationLink21
from bridge.ocpp.v201 import StationLink201
from bridge.ocpp.wire import validator
from bridge.sim.station import StationSpec
from bridge.sim.station21 import SimulatedStation21

V = 230.0
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def add_21(site: SiteHarness, station_id: str, **options: object) -> SimulatedStation21:
    spec = options.pop("spec", {})
    station = SimulatedStation21(StationSpec(station_id=station_id, **spec),  # type: ignore[arg-type]
                                 site.url, **options)  # type: ignore[arg-type]
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


# -- pure: external limits ---------------------------------------------------------------

def test_an_external_limit_is_read_from_either_version():
    notice = {"chargingLimit": {"chargingLimitSource": "EMS", "isGridCritical": True},
              "evseId": 1, "chargingSchedule": [{
                  "id": 1, "chargingRateUnit": "A", "startSchedule": "2026-11-25T12:00:00Z",
                  "duration": 600, "chargingSchedulePeriod": [
                      {"startPeriod": 0, "limit": 10.0},
                      {"startPeriod": 300, "limit": 16.0, "limit_L2": 8.0, "numberPhases": 1},
                      {"startPeriod": 400, "setpoint": 1.0}]}]}
    for version in ("v201", "v21"):
        if version == "v201":  # 2.0.1: a period has a limit and no per-phase ones
            periods = notice["chargingSchedule"][0]["chargingSchedulePeriod"][:1]  # type: ignore[index]
            payload = {**notice, "chargingSchedule": [
                {**notice["chargingSchedule"][0], "chargingSchedulePeriod": periods}]}  # type: ignore[index]
        else:
            payload = notice
        validator(version, "NotifyChargingLimitRequest")(payload)
    limit = read_notify_charging_limit(notice, NOW)
    assert (limit.source, limit.evse_id, limit.grid_critical, limit.cleared) == (
        "EMS", 1, True, False)
    assert limit.key() == ("EMS", 1)
    assert limit.describe() == "EMS limit on EVSE 1 (grid critical)"
    assert limit.watts_at(NOW, V, 3) == 10 * V * 3
    # per-phase limits count by the lowest, on the phases the period names
    assert limit.watts_at(NOW + timedelta(seconds=300), V, 3) == 8 * V * 1
    assert limit.watts_at(NOW + timedelta(seconds=450), V, 3) is None  # no limit in it
    assert limit.watts_at(NOW + timedelta(seconds=600), V, 3) is None  # past its duration
    assert limit.watts_at(NOW - timedelta(seconds=1), V, 3) is None  # not yet

    bare = read_notify_charging_limit({"chargingLimit": {"chargingLimitSource": "SO"}}, NOW)
    assert (bare.evse_id, bare.grid_critical, bare.schedules) == (0, None, ())
    assert bare.describe() == "SO limit on the station"
    relative = read_notify_charging_limit({
        "chargingLimit": {"chargingLimitSource": "EMS"}, "chargingSchedule": [{
            "id": 2, "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 5000.0}]}]}, NOW)
    assert relative.watts_at(NOW, V, 3) == 5000.0  # no start: from when it arrived
    cleared = read_cleared_charging_limit({"chargingLimitSource": "EMS", "evseId": 1}, NOW)
    assert cleared.cleared and cleared.key() == ("EMS", 1)
    assert ExternalLimit("EMS", 0, NOW, cleared=True).watts_at(NOW, V, 3) is None


# -- over websockets ---------------------------------------------------------------------

async def test_16_and_21_stations_side_by_side(site: SiteHarness):
    """A 2.1 station is steered as a 2.0.1 one: its EVSEs and smart charging variables read
    from its device model, others' profiles listed, a station cap in watts, a TxProfile
    naming its transaction, verified by its composite schedule."""
    bridge = await site.start_bridge(capacity_kw=20)
    old = site.add_station("OLD")
    new = add_21(site, "NEW21", spec={"rate_unit": "Power"})
    await wait_until(lambda: isinstance(bridge.ocpp.links.get("NEW21"), StationLink21),
                     what="the 2.1 station on a 2.1 link")
    await wait_until(
        lambda: new.transaction_id is not None and old.transaction_id is not None
        and 0 < new.composite_limit_w() and 0 < old.composite_limit_w()
        and new.composite_limit_w() + old.composite_limit_w() <= 20_000,
        what="both steered within the site cap")
    cap = new.installed_profiles[(0, "ChargingStationMaxProfile", 1)]
    assert cap["id"] == 9001 and cap["chargingSchedule"][0]["chargingRateUnit"] == "W"
    assert ("GetReport", "GetVariables", "GetChargingProfiles") == \
        tuple(a for a, _ in new.received[:3])
    await wait_until(lambda: bridge.view.snapshot().station_power_w.get("NEW21", 0) > 0,
                     what="the 2.1 station's meter values read")
    session = next(s for s in bridge.station_events.sessions.values() if s.station_id == "NEW21")
    assert session.connector_id == 1
    await wait_steered(bridge, "OLD", "NEW21")
    await wait_until(lambda: bridge.dispatcher.stations["NEW21"].life.phase == "verified",
                     what="NEW21 verified by its composite schedule")
    await wait_until(lambda: 0 < new.power_w and new.power_w + old.power_w <= 20_000,
                     what="what the stations draw within the cap")


async def test_21_tx_profile_names_the_stations_transaction(site: SiteHarness):
    await site.start_bridge(capacity_kw=8)
    picky = add_21(site, "NOZERO21", spec={"rejects_connector_zero": True})

    def tx_profile() -> dict | None:
        return next((p for k, p in picky.installed_profiles.items()
                     if k[:2] == (1, "TxProfile")), None)

    await wait_until(lambda: tx_profile() is not None, what="a TxProfile on the EVSE")
    tx = tx_profile()
    assert tx is not None and tx["transactionId"] == picky.transaction_id == "NOZERO21-tx1"
    await wait_until(lambda: 0 < picky.power_w <= 8_000, what="the EV held to the cap")


async def test_a_station_offering_21_and_201_speaks_21(site: SiteHarness):
    bridge = await site.start_bridge()
    for offered, expected in ((["ocpp2.0.1", "ocpp2.1"], "ocpp2.1"),
                              (["ocpp2.0.1"], "ocpp2.0.1"), (["ocpp2.1"], "ocpp2.1")):
        async with await websockets.connect(
                f"{site.url}/RAW", subprotocols=[Subprotocol(p) for p in offered]) as ws:
            assert ws.subprotocol == expected
            await wait_until(lambda: "RAW" in bridge.ocpp.links, what="the link")
            link = bridge.ocpp.links["RAW"]
            assert type(link) is (StationLink21 if expected == "ocpp2.1" else StationLink201)
        await wait_until(lambda: "RAW" not in bridge.ocpp.links, what="the link gone")


async def test_a_21_stations_external_limit_reaches_the_bridge(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = add_21(site, "EXT21")
    await wait_until(lambda: station.transaction_id is not None and station.connected,
                     what="EXT21 charging")
    station.set_external_limit(7.0, "EMS")  # the building's energy manager
    await wait_until(lambda: ("EXT21", "EMS", 0) in bridge.station_events.external_limits,
                     what="the external limit at the bridge")
    limit = bridge.station_events.external_limits[("EXT21", "EMS", 0)]
    assert limit.grid_critical is False and not limit.cleared
    assert limit.watts_at(datetime.now(UTC), V, 3) == pytest.approx(7 * V * 3)
    await wait_until(lambda: station.power_w == pytest.approx(7 * V * 3),
                     what="the station held to it")
    station.set_external_limit(None)
    await wait_until(lambda: ("EXT21", "EMS", 0) not in bridge.station_events.external_limits,
                     what="the external limit cleared")


async def test_21_der_notices_and_frames(site: SiteHarness):
    """NotifyDERAlarm and NotifyDERStartStop are answered at once and reach the bridge as
    notices of the station's own DER control; DER requests off the schema are refused
    with the 2.1 codes, and the link lives on."""
    bridge = await site.start_bridge()
    async with await websockets.connect(f"{site.url}/RAW21",
                                        subprotocols=[Subprotocol("ocpp2.1")]) as ws:
        async def exchange(frame: list) -> list:
            await ws.send(json.dumps(frame))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if reply[0] in (3, 4) and reply[1] == frame[1]:
                    return reply

        boot = {"chargingStation": {"model": "m", "vendorName": "v"}, "reason": "PowerUp"}
        assert (await exchange([2, "b", "BootNotification", boot]))[2]["status"] == "Accepted"
        alarm = {"controlType": "VoltWatt", "gridEventFault": "UnderVoltage",
                 "timestamp": "2026-11-25T12:00:00Z"}
        assert await exchange([2, "a", "NotifyDERAlarm", alarm]) == [3, "a", {}]
        notice = bridge.station_events.voltage_notices["RAW21"]
        assert (notice.source, notice.volts, notice.returned_to_normal) == (
            "der-control", None, False)
        assert notice.detail == "station's own DER control (VoltWatt): UnderVoltage alarm raised"
        stop = {"controlId": der.CONTROL_ID, "started": False,
                "timestamp": "2026-11-25T12:00:01Z"}
        assert await exchange([2, "s", "NotifyDERStartStop", stop]) == [3, "s", {}]
        notice = bridge.station_events.voltage_notices["RAW21"]
        assert notice.returned_to_normal and notice.detail == "station's own DER control stopped"
        others = {"controlId": "dso-7", "started": True, "timestamp": "2026-11-25T12:00:02Z"}
        assert await exchange([2, "o", "NotifyDERStartStop", others]) == [3, "o", {}]
        assert bridge.station_events.voltage_notices["RAW21"] is notice  # not ours: nothing to read
        bad = await exchange([2, "x", "NotifyDERAlarm", {"controlType": "VoltWatt"}])
        assert bad[2] == "OccurrenceConstraintViolation"
        unknown = await exchange([2, "u", "StartTransaction", {}])
        assert unknown[2] == "NotSupported"  # a 1.6 action
        heartbeat = await exchange([2, "h", "Heartbeat", {}])
        assert heartbeat[0] == 3 and "currentTime" in heartbeat[2]
