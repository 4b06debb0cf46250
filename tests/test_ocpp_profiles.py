import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from ocpp.messages import MessageType, get_validator

from bridge.ocpp.capabilities import Capabilities, parse_configuration, parse_rate_units
from bridge.ocpp.profiles import (
    _build,
    build_profile,
    connector_profiles,
    is_raise,
    same_schedule,
    split_watts,
    station_max_profile,
    to_unit,
)
from bridge.ocpp.station_path import station_id_from_path
from policies.fleet import StationInfo, Step, value_at

NOW = datetime(2026, 11, 25, 12, 0, 0, 400_000, tzinfo=UTC)
THREE = StationInfo("CP1", 3, 230, 32)
ONE = StationInfo("CP2", 1, 230, 32)
AMPS = Capabilities(rate_units=frozenset({"A"}), known=True)
WATTS = Capabilities(rate_units=frozenset({"W"}), known=True)


def steps(*pairs: tuple[int, float]) -> tuple[Step, ...]:
    return tuple(Step(NOW + timedelta(seconds=s), w, f"r{s}") for s, w in pairs)


def test_rate_units_in_any_spelling():
    assert parse_rate_units("Current") == {"A"}
    assert parse_rate_units("POWER") == {"W"}
    assert parse_rate_units("Current,Power") == {"A", "W"}
    assert parse_rate_units("current power") == {"A", "W"}
    assert parse_rate_units("A;W") == {"A", "W"}
    assert parse_rate_units("") == frozenset()


def test_capabilities_from_get_configuration():
    caps = parse_configuration([
        {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Power"},
        {"key": "ChargeProfileMaxStackLevel", "value": "3"},
        {"key": "ChargingScheduleMaxPeriods", "value": " 5 "},
        {"key": "MaxChargingProfilesInstalled", "value": "junk"},
        {"key": "SupportedFeatureProfiles", "value": "Core,SmartCharging"},
    ])
    assert caps.rate_units == {"W"} and caps.preferred_unit == "W"
    assert (caps.max_stack_level, caps.max_periods) == (3, 5)
    assert "SmartCharging" in caps.features and caps.known
    assert parse_configuration([]).rate_units == {"A"}  # silent station: amps, the 1.6 default


def test_amps_round_down_and_pause_below_minimum():
    assert to_unit(11_040, "A", THREE, 6) == 16.0
    assert to_unit(11_039, "A", THREE, 6) == 15.9
    assert to_unit(4_139, "A", THREE, 6) == 0.0  # under 6 A: pause, never a trickle
    assert to_unit(4_140, "A", THREE, 6) == 6.0
    assert to_unit(5_500.7, "W", THREE, 6) == 5_500.0
    assert to_unit(1_379, "W", ONE, 6) == 0.0


def test_profile_holds_the_event_at_absolute_times():
    built = station_max_profile(steps((0, 11_040), (60, 4_140), (120, 11_040)), THREE, AMPS,
                                NOW, 6)
    schedule = built.payload["chargingSchedule"]
    assert built.connector_id == 0
    assert built.payload["chargingProfilePurpose"] == "ChargePointMaxProfile"
    assert built.payload["chargingProfileKind"] == "Absolute"
    assert schedule["startSchedule"] == "2026-11-25T11:59:55Z"  # a little in the past
    periods = [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]]
    # the decrease starts on the second before its time, the increase on the one after
    assert periods == [(0, 16.0), (65, 6.0), (126, 16.0)]
    assert {p["numberPhases"] for p in schedule["chargingSchedulePeriod"]} == {3}


def test_watt_profile_for_a_watt_only_station():
    built = station_max_profile(steps((0, 7_000.9)), ONE, WATTS, NOW, 6)
    assert built.unit == "W"
    assert built.payload["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 7_000.0


def test_past_steps_are_dropped():
    built = station_max_profile(steps((-600, 1_000), (-300, 8_000), (300, 5_000)), THREE, WATTS,
                                NOW, 6)
    periods = built.payload["chargingSchedule"]["chargingSchedulePeriod"]
    assert [(p["startPeriod"], p["limit"]) for p in periods] == [(0, 8_000), (305, 5_000)]


@given(st.lists(st.tuples(st.integers(1, 86_400), st.floats(0, 50_000)), min_size=1,
                max_size=60),
       st.integers(1, 24))
def test_applied_schedule_never_above_the_plan(raw, max_periods):
    plan = tuple(sorted({s: w for s, w in raw}.items()))
    planned = steps((0, 22_080), *plan)
    caps = Capabilities(rate_units=frozenset({"A"}), max_periods=max_periods, known=True)
    built = station_max_profile(planned, THREE, caps, NOW, 6)
    # what goes on the wire is a valid 1.6 SetChargingProfile (the library's own validator)
    get_validator(MessageType.Call, "SetChargingProfile", "1.6", parse_float=Decimal).validate(
        json.loads(json.dumps({"connectorId": 0, "csChargingProfiles": built.payload}),
                   parse_float=Decimal))
    periods = built.payload["chargingSchedule"]["chargingSchedulePeriod"]
    assert len(periods) <= max_periods
    starts = [p["startPeriod"] for p in periods]
    assert starts == sorted(set(starts)) and starts[0] == 0
    probes = {s.start for s in planned} | {s.start for s in built.applied}
    for at in probes | {t + timedelta(milliseconds=500) for t in probes}:
        if at < NOW:
            continue
        applied, wanted = value_at(built.applied, at), value_at(planned, at)
        assert applied is not None and wanted is not None
        assert applied.limit_w <= wanted.limit_w + 1e-6


def test_schedule_comparisons():
    a = steps((0, 10_000), (60, 5_000))
    assert same_schedule(a, steps((0, 10_000), (60, 5_000)), NOW)
    assert not same_schedule(a, steps((0, 10_000), (61, 5_000)), NOW)
    # what already lies in the past does not matter
    assert same_schedule(steps((-60, 1), (0, 10_000)), steps((-30, 2), (0, 10_000)), NOW)
    assert is_raise(steps((0, 10_001 + 1)), steps((0, 10_000)), NOW)
    assert not is_raise(steps((0, 5_000)), a, NOW)
    assert is_raise(steps((0, 9_000)), a, NOW)  # above the later 5 kW
    assert is_raise(steps((0, 5_000), (60, 6_000)), a, NOW)
    assert is_raise(a, None, NOW)


def test_station_id_from_path():
    assert station_id_from_path("/CP%2001") == "CP 01"
    assert station_id_from_path("/ocpp/site/CP1/") == "CP1"
    assert station_id_from_path("/CP1?token=x") == "CP1"
    assert station_id_from_path("/") is None


def test_share_split_between_sessions_never_sums_above_it():
    assert split_watts(12_000, 2, 4_140) == [6_000, 6_000]
    assert split_watts(10_000, 3, 4_140) == [5_000, 5_000, 0.0]  # two fit at the minimum
    assert split_watts(3_000, 2, 4_140) == [0.0, 0.0]
    assert split_watts(5_000, 0, 4_140) == []


def test_connector_profiles_with_one_place_each_put_sessions_in_their_defaults_places():
    built = connector_profiles(steps((0, 22_080),), {1: 41, 3: 42}, 3, THREE, AMPS, NOW, 6,
                               one_place_each=True)
    assert [(b.purpose, b.connector_id, b.transaction_id, b.profile_id) for b in built] == [
        ("TxProfile", 1, 41, 9101), ("TxDefaultProfile", 2, None, 9102),
        ("TxProfile", 3, 42, 9103)]
    assert built[0].payload["chargingProfileId"] == 9101


def test_connector_profiles_carry_the_transaction_and_pause_idle_connectors():
    built = connector_profiles(steps((0, 22_080), (60, 8_280)), {1: 41, 3: 42}, 3, THREE, AMPS,
                               NOW, 6)
    assert [(b.purpose, b.connector_id, b.transaction_id, b.profile_id) for b in built] == [
        ("TxDefaultProfile", 1, None, 9101), ("TxProfile", 1, 41, 9201),
        ("TxDefaultProfile", 2, None, 9102),
        ("TxDefaultProfile", 3, None, 9103), ("TxProfile", 3, 42, 9203)]
    tx = built[1].payload
    assert tx["transactionId"] == 41 and tx["stackLevel"] == 0  # AMPS takes level 0 only
    assert [(p["startPeriod"], p["limit"]) for p in tx["chargingSchedule"]
            ["chargingSchedulePeriod"]] == [(0, 16.0), (65, 6.0)]
    assert built[2].payload["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 0
    for b in built:  # each one a valid 1.6 SetChargingProfile
        get_validator(MessageType.Call, "SetChargingProfile", "1.6", parse_float=Decimal).validate(
            json.loads(json.dumps({"connectorId": b.connector_id, "csChargingProfiles": b.payload}),
                       parse_float=Decimal))


SHARED = [steps((0, 11_000)), steps((0, 7_000), (600, 3_500), (3_600, 11_000)),
          steps((-60, 0), (30, 4_140))]


@given(st.lists(st.tuples(st.integers(0, len(SHARED) - 1), st.sampled_from([1, 3]),
                          st.sampled_from([frozenset({"A"}), frozenset({"W"})]),
                          st.integers(0, 2), st.integers(1, 3), st.integers(0, 3),
                          st.sampled_from([230.0, 240.0])),
                min_size=1, max_size=30))
def test_a_profile_built_again_from_the_same_schedule_is_what_building_it_gives(calls):
    # A wave builds the same profile for thousands of stations and keeps the first it
    # built; whatever the order of the calls, each must be what building it anew gives.
    for which, phases, units, seconds, periods, connector, volts in calls:
        station = StationInfo(f"CP{connector}", phases, volts, 32.0)
        caps = Capabilities(rate_units=units, max_stack_level=1, max_periods=periods)
        now = NOW + timedelta(seconds=seconds)
        got = build_profile(SHARED[which], station, caps, now, 6.0, connector_id=connector)
        start = now.replace(microsecond=0) - timedelta(seconds=5)
        assert got == _build(SHARED[which], station, caps, start, 6.0,
                             "ChargePointMaxProfile", connector, None, 1, None)


def test_a_profile_is_encoded_once_and_as_its_payload():
    built = station_max_profile(steps((0, 11_040), (600, 5_520)), THREE, AMPS, NOW, 6)
    text = built.payload_json
    assert json.loads(text) == built.payload
    assert built.payload_json is text  # encoded once, then kept
    assert built == station_max_profile(steps((0, 11_040), (600, 5_520)), THREE, AMPS, NOW, 6)
    # a profile changed from it (the dispatcher places one at another stack level) is
    # encoded anew, not with the text kept for the one it came from
    placed = dataclasses.replace(built, stack_level=built.stack_level + 3)
    assert json.loads(placed.payload_json)["stackLevel"] == built.stack_level + 3
    assert json.loads(built.payload_json)["stackLevel"] == built.stack_level


def test_a_schedule_is_the_same_as_itself_only_where_it_says_something_now():
    assert same_schedule(steps((0, 7_000)), steps((0, 7_000)), NOW)
    later = steps((60, 7_000))
    assert not same_schedule(later, later, NOW)  # nothing applies now: as for two alike
    assert not same_schedule((), (), NOW)
