"""Local-controller mode: stations through drbridge to the operator's CSMS and back.

Real parts throughout: the operator's CSMS (``bridge.sim.csms``, the ``ocpp`` library's
central-system side), simulated 1.6J and 2.0.1 stations over websockets, a running bridge
with a VTN. What the CSMS receives is compared with what the station sent, and what the
station gets with what the CSMS answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from conftest import SiteHarness, wait_steered, wait_until
from lc_helpers import add_station201, upstream_config
from ocpp.exceptions import OCPPError

from bridge.sim.csms import CsmsCallError, UpstreamCsms
from bridge.upstream.outage import LOCAL_TX_BASE

TOKEN = {"idToken": "ALLOWED", "type": "ISO14443"}


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms(id_tags={"ALLOWED": "Accepted", "STOLEN": "Blocked"})
    await server.start()
    yield server
    await server.stop()


def answers_received(csms: UpstreamCsms) -> int:
    return sum(1 for r in csms.received if r.kind in ("CALLRESULT", "CALLERROR"))


# workers 1: the station's websocket ends in an edge worker, relayed to the bridge
@pytest.mark.parametrize("workers", [0, 1])
async def test_16_every_message_family_goes_both_ways_and_drbridge_reads_it(
        site: SiteHarness, csms: UpstreamCsms, workers: int):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms) + f"workers: {workers}\n")
    station = site.add_station("CP1", id_tag="ALLOWED", meter_interval_s=0.2)
    # station -> CSMS, the station's own flow: boot, statuses, a session with the CSMS's id
    await csms.wait_for("MeterValues", station_id="CP1")
    assert station.transaction_id == 5000  # the CSMS's own id, not drbridge's
    assert csms.transactions[5000] == ("CP1", 1, "ALLOWED")
    boot = csms.calls("BootNotification", "CP1")[0].payload
    assert boot == {"chargePointModel": "sim-1", "chargePointVendor": "drbridge-sim"}
    assert csms.calls("StatusNotification", "CP1")
    meter = csms.calls("MeterValues", "CP1")[0].payload
    assert meter["transactionId"] == 5000 and meter["connectorId"] == 1
    # drbridge reads it all for its own plan: the session, under the station's id for it,
    # its meter values, and it steers the station
    await wait_steered(bridge, "CP1")
    [(tx, session)] = bridge.station_events.sessions.items()
    assert bridge.station_events.station_transaction("CP1", tx) == "5000"
    await wait_until(lambda: bridge.station_events.load_w() > 0, what="measured load")
    assert bridge.store.booted("CP1")

    # station -> CSMS, every other 1.6 request: the CSMS's answer comes back unchanged
    sent = {
        "Heartbeat": {},
        "Authorize": {"idTag": "NOBODY"},
        "DataTransfer": {"vendorId": "com.example", "messageId": "hello", "data": "x"},
        "FirmwareStatusNotification": {"status": "Downloading"},
        "DiagnosticsStatusNotification": {"status": "Uploading"},
    }
    answers = {action: await station.request(action, payload)
               for action, payload in sent.items()}
    for action, payload in sent.items():
        assert csms.calls(action, "CP1")[-1].payload == payload
    # drbridge as a central system accepts every id tag: this answer is the CSMS's
    assert answers["Authorize"] == {"idTagInfo": {"status": "Invalid"}}
    assert answers["DataTransfer"] == {"status": "UnknownVendorId"}
    assert "currentTime" in answers["Heartbeat"]

    # CSMS -> station: the station's answers come back unchanged
    configuration = await csms.request("CP1", "GetConfiguration",
                                       {"key": ["NumberOfConnectors"]})
    assert configuration["configurationKey"] == [
        {"key": "NumberOfConnectors", "readonly": True, "value": "1"}]
    assert (await csms.request("CP1", "ChangeConfiguration", {
        "key": "MeterValueSampleInterval", "value": "1"}))["status"] == "Accepted"
    profile = {"chargingProfileId": 77, "stackLevel": 0,
               "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                   {"startPeriod": 0, "limit": 30.0}]}}
    assert (await csms.request("CP1", "SetChargingProfile", {
        "connectorId": 1, "csChargingProfiles": profile}))["status"] == "Accepted"
    assert station.installed_profiles[(1, "TxDefaultProfile", 0)]["chargingProfileId"] == 77
    composite = await csms.request("CP1", "GetCompositeSchedule",
                                   {"connectorId": 1, "duration": 60})
    assert composite["status"] == "Accepted" and composite["connectorId"] == 1
    assert (await csms.request("CP1", "ClearChargingProfile", {"id": 77}))["status"] \
        == "Accepted"
    assert (1, "TxDefaultProfile", 0) not in station.installed_profiles
    heartbeats = len(csms.calls("Heartbeat", "CP1"))
    assert (await csms.request("CP1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            )["status"] == "Accepted"
    await csms.wait_for("Heartbeat", heartbeats + 1, station_id="CP1")
    # a remote stop of the CSMS's transaction, and a remote start of the next one
    assert (await csms.request("CP1", "RemoteStopTransaction", {"transactionId": 5000})
            )["status"] == "Accepted"
    stop = (await csms.wait_for("StopTransaction", station_id="CP1"))[0].payload
    assert stop["transactionId"] == 5000 and stop["reason"] == "Remote"
    await wait_until(lambda: not bridge.station_events.sessions, what="drbridge reading the stop")
    assert (await csms.request("CP1", "RemoteStartTransaction", {"idTag": "ALLOWED"})
            )["status"] == "Accepted"
    await wait_until(lambda: station.transaction_id == 5001, what="the next transaction")
    await wait_until(lambda: len(bridge.station_events.sessions) == 1,
                     what="drbridge reading the start")
    boots = len(csms.calls("BootNotification", "CP1"))
    assert (await csms.request("CP1", "Reset", {"type": "Soft"}))["status"] == "Accepted"
    await csms.wait_for("BootNotification", boots + 1, station_id="CP1")

    # drbridge's own calls (capabilities, profiles, checks) went to the station, and none
    # of their answers reached the CSMS: it got answers to its own requests only (9)
    assert bridge.station_events.calls_out["SetChargingProfile"] >= 1
    assert bridge.station_events.calls_out["GetConfiguration"] >= 1
    assert answers_received(csms) == 9


# workers 1: the station's websocket ends in an edge worker, relayed to the bridge
@pytest.mark.parametrize("workers", [0, 1])
async def test_201_every_message_family_goes_both_ways_and_drbridge_reads_it(
        site: SiteHarness, csms: UpstreamCsms, workers: int):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms) + f"workers: {workers}\n")
    station = add_station201(site, "EV1", id_tag="ALLOWED", meter_interval_s=0.2)
    started = (await csms.wait_for("TransactionEvent", station_id="EV1"))[0].payload
    assert started["eventType"] == "Started" and started["idToken"] == TOKEN
    await csms.wait_for("TransactionEvent", 2, station_id="EV1")  # Updated, meter values
    await wait_steered(bridge, "EV1")
    [(tx, _)] = bridge.station_events.sessions.items()
    assert bridge.station_events.station_transaction("EV1", tx) == "EV1-tx1"
    assert csms.calls("BootNotification", "EV1") and csms.calls("StatusNotification", "EV1")
    assert station.id_token_answers[0] == "Accepted"  # the CSMS's allow-list answered

    sent = {
        "Heartbeat": {},
        "Authorize": {"idToken": {"idToken": "STOLEN", "type": "ISO14443"}},
        "DataTransfer": {"vendorId": "com.example"},
        "SecurityEventNotification": {"type": "SettingsUpdated",
                                      "timestamp": "2025-06-01T12:00:00Z"},
        "FirmwareStatusNotification": {"status": "Downloading"},
        "LogStatusNotification": {"status": "Uploading"},
        "NotifyEvent": {"generatedAt": "2025-06-01T12:00:00Z", "seqNo": 0, "tbc": False,
                        "eventData": [
            {"eventId": 1, "timestamp": "2025-06-01T12:00:00Z", "trigger": "Alerting",
             "actualValue": "1", "eventNotificationType": "HardWiredNotification",
             "component": {"name": "ChargingStation"}, "variable": {"name": "Problem"}}]},
    }
    answers = {action: await station.request(action, payload)
               for action, payload in sent.items()}
    for action, payload in sent.items():
        assert csms.calls(action, "EV1")[-1].payload == payload
    assert answers["Authorize"] == {"idTokenInfo": {"status": "Blocked"}}
    assert answers["DataTransfer"] == {"status": "UnknownVendorId"}
    # a request drbridge has no handler for goes up too, and the CSMS's CALLERROR comes back
    with pytest.raises(OCPPError, match="NotImplemented"):
        await station.request("NotifyCustomerInformation", {
            "data": "x", "seqNo": 0, "generatedAt": "2025-06-01T12:00:00Z", "requestId": 1})
    assert csms.calls("NotifyCustomerInformation", "EV1")

    # CSMS -> station
    variables = await csms.request("EV1", "GetVariables", {"getVariableData": [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ProfileStackLevel"}}]})
    assert variables["getVariableResult"][0]["attributeValue"] == "8"
    assert (await csms.request("EV1", "SetVariables", {"setVariableData": [
        {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
         "attributeValue": "1"}]}))["setVariableResult"][0]["attributeStatus"] == "Accepted"
    profile = {"id": 5, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute", "chargingSchedule": [{
                   "id": 1, "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A",
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 30.0}]}]}
    assert (await csms.request("EV1", "SetChargingProfile", {
        "evseId": 1, "chargingProfile": profile}))["status"] == "Accepted"
    assert station.installed_profiles[(1, "TxDefaultProfile", 1)]["id"] == 5
    # the station's report of its profiles reaches the CSMS under the CSMS's request id
    assert (await csms.request("EV1", "GetChargingProfiles", {
        "requestId": 42, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}})
            )["status"] == "Accepted"
    [report] = await csms.wait_for("ReportChargingProfiles", station_id="EV1")
    assert report.payload["requestId"] == 42
    assert [p["id"] for p in report.payload["chargingProfile"]] == [5]
    composite = await csms.request("EV1", "GetCompositeSchedule",
                                   {"duration": 60, "evseId": 1, "chargingRateUnit": "A"})
    assert composite["status"] == "Accepted"
    assert (await csms.request("EV1", "ClearChargingProfile", {"chargingProfileId": 5})
            )["status"] == "Accepted"
    assert (await csms.request("EV1", "TriggerMessage", {
        "requestedMessage": "TransactionEvent", "evse": {"id": 1}}))["status"] == "Accepted"
    await wait_until(lambda: any(r.payload["triggerReason"] == "Trigger"
                                 for r in csms.calls("TransactionEvent", "EV1")),
                     what="the triggered TransactionEvent")
    assert (await csms.request("EV1", "RequestStopTransaction", {"transactionId": "EV1-tx1"})
            )["status"] == "Accepted"
    await wait_until(lambda: any(r.payload["eventType"] == "Ended"
                                 for r in csms.calls("TransactionEvent", "EV1")),
                     what="the Ended event")
    await wait_until(lambda: not bridge.station_events.sessions, what="drbridge reading the end")
    await wait_until(lambda: station.transaction_id is None, what="the station's end")
    assert (await csms.request("EV1", "RequestStartTransaction", {
        "idToken": TOKEN, "remoteStartId": 3, "evseId": 1}))["status"] == "Accepted"
    await wait_until(lambda: len(bridge.station_events.sessions) == 1,
                     what="drbridge reading the start")
    # a CALLERROR of the station's comes back as it is
    with pytest.raises(CsmsCallError, match="NotImplemented"):
        await csms.request("EV1", "Reset", {"type": "Immediate"})

    # drbridge's own device-model report and profile list went to drbridge only
    calls_out = bridge.station_events.calls_out
    assert calls_out["GetReport"] >= 1 and calls_out["GetChargingProfiles"] >= 1
    assert csms.calls("NotifyReport", "EV1") == []
    assert len(csms.calls("ReportChargingProfiles", "EV1")) == 1
    assert answers_received(csms) == 10  # its ten requests


async def test_the_operators_authorization_is_the_stations(site: SiteHarness, csms: UpstreamCsms):
    """Refusals reach the station; drbridge accepts no id on its own while the operator
    answers, whatever its offline policy."""
    await site.start_bridge(ocpp_extra=upstream_config(csms, offline_authorization="accept"))
    site.add_station("CP1", id_tag="STOLEN")
    unknown = add_station201(site, "EV2", id_tag="NOBODY")
    # the 1.6 station is refused its start and ends it (StopTransactionOnInvalidId)
    stop = (await csms.wait_for("StopTransaction", station_id="CP1"))[0].payload
    assert stop["reason"] == "DeAuthorized"
    assert csms.calls("StartTransaction", "CP1")[0].payload["idTag"] == "STOLEN"
    await wait_until(lambda: "Invalid" in unknown.id_token_answers,
                     what="the 2.0.1 station refused")
    ended = await csms.wait_for("TransactionEvent", 2, station_id="EV2")
    assert ended[-1].payload["eventType"] == "Ended"
    assert ended[-1].payload["transactionInfo"]["stoppedReason"] == "DeAuthorized"


async def test_16_a_refusal_without_transaction_id_reaches_the_station_with_a_local_id(
        site: SiteHarness):
    """The operator refuses a 1.6 start without the transactionId 1.6 requires in the
    answer, as some central systems do. A strict station (the simulated one checks the
    schema) takes that for no answer and sends the start again, every second. drbridge
    passes the refusal on with a transaction id of its own, and answers what the station
    sends about that transaction itself: the operator never had it."""
    csms = UpstreamCsms(id_tags={"ALLOWED": "Accepted"},
                        start_refusal_without_transaction_id=True)
    async with csms:
        # call_timeout_s: the start must be answered by the CSMS, not in its place
        bridge = await site.start_bridge(ocpp_extra=upstream_config(csms, call_timeout_s=5))
        upstream = bridge.upstream
        assert upstream is not None
        # plugged in once the link is up: a start before it is answered in the CSMS's place
        station = site.add_station("CP2", id_tag="STOLEN", plugged_in=False)
        await csms.wait_for("BootNotification", station_id="CP2", timeout=20)
        station.plug_in()
        await csms.wait_for("StartTransaction", station_id="CP2")
        # the station took the refusal and stopped the transaction (StopTransactionOnInvalidId)
        await wait_until(lambda: upstream.stats.messages[
            "to_operator", "answered_locally"] >= 1, what="drbridge answering the stop")
        given = [(row["local_tx"], row["started_seq"], row["upstream_tx"]) for row in
                 upstream.db["upstream_transactions"].rows_where("station_id = ?", ["CP2"])]
        assert len(given) == 1 and given[0][0] >= LOCAL_TX_BASE and given[0][1:] == (None, None)
        # a late reading about that transaction is answered by drbridge too
        assert await station.request("MeterValues", {
            "connectorId": 1, "transactionId": given[0][0], "meterValue": [{
                "timestamp": "2026-01-01T00:00:00Z",
                "sampledValue": [{"value": "0", "measurand": "Energy.Active.Import.Register",
                                  "unit": "Wh"}]}]}) == {}
        await asyncio.sleep(2)  # time for a start sent again, which must not come
        assert [r.payload["idTag"] for r in csms.calls("StartTransaction", "CP2")] == ["STOLEN"]
        assert csms.calls("StopTransaction", "CP2") == []
        assert csms.calls("MeterValues", "CP2") == []
        assert csms.transactions == {}
        assert station.transaction_id is None and station.power_w == 0
        assert upstream.stats.messages["to_operator", "answered_locally"] == 2
        assert upstream.backlog("CP2") == 0


async def test_a_station_that_does_not_wait_for_its_answers_is_held_to_a_bound(
        site: SiteHarness, csms: UpstreamCsms):
    await site.start_bridge(ocpp_extra=upstream_config(csms, call_timeout_s=5))
    csms.hold("Heartbeat")  # the operator is slow: requests pile up in drbridge
    try:
        async with websockets.connect(f"{site.url}/CP9", subprotocols=["ocpp1.6"]) as ws:
            for i in range(80):
                await ws.send(json.dumps([2, f"h{i}", "Heartbeat", {}]))
            refused = []
            while True:
                try:
                    async with asyncio.timeout(2):
                        frame = json.loads(await ws.recv())
                except TimeoutError:
                    break
                if frame[0] == 4:
                    assert frame[2] == "GenericError"
                    refused.append(int(frame[1][1:]))
        # one goes up, 64 wait their turn (the one going up among them or not, as the
        # frames arrive), the rest are refused at once
        assert refused in (list(range(64, 80)), list(range(65, 80)))
    finally:
        csms.release("Heartbeat")


async def test_a_station_offering_2_1_and_2_0_1_is_forwarded_in_2_0_1(
        site: SiteHarness, csms: UpstreamCsms, caplog: pytest.LogCaptureFixture):
    """The operator's CSMS gets the version it is forwarded; a 2.1-only station is still
    served, by drbridge alone."""
    await site.start_bridge(ocpp_extra=upstream_config(csms))
    async with websockets.connect(f"{site.url}/EV7", subprotocols=["ocpp2.1", "ocpp2.0.1"]) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
        await ws.send(json.dumps([2, "b1", "BootNotification", {
            "reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}]))
        await csms.wait_for("BootNotification", station_id="EV7")
    async with websockets.connect(f"{site.url}/EV8", subprotocols=["ocpp2.1"]) as ws:
        assert ws.subprotocol == "ocpp2.1"
        await ws.send(json.dumps([2, "b1", "BootNotification", {
            "reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}]))
        answer = json.loads(await ws.recv())
        assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
    assert csms.calls(station_id="EV8") == []
    assert "EV8: ocpp2.1 is not forwarded to the operator" in caplog.text


async def test_a_station_leaving_is_let_go_at_once_when_the_operator_does_not_read(
        site: SiteHarness, csms: UpstreamCsms):
    """The station's link to the operator closes with it; an operator that no longer reads
    (a hung back office, a network that stopped delivering) never answers the close frame,
    and drbridge does not wait long for it: the station counts as gone within seconds."""
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1")

    def view() -> Any:
        [row] = [s for s in bridge.view.stations() if s.station_id == "CP1"]
        return row

    await csms.wait_for("StatusNotification", station_id="CP1")
    await wait_until(lambda: view().upstream.link == "up", what="CP1's link up")
    csms.stall("CP1")
    loop = asyncio.get_running_loop()
    left_at = loop.time()
    await station.stop()  # a clean close towards drbridge
    await wait_until(lambda: view().upstream.link == "closed"
                     and not view().steering.connected, timeout=30,
                     what="drbridge letting CP1 go")
    # websockets' default wait for the closing handshake is 10 s; drbridge's is 1 s
    assert loop.time() - left_at < 6
    await csms.stop(abort=True)  # the stalled link would hold a clean close for 10 s


# The operator's requests of the families the tests above leave out (availability, the
# authorization cache and local list, reservations, firmware and diagnostics, data
# transfer): each reaches the station as the operator sent it, and the station's answer
# comes back unchanged. drbridge has no business with any of them.
OTHER_REQUESTS_16 = {
    "ChangeAvailability": ({"connectorId": 1, "type": "Inoperative"}, {"status": "Accepted"}),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "DataTransfer": ({"vendorId": "com.example", "messageId": "m", "data": "d"},
                     {"status": "UnknownVendorId"}),
    "SendLocalList": ({"listVersion": 7, "updateType": "Full", "localAuthorizationList": [
        {"idTag": "CARD1", "idTagInfo": {"status": "Accepted"}}]}, {"status": "Accepted"}),
    "GetLocalListVersion": ({}, {"listVersion": 7}),
    "ReserveNow": ({"connectorId": 1, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "ALLOWED",
                    "reservationId": 12}, {"status": "Accepted"}),
    "CancelReservation": ({"reservationId": 12}, {"status": "Accepted"}),
    "UpdateFirmware": ({"location": "https://fw.example/f.bin",
                        "retrieveDate": "2030-01-01T00:00:00Z"}, {}),
    "GetDiagnostics": ({"location": "ftp://diag.example/"}, {"fileName": "CP1-diagnostics.log"}),
}

OTHER_REQUESTS_201 = {
    "ChangeAvailability": ({"operationalStatus": "Inoperative", "evse": {"id": 1}},
                           {"status": "Accepted"}),
    "UnlockConnector": ({"evseId": 1, "connectorId": 1}, {"status": "Unlocked"}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "DataTransfer": ({"vendorId": "com.example", "messageId": "m", "data": "d"},
                     {"status": "UnknownVendorId"}),
    "SendLocalList": ({"versionNumber": 7, "updateType": "Full", "localAuthorizationList": [
        {"idToken": TOKEN, "idTokenInfo": {"status": "Accepted"}}]}, {"status": "Accepted"}),
    "GetLocalListVersion": ({}, {"versionNumber": 7}),
    "ReserveNow": ({"id": 12, "expiryDateTime": "2030-01-01T00:00:00Z", "idToken": TOKEN,
                    "evseId": 1}, {"status": "Accepted"}),
    "CancelReservation": ({"reservationId": 12}, {"status": "Accepted"}),
    "UpdateFirmware": ({"requestId": 3, "firmware": {
        "location": "https://fw.example/f.bin", "retrieveDateTime": "2030-01-01T00:00:00Z"}},
        {"status": "Accepted"}),
    "GetLog": ({"logType": "DiagnosticsLog", "requestId": 4, "log": {
        "remoteLocation": "https://logs.example/"}}, {"status": "Accepted", "filename": "EV1.log"}),
    "GetTransactionStatus": ({"transactionId": "EV1-tx1"},
                             {"messagesInQueue": False, "ongoingIndicator": True}),
    "CustomerInformation": ({"requestId": 5, "report": True, "clear": False},
                            {"status": "Rejected"}),
}


async def test_16_the_operators_other_requests_reach_the_station_and_come_back(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = site.add_station("CP1", id_tag="ALLOWED")
    await wait_steered(bridge, "CP1")
    for action, (payload, answer) in OTHER_REQUESTS_16.items():
        assert await csms.request("CP1", action, payload) == answer, action
        assert [p for a, p in station.received if a == action] == [payload], action
    assert answers_received(csms) == len(OTHER_REQUESTS_16)


async def test_201_the_operators_other_requests_and_its_base_report_reach_it_and_come_back(
        site: SiteHarness, csms: UpstreamCsms):
    bridge = await site.start_bridge(ocpp_extra=upstream_config(csms))
    station = add_station201(site, "EV1", id_tag="ALLOWED")
    await wait_steered(bridge, "EV1")
    await wait_until(lambda: station.transaction_id == "EV1-tx1", what="the transaction")
    for action, (payload, answer) in OTHER_REQUESTS_201.items():
        assert await csms.request("EV1", action, payload) == answer, action
        assert [p for a, p in station.received if a == action] == [payload], action
    # the operator's own report: the station's parts go to the operator, under its request
    # id, beside the reports drbridge asks for itself (which stay with drbridge)
    assert (await csms.request("EV1", "GetBaseReport", {
        "requestId": 77, "reportBase": "FullInventory"}))["status"] == "Accepted"
    await wait_until(lambda: any(not part.payload["tbc"]
                                 for part in csms.calls("NotifyReport", "EV1")),
                     what="the report's last part")
    assert {part.payload["requestId"] for part in csms.calls("NotifyReport", "EV1")} == {77}
    assert bridge.station_events.calls_out["GetReport"] >= 1
