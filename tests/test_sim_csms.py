"""The operator CSMS used as a local controller's upstream, against real simulated stations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from conftest import wait_until

from bridge.sim.csms import CsmsCallError, UpstreamCsms
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.station201 import SimulatedStation201


@contextlib.asynccontextmanager
async def running(station: SimulatedStation | SimulatedStation201) -> AsyncIterator[None]:
    task = asyncio.create_task(station.run())
    try:
        yield
    finally:
        await station.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms(id_tags={"ALLOWED": "Accepted", "STOLEN": "Blocked"})
    await server.start()
    yield server
    await server.stop()


async def test_a_16_station_boots_starts_and_gets_the_csms_own_transaction_id(csms):
    station = SimulatedStation(StationSpec("CP1", id_tag="ALLOWED", meter_interval_s=0.2),
                               csms.url)
    async with running(station):
        await csms.wait_for("StartTransaction", station_id="CP1")
        await wait_until(lambda: station.transaction_id is not None, what="a transaction")
        assert station.transaction_id == 5000
        assert csms.transactions[5000] == ("CP1", 1, "ALLOWED")
        await csms.wait_for("MeterValues", station_id="CP1")
    actions = [r.action for r in csms.calls(station_id="CP1")]
    assert actions[:2] == ["BootNotification", "StatusNotification"]
    assert all(r.at.tzinfo is not None for r in csms.received)


@pytest.mark.parametrize(("id_tag", "status"), [("STOLEN", "Blocked"), ("NOBODY", "Invalid")])
async def test_unlisted_and_blocked_tags_are_not_accepted(csms, id_tag, status):
    station = SimulatedStation(StationSpec("CP2", id_tag=id_tag), csms.url)
    async with running(station):
        await csms.wait_for("StartTransaction", station_id="CP2")
        # the station ends the session it was refused: StopTransaction follows
        await csms.wait_for("StopTransaction", station_id="CP2")
    assert station.transaction_id is None
    assert csms.id_tag_status(id_tag) == status


async def test_requests_to_a_16_station_return_its_answers(csms):
    station = SimulatedStation(StationSpec("CP3", plugged_in=False), csms.url)
    async with running(station):
        await wait_until(lambda: station.booted and "CP3" in csms.stations, what="boot")
        profile = {"chargingProfileId": 77, "stackLevel": 2,
                   "chargingProfilePurpose": "ChargePointMaxProfile",
                   "chargingProfileKind": "Absolute",
                   "chargingSchedule": {"startSchedule": "2024-01-01T00:00:00Z",
                                        "chargingRateUnit": "A",
                                        "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                    "limit": 10.0}]}}
        answer = await csms.request("CP3", "SetChargingProfile",
                                    {"connectorId": 0, "csChargingProfiles": profile})
        assert answer == {"status": "Accepted"}
        composite = await csms.request("CP3", "GetCompositeSchedule",
                                       {"connectorId": 0, "duration": 60,
                                        "chargingRateUnit": "A"})
        assert composite["status"] == "Accepted"
        assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10.0
        assert await csms.request("CP3", "ClearChargingProfile", {"id": 77}) == \
            {"status": "Accepted"}
        assert (await csms.request("CP3", "ChangeConfiguration",
                                   {"key": "MeterValueSampleInterval", "value": "5"}))["status"] \
            == "Accepted"
        assert (await csms.request("CP3", "TriggerMessage",
                                   {"requestedMessage": "Heartbeat"}))["status"] == "Accepted"
        await csms.wait_for("Heartbeat", station_id="CP3")
        started = await csms.request("CP3", "RemoteStartTransaction",
                                     {"idTag": "ALLOWED", "connectorId": 1})
        assert started == {"status": "Accepted"}
        station.plug_in()
        await csms.wait_for("StartTransaction", station_id="CP3")
        await wait_until(lambda: station.transaction_id is not None, what="remote start")
        stopped = await csms.request("CP3", "RemoteStopTransaction",
                                     {"transactionId": station.transaction_id})
        assert stopped == {"status": "Accepted"}
        await csms.wait_for("StopTransaction", station_id="CP3")
        with pytest.raises(ValueError, match="not a request"):
            await csms.request("CP3", "RequestStartTransaction", {})


async def test_a_201_station_and_the_201_requests(csms):
    station = SimulatedStation201(StationSpec("EV1", id_tag="ALLOWED", meter_interval_s=0.2),
                                  csms.url)
    async with running(station):
        started = await csms.wait_for("TransactionEvent", station_id="EV1")
        assert started[0].payload["eventType"] == "Started"
        answer = await csms.request("EV1", "GetVariables", {"getVariableData": [
            {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Enabled"}}]})
        assert answer["getVariableResult"][0]["attributeValue"] == "true"
        profile = {"id": 5, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
                   "chargingProfileKind": "Absolute",
                   "chargingSchedule": [{"id": 1, "startSchedule": "2024-01-01T00:00:00Z",
                                         "chargingRateUnit": "A",
                                         "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                     "limit": 8.0}]}]}
        assert (await csms.request("EV1", "SetChargingProfile",
                                   {"evseId": 1, "chargingProfile": profile}))["status"] \
            == "Accepted"
        composite = await csms.request("EV1", "GetCompositeSchedule",
                                       {"duration": 60, "evseId": 1, "chargingRateUnit": "A"})
        assert composite["schedule"]["chargingSchedulePeriod"][0]["limit"] == 8.0
        assert (await csms.request("EV1", "ClearChargingProfile",
                                   {"chargingProfileId": 5}))["status"] == "Accepted"
        set_answer = await csms.request("EV1", "SetVariables", {"setVariableData": [
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
             "attributeValue": "1"}]})
        assert set_answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        # a remote stop ends the session, a remote start begins the next one
        tx = started[0].payload["transactionInfo"]["transactionId"]
        assert (await csms.request("EV1", "RequestStopTransaction", {"transactionId": tx})
                )["status"] == "Accepted"
        await wait_until(lambda: station.transaction_id is None, what="the stop")
        assert (await csms.request("EV1", "RequestStartTransaction", {
            "idToken": {"idToken": "ALLOWED", "type": "ISO14443"}, "remoteStartId": 7,
            "evseId": 1}))["status"] == "Accepted"
        await wait_until(lambda: any(r.payload["transactionInfo"].get("remoteStartId") == 7
                                     for r in csms.calls("TransactionEvent", "EV1")),
                         what="the remotely started transaction")
        # the simulated 2.0.1 station does not reset: its CALLERROR comes back
        with pytest.raises(CsmsCallError, match="NotImplemented"):
            await csms.request("EV1", "Reset", {"type": "Immediate"})
    events = [r.payload for r in csms.calls("TransactionEvent", "EV1")]
    assert events[0]["idToken"]["idToken"] == "ALLOWED"
    ended = [e for e in events if e["eventType"] == "Ended"]
    assert ended[0]["transactionInfo"] == {"transactionId": tx, "stoppedReason": "Remote"}


async def test_basic_auth_when_configured():
    csms = UpstreamCsms(passwords={"CP9": "s3cret-password"})
    await csms.start()
    try:
        good = SimulatedStation(StationSpec("CP9", plugged_in=False), csms.url)
        token = base64.b64encode(b"CP9:s3cret-password").decode()
        good.connect_options = {"additional_headers": {"Authorization": f"Basic {token}"}}
        bad = SimulatedStation(StationSpec("CP9", plugged_in=False), csms.url)
        wrong = base64.b64encode(b"CP9:guess").decode()
        bad.connect_options = {"additional_headers": {"Authorization": f"Basic {wrong}"}}
        async with running(bad):
            await wait_until(lambda: csms.refused_logins >= 1, what="a refused login")
        assert csms.calls() == []
        async with running(good):
            await csms.wait_for("BootNotification", station_id="CP9")
    finally:
        await csms.stop()


async def test_answers_carry_an_expiry_when_configured():
    csms = UpstreamCsms(id_tags=["ALLOWED"], auth_valid_for=timedelta(hours=1))
    await csms.start()
    try:
        async with websockets.connect(f"{csms.url}/CP4", subprotocols=["ocpp1.6"]) as ws:
            await ws.send(json.dumps([2, "a1", "Authorize", {"idTag": "ALLOWED"}]))
            reply = json.loads(await ws.recv())
    finally:
        await csms.stop()
    assert reply[:2] == [3, "a1"]
    assert reply[2]["idTagInfo"]["status"] == "Accepted"
    expiry = datetime.fromisoformat(reply[2]["idTagInfo"]["expiryDate"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expiry - datetime.now(UTC) <= timedelta(hours=1)
    assert [(r.action, r.message_id) for r in csms.calls()] == [("Authorize", "a1")]


async def test_goes_down_and_comes_back_on_the_same_port(csms):
    station = SimulatedStation(StationSpec("CP5", plugged_in=False), csms.url)
    async with running(station):
        await csms.wait_for("BootNotification", station_id="CP5")
        # its status after the boot arrives first: one cut off by the outage is not resent
        before = len(await csms.wait_for("StatusNotification", station_id="CP5"))
        port = csms.port
        await csms.stop(abort=True)
        assert not csms.running
        await wait_until(lambda: not station.connected, what="the station to notice")
        await csms.start()
        assert csms.port == port
        await wait_until(lambda: "CP5" in csms.stations, timeout=20, what="reconnection")
        await csms.request("CP5", "TriggerMessage", {"requestedMessage": "StatusNotification"})
        await csms.wait_for("StatusNotification", count=before + 1, station_id="CP5")


async def test_a_held_answer_is_recorded_at_once_and_answered_on_release(csms):
    station = SimulatedStation(StationSpec("CP6", id_tag="ALLOWED"), csms.url)
    csms.hold("StartTransaction")
    async with running(station):
        await csms.wait_for("StartTransaction", station_id="CP6")
        await asyncio.sleep(0.3)
        assert station.transaction_id is None
        csms.release("StartTransaction")
        await wait_until(lambda: station.transaction_id == 5000, what="the held answer")
