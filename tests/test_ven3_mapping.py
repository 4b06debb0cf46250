"""OpenADR 3 events as DrEvents, their targets, and the reports they ask for (pure parts)."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from policies.events import EventStatus, InvalidEvent
from ven.oadr3.mapping import OPEN_SPAN, SiteNames, map_event, match_targets, resolve_intervals
from ven.oadr3.reports import Sample, batches, report_body, understand
from ven.oadr3.wire import (
    BEGINNING,
    FOREVER,
    Event,
    Program,
    ReportDescriptor,
    parse_duration,
    parse_timestamp,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NAMES = SiteNames("site-a", "site-a", frozenset({"fleet", "visitors"}), frozenset({"bay-1"}),
                  site_targets=frozenset({"feeder-7"}),
                  group_targets={"fleet": frozenset({"grp-fleet"})})


def event(**fields) -> Event:
    body = {"id": "e1", "programID": "p1", "intervalPeriod": {"start": "2026-06-01T12:00:00Z",
                                                              "duration": "PT15M"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}]}
    body.update(fields)
    return Event.model_validate(body)


@pytest.mark.parametrize("text", ["2026-06-01T12:00:00Z", "2026-06-01 12:00:00",
                                  "2026-06-01T12:00:00", "2026-06-01T14:00:00+02:00",
                                  "2026-06-01t12:00:00.000000000z", "2026-06-01 12:00:00 Z"])
def test_timestamps_with_or_without_T_and_zone(text):
    assert parse_timestamp(text) == T0


@pytest.mark.parametrize("text", ["0001-01-01", "0001-01-01T00:00:00", "0000-00-00"])
def test_the_beginning_of_time_means_now(text):
    assert parse_timestamp(text) is BEGINNING


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", 1717243200, None, ""])
def test_nonsense_timestamps_are_refused(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_durations():
    assert parse_duration("PT15M") == timedelta(minutes=15)
    assert parse_duration("P1DT2H0.5S") == timedelta(days=1, hours=2, seconds=0.5)
    assert parse_duration("P1W") == timedelta(weeks=1)
    assert parse_duration("P9999Y") is FOREVER
    for bad in ("-PT1H", "1H", "P", "PT", 15):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_simple_event():
    mapped = map_event(event(), None, T0, T0 - timedelta(hours=1))
    assert (mapped.event_id, mapped.start, mapped.duration) == ("e1", T0, timedelta(minutes=15))
    (signal,) = mapped.signals
    assert (signal.name, signal.type, signal.intervals[0].value) == ("SIMPLE", "level", 2)
    assert mapped.status == EventStatus.FAR and mapped.market_context == "p1"


def test_each_payload_type_maps_to_the_signal_policies_read():
    kinds = ["PRICE", "DISPATCH_SETPOINT", "DISPATCH_SETPOINT_RELATIVE",
             "IMPORT_CAPACITY_LIMIT", "EXPORT_CAPACITY_LIMIT", "GHG"]
    ev = event(intervals=[{"id": 0, "payloads": [{"type": k, "values": [5]} for k in kinds]}],
               payloadDescriptors=[{"payloadType": "PRICE", "units": "MWH", "currency": "EUR"},
                                   {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"},
                                   {"payloadType": "DISPATCH_SETPOINT", "units": "W"}])
    program = Program.model_validate({"id": "p1", "programName": "GAC", "payloadDescriptors": [
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "EXPORT_CAPACITY_LIMIT",
         "units": "MW"}]})
    mapped = map_event(ev, program, T0, T0)
    found = {(s.name, s.type): (s.intervals[0].value, s.unit) for s in mapped.signals}
    assert found == {
        ("ELECTRICITY_PRICE", "price"): (0.005, "EUR"),  # 5 EUR/MWh is 0.005 EUR/kWh
        ("LOAD_DISPATCH", "setpoint"): (5, "W"),
        ("LOAD_DISPATCH", "delta"): (5, None),
        ("IMPORT_CAPACITY_LIMIT", "limit"): (5, "kW"),
        ("EXPORT_CAPACITY_LIMIT", "limit"): (5, "MW"),  # from the program's descriptor
    }
    assert mapped.market_context == "GAC"
    assert mapped.ignored_signals == ("GHG: not a payload type drbridge acts on",)


def test_intervals_follow_each_other_and_override_the_event_default():
    ev = event(intervals=[
        {"id": 0, "payloads": [{"type": "PRICE", "values": [0.1]}]},
        {"id": 1, "intervalPeriod": {"duration": "PT30M"},
         "payloads": [{"type": "PRICE", "values": [0.3]}]},
        {"id": 7, "intervalPeriod": {"start": "2026-06-01T14:00:00Z"},
         "payloads": [{"type": "PRICE", "values": [0.2]}]}])
    spans = [(r.id, r.start, r.end) for r in resolve_intervals(ev, T0)]
    minutes = timedelta(minutes=1)
    assert spans == [(0, T0, T0 + 15 * minutes), (1, T0 + 15 * minutes, T0 + 45 * minutes),
                     (7, T0 + 120 * minutes, T0 + 135 * minutes)]


def test_do_it_now_and_for_ever():
    anchor = T0 + timedelta(minutes=3)
    ev = event(intervalPeriod={"start": "0001-01-01", "duration": "P9999Y"},
               intervals=[{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT",
                                                  "values": [22]}]}])
    mapped = map_event(ev, None, anchor, anchor)
    assert mapped.start == anchor and mapped.duration == OPEN_SPAN
    assert mapped.status == EventStatus.ACTIVE


def test_several_values_are_equal_sub_intervals():
    ev = event(intervalPeriod={"start": "2026-06-01T12:00:00Z", "duration": "PT3H"},
               intervals=[{"id": 0, "payloads": [{"type": "PRICE",
                                                  "values": [0.17, 0.03, 0.11]}]}])
    (signal,) = map_event(ev, None, T0, T0).signals
    assert [(i.start, i.duration, i.value) for i in signal.intervals] == [
        (T0 + timedelta(hours=k), timedelta(hours=1), v) for k, v in
        enumerate([0.17, 0.03, 0.11])]


def test_event_duration_shortens_the_event():
    ev = event(duration="PT20M", intervals=[{"id": k, "payloads": [{"type": "SIMPLE",
                                                                     "values": [1]}]}
                                             for k in range(3)])
    assert [r.end - r.start for r in resolve_intervals(ev, T0)] == [
        timedelta(minutes=15), timedelta(minutes=5)]
    zero = event(duration="PT0S")  # the schema's default: not set
    assert resolve_intervals(zero, T0)[0].end == T0 + timedelta(minutes=15)


@pytest.mark.parametrize("payload, why", [
    ({"type": "SIMPLE", "values": [7]}, "levels must be 0, 1, 2 or 3"),
    ({"type": "SIMPLE", "values": ["high"]}, "not a finite number"),
    ({"type": "IMPORT_CAPACITY_LIMIT", "values": [-3]}, "negative"),
    ({"type": "IMPORT_CAPACITY_LIMIT", "values": [True]}, "not a finite number"),
    ({"type": "PRICE", "values": []}, "no value"),
])
def test_a_payload_that_makes_no_sense_is_left_out_with_its_reason(payload, why):
    mapped = map_event(event(intervals=[{"id": 0, "payloads": [payload]}]), None, T0, T0)
    assert mapped.signals == () and why in mapped.ignored_signals[0]


def test_units_that_are_not_power_are_left_out():
    ev = event(intervals=[{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT",
                                                  "values": [16]}]}],
               payloadDescriptors=[{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "AMPS"}])
    assert "not a unit of power" in map_event(ev, None, T0, T0).ignored_signals[0]


def test_events_without_times_or_intervals_are_refused():
    with pytest.raises(InvalidEvent, match="no duration"):
        map_event(event(intervalPeriod=None), None, T0, T0)
    with pytest.raises(InvalidEvent, match="no intervals"):
        map_event(event(intervals=[]), None, T0, T0)
    with pytest.raises(InvalidEvent, match="beyond the calendar"):
        map_event(event(intervalPeriod={"start": "9999-12-31T23:59:00Z", "duration": "PT1H"}),
                  None, T0, T0)


@pytest.mark.parametrize("bad", [
    {"intervals": "many"},
    {"intervals": [{"id": "zero", "payloads": []}]},
    {"intervals": [{"id": k, "payloads": []} for k in range(2001)]},
    {"targets": [17]},
    {"priority": -1},
    {"programID": None},
])
def test_hostile_shapes_fail_validation(bad):
    with pytest.raises(ValidationError):
        event(**bad)


def test_targets():
    def match(targets):
        return match_targets(Event.model_validate(
            {"id": "e", "programID": "p", "targets": targets}).targets, NAMES)

    assert match(None).whole_site and match([]).whole_site
    assert match(["site-a"]).whole_site and match(["feeder-7"]).whole_site
    assert match(["grp-fleet"]).groups == ("fleet",)
    assert match(["visitors", "bay-1"]).groups == ("visitors",)
    assert match(["visitors", "bay-1"]).resources == ("bay-1",)
    assert match(["site-b"]) is None
    # 3.0.1 typed targets; kinds the VEN cannot judge are left to the VTN
    assert match([{"type": "VEN_NAME", "values": ["site-a"]}]).whole_site
    assert match([{"type": "VEN_NAME", "values": ["site-b"]}]) is None
    assert match([{"type": "GROUP", "values": ["fleet"]}]).groups == ("fleet",)
    assert match([{"type": "SERVICE_AREA", "values": ["north"]}]).whole_site


def interval_list(count: int, minutes: int = 15):
    ev = event(intervals=[{"id": 10 + k, "payloads": []} for k in range(count)],
               intervalPeriod={"start": "2026-06-01T12:00:00Z", "duration": f"PT{minutes}M"})
    return resolve_intervals(ev, T0)


def test_report_timing_follows_the_user_guide():
    six = interval_list(6)

    def plan(**fields):
        descriptor = ReportDescriptor.model_validate({"payloadType": "DEMAND", **fields})
        return [(b.due, b.members) for b in batches(descriptor, six)]

    end = [r.end for r in six]
    assert plan() == [(end[5], (0, 1, 2, 3, 4, 5))]  # all intervals, at the end
    assert plan(startInterval=1, numIntervals=2, frequency=2, repeat=3) == [
        (end[1], (0, 1)), (end[3], (2, 3)), (end[5], (4, 5))]
    assert plan(startInterval=0, numIntervals=1, frequency=1, repeat=-1) == [
        (end[k], (k,)) for k in range(6)]
    assert plan(historical=False) == []  # forecasts are not offered


def test_what_reports_are_offered():
    def kind(**fields):
        return understand(ReportDescriptor.model_validate(fields), None)

    assert kind(payloadType="DEMAND").units == "KW"
    assert kind(payloadType="USAGE").units == "KWH"
    assert kind(payloadType="READING", units="VOLTS").measure == "voltage"
    assert isinstance(kind(payloadType="BASELINE"), str)
    assert isinstance(kind(payloadType="DEMAND", units="KVAR"), str)
    program = Program.model_validate({"id": "p", "programName": "x", "payloadDescriptors": [
        {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "DEMAND", "units": "W"}]})
    assert understand(ReportDescriptor.model_validate({"payloadType": "DEMAND"}),
                      program).units == "W"


def test_report_values_per_interval_and_resource():
    two = interval_list(2, minutes=10)
    samples = [Sample(T0 + timedelta(minutes=m), site_w=w, energy_wh=1000 + m,
                      groups_w={"fleet": w / 2}, voltages={"L1": (221.0, 229.5)})
               for m, w in [(0, 10_000), (5, 20_000), (12, 30_000)]]
    descriptor = ReportDescriptor.model_validate({"payloadType": "DEMAND"})
    (batch,) = batches(descriptor, two)

    def body(kind, **extra):
        return report_body(event_id="e1", program_id="p1", event_name=None,
                           client_name="site-a", kind=kind, aggregate=False, site="site-a",
                           groups=["fleet"], intervals=two, batch=batch, samples=samples,
                           with_program_id=False, **extra)

    demand = body(understand(descriptor, None))
    values = {r["resourceName"]: [i["payloads"][0]["values"][0] for i in r["intervals"]]
              for r in demand["resources"]}
    assert values == {"site-a": [15.0, 30.0], "fleet": [7.5, 15.0]}
    assert demand["resources"][0]["intervals"][0]["id"] == 10
    assert demand["resources"][0]["intervals"][0]["intervalPeriod"] == {
        "start": "2026-06-01T12:00:00Z", "duration": "PT600S"}
    assert "programID" not in demand
    usage = body(understand(ReportDescriptor.model_validate({"payloadType": "USAGE"}), None))
    assert usage["resources"][0]["intervals"][0]["payloads"][0]["values"] == [2.5]  # kWh
    volts = body(understand(ReportDescriptor.model_validate(
        {"payloadType": "READING", "units": "VOLTS"}), None))
    assert [r["resourceName"] for r in volts["resources"]] == ["site-a-L1-min", "site-a-L1-mean"]
    empty = report_body(event_id="e1", program_id="p1", event_name=None, client_name="site-a",
                        kind=understand(descriptor, None), aggregate=True, site="site-a",
                        groups=[], intervals=two, batch=batch, samples=[],
                        with_program_id=True)
    assert empty is None
