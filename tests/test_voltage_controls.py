"""The volt-watt rule in the station: variable monitors (OCPP 2.0.1), a DER VoltWatt curve
(OCPP 2.1), and what stations report back, read into domain observations (pure)."""

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.ocpp.voltage_observation import VoltageObservation, line_of, merge, read_volts
from policies.model import VoltageRule
from policies.voltwatt import VoltageReading, curve_share

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
MIN_SHARE = 6 / 32
RULE = VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=0.88)
PER_LINE = vm.candidates([1], [1, 2, 3])[0]


@cache
def schema(version, name):
    text = resources.files("ocpp").joinpath(version, "schemas", f"{name}.json").read_text()
    loaded = json.loads(text)
    loaded.pop("$id", None)
    return fastjsonschema.compile(loaded)


# -- monitors ----------------------------------------------------------------------------

def test_candidates_best_first():
    per_line, per_evse, station = vm.candidates([2, 1], [1, 2, 3])
    assert [(v.component, v.evse_id, v.instance, v.line) for v in per_line[:3]] == [
        ("EVSE", 1, "L1", 1), ("EVSE", 1, "L2", 2), ("EVSE", 1, "L3", 3)]
    assert len(per_line) == 6
    assert [(v.component, v.evse_id, v.instance) for v in per_evse] == [
        ("EVSE", 1, None), ("EVSE", 2, None)]
    assert station == (vm.VoltageVariable("ChargingStation"),)


def test_monitors_at_the_rules_thresholds_on_every_line():
    specs = vm.desired_monitors(RULE, V, PER_LINE)
    on_l2 = [s for s in specs if s.variable.instance == "L2"]
    assert [(s.kind, s.volts) for s in on_l2] == [
        ("LowerThreshold", 202.4), ("LowerThreshold", 207.0), ("LowerThreshold", 209.3),
        ("LowerThreshold", 211.6), ("LowerThreshold", 213.9), ("LowerThreshold", 216.2),
        ("LowerThreshold", 218.5)]
    assert len(specs) == 3 * len(on_l2)
    assert {s.severity for s in specs} == {vm.DEFAULT_SEVERITY}
    assert on_l2[0].why == "pause_below"
    assert vm.desired_monitors(None, V, PER_LINE) == []


def test_over_voltage_thresholds_are_upper_monitors():
    rule = VoltageRule(curve={0.95: 1.0}, pause_below=None, pause_above=1.10,
                       over_voltage={"start": 1.04, "full": 1.08})
    specs = vm.desired_monitors(rule, V, [vm.VoltageVariable("ChargingStation")])
    assert [(s.kind, s.volts) for s in specs if s.volts > V] == [
        ("UpperThreshold", 239.2), ("UpperThreshold", 241.5), ("UpperThreshold", 243.8),
        ("UpperThreshold", 246.1), ("UpperThreshold", 248.4), ("UpperThreshold", 253.0)]


@pytest.mark.parametrize("version", ["v201", "v21"])
def test_what_is_sent_passes_the_schemas(version):
    specs = vm.desired_monitors(RULE, V, PER_LINE)
    schema(version, "SetVariableMonitoringRequest")(vm.set_monitoring_request(specs))
    schema(version, "ClearVariableMonitoringRequest")(vm.clear_monitoring_request([3, 4]))
    data = vm.set_monitoring_request(specs[:1])["setMonitoringData"][0]
    assert data == {"value": 202.4, "type": "LowerThreshold", "severity": 5,
                    "transaction": False, "component": {"name": "EVSE", "evse": {"id": 1}},
                    "variable": {"name": "ACVoltage", "instance": "L1"}}


def result(spec, status="Accepted", monitor_id=None, **changes):
    out = {"status": status, "type": spec.kind, "severity": spec.severity,
           "component": spec.variable.component_payload(),
           "variable": spec.variable.variable_payload()}
    if monitor_id is not None:
        out["id"] = monitor_id
    return out | changes


def test_reading_what_the_station_took():
    specs = vm.desired_monitors(RULE, V, PER_LINE)[:3]
    reply = {"setMonitoringResult": [result(specs[0], monitor_id=7),
                                     result(specs[1], "UnsupportedMonitorType"),
                                     result(specs[2], "accepted", 9)]}
    outcome = vm.read_set_monitoring_reply(specs, reply)
    assert [(m.monitor_id, m.spec) for m in outcome.installed] == [(7, specs[0]), (9, specs[2])]
    assert outcome.refused == ((specs[1], "UnsupportedMonitorType"),)
    assert not outcome.variable_unknown


def test_results_out_of_order_are_matched_and_an_id_is_needed():
    a = vm.MonitorSpec(PER_LINE[0], "LowerThreshold", 207.0)
    b = vm.MonitorSpec(PER_LINE[1], "LowerThreshold", 207.0)
    c = vm.MonitorSpec(PER_LINE[2], "LowerThreshold", 207.0)
    reply = {"setMonitoringResult": [result(b, monitor_id=2), result(a, monitor_id=1),
                                     result(c)]}
    outcome = vm.read_set_monitoring_reply([a, b, c], reply)
    assert {(m.monitor_id, m.spec.variable.instance) for m in outcome.installed} == {
        (1, "L1"), (2, "L2")}
    assert outcome.refused == ((c, "AcceptedWithoutId"),)


def test_a_station_without_the_variable_sends_us_to_the_next_candidate():
    specs = vm.desired_monitors(RULE, V, PER_LINE)
    reply = {"setMonitoringResult": [result(s, "UnknownVariable") for s in specs]}
    assert vm.read_set_monitoring_reply(specs, reply).variable_unknown
    garbled = vm.read_set_monitoring_reply(specs, {"setMonitoringResult": "no"})
    assert not garbled.installed and {status for _, status in garbled.refused} == {"NoResult"}
    assert not garbled.variable_unknown


def test_monitors_follow_the_rule_and_only_ours_are_cleared():
    old = vm.desired_monitors(RULE, V, PER_LINE[:1])
    installed = [vm.InstalledMonitor(100 + i, spec) for i, spec in enumerate(old)]
    assert vm.monitor_changes(old, installed).empty
    lower = VoltageRule(curve={0.93: 1.0, 0.90: "min"}, pause_below=0.88)
    new = vm.desired_monitors(lower, V, PER_LINE[:1])
    changes = vm.monitor_changes(new, installed)
    kept = {s.identity() for s in old} & {s.identity() for s in new}
    assert {s.volts for s in changes.to_set} == {s.volts for s in new} - {s.volts for s in old}
    assert set(changes.to_clear) == {m.monitor_id for m in installed
                                     if m.spec.identity() not in kept}
    removed = vm.monitor_changes([], installed)  # the rule is gone
    assert removed.to_set == () and sorted(removed.to_clear) == [m.monitor_id for m in installed]
    doubled = vm.monitor_changes(old, [*installed, vm.InstalledMonitor(99, old[0])])
    assert doubled.to_clear == (99,) and doubled.to_set == ()


def test_clear_reply():
    reply = {"clearMonitoringResult": [{"status": "Accepted", "id": 1},
                                       {"status": "NotFound", "id": 2},
                                       {"status": "Rejected", "id": 3},
                                       {"status": "Accepted", "id": 77}]}
    assert vm.read_clear_reply([1, 2, 3], reply) == {1, 2}


def event(volts, instance="L2", cleared=None, monitor_id=None, name="ACVoltage", **extra):
    data = {"eventId": 1, "timestamp": "2026-11-25T11:59:59Z", "trigger": "Alerting",
            "actualValue": volts, "eventNotificationType": "CustomMonitor",
            "component": {"name": "EVSE", "evse": {"id": 1}},
            "variable": {"name": name} | ({"instance": instance} if instance else {})}
    if cleared is not None:
        data["cleared"] = cleared
    if monitor_id is not None:
        data["variableMonitoringId"] = monitor_id
    return data | extra


def test_notify_event_becomes_observations():
    spec = vm.MonitorSpec(PER_LINE[1], "LowerThreshold", 207.0, why="curve point 0.9 pu")
    payload = {"generatedAt": "2026-11-25T11:59:59Z", "seqNo": 0, "eventData": [
        event("205.3", monitor_id=5),
        event("208,1 V", monitor_id=5, cleared=True),
        event("231", instance=None, name="acvoltage"),
        event("oops"),
        event("12", name="Temperature"),
    ]}
    found, unreadable = vm.observations("CP1", payload, NOW, {5: spec})
    assert unreadable == 1
    assert [(o.volts, o.line, o.returned_to_normal, o.evse_id, o.source) for o in found] == [
        (205.3, 2, False, 1, "monitor"), (208.1, 2, True, 1, "monitor"),
        (231.0, None, False, 1, "monitor")]
    assert found[0].at == NOW - timedelta(seconds=1)
    assert found[0].detail == ("station's monitor event: 205.3 V on L2, below 207.0 V "
                               "(curve point 0.9 pu)")
    assert found[1].detail.endswith("back below 207.0 V (curve point 0.9 pu)")
    assert found[2].detail == "station's monitor event: 231.0 V (Alerting)"


def test_a_clock_running_ahead_does_not_make_an_event_fresher():
    payload = {"eventData": [event("205", timestamp="2026-11-25T13:00:00Z")]}
    assert vm.observations("CP1", payload, NOW)[0][0].at == NOW
    payload = {"eventData": [event("205", timestamp="yesterday")]}
    assert vm.observations("CP1", payload, NOW)[0][0].at == NOW


def test_adopting_our_duplicates_after_a_lost_id():
    specs = vm.desired_monitors(RULE, V, PER_LINE[:1])
    report = {"requestId": 1, "seqNo": 0, "generatedAt": "2026-11-25T12:00:00Z", "monitor": [{
        "component": {"name": "evse", "evse": {"id": 1}},
        "variable": {"name": "ACVoltage", "instance": "l1"},
        "variableMonitoring": [
            {"id": 41, "transaction": False, "value": 207.0, "type": "LowerThreshold",
             "severity": 5},
            {"id": 42, "transaction": False, "value": 207.0, "type": "LowerThreshold",
             "severity": 2},  # someone else's, at another severity
            {"id": 43, "transaction": True, "value": 202.4, "type": "LowerThreshold",
             "severity": 5},  # tied to transactions: not one we set
        ]}]}
    adopted = vm.adopt(specs, report)
    assert [(m.monitor_id, m.spec.volts) for m in adopted] == [(41, 207.0)]


# -- readings ----------------------------------------------------------------------------

def test_line_and_volts_are_read_leniently():
    assert [line_of(x) for x in ("L1", "l2-N", "L3", "L12", "Phase", None, 3)] == [
        1, 2, 3, None, None, None, None]
    assert [read_volts(x) for x in ("229.8", "229,8 V", 230, " 231.0V", "", "-5", True)] == [
        229.8, 229.8, 230.0, 231.0, None, None, None]


def test_merge_folds_a_monitor_voltage_into_the_reading():
    stale = timedelta(seconds=120)
    sampled = ("meter value 11:59:50",) * 3
    previous = VoltageReading(NOW - timedelta(seconds=10), (229.0, 228.0, 227.0), sampled)

    def merged(*args):
        reading = merge(*args)
        return reading if reading is None else (reading.at, reading.phases_v)

    dip = VoltageObservation("CP1", NOW + timedelta(milliseconds=400), "monitor", 205.0, 2)
    at = dip.at
    folded = merge(previous, dip, (1, 2, 3), stale)
    assert folded is not None and (folded.at, folded.phases_v) == (at, (229.0, 205.0, 227.0))
    # each phase says where its value came from, for the reason chain
    assert folded.sources == ("meter value 11:59:50", "station's monitor event 12:00:00.4",
                              "meter value 11:59:50")
    whole = VoltageObservation("CP1", NOW, "monitor", 206.0, None)
    assert merged(previous, whole, (1, 2, 3), stale) == (NOW, (206.0,) * 3)
    assert merged(previous, whole, (2,), stale) == (NOW, (229.0, 206.0, 227.0))
    old = VoltageReading(NOW - timedelta(minutes=5), (229.0, 228.0, 227.0))
    assert merged(old, dip, (1, 2, 3), stale) == (at, (None, 205.0, None))
    late = VoltageObservation("CP1", NOW - timedelta(minutes=1), "monitor", 200.0, 1)
    assert merge(previous, late, (1, 2, 3), stale) is previous
    notice = VoltageObservation("CP1", NOW, "der-control", detail="x")
    assert merge(previous, notice, (1, 2, 3), stale) is previous
    assert merged(None, dip, (1, 2, 3), stale) == (at, (None, 205.0, None))


# -- DER control -------------------------------------------------------------------------

def test_the_default_rule_as_a_volt_watt_curve():
    curve = der.volt_watt_curve(RULE, MIN_SHARE)
    assert isinstance(curve, der.DerCurve)
    assert curve.points == ((50.0, 0.0), (87.99, 0.0), (88.0, -18.75), (90.0, -18.75),
                            (95.0, -100.0), (150.0, -100.0))
    assert curve.hysteresis_delay_s == 60 and curve.hysteresis_gradient == pytest.approx(0.167)
    for pu in (0.80, 0.885, 0.90, 0.92, 0.95, 1.0, 1.2):
        assert curve.charging_share(pu * 100) == pytest.approx(curve_share(RULE, pu, MIN_SHARE),
                                                               abs=1e-3)


@pytest.mark.parametrize(("name", "request_of"), [
    ("SetDERControlRequest", der.set_der_control_request),
    ("GetDERControlRequest", lambda curve: der.get_der_control_request(3)),
    ("ClearDERControlRequest", lambda curve: der.clear_der_control_request()),
])
def test_der_requests_pass_the_21_schemas(name, request_of):
    curve = der.volt_watt_curve(VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=0.88,
                                            pause_above=1.1), MIN_SHARE)
    schema("v21", name)(request_of(curve))


def test_the_curve_in_volts_for_a_station_that_reads_them():
    curve = der.volt_watt_curve(RULE, MIN_SHARE, x_in_volts_of=V)
    assert curve.points[0] == (115.0, 0.0) and curve.points[-1] == (345.0, -100.0)
    assert (202.4, -18.75) in curve.points and (218.5, -100.0) in curve.points
    assert curve.charging_share(0.92 * V) == pytest.approx(curve_share(RULE, 0.92, MIN_SHARE),
                                                           abs=1e-3)


def test_pause_above_cuts_the_curve_and_over_voltage_leaves_it_open():
    rule = VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=None, pause_above=1.10,
                       over_voltage={"start": 1.04, "full": 1.08})
    curve = der.volt_watt_curve(rule, MIN_SHARE)
    assert curve.charging_share(106.0) == 1.0  # the floor is the bridge's, never a cut
    assert curve.charging_share(110.0) == 1.0 and curve.charging_share(110.5) == 0.0
    assert curve.points[-1] == (150.0, 0.0)


def test_a_rule_with_too_many_points_stays_central():
    rule = VoltageRule(curve={0.99: 1.0, 0.97: 0.8, 0.95: 0.2, 0.93: 0.9, 0.91: 0.3,
                              0.89: 0.7, 0.87: 0.1, 0.85: "min"}, pause_below=0.80,
                       pause_above=1.1)
    result = der.volt_watt_curve(rule, MIN_SHARE)
    assert isinstance(result, der.Unexpressible) and "DER curve holds 10" in result.reason


@settings(max_examples=200, deadline=None)
@given(curve=st.dictionaries(st.floats(0.85, 1.0).map(lambda x: round(x, 2)),
                             st.one_of(st.floats(0.2, 1).map(lambda x: round(x, 2)),
                                       st.just("min")), min_size=1, max_size=4),
       pu=st.floats(0.7, 1.3))
def test_the_curve_sent_is_the_rule(curve, pu):
    rule = VoltageRule(curve=curve, pause_below=None)
    sent = der.volt_watt_curve(rule, MIN_SHARE)
    assert isinstance(sent, der.DerCurve) and len(sent.points) <= der.MAX_POINTS
    schema("v21", "SetDERControlRequest")(der.set_der_control_request(sent))
    # the points are rounded to 0.01 %: a steep stretch may move by a little
    assert sent.charging_share(pu * 100) == pytest.approx(curve_share(rule, pu, MIN_SHARE),
                                                          abs=0.02)


def test_der_replies():
    assert der.read_reply({"status": "Accepted"}).status == "accepted"
    assert der.read_reply({"status": "Accepted", "supersededIds": ["other"]}).status == "accepted"
    assert der.read_reply({"status": "Accepted",
                           "supersededIds": [der.CONTROL_ID]}).status == "superseded"
    refused = der.read_reply({"status": "Rejected",
                              "statusInfo": {"reasonCode": "InvalidValue"}})
    assert (refused.status, refused.detail) == ("rejected", "InvalidValue")
    assert der.read_reply({"status": "NotSupported"}).status == "not-supported"
    assert der.read_reply({"status": "notfound"}).status == "not-found"
    assert der.read_reply({}).status == "unreadable"


def test_our_control_read_back_from_a_report():
    curve = der.volt_watt_curve(RULE, MIN_SHARE)
    entry = {"id": der.CONTROL_ID, "curveType": "VoltWatt", "isDefault": True,
             "isSuperseded": False, "curve": curve.payload()}
    other = {"id": "dso-1", "curveType": "VoltWatt", "isDefault": True, "isSuperseded": False,
             "curve": curve.payload(0)}
    reports = [{"requestId": 1, "tbc": True, "curve": [other]},
               {"requestId": 1, "curve": [entry]}]
    installed = der.read_report(reports)
    assert installed is not None and installed.curve.same_as(curve) and not installed.superseded
    changed = der.volt_watt_curve(VoltageRule(curve={0.94: 1.0, 0.90: "min"}), MIN_SHARE)
    assert not installed.curve.same_as(changed)
    assert der.read_report([{"requestId": 1, "curve": [other]}]) is None


def variable_result(component, name, value, evse=1, status="Accepted"):
    return {"attributeStatus": status, "attributeValue": value,
            "component": {"name": component, "evse": {"id": evse}}, "variable": {"name": name}}


def test_der_support_from_the_device_model():
    query = der.support_query([1])
    schema("v21", "GetVariablesRequest")(query)
    assert len(query["getVariableData"]) == 6
    yes = {"getVariableResult": [variable_result("ACDERCtrlr", "Available", "true"),
                                 variable_result("ACDERCtrlr", "Enabled", "true"),
                                 variable_result("ACDERCtrlr", "ModesSupported",
                                                 "FreqDroop,VoltWatt")]}
    assert der.supports_volt_watt(yes)
    other_modes = {"getVariableResult": [*yes["getVariableResult"][:2],
                                         variable_result("ACDERCtrlr", "ModesSupported",
                                                         "FreqDroop")]}
    assert not der.supports_volt_watt(other_modes)
    off = {"getVariableResult": [variable_result("DCDERCtrlr", "Available", "true"),
                                 variable_result("DCDERCtrlr", "Enabled", "false")]}
    assert not der.supports_volt_watt(off)
    unknown = {"getVariableResult": [variable_result("ACDERCtrlr", "Available", "",
                                                     status="UnknownComponent")]}
    assert not der.supports_volt_watt(unknown)
    assert der.supports_volt_watt({"getVariableResult": yes["getVariableResult"][:2]})


def test_der_notices_become_observations():
    alarm = der.observation_from_alarm("CP1", {
        "controlType": "VoltWatt", "gridEventFault": "UnderVoltage",
        "timestamp": "2026-11-25T11:59:58Z"}, NOW)
    assert (alarm.source, alarm.volts, alarm.returned_to_normal, alarm.at) == (
        "der-control", None, False, NOW - timedelta(seconds=2))
    assert alarm.detail == "station's own DER control (VoltWatt): UnderVoltage alarm raised"
    ended = der.observation_from_alarm("CP1", {"controlType": "VoltWatt", "alarmEnded": True,
                                               "timestamp": "2026-11-25T12:00:00Z"}, NOW)
    assert ended.returned_to_normal and ended.detail.endswith("alarm ended")
    started = der.observation_from_start_stop("CP1", {
        "controlId": der.CONTROL_ID, "started": True, "timestamp": "2026-11-25T12:00:00Z"}, NOW)
    assert started is not None and started.detail == "station's own DER control started"
    superseded = der.observation_from_start_stop("CP1", {
        "controlId": "dso-7", "started": True, "timestamp": "2026-11-25T12:00:00Z",
        "supersededIds": [der.CONTROL_ID]}, NOW)
    assert superseded is not None and superseded.detail.endswith("superseded by dso-7")
    assert der.observation_from_start_stop("CP1", {
        "controlId": "dso-7", "started": False, "timestamp": "2026-11-25T12:00:00Z"}, NOW) is None
