"""The 2.0.1 station with voltage monitors and the 2.1 station with DER control, over real
loopback websockets against a minimal central system built on the ``ocpp`` library, on a
simulated feeder. The requests come from drbridge's own translation
(``bridge.ocpp.voltage_monitors``, ``bridge.ocpp.der_control``) and the answers are read
with it, so both ends are exercised."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from conftest import site_config, wait_until
from ocpp import v21, v201
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on

from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.sim.feeder import Feeder
from bridge.sim.station import StationSpec
from bridge.sim.station21 import SimulatedStation21
from bridge.sim.station201_monitors import MonitoringStation201
from policies.model import VoltageRule

V = 230.0
MAX_A = 32.0
MIN_SHARE = 6 / MAX_A
RULE = VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=0.88, hold_s=1.0,
                   ease_step=0.5)
FULL_W = 16 * V * 3  # the default EV: 16 A on three phases


def iso(dt):
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


async def until(condition, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.02)


def handlers(module):
    """The central system's side of one station's link, for one OCPP version."""
    result, action = module.call_result, module.enums.Action

    class Link(module.ChargePoint):
        def __init__(self, station_id, ws, hub):
            super().__init__(station_id, ws, response_timeout=5)
            self.hub = hub

        async def route_message(self, raw_msg):
            msg = json.loads(raw_msg)
            if msg[0] == 2:
                self.hub.calls.append((self.id, msg[2], msg[3], time.monotonic()))
            await super().route_message(raw_msg)

        @on(action.boot_notification)
        def on_boot(self, **_):
            return result.BootNotification(current_time=iso(datetime.now(UTC)), interval=300,
                                           status="Accepted")

        @on(action.heartbeat)
        def on_heartbeat(self, **_):
            return result.Heartbeat(current_time=iso(datetime.now(UTC)))

        @on(action.status_notification)
        def on_status(self, **_):
            return result.StatusNotification()

        @on(action.transaction_event)
        def on_transaction_event(self, **_):
            return result.TransactionEvent()

        @on(action.notify_event)
        def on_notify_event(self, **_):
            return result.NotifyEvent()

        @on(action.notify_monitoring_report)
        def on_notify_monitoring_report(self, **_):
            return result.NotifyMonitoringReport()

    if module is not v21:
        return Link

    class Link21(Link):
        @on(action.notify_der_alarm)
        def on_der_alarm(self, **_):
            return result.NotifyDERAlarm()

        @on(action.notify_der_start_stop)
        def on_der_start_stop(self, **_):
            return result.NotifyDERStartStop()

        @on(action.report_der_control)
        def on_report_der_control(self, **_):
            return result.ReportDERControl()

        @on(action.notify_charging_limit)
        def on_notify_charging_limit(self, **_):
            return result.NotifyChargingLimit()

        @on(action.cleared_charging_limit)
        def on_cleared_charging_limit(self, **_):
            return result.ClearedChargingLimit()

    return Link21


LINKS = {"ocpp2.0.1": handlers(v201), "ocpp2.1": handlers(v21)}


class CentralSystem:
    """A minimal central system: records every CALL with the time it arrived."""

    def __init__(self):
        self.calls = []  # (station id, action, payload, monotonic time)
        self.links = {}
        self.server = None
        self.port = 0

    async def start(self, port=0):
        self.server = await websockets.serve(self.handler, "127.0.0.1", port,
                                             subprotocols=list(LINKS))
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    async def handler(self, ws):
        link = LINKS[ws.subprotocol](ws.request.path.strip("/"), ws, self)
        self.links[link.id] = link
        try:
            await link.start()
        except websockets.ConnectionClosed:
            pass

    def of(self, station_id, action, since=0.0):
        return [(p, t) for sid, a, p, t in self.calls
                if sid == station_id and a == action and t >= since]

    async def send(self, station_id, payload, **kwargs):
        return await self.links[station_id].call(payload, **kwargs)


@pytest.fixture
async def cs():
    central = CentralSystem()
    await central.start()
    yield central
    if central.server is not None and central.server.is_serving():
        await central.stop()


@pytest.fixture
async def stations(cs):
    running = []

    async def start(kind, station_id, feeder=None, **options):
        spec = StationSpec(station_id=station_id, max_current_a=MAX_A,
                           meter_interval_s=options.pop("meter_interval_s", 0.5),
                           **options.pop("spec", {}))
        station = kind(spec, cs.url, **options)
        if feeder is not None:
            station.attach_feeder(feeder)
        running.append((station, asyncio.create_task(station.run())))
        await until(lambda: station.connected and station.transaction_id is not None
                    and cs.of(station_id, "TransactionEvent"), what=f"{station_id} charging")
        return station

    yield start
    for station, task in running:
        await station.stop()
        await asyncio.wait_for(task, 10)


async def set_monitors(cs, station_id, specs, module=v201):
    request = vm.set_monitoring_request(specs)
    reply = await cs.send(station_id, module.call.SetVariableMonitoring(
        set_monitoring_data=request["setMonitoringData"]), suppress=False)
    return vm.read_set_monitoring_reply(specs, {"setMonitoringResult": [
        camel(r) for r in reply.set_monitoring_result]})


def camel(value):
    """The ocpp library hands replies over in snake_case; drbridge reads the wire's camelCase."""
    if isinstance(value, dict):
        return {k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): camel(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def observations_since(cs, station_id, since, installed=()):
    ours = {m.monitor_id: m.spec for m in installed}
    found = []
    for payload, arrived in cs.of(station_id, "NotifyEvent", since):
        seen, unreadable = vm.observations(station_id, payload, datetime.now(UTC), ours)
        assert unreadable == 0
        found += [(o, arrived) for o in seen]
    return found


# -- 2.0.1: monitors ---------------------------------------------------------------------

async def test_a_sag_is_reported_by_the_stations_monitor_within_a_fraction_of_a_second(
        cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    await stations(MonitoringStation201, "CP1", feeder, meter_interval_s=60)
    specs = vm.desired_monitors(RULE, V, vm.candidates([1], [1, 2, 3])[0])
    outcome = await set_monitors(cs, "CP1", specs)
    assert len(outcome.installed) == len(specs) and not outcome.refused
    assert not cs.of("CP1", "NotifyEvent")  # 225 V at the station: nothing crossed

    changed = time.monotonic()
    feeder.source_v = 220.0  # the neighbourhood's evening load: 215.2 V at the station
    await until(lambda: len(observations_since(cs, "CP1", changed)) >= 6, 5,
                "NotifyEvent for 218.5 V and 216.2 V on three lines")
    found = observations_since(cs, "CP1", changed, outcome.installed)
    assert {(o.line, o.volts, o.returned_to_normal) for o, _ in found} == {
        (line, 215.2, False) for line in (1, 2, 3)}
    assert {o.detail.split(", ")[1] for o, _ in found} == {
        "below 218.5 V (curve point 0.95 pu)", "below 216.2 V (curve 0.9-0.95 pu)"}
    latency = max(arrived for _, arrived in found) - changed
    assert latency < 1.0, f"the sag took {latency:.2f} s to arrive"
    # The meter values in between are no faster: this station samples once a minute.

    back = time.monotonic()
    feeder.source_v = V
    await until(lambda: len(observations_since(cs, "CP1", back)) >= 6, 5, "return to normal")
    assert all(o.returned_to_normal and o.detail.split(", ")[1].startswith("back below")
               for o, _ in observations_since(cs, "CP1", back, outcome.installed))


async def test_monitors_follow_the_rule_and_clearing_stops_the_events(cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    await stations(MonitoringStation201, "CP1", feeder)
    variables = vm.candidates([1], [1])[0]
    first = await set_monitors(cs, "CP1", vm.desired_monitors(RULE, V, variables))
    lower = VoltageRule(curve={0.935: 1.0, 0.905: "min"}, pause_below=0.88)
    changes = vm.monitor_changes(vm.desired_monitors(lower, V, variables), first.installed)
    assert changes.to_set and changes.to_clear
    reply = await cs.send("CP1", v201.call.ClearVariableMonitoring(id=list(changes.to_clear)))
    gone = vm.read_clear_reply(changes.to_clear, {"clearMonitoringResult": camel(
        reply.clear_monitoring_result)})
    assert gone == set(changes.to_clear)
    second = await set_monitors(cs, "CP1", list(changes.to_set))
    installed = [m for m in first.installed if m.monitor_id not in gone] + list(second.installed)
    assert vm.monitor_changes(vm.desired_monitors(lower, V, variables), installed).empty

    removed = vm.monitor_changes([], installed)  # the rule is gone from the policy
    await cs.send("CP1", v201.call.ClearVariableMonitoring(id=list(removed.to_clear)))
    changed = time.monotonic()
    feeder.source_v = 200.0
    await asyncio.sleep(1.0)  # ten evaluations and more: a monitor would have fired by now
    assert not cs.of("CP1", "NotifyEvent", changed)


async def test_one_stations_draw_moves_the_others_voltage_and_its_monitor_says_so(cs, stations):
    feeder = Feeder(source_v=224.0, impedance_ohm=0.3)
    a = await stations(MonitoringStation201, "A", feeder)
    b = await stations(MonitoringStation201, "B", feeder)
    assert b.voltages_v()[0] == pytest.approx(224.0 - 0.3 * 32)  # both draw 16 A
    spec = vm.MonitorSpec(vm.VoltageVariable("EVSE", 1, "L1"), "LowerThreshold", 216.2)
    outcome = await set_monitors(cs, "B", [spec])
    assert outcome.installed
    await until(lambda: observations_since(cs, "B", 0), 5, "B below 216.2 V")
    # A stops drawing (its central system caps it at 0 A): B's voltage rises above 216.2 V
    changed = time.monotonic()
    start = iso(datetime.now(UTC) - timedelta(seconds=5))
    status = await cs.send("A", v201.call.SetChargingProfile(evse_id=0, charging_profile={
        "id": 1, "stack_level": 0, "charging_profile_purpose": "ChargingStationMaxProfile",
        "charging_profile_kind": "Absolute", "charging_schedule": [{
            "id": 1, "start_schedule": start, "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": 0.0}]}]}))
    assert status.status == "Accepted" and a.power_w == 0
    await until(lambda: any(o.returned_to_normal
                            for o, _ in observations_since(cs, "B", changed)), 5,
                "B's return to normal")
    assert b.voltages_v()[0] == pytest.approx(224.0 - 0.3 * 16)


async def test_a_station_with_one_voltage_takes_the_next_candidate(cs, stations):
    await stations(MonitoringStation201, "CP1", Feeder(), voltages="single")
    per_line, per_evse, station_wide = vm.candidates([1], [1, 2, 3])
    refused = await set_monitors(cs, "CP1", vm.desired_monitors(RULE, V, per_line))
    assert refused.variable_unknown
    taken = await set_monitors(cs, "CP1", vm.desired_monitors(RULE, V, station_wide))
    assert taken.installed and not taken.refused
    reply = await cs.send("CP1", v201.call.GetVariables(get_variable_data=[
        {"component": {"name": "ChargingStation"}, "variable": {"name": "ACVoltage"}}]))
    assert reply.get_variable_result[0]["attribute_value"] == "225.2"  # 16 A over 0.3 ohm


@pytest.mark.parametrize("refusal", ["rejected", "not-supported"])
async def test_a_station_that_refuses_monitors(cs, stations, refusal):
    await stations(MonitoringStation201, "CP1", Feeder(), monitors=refusal)
    specs = vm.desired_monitors(RULE, V, vm.candidates([1], [1, 2, 3])[0])
    if refusal == "not-supported":
        with pytest.raises(NotSupportedError):
            await set_monitors(cs, "CP1", specs)
        return
    outcome = await set_monitors(cs, "CP1", specs)
    assert not outcome.installed and {s for _, s in outcome.refused} == {"Rejected"}
    assert not outcome.variable_unknown


async def test_meter_values_carry_the_feeders_voltage(cs, stations):
    feeder = Feeder(source_v=228.0, impedance_ohm=0.5)
    await stations(MonitoringStation201, "CP1", feeder, meter_interval_s=0.2)
    since = time.monotonic()
    await until(lambda: cs.of("CP1", "TransactionEvent", since), 5, "a meter value")
    samples = cs.of("CP1", "TransactionEvent", since)[0][0]["meterValue"][0]["sampledValue"]
    assert {s["value"] for s in samples if s["measurand"] == "Voltage"} == {228.0 - 0.5 * 16}


async def test_a_sag_while_offline_arrives_after_a_reconnect_without_boot(cs, stations):
    """A station that only lost its link reconnects without a BootNotification; the
    crossing it saw meanwhile still reaches its central system."""
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = await stations(MonitoringStation201, "CP1", feeder,
                             spec={"boots_on_reconnect": False})
    spec = vm.MonitorSpec(vm.VoltageVariable("ChargingStation"), "LowerThreshold", 216.2)
    outcome = await set_monitors(cs, "CP1", [spec])
    assert outcome.installed

    await cs.stop()
    await until(lambda: not station.connected, 10, "the station to notice")
    feeder.source_v = 215.0  # 210.2 V at the station, while it is offline
    await until(lambda: station.monitors[outcome.installed[0].monitor_id].tripped, 5,
                "the monitor to trip")
    back = time.monotonic()
    await cs.start(cs.port)
    await until(lambda: observations_since(cs, "CP1", back), 15, "the sag, once back")
    found = observations_since(cs, "CP1", back, outcome.installed)
    assert [(o.volts, o.returned_to_normal) for o, _ in found] == [(210.2, False)]
    assert len(cs.of("CP1", "BootNotification")) == 1  # it did not boot again


async def test_every_evse_of_a_station_has_its_voltage_and_a_transaction_monitor(
        cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = await stations(MonitoringStation201, "CP1", feeder, spec={"connectors": 2})
    await until(lambda: station.evses[2].tx_id is not None, 10, "EVSE 2 charging")
    reply = await cs.send("CP1", v201.call.GetVariables(get_variable_data=[
        {"component": {"name": "EVSE", "evse": {"id": 2}},
         "variable": {"name": "ACVoltage", "instance": "L3"}}]))
    assert reply.get_variable_result[0]["attribute_value"] == "220.4"  # 2 x 16 A over 0.3 ohm
    specs = vm.desired_monitors(RULE, V, vm.candidates([1, 2], [1, 2, 3])[0])
    outcome = await set_monitors(cs, "CP1", specs)
    assert len(outcome.installed) == len(specs) and not outcome.refused
    watch = vm.MonitorSpec(vm.VoltageVariable("EVSE", 2, "L1"), "LowerThreshold", 210.0)
    request = vm.set_monitoring_request([watch])["setMonitoringData"]
    reply = await cs.send("CP1", v201.call.SetVariableMonitoring(
        set_monitoring_data=[request[0] | {"transaction": True}]))
    assert reply.set_monitoring_result[0]["status"] == "Accepted"

    station.unplug(1)  # EVSE 2's transaction runs on: its monitor watches
    await until(lambda: station.evses[1].tx_id is None, 10, "EVSE 1's transaction ended")
    changed = time.monotonic()
    feeder.source_v = 210.0
    await until(lambda: any(e["variableMonitoringId"] == reply.set_monitoring_result[0]["id"]
                            for p, _ in cs.of("CP1", "NotifyEvent", changed)
                            for e in p["eventData"]), 5, "EVSE 2's transaction monitor")
    event = next(e for p, _ in cs.of("CP1", "NotifyEvent", changed) for e in p["eventData"]
                 if e["variableMonitoringId"] == reply.set_monitoring_result[0]["id"])
    assert event["transactionId"] == station.evses[2].tx_id
    assert event["component"] == {"name": "EVSE", "evse": {"id": 2}}


# -- 2.1: DER control --------------------------------------------------------------------

async def der_support(cs, station_id):
    reply = await cs.send(station_id, v21.call.GetVariables(
        get_variable_data=camel_to_snake_list(der.support_query([1])["getVariableData"])))
    return der.supports_volt_watt({"getVariableResult": camel(reply.get_variable_result)})


def camel_to_snake_list(items):
    def snake(value):
        if isinstance(value, dict):
            return {"".join("_" + c.lower() if c.isupper() else c for c in k): snake(v)
                    for k, v in value.items()}
        return value
    return [snake(i) for i in items]


async def push_curve(cs, station_id, curve, control_id=der.CONTROL_ID, priority=der.PRIORITY):
    request = der.set_der_control_request(curve, control_id, priority)
    reply = await cs.send(station_id, v21.call.SetDERControl(
        is_default=request["isDefault"], control_id=request["controlId"],
        control_type=request["controlType"], curve=request["curve"]), suppress=False)
    return der.read_reply({"status": reply.status,
                           "supersededIds": reply.superseded_ids or []}, control_id)


async def test_a_21_station_with_the_curve_backs_off_by_itself_while_the_bridge_is_gone(
        cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = await stations(SimulatedStation21, "CP21", feeder)
    assert station.power_w == FULL_W
    assert await der_support(cs, "CP21")
    curve = der.volt_watt_curve(RULE, MIN_SHARE)
    assert (await push_curve(cs, "CP21", curve)).status == "accepted"
    asked = time.monotonic()
    await cs.send("CP21", v21.call.GetDERControl(request_id=7, is_default=True,
                                                control_id=der.CONTROL_ID))
    await until(lambda: cs.of("CP21", "ReportDERControl", asked), 5, "ReportDERControl")
    installed = der.read_report([p for p, _ in cs.of("CP21", "ReportDERControl", asked)])
    assert installed is not None and installed.curve.same_as(curve)

    await cs.stop()  # the bridge is gone
    await until(lambda: not station.connected, 10, "the station to notice")
    feeder.source_v = 205.0  # 200.2 V at 16 A: 0.87 pu, below pause_below
    # the station backs off by itself to where the curve holds it: the minimum current
    # (6 A), at 203.2 V (0.883 pu, above pause_below)
    await until(lambda: station.power_w == pytest.approx(6 * V * 3), 10,
                "the station at the minimum current")
    await asyncio.sleep(1.5)  # and it stays there
    assert station.power_w == pytest.approx(6 * V * 3)
    assert min(station.voltages_v()) == pytest.approx(205.0 - 0.3 * 6)
    assert not station.connected

    feeder.source_v = V  # the sag is over: back to full power after the hold time
    await until(lambda: station.power_w == FULL_W, 10, "full power again")

    await cs.start(cs.port)  # the bridge is back: the alarms kept while offline arrive
    await until(lambda: len(cs.of("CP21", "NotifyDERAlarm")) >= 2, 15, "the DER alarms")
    alarms = [der.observation_from_alarm("CP21", p, datetime.now(UTC))
              for p, _ in cs.of("CP21", "NotifyDERAlarm")]
    assert [(a.returned_to_normal, a.detail) for a in alarms[:2]] == [
        (False, "station's own DER control (VoltWatt): UnderVoltage alarm raised"),
        (True, "station's own DER control (VoltWatt): UnderVoltage alarm ended")]


async def test_the_curves_response_time_and_a_dip_while_connected(cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = await stations(SimulatedStation21, "CP21", feeder)
    slow = der.volt_watt_curve(RULE, MIN_SHARE, response_time_s=3.0)
    assert (await push_curve(cs, "CP21", slow)).status == "accepted"
    changed = time.monotonic()
    feeder.source_v = 205.0
    await until(lambda: cs.of("CP21", "NotifyDERAlarm", changed), 5, "NotifyDERAlarm")
    await asyncio.sleep(0.5)
    assert station.power_w > 6 * V * 3  # still on its way down: 90 % in 3 s
    await until(lambda: station.power_w == pytest.approx(6 * V * 3), 15, "the minimum")
    assert time.monotonic() - changed > 1.0


async def test_a_station_without_der_control_says_so(cs, stations):
    await stations(SimulatedStation21, "CP21", Feeder(), der="not-supported")
    assert not await der_support(cs, "CP21")
    curve = der.volt_watt_curve(RULE, MIN_SHARE)
    assert (await push_curve(cs, "CP21", curve)).status == "not-supported"


async def test_a_grid_operators_curve_supersedes_ours_and_clearing_ours_leaves_it(cs, stations):
    feeder = Feeder(source_v=205.0, impedance_ohm=0.0)  # 0.891 pu whatever is drawn
    station = await stations(SimulatedStation21, "CP21", feeder)
    dso = der.DerCurve(((85.0, -25.0), (95.0, -25.0)), response_time_s=0.0)
    assert (await push_curve(cs, "CP21", dso, "dso-1", priority=0)).status == "accepted"
    ours = der.volt_watt_curve(RULE, MIN_SHARE, response_time_s=0.0)
    assert (await push_curve(cs, "CP21", ours)).status == "superseded"
    # the DSO's 25 % (8 A) is in force, not ours (the minimum, 6 A, at 0.891 pu)
    await until(lambda: station.power_w == pytest.approx(8 * V * 3), 5, "the DSO's 25 %")
    reply = await cs.send("CP21", v21.call.ClearDERControl(**{
        "is_default": True, "control_id": der.CONTROL_ID}))
    assert der.read_reply({"status": reply.status}).status == "accepted"
    assert set(station.der_controls) == {"dso-1"}
    reply = await cs.send("CP21", v21.call.ClearDERControl(is_default=True,
                                                           control_id=der.CONTROL_ID))
    assert der.read_reply({"status": reply.status}).status == "not-found"


async def test_a_default_control_with_a_start_time_is_refused(cs, stations):
    await stations(SimulatedStation21, "CP21", Feeder())
    request = der.set_der_control_request(der.volt_watt_curve(RULE, MIN_SHARE))
    curve = request["curve"] | {"startTime": iso(datetime.now(UTC)), "duration": 60}
    reply = await cs.send("CP21", v21.call.SetDERControl(
        is_default=True, control_id="x", control_type="VoltWatt", curve=curve))
    assert reply.status == "Rejected"
    wrong_unit = request["curve"] | {"yUnit": "PctMaxVar"}
    reply = await cs.send("CP21", v21.call.SetDERControl(
        is_default=True, control_id="y", control_type="VoltWatt", curve=wrong_unit))
    assert reply.status == "Rejected"


async def test_a_scheduled_control_starts_and_stops_with_notices(cs, stations):
    feeder = Feeder(source_v=V, impedance_ohm=0.0)
    station = await stations(SimulatedStation21, "CP21", feeder)
    half = {"priority": 5, "yUnit": "PctMaxW", "responseTime": 0,
            "curveData": [{"x": 50.0, "y": -25.0}, {"x": 150.0, "y": -25.0}],
            "startTime": iso(datetime.now(UTC)), "duration": 2}
    reply = await cs.send("CP21", v21.call.SetDERControl(
        is_default=False, control_id="evening", control_type="VoltWatt", curve=half))
    assert reply.status == "Accepted"
    await until(lambda: station.power_w == pytest.approx(8 * V * 3), 5, "a quarter of 32 A")
    await until(lambda: len(cs.of("CP21", "NotifyDERStartStop")) >= 2, 10, "start and stop")
    notices = [der.observation_from_start_stop("CP21", p, datetime.now(UTC), "evening")
               for p, _ in cs.of("CP21", "NotifyDERStartStop")]
    assert [n.detail for n in notices] == ["station's own DER control started",
                                           "station's own DER control stopped"]
    await until(lambda: station.power_w == FULL_W, 5, "full power after the window")


async def test_a_curve_holds_all_evses_together_and_their_meter_values_say_so(cs, stations):
    """A DER control names no EVSE: its share of the station's maximum power is shared by
    the EVs of both EVSEs, and the power each EVSE reports is what it draws."""
    feeder = Feeder(source_v=205.0, impedance_ohm=0.0)
    station = await stations(SimulatedStation21, "CP21", feeder, spec={"connectors": 2})
    await until(lambda: station.evses[2].tx_id is not None, 10, "EVSE 2 charging")
    reply = await cs.send("CP21", v21.call.GetVariables(
        get_variable_data=camel_to_snake_list(der.support_query([2])["getVariableData"])))
    assert der.supports_volt_watt({"getVariableResult": camel(reply.get_variable_result)})
    half = der.DerCurve(((85.0, -50.0), (95.0, -50.0)), response_time_s=0.0)
    assert (await push_curve(cs, "CP21", half)).status == "accepted"
    await until(lambda: station.power_w == pytest.approx(16 * V * 3), 5, "half of 32 A")
    assert station.evse_power_w(1) == station.evse_power_w(2) == pytest.approx(8 * V * 3)

    since = time.monotonic()
    ours = {station.evses[1].tx_id, station.evses[2].tx_id}

    def reported():
        kw = {}
        for payload, _ in cs.of("CP21", "TransactionEvent", since):
            tx = payload["transactionInfo"]["transactionId"]
            kw[tx] = next(s["value"] for s in payload["meterValue"][0]["sampledValue"]
                          if s["measurand"] == "Power.Active.Import")
        return kw

    await until(lambda: set(reported()) == ours, 5, "meter values of both EVSEs")
    assert reported() == {tx: round(8 * V * 3 / 1000, 3) for tx in ours}


# -- 2.1: smart charging as on 2.0.1 -----------------------------------------------------

def profile(purpose, limit_a, profile_id=1):
    return {"id": profile_id, "stack_level": 0, "charging_profile_purpose": purpose,
            "charging_profile_kind": "Absolute", "charging_schedule": [{
                "id": profile_id, "start_schedule": iso(datetime.now(UTC) - timedelta(seconds=5)),
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_a}]}]}


async def test_21_smart_charging_and_external_limits(cs, stations):
    station = await stations(SimulatedStation21, "CP21", Feeder())
    send = cs.send
    reply = await send("CP21", v21.call.SetChargingProfile(
        evse_id=0, charging_profile=profile("ChargingStationMaxProfile", 10.0)))
    assert reply.status == "Accepted"
    assert station.power_w == pytest.approx(10 * V * 3)
    reply = await send("CP21", v21.call.SetChargingProfile(
        evse_id=0, charging_profile=profile("ChargingStationExternalConstraints", 1.0, 2)))
    assert reply.status == "Rejected"  # only the station sets external constraints
    reply = await send("CP21", v21.call.SetChargingProfile(
        evse_id=1, charging_profile=profile("PriorityCharging", 16.0, 3)))
    assert reply.status == "Accepted"

    station.set_external_limit(7.0, "EMS")  # the building's energy manager
    assert station.power_w == pytest.approx(7 * V * 3)
    await until(lambda: cs.of("CP21", "NotifyChargingLimit"), 5, "NotifyChargingLimit")
    notice = cs.of("CP21", "NotifyChargingLimit")[0][0]
    assert notice["chargingLimit"]["chargingLimitSource"] == "EMS"
    assert notice["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 7.0
    station.set_external_limit(None)
    await until(lambda: cs.of("CP21", "ClearedChargingLimit"), 5, "ClearedChargingLimit")
    assert station.power_w == pytest.approx(10 * V * 3)
    composite = await send("CP21", v21.call.GetCompositeSchedule(duration=60, evse_id=0,
                                                                 charging_rate_unit="A"))
    assert composite.schedule["charging_schedule_period"][0]["limit"] == 10.0


# -- with the running bridge -------------------------------------------------------------

FEEDER_POLICY = """\
name: weak feeder
voltage:
  curve: {0.95: 100%, 0.90: min}
  pause_below: 0.88
  hysteresis: 0.03
  hold_s: 2
  ease_step: 15%
  stale_after_s: 5
"""


async def test_a_station_that_refuses_monitors_gets_the_bridges_central_rule(site):
    """A 2.0.1 station on a weak feeder that refuses the bridge's monitors (it has none) is
    held back by the central rule from the voltages in its meter values."""
    (site.tmp_path / "feeder.yaml").write_text(FEEDER_POLICY)
    site.config_path.write_text(site_config(site.vtn.url, site.ocpp_port).replace(
        "policy: default", "policy: feeder.yaml"))
    bridge = await site.start_bridge()
    feeder = Feeder(source_v=V, impedance_ohm=0.8)  # two EVs at 16 A: 204.4 V, 0.889 pu
    stations = []
    for name in ("M1", "M2"):
        station = MonitoringStation201(StationSpec(station_id=name, rate_unit="Current"),
                                       site.url, monitors="not-supported")
        station.attach_feeder(feeder)
        site.stations.append(station)
        site._station_tasks.append(asyncio.create_task(station.run()))
        stations.append(station)
    # Held back together below what the two EVs draw (16 A each), and neither paused. Not
    # each below 16 A: a station whose restriction came from a reading taken while the other
    # drew less may keep a limit above its EV's draw, with the feeder above the floor.
    await wait_until(lambda: all(s.composite_limit_a() > 0 for s in stations)
                     and sum(s.composite_limit_a() for s in stations) < 32,
                     timeout=30, what="volt-watt limits from the central rule")
    assert min(feeder.voltages_v()) > 0.88 * V
    for name in ("M1", "M2"):
        assert "pu on L" in bridge.planner.plan.stations[name][0].reason
    with pytest.raises(NotSupportedError):
        stations[0].on_set_variable_monitoring()
