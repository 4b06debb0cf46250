"""Near-misses of real chargers: read when their meaning is unambiguous, refused when not,
and meter samples that cannot be readings left out of every aggregate.

The pure normaliser is tested directly; the rest over real websockets against a running
bridge, with stations driven frame by frame."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from conftest import SiteHarness, wait_until
from websockets.typing import Subprotocol

from bridge.app import Bridge
from bridge.ocpp import leniency
from bridge.ocpp.leniency import Repair, bounded_schema, repair, validate_leniently
from bridge.ocpp.v201 import sampled_values
from bridge.ocpp.wire import schema, validator
from bridge.telemetry import read_meter_value
from bridge.web.metrics import render_metrics
from policies.fleet import value_at

# --- the pure normaliser -------------------------------------------------------------------

START = schema("v16", "StartTransaction")
VALID_START = {"connectorId": 1, "idTag": "TAG", "meterStart": 0,
               "timestamp": "2026-12-02T10:00:00Z"}


def lenient(action: str, payload: Any) -> tuple[Any, tuple[Repair, ...]]:
    return validate_leniently(validator("v16", action), payload,
                              lambda: schema("v16", action))


def kinds(repairs: tuple[Repair, ...]) -> set[str]:
    return {r.kind for r in repairs}


def test_valid_requests_pass_untouched():
    payload = dict(VALID_START)
    read, repairs = lenient("StartTransaction", payload)
    assert read is payload and repairs == ()  # no copy, no walk: the hot path


@pytest.mark.parametrize(("change", "kind", "read"), [
    ({"timestamp": "2026-12-02T10:00:00"}, leniency.NAIVE_TIMESTAMP,
     {"timestamp": "2026-12-02T10:00:00Z"}),
    ({"timestamp": "2026-12-02T10:00:00.250"}, leniency.NAIVE_TIMESTAMP,
     {"timestamp": "2026-12-02T10:00:00.250000Z"}),
    ({"timestamp": "2026-12-02 11:00:00+01:00"}, leniency.TIMESTAMP_FORM,
     {"timestamp": "2026-12-02T11:00:00+01:00"}),
    ({"meterStart": 0.0}, leniency.INTEGRAL_FLOAT, {"meterStart": 0}),
    ({"meterStart": 1234.0}, leniency.INTEGRAL_FLOAT, {"meterStart": 1234}),
    ({"meterStart": 1234.6}, leniency.ROUNDED_REGISTER, {"meterStart": 1235}),
    ({"meterStart": " 1234 "}, leniency.NUMERIC_STRING, {"meterStart": 1234}),
    ({"connectorId": "2"}, leniency.NUMERIC_STRING, {"connectorId": 2}),
    ({"idTag": 4711}, leniency.NUMBER_AS_STRING, {"idTag": "4711"}),
    ({"vendorSessionRef": {"a": [1, 2]}}, leniency.UNKNOWN_PROPERTY, {}),
])
def test_each_unambiguous_near_miss_is_repaired(change, kind, read):
    read_payload, repairs = lenient("StartTransaction", {**VALID_START, **change})
    expected = {**VALID_START, **read}
    if kind == leniency.UNKNOWN_PROPERTY:
        expected = dict(VALID_START)
    assert read_payload == expected and kinds(repairs) == {kind}


def test_repairs_say_where_and_enum_case_is_matched():
    payload = {"connectorId": 1, "meterValue": [{"timestamp": "2026-12-02T10:00:00",
               "sampledValue": [{"value": 230.5, "measurand": "voltage", "phase": "l1-n"},
                                {"value": "7000", "measurand": " Power.Active.Import "}]}]}
    read, repairs = lenient("MeterValues", payload)
    assert read["meterValue"][0] == {"timestamp": "2026-12-02T10:00:00Z", "sampledValue": [
        {"value": "230.5", "measurand": "Voltage", "phase": "L1-N"},
        {"value": "7000", "measurand": "Power.Active.Import"}]}
    assert set(repairs) == {
        Repair(leniency.NAIVE_TIMESTAMP, "meterValue[0].timestamp"),
        Repair(leniency.NUMBER_AS_STRING, "meterValue[0].sampledValue[0].value"),
        Repair(leniency.ENUM_CASE, "meterValue[0].sampledValue[0].measurand"),
        Repair(leniency.ENUM_CASE, "meterValue[0].sampledValue[0].phase"),
        Repair(leniency.ENUM_CASE, "meterValue[0].sampledValue[1].measurand")}
    status, repairs = lenient("StatusNotification", {"connectorId": 1, "status": "charging",
                                                     "errorCode": "NOERROR"})
    assert (status["status"], status["errorCode"]) == ("Charging", "NoError")


@pytest.mark.parametrize("change", [
    {"meterStart": "abc"},  # not a number
    {"meterStart": "NaN"},
    {"meterStart": 1e308 * 10},  # inf
    {"meterStart": True},  # true is not 1
    {"connectorId": 1.5},  # an identifier with a fraction means nothing
    {"connectorId": 10**30},  # beyond what the store holds
    {"meterStart": 1e30},
    {"timestamp": "2026-12-02"},  # a date does not say when
    {"timestamp": "yesterday"},
    {"idTag": "x" * 21},  # too long for an idTag: truncating would change the token
    {"idTag": None},
    {"idTag": 10**400},  # a string of it would be too long
    {"connectorId": "1_000"},  # Python reads it, JSON does not
    {"connectorId": "0x10"},
])
def test_what_cannot_be_understood_is_refused(change):
    import fastjsonschema
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        lenient("StartTransaction", {**VALID_START, **change, "extra": 1})


def test_a_missing_field_is_refused_and_201_references_are_followed():
    import fastjsonschema
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        lenient("StartTransaction", {k: v for k, v in VALID_START.items() if k != "idTag"})
    name = "StatusNotificationRequest"
    read, repairs = validate_leniently(validator("v201", name), {
        "timestamp": "2026-12-02T10:00:00", "connectorStatus": "occupied", "evseId": "1",
        "connectorId": 1, "vendorNote": "x"}, lambda: schema("v201", name))
    assert read == {"timestamp": "2026-12-02T10:00:00Z", "connectorStatus": "Occupied",
                    "evseId": 1, "connectorId": 1}
    assert kinds(repairs) == {leniency.NAIVE_TIMESTAMP, leniency.ENUM_CASE,
                              leniency.NUMERIC_STRING, leniency.UNKNOWN_PROPERTY}


def test_repair_is_pure_and_bounded_schema_keeps_explicit_bounds():
    payload = {**VALID_START, "meterStart": 0.0}
    repaired, _ = repair(payload, START)
    assert payload["meterStart"] == 0.0 and repaired is not payload
    assert bounded_schema({"type": "integer", "minimum": 0}) == \
        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def test_meter_samples_that_cannot_be_readings_are_left_out():
    reading = read_meter_value({"timestamp": "2026-12-02T10:00:00", "sampledValue": [
        {"value": "NaN", "measurand": "Power.Active.Import"},
        {"value": "inf", "measurand": "Energy.Active.Import.Register"},
        {"value": "1e308", "measurand": "Voltage", "phase": "L1-N", "unit": "kV"},
        {"value": "-16", "measurand": "Current.Import", "phase": "L2"},
        {"value": "abc", "measurand": "Frequency"},
        {"value": "230", "measurand": "Voltage", "phase": "L2-N"},
        {"value": "20", "measurand": "SoC"},  # not read at all
    ]}, 230)
    assert reading is not None
    assert reading.at == datetime(2026, 12, 2, 10, tzinfo=UTC)  # no offset: UTC
    assert reading.power_w is None and reading.energy_wh is None
    assert reading.voltages_v == (None, 230, None) and reading.currents_a == (None, None, None)
    assert reading.frequency_hz is None
    assert set(reading.ignored) == {
        ("Power.Active.Import", "not_finite"), ("Energy.Active.Import.Register", "not_finite"),
        ("Voltage", "not_finite"), ("Current.Import", "negative"), ("Frequency", "unreadable")}
    huge = read_meter_value({"timestamp": "2026-12-02T10:00:00Z", "sampledValue": [
        {"value": "20000", "measurand": "Power.Active.Import", "unit": "kW"}]}, 230)
    assert huge is not None and huge.power_w is None
    assert huge.ignored == (("Power.Active.Import", "out_of_range"),)


def test_201_sampled_values_never_raise():
    sample = sampled_values({"timestamp": "t", "sampledValue": [
        {"value": 7.0, "measurand": "Power.Active.Import",
         "unitOfMeasure": {"unit": "W", "multiplier": 10**9}},
        {"value": 1e308, "measurand": "Power.Active.Import",
         "unitOfMeasure": {"unit": "W", "multiplier": 3}},
        {"value": float("nan")}]})
    values = [float(s["value"]) for s in sample["sampledValue"]]
    assert all(not math.isfinite(v) for v in values)


# --- over real websockets ------------------------------------------------------------------

CONFIGURATION_16 = [
    {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core,SmartCharging"},
    {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
    {"key": "NumberOfConnectors", "readonly": True, "value": "4"},
]


class RawStation:
    """A station whose requests are written frame by frame. It answers the bridge's calls
    as a plain smart charger does (profiles accepted and kept), so a session can reach
    its profile, and hands the replies to its own calls to :meth:`call`."""

    def __init__(self, ws: websockets.ClientConnection, version: str) -> None:
        self.ws, self.version = ws, version
        self.profiles: list[dict[str, Any]] = []  # SetChargingProfile payloads, in order
        self._replies: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self._seq = 0

    @classmethod
    async def connect(cls, site: SiteHarness, station_id: str, version: str = "1.6") -> RawStation:
        ws = await websockets.connect(f"{site.url}/{station_id}",
                                      subprotocols=[Subprotocol(f"ocpp{version}")])
        return cls(ws, version)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()

    @property
    def open(self) -> bool:
        return self.ws.state is websockets.protocol.State.OPEN

    async def _read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message)
            if frame[0] == 2:
                await self.ws.send(json.dumps(self._answer(frame[1], frame[2], frame[3])))
            else:
                self._replies.put_nowait(frame)

    def _answer(self, unique_id: str, action: str, payload: dict[str, Any]) -> list[Any]:
        if action == "SetChargingProfile":
            self.profiles.append(payload)
            return [3, unique_id, {"status": "Accepted"}]
        answers_16 = {"GetConfiguration": {"configurationKey": CONFIGURATION_16},
                      "ChangeConfiguration": {"status": "Accepted"},
                      "ClearChargingProfile": {"status": "Unknown"},
                      "GetCompositeSchedule": {"status": "Rejected"}}
        answers_201 = {"GetVariables": {"getVariableResult": []},
                       "SetVariables": {"setVariableResult": [{
                           "attributeStatus": "Accepted", "component": {"name": "X"},
                           "variable": {"name": "Y"}}]},
                       "ClearChargingProfile": {"status": "Unknown"},
                       "GetCompositeSchedule": {"status": "Rejected"}}
        answer = (answers_16 if self.version == "1.6" else answers_201).get(action)
        if answer is None:
            return [4, unique_id, "NotImplemented", "", {}]
        return [3, unique_id, answer]

    async def send_raw(self, text: str) -> list[Any]:
        """A frame as it is; the bridge's answer (a reply or a CALLERROR)."""
        await self.ws.send(text)
        return await asyncio.wait_for(self._replies.get(), 10)

    async def call(self, action: str, payload: Any) -> list[Any]:
        self._seq += 1
        unique_id = f"m{self._seq}"
        reply = await self.send_raw(json.dumps([2, unique_id, action, payload]))
        assert reply[1] == unique_id, reply
        return reply

    async def alive(self) -> None:
        """The link still serves a good call."""
        reply = await self.call("Heartbeat", {})
        assert reply[0] == 3 and "currentTime" in reply[2], reply


def metric(bridge: Bridge, line_start: str) -> float:
    for line in render_metrics(bridge.view).splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def lenient_count(bridge: Bridge, action: str, kind: str) -> float:
    return metric(bridge, f'drbridge_ocpp_lenient_total{{action="{action}",kind="{kind}"}}')


def boot_16() -> dict[str, Any]:
    return {"chargePointVendor": "Quirky", "chargePointModel": "Q1"}


def session_connectors(bridge: Bridge, station_id: str) -> dict[int, int]:
    """connector -> the bridge's transaction id, of the station's open sessions."""
    return {s.connector_id: tx for tx, s in bridge.station_events.sessions.items()
            if s.station_id == station_id}


def share_w(bridge: Bridge, station_id: str) -> float:
    """The station's limit in the plan now (0 when it has none)."""
    steps = bridge.planner.plan.stations.get(station_id, ()) if bridge.planner.plan else ()
    step = value_at(steps, datetime.now(UTC))
    return step.limit_w if step is not None else 0.0


async def test_16_start_transactions_that_nearly_follow_the_schema_reach_the_plan(
        site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = await RawStation.connect(site, "NEAR")
    try:
        assert (await station.call("BootNotification", boot_16()))[2]["status"] == "Accepted"
        near_misses = {
            1: {"timestamp": "2026-12-02T10:00:00"},  # local time, no offset
            2: {"meterStart": 0.0},  # a float for the integer Wh register
            3: {"vendorSessionRef": "abc-123"},  # a vendor's own field
            4: {"timestamp": "2026-12-02T10:00:00", "meterStart": "1500.4",
                "connectorId": "4", "x-firmware": {"build": 7}},
        }
        transaction_ids = {}
        for connector, change in near_misses.items():
            payload = {**VALID_START, "connectorId": connector, **change}
            reply = await station.call("StartTransaction", payload)
            assert reply[0] == 3, reply
            assert isinstance(reply[2]["transactionId"], int)
            assert reply[2]["idTagInfo"]["status"] == "Accepted"
            transaction_ids[connector] = reply[2]["transactionId"]
        assert session_connectors(bridge, "NEAR") == transaction_ids
        meter_start = bridge.store.db.execute(
            "SELECT meter_start FROM transactions WHERE id = ?", [transaction_ids[4]]).fetchone()
        assert meter_start == (1500,)
        # each session gets its share: a TxProfile naming its transaction
        def tx_profiles() -> set[int]:
            return {p["csChargingProfiles"].get("transactionId") for p in station.profiles
                    if p["csChargingProfiles"]["chargingProfilePurpose"] == "TxProfile"}
        await wait_until(lambda: tx_profiles() >= set(transaction_ids.values()),
                         timeout=20, what="a TxProfile for each session")
        assert share_w(bridge, "NEAR") > 0
        # counted per action and kind
        assert lenient_count(bridge, "StartTransaction", "naive_timestamp") == 2
        assert lenient_count(bridge, "StartTransaction", "integral_float") == 1
        assert lenient_count(bridge, "StartTransaction", "unknown_property") == 2
        assert lenient_count(bridge, "StartTransaction", "rounded_register") == 1
        assert lenient_count(bridge, "StartTransaction", "numeric_string") == 1
        # what cannot be understood is still refused, and the link lives on
        for change, code in (({"meterStart": "abc"}, "TypeConstraintViolation"),
                             ({"connectorId": 1.5}, "TypeConstraintViolation"),
                             ({"meterStart": 10**30}, "PropertyConstraintViolation"),
                             ({"idTag": None}, "TypeConstraintViolation")):
            reply = await station.call("StartTransaction", {**VALID_START, **change})
            assert reply[0] == 4 and reply[2] == code, reply
        reply = await station.call("StartTransaction", {
            k: v for k, v in VALID_START.items() if k != "meterStart"})
        assert reply[0] == 4 and reply[2] == "OccurenceConstraintViolation"
        await station.alive()
        assert session_connectors(bridge, "NEAR") == transaction_ids
    finally:
        await station.close()


async def test_16_status_and_stop_near_misses_are_read(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = await RawStation.connect(site, "NEAR")
    try:
        await station.call("BootNotification", {**boot_16(), "chargePointVendor ": "typo"})
        reply = await station.call("StatusNotification", {
            "connectorId": 1, "status": "charging", "errorCode": "noError",
            "timestamp": "2026-12-02T10:00:00"})
        assert reply == [3, reply[1], {}]
        assert bridge.station_events.connector_status[("NEAR", 1)][0] == "Charging"
        reply = await station.call("StartTransaction", VALID_START)
        tx = reply[2]["transactionId"]
        reply = await station.call("StopTransaction", {
            "transactionId": str(tx), "meterStop": 2500.0, "timestamp": "2026-12-02T11:00:00",
            "reason": "evdisconnected"})
        assert reply[0] == 3, reply
        assert tx not in bridge.station_events.sessions
        assert lenient_count(bridge, "StatusNotification", "enum_case") == 1
        assert lenient_count(bridge, "BootNotification", "unknown_property") == 1
        assert lenient_count(bridge, "StopTransaction", "enum_case") == 1
    finally:
        await station.close()


def event_201(event_type: str, **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": "2026-12-02T10:00:00Z",
            "triggerReason": "CablePluggedIn", "seqNo": 0,
            "transactionInfo": {"transactionId": "st-tx-1"}, **extra}


async def test_201_near_misses_start_a_session_and_malformed_ones_are_refused(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = await RawStation.connect(site, "NEAR201", "2.0.1")
    try:
        reply = await station.call("BootNotification", {
            "reason": "powerup", "chargingStation": {"model": "Q2", "vendorName": "Quirky",
                                                       "vendorExtra": 1}})
        assert reply[0] == 3 and reply[2]["status"] == "Accepted", reply
        reply = await station.call("StatusNotification", {
            "timestamp": "2026-12-02T10:00:00", "connectorStatus": "occupied", "evseId": 1,
            "connectorId": 1})
        assert reply[0] == 3, reply
        # what cannot be understood first: refused, the link lives on
        reply = await station.call("TransactionEvent", {
            k: v for k, v in event_201("Started").items() if k != "transactionInfo"})
        assert reply[0] == 4 and reply[2] == "OccurrenceConstraintViolation", reply
        reply = await station.call("TransactionEvent", {**event_201("Started"), "seqNo": "one"})
        assert reply[0] == 4 and reply[2] == "TypeConstraintViolation", reply
        await station.alive()
        assert not session_connectors(bridge, "NEAR201")
        # the near-miss: every field a little off
        started = {**event_201("started"), "timestamp": "2026-12-02T10:00:00", "seqNo": "0",
                   "triggerReason": "cablepluggedin", "vendorTxRef": "r-1",
                   "transactionInfo": {"transactionId": "st-tx-1", "chargingState": "charging"},
                   "evse": {"id": 1.0, "connectorId": 1},
                   "idToken": {"idToken": "TAG", "type": "iso14443"},
                   "meterValue": [{"timestamp": "2026-12-02T10:00:00", "sampledValue": [
                       {"value": "1500", "measurand": "Energy.Active.Import.Register"}]}]}
        reply = await station.call("TransactionEvent", started)
        assert reply[0] == 3 and reply[2]["idTokenInfo"]["status"] == "Accepted", reply
        await wait_until(lambda: list(session_connectors(bridge, "NEAR201")) == [1],
                         what="the 2.0.1 session open")
        tx = session_connectors(bridge, "NEAR201")[1]
        assert bridge.store.db.execute("SELECT meter_start FROM transactions WHERE id = ?",
                                       [tx]).fetchone() == (1500,)
        await wait_until(lambda: share_w(bridge, "NEAR201") > 0, what="its share in the plan")
        for kind in ("naive_timestamp", "enum_case", "numeric_string", "unknown_property"):
            assert lenient_count(bridge, "TransactionEvent", kind) == 1, kind
        assert lenient_count(bridge, "BootNotification", "enum_case") == 1
        assert lenient_count(bridge, "StatusNotification", "naive_timestamp") == 1
        local_now = datetime.now(UTC).replace(tzinfo=None).isoformat()  # no offset: UTC
        reply = await station.call("MeterValues", {"evseId": "1", "meterValue": [{
            "timestamp": local_now, "sampledValue": [
                {"value": "7.5", "measurand": "power.active.import",
                 "unitOfMeasure": {"unit": "W", "multiplier": 3}}]}]})
        assert reply[0] == 3, reply
        await wait_until(lambda: bridge.view.snapshot().station_power_w.get("NEAR201") == 7_500,
                         what="the repaired meter value read")
    finally:
        await station.close()


def sampled(value: Any, measurand: str = "Power.Active.Import", **extra: Any) -> dict:
    return {"value": value, "measurand": measurand, **extra}


def stored_samples(bridge: Bridge, station_id: str) -> list[tuple[Any, ...]]:
    return bridge.store.db.execute(
        "SELECT power_w, energy_wh FROM samples WHERE station_id = ? ORDER BY at",
        [station_id]).fetchall()


def stored_voltages(bridge: Bridge, station_id: str) -> list[tuple[Any, ...]]:
    return bridge.store.db.execute(
        "SELECT v_l1 FROM grid_samples WHERE station_id = ? AND v_l1 IS NOT NULL",
        [station_id]).fetchall()


async def test_16_meter_samples_that_cannot_be_readings_never_reach_the_load(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = await RawStation.connect(site, "METER")
    try:
        await station.call("BootNotification", boot_16())
        await station.call("StartTransaction", VALID_START)

        async def meter(*samples: dict) -> None:
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            reply = await station.call("MeterValues", {"connectorId": 1, "meterValue": [
                {"timestamp": stamp, "sampledValue": list(samples)}]})
            assert reply[0] == 3, reply

        good = (sampled("7000", unit="W"), sampled("1000", "Energy.Active.Import.Register"),
                sampled("230", "Voltage", phase="L1-N"))
        for bad in ("NaN", "inf", "-Infinity", "1e308", "-5000", "abc"):
            await meter(*good)  # fresh before each, however slow the machine
            assert bridge.reports.measured_load_w() == 7_000
            await meter(sampled(bad, unit="kW"), sampled(bad, "Energy.Active.Import.Register"),
                        sampled(bad, "Voltage", phase="L1-N"))
            assert bridge.reports.measured_load_w() == 7_000, bad
            assert bridge.reports.measured_energy_wh() == 1_000, bad
            assert bridge.reports.site_voltages()["L1"] == (230, 230), bad
        await meter(sampled("3000"), sampled("1500", "Energy.Active.Import.Register"))
        assert bridge.reports.measured_load_w() == 3_000
        await wait_until(lambda: (3000.0, 1500.0) in stored_samples(bridge, "METER"),
                         what="the samples stored")
        assert {row for row in stored_samples(bridge, "METER")} <= \
            {(7000.0, 1000.0), (None, None), (3000.0, 1500.0)}
        assert set(stored_voltages(bridge, "METER")) == {(230.0,)}
        ignored = 'drbridge_meter_samples_ignored_total{measurand="Power.Active.Import",'
        assert metric(bridge, ignored + 'reason="not_finite"}') == 4  # NaN, inf, -inf, 1e308 kW
        assert metric(bridge, ignored + 'reason="negative"}') == 1
        assert metric(bridge, ignored + 'reason="unreadable"}') == 1
        await station.alive()
    finally:
        await station.close()


async def test_201_meter_samples_that_cannot_be_readings_never_reach_the_load(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = await RawStation.connect(site, "METER201", "2.0.1")

    def meter_value(*samples: dict) -> list[dict]:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return [{"timestamp": stamp, "sampledValue": list(samples)}]

    kw = {"unitOfMeasure": {"unit": "W", "multiplier": 3}}
    try:
        await station.call("BootNotification", {
            "reason": "PowerUp", "chargingStation": {"model": "Q2", "vendorName": "Quirky"}})
        # an energy register of NaN (a bare JSON NaN) must not cost the session
        text = json.dumps([2, "start", "TransactionEvent", {
            **event_201("Started"), "evse": {"id": 1},
            "meterValue": meter_value(sampled(math.nan, "Energy.Active.Import.Register"))}])
        reply = await station.send_raw(text)
        assert reply[0] == 3 and reply[1] == "start", reply
        await wait_until(lambda: list(session_connectors(bridge, "METER201")) == [1],
                         what="the session open")
        seq = 0

        async def update(*samples: dict) -> None:
            nonlocal seq
            seq += 1
            reply = await station.send_raw(json.dumps([2, f"u{seq}", "TransactionEvent", {
                **event_201("Updated"), "seqNo": seq, "triggerReason": "MeterValuePeriodic",
                "meterValue": meter_value(*samples)}]))
            assert reply[0] == 3 and reply[1] == f"u{seq}", reply

        good = (sampled(7.0, **kw), sampled(230, "Voltage", phase="L1-N"))
        for bad in (math.nan, math.inf, "1e308", -5.0, 10**30):
            await update(*good)  # fresh before each, however slow the machine
            assert bridge.reports.measured_load_w() == 7_000
            await update(sampled(bad, **kw), sampled(bad, "Voltage", phase="L1-N"))
            assert bridge.reports.measured_load_w() == 7_000, bad
            assert bridge.reports.site_voltages()["L1"] == (230, 230), bad
        for multiplier in (400, -400):
            await update(*good)
            await update(sampled(7.0, unitOfMeasure={"unit": "W", "multiplier": multiplier}))
            assert bridge.reports.measured_load_w() == 7_000, multiplier
        await update(sampled(3.0, **kw))
        assert bridge.reports.measured_load_w() == 3_000
        await wait_until(lambda: (3000.0, None) in stored_samples(bridge, "METER201"),
                         what="the samples stored")
        assert set(stored_samples(bridge, "METER201")) <= \
            {(7000.0, None), (None, None), (3000.0, None)}
        assert set(stored_voltages(bridge, "METER201")) == {(230.0,)}
        await station.alive()
    finally:
        await station.close()


@pytest.mark.parametrize(("version", "format_violation"),
                         [("1.6", "FormationViolation"), ("2.0.1", "FormatViolation")])
async def test_frames_that_break_the_decoder_get_a_callerror_and_the_link_lives(
        site: SiteHarness, version: str, format_violation: str):
    await site.start_bridge()
    station = await RawStation.connect(site, "DEEP", version)
    try:
        reply = await station.send_raw("[" * 50_000)  # 50 kB, under the size cap
        assert reply[:3] == [4, "-1", format_violation], reply
        await station.alive()
        reply = await station.send_raw(json.dumps([2, "deep", "Heartbeat", {}])[:-3]
                                       + "[" * 50_000)
        assert reply[0] == 4 and reply[2] == format_violation, reply
        await station.alive()
        reply = await station.send_raw("[2, \"big\", \"Heartbeat\", " + "9" * 5_000 + "]")
        assert reply[0] == 4 and reply[2] == format_violation, reply
        reply = await station.send_raw('[2, "id", ["Heartbeat"], {}]')
        assert reply[:3] == [4, "id", "ProtocolError"], reply
        # a payload deep enough for the decoder, but nowhere the schema looks
        nested = "[" * 500 + "]" * 500
        reply = await station.send_raw(f'[2, "nested", "Heartbeat", {nested}]')
        assert reply[0] == 4 and reply[1] == "nested", reply
        reply = await station.send_raw(f'[2, "vendor", "DataTransfer", {{"vendorId": "v", '
                                       f'"data": "x", "extra": {nested}}}]')
        assert reply[0] == 3 and reply[1] == "vendor", reply
        await station.alive()
        assert station.open
    finally:
        await station.close()
