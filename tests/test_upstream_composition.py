"""The operator's profiles and drbridge's compose: the station computes the lower of both,
drbridge's profiles are never replaced or cleared by the operator, answers stay true."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.profiles import build_profile
from bridge.sim.csms import UpstreamCsms
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.upstream.composition import (
    STATION_MAX,
    TX,
    TX_DEFAULT,
    AnswerLocally,
    Forward,
    Needs,
    Reserved,
    Split,
    UpstreamProfiles,
    combined_clear_answer,
    guard_configuration,
    guard_variables,
    lower_envelope,
    remote_start,
)
from policies.fleet import StationInfo, Step, value_at

NOW = datetime.now(UTC).replace(microsecond=0)
OURS = frozenset({9001, 9101, 9201})
TX_ID = 77
INFO = StationInfo("CP1", phases=3, voltage_v=230.0, max_current_a=32.0)


def reserved(level: int = 3, purposes: frozenset[str] = frozenset({STATION_MAX})) -> Reserved:
    return Reserved(level, OURS, purposes)


def profile_16(profile_id: int, level: int, purpose: str, limit: float, unit: str = "A",
               start: datetime = NOW - timedelta(minutes=1), duration: int | None = None,
               valid_to: datetime | None = None, tx: int | None = None,
               periods: list[tuple[int, float]] | None = None) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "startSchedule": start.isoformat().replace("+00:00", "Z"), "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim}
                                   for s, lim in (periods or [(0, limit)])]}
    if duration is not None:
        schedule["duration"] = duration
    body: dict[str, Any] = {"chargingProfileId": profile_id, "stackLevel": level,
                            "chargingProfilePurpose": purpose,
                            "chargingProfileKind": "Absolute", "chargingSchedule": schedule}
    if valid_to is not None:
        body["validTo"] = valid_to.isoformat().replace("+00:00", "Z")
    if tx is not None:
        body["transactionId"] = tx
    return body


def station(top_level: int = 3) -> SimulatedStation:
    sim = SimulatedStation(StationSpec("CP1", max_stack_level=top_level, max_profiles=64),
                           "ws://127.0.0.1:1")
    sim.connectors[1].tx_id = TX_ID
    sim.connectors[1].tx_start = NOW - timedelta(minutes=10)
    return sim


def ours(steps: tuple[Step, ...], level: int) -> tuple[int, dict[str, Any]]:
    caps = Capabilities(rate_units=frozenset({"A", "W"}), max_stack_level=level, known=True)
    built = build_profile(steps, INFO, caps, NOW, 6.0, stack_level=level)
    return built.connector_id, built.payload


def clear_on(sim: SimulatedStation, request: dict[str, Any]) -> str:
    answer = sim.on_clear_charging_profile(
        id=request.get("id"), connector_id=request.get("connectorId"),
        charging_profile_purpose=request.get("chargingProfilePurpose"),
        stack_level=request.get("stackLevel"))
    return answer.status


# ---- the site limit holds, whatever the operator sends -----------------------------------------
purposes = st.sampled_from([(STATION_MAX, 0), (TX_DEFAULT, 0), (TX_DEFAULT, 1), (TX, 1)])
set_ops = st.builds(
    lambda pid, level, place, limit, unit, start, duration, period2: (
        "set", place[1], profile_16(
            pid, level, place[0], limit if unit == "A" else limit * 690, unit,
            NOW + timedelta(seconds=start), duration, None, TX_ID if place[0] == TX else None,
            [(0, limit), (period2[0], period2[1])] if period2 else None)),
    st.sampled_from([1, 2, 3, 9001, 9101, 1_900_009_001]), st.integers(0, 4), purposes,
    st.integers(0, 32), st.sampled_from(["A", "W"]), st.integers(-600, 1800),
    st.none() | st.integers(60, 3600),
    st.none() | st.tuples(st.integers(60, 3600), st.integers(0, 32)))
clear_ops = st.builds(
    lambda pid, connector, purpose, level: ("clear", {
        k: v for k, v in {"id": pid, "connectorId": connector,
                          "chargingProfilePurpose": purpose, "stackLevel": level}.items()
        if v is not None}),
    st.none() | st.sampled_from([1, 2, 9001]), st.none() | st.sampled_from([0, 1]),
    st.none() | st.sampled_from([STATION_MAX, TX_DEFAULT, TX]), st.none() | st.integers(0, 4))
dr_series = st.lists(st.tuples(st.integers(0, 3600), st.integers(0, 22_000)), min_size=1,
                     max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.lists(st.one_of(set_ops, clear_ops), max_size=8), dr_series)
def test_the_station_never_exceeds_the_lower_of_both(top, ops, dr):
    dr_steps = tuple(Step(NOW - timedelta(seconds=5) + timedelta(seconds=s), float(w), "dr")
                     for s, w in sorted({0: dr[0][1], **dict(dr)}.items()))
    lc, alone = station(top), station(top)  # drbridge in between; the operator's alone
    composer = UpstreamProfiles("1.6", reserved(top))
    connector, first = ours(dr_steps, top)
    assert lc._install(connector, first) == "Accepted"
    for op in ops:
        if op[0] == "set":
            _, connector_id, body = op
            decision = composer.on_set({"connectorId": connector_id, "csChargingProfiles": body},
                                       NOW)
            if isinstance(decision, AnswerLocally):
                assert decision.answer == {"status": "Rejected"} and decision.note
                continue
            sent = decision.request["csChargingProfiles"]
            status = lc._install(decision.request["connectorId"], sent)
            if status == "Accepted":
                assert decision.remember is not None
                composer.accepted(decision.remember)
                # what the operator was told is true of its own profile, alone
                assert alone._install(connector_id, body) == "Accepted"
        else:
            decision = composer.on_clear(op[1])
            if isinstance(decision, Forward):
                clear_on(lc, decision.request)
            elif isinstance(decision, Split):
                for request in decision.requests:
                    clear_on(lc, request)
            if not isinstance(decision, AnswerLocally):
                composer.forgotten(decision.forget)
                clear_on(alone, op[1])
        # drbridge's profile is never replaced nor cleared by the operator
        held = lc.installed_profiles.get((0, STATION_MAX, top))
        assert held is not None and held["chargingProfileId"] == 9001, ops
    # drbridge merges the operator's station-wide limit into its own and sends it again
    merged = lower_envelope(dr_steps, composer.limit_steps(STATION_MAX, 0, INFO, NOW))
    connector, again = ours(merged, top)
    assert lc._install(connector, again) == "Accepted"
    for second in range(0, 7200, 37):
        at = NOW + timedelta(seconds=second)
        dr_w = value_at(dr_steps, at).limit_w  # type: ignore[union-attr]
        bound = min(dr_w, alone.composite_limit_w(at, 1), alone.composite_limit_w(at))
        assert lc.composite_limit_w(at, 1) <= bound + 1.0, (second, ops)
        assert lc.composite_limit_w(at) <= bound + 1.0, (second, ops)


def test_the_lower_of_both_exactly_when_the_operator_caps_lower():
    lc = station(3)
    composer = UpstreamProfiles("1.6", reserved(3))
    dr = (Step(NOW - timedelta(seconds=5), 22_000.0, "dr"),
          Step(NOW + timedelta(minutes=30), 8_280.0, "event"))
    connector, first = ours(dr, 3)
    lc._install(connector, first)
    body = profile_16(5, 3, STATION_MAX, 20.0)  # at the site limit's own level
    decision = composer.on_set({"connectorId": 0, "csChargingProfiles": body}, NOW)
    assert isinstance(decision, Forward) and "installed at 2" in decision.note
    assert decision.request["csChargingProfiles"]["stackLevel"] == 2
    assert lc._install(0, decision.request["csChargingProfiles"]) == "Accepted"
    composer.accepted(decision.remember)  # type: ignore[arg-type]
    assert lc.composite_limit_a(NOW + timedelta(minutes=1)) == pytest.approx(31.8, abs=0.1)
    merged = lower_envelope(dr, composer.limit_steps(STATION_MAX, 0, INFO, NOW))
    connector, again = ours(merged, 3)
    lc._install(connector, again)
    assert lc.composite_limit_a(NOW + timedelta(minutes=1)) == pytest.approx(20.0)  # operator
    assert lc.composite_limit_a(NOW + timedelta(minutes=31)) == pytest.approx(12.0)  # DR


def test_the_operators_profiles_at_the_top_level_or_with_our_ids_move_aside():
    composer = UpstreamProfiles("1.6", reserved(3, frozenset({STATION_MAX, TX_DEFAULT, TX})))
    decision = composer.on_set({"connectorId": 1, "csChargingProfiles": profile_16(
        9201, 3, TX, 10.0, tx=TX_ID)}, NOW)
    assert isinstance(decision, Forward)
    sent = decision.request["csChargingProfiles"]
    assert sent["chargingProfileId"] == 1_900_009_201 and sent["stackLevel"] == 2
    assert "drbridge's" in decision.note and "level 3" in decision.note
    composer.accepted(decision.remember)  # type: ignore[arg-type]
    # the same place again: the operator replaces its own profile there
    again = composer.on_set({"connectorId": 1, "csChargingProfiles": profile_16(
        9201, 3, TX, 8.0, tx=TX_ID)}, NOW)
    assert isinstance(again, Forward)
    assert again.request["csChargingProfiles"]["chargingProfileId"] == 1_900_009_201
    # another of its levels on the place the moved one took: refused, nothing installed
    clash = composer.on_set({"connectorId": 1, "csChargingProfiles": profile_16(
        4, 2, TX, 8.0, tx=TX_ID)}, NOW)
    assert isinstance(clash, AnswerLocally) and clash.answer == {"status": "Rejected"}
    # a purpose drbridge does not use keeps its level
    composer_cp = UpstreamProfiles("1.6", reserved(3))
    kept = composer_cp.on_set({"connectorId": 1, "csChargingProfiles": profile_16(
        6, 3, TX_DEFAULT, 8.0)}, NOW)
    assert isinstance(kept, Forward) and kept.note == ""
    # a station with one stack level: the site limit has it
    single = UpstreamProfiles("1.6", reserved(0))
    refused = single.on_set({"connectorId": 0, "csChargingProfiles": profile_16(
        6, 0, STATION_MAX, 8.0)}, NOW)
    assert isinstance(refused, AnswerLocally) and refused.answer == {"status": "Rejected"}


def test_clearing_never_reaches_drbridges_profiles():
    composer = UpstreamProfiles("1.6", reserved(3))
    mine = composer.on_clear({"id": 9001})
    assert isinstance(mine, AnswerLocally) and mine.answer == {"status": "Unknown"}
    assert composer.on_clear({"id": 5}) == Forward({"id": 5}, forget=(5,))
    assert isinstance(composer.on_clear({"stackLevel": 1}), Forward)  # cannot reach ours
    assert isinstance(composer.on_clear({"chargingProfilePurpose": TX_DEFAULT}), Forward)
    split = composer.on_clear({})  # everything: 1.6 would clear ours too
    assert isinstance(split, Split)
    assert [r.get("stackLevel") for r in split.requests] == [0, 1, 2, 3, 3]
    assert all(r.get("chargingProfilePurpose") != STATION_MAX or r["stackLevel"] < 3
               for r in split.requests)
    assert combined_clear_answer([{"status": "Unknown"}, {"status": "Accepted"}]) == \
        {"status": "Accepted"}
    assert combined_clear_answer([]) == {"status": "Unknown"}


def test_201_shapes():
    composer = UpstreamProfiles("2.0.1", reserved(2))
    body = {"id": 9001, "stackLevel": 2, "chargingProfilePurpose": "ChargingStationMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 1, "startSchedule": "2025-01-01T00:00:00Z",
                                  "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0,
                                                              "limit": 7000.0}]}]}
    decision = composer.on_set({"evseId": 0, "chargingProfile": body}, NOW)
    assert isinstance(decision, Forward)
    assert decision.request["chargingProfile"]["id"] == 1_900_009_001
    assert decision.request["chargingProfile"]["stackLevel"] == 1
    composer.accepted(decision.remember)  # type: ignore[arg-type]
    steps = composer.limit_steps(STATION_MAX, 0, INFO, NOW)
    assert [s.limit_w for s in steps] == [7000.0]
    report = composer.report_to_upstream({"requestId": 1, "chargingLimitSource": "CSO",
                                          "evseId": 0, "chargingProfile": [
                                              decision.request["chargingProfile"]]})
    assert report["chargingProfile"][0]["id"] == 9001
    assert report["chargingProfile"][0]["stackLevel"] == 2
    clear = composer.on_clear({"chargingProfileId": 9001})
    assert clear == Forward({"chargingProfileId": 1_900_009_001},
                            "profile 9001 is installed as 1900009001", forget=(9001,))
    split = composer.on_clear({"chargingProfileCriteria": {
        "chargingProfilePurpose": "ChargingStationMaxProfile"}})
    assert isinstance(split, Split)
    assert {"chargingProfileId": 1_900_009_001} in split.requests
    assert all(r.get("chargingProfileCriteria", {}).get("stackLevel", 0) < 2
               for r in split.requests)


def test_persisted_record_round_trips():
    composer = UpstreamProfiles("1.6", reserved(3))
    decision = composer.on_set({"connectorId": 0, "csChargingProfiles": profile_16(
        9001, 3, STATION_MAX, 10.0)}, NOW)
    composer.accepted(decision.remember)  # type: ignore[union-attr, arg-type]
    restored = UpstreamProfiles("1.6", reserved(3))
    restored.load(composer.to_json())
    assert restored.profiles == composer.profiles


def test_limit_steps_follow_stacking_validity_and_duration():
    composer = UpstreamProfiles("1.6", reserved(3, frozenset({STATION_MAX, TX_DEFAULT, TX})))
    for body, connector in [
        (profile_16(1, 0, TX_DEFAULT, 16.0), 0),
        (profile_16(2, 1, TX_DEFAULT, 10.0, start=NOW, duration=600), 1),
        (profile_16(3, 0, TX, 8.0, tx=TX_ID, valid_to=NOW + timedelta(minutes=20)), 1),
    ]:
        decision = composer.on_set({"connectorId": connector, "csChargingProfiles": body}, NOW)
        composer.accepted(decision.remember)  # type: ignore[union-attr, arg-type]
    tx = composer.limit_steps(TX, 1, INFO, NOW, transaction_id=TX_ID)
    assert [(int((s.start - NOW).total_seconds()), s.limit_w / 690) for s in tx] == \
        [(0, 8.0), (1200, 16.0)]  # its TxProfile, then the station default (after 600 s)
    default = composer.limit_steps(TX_DEFAULT, 1, INFO, NOW)
    assert [(int((s.start - NOW).total_seconds()), s.limit_w / 690) for s in default] == \
        [(0, 10.0), (600, 16.0)]
    assert composer.limit_steps(STATION_MAX, 0, INFO, NOW) == ()


def test_remote_start_is_forwarded_and_its_profile_placed():
    composer = UpstreamProfiles("1.6", reserved(3, frozenset({STATION_MAX, TX})))
    plain = remote_start(composer, {"idTag": "ALLOWED", "connectorId": 1}, NOW, paused=True)
    assert isinstance(plain, Forward) and plain.request == {"idTag": "ALLOWED",
                                                            "connectorId": 1}
    assert "paused" in plain.note
    carried = profile_16(9201, 3, TX, 32.0)
    decision = remote_start(composer, {"idTag": "ALLOWED", "connectorId": 1,
                                       "chargingProfile": carried}, NOW, paused=False)
    assert isinstance(decision, Forward)
    assert decision.request["chargingProfile"]["stackLevel"] == 2
    assert decision.request["chargingProfile"]["chargingProfileId"] == 1_900_009_201


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("ChargeProfileMaxStackLevel", "20", None),
    ("MaxChargingProfilesInstalled", "1", None),
    ("MeterValueSampleInterval", "900", "10"),
    ("MeterValueSampleInterval", "0", "10"),
    ("MeterValueSampleInterval", "5", "5"),
    ("MeterValuesSampledData", "Energy.Active.Import.Register",
     "Energy.Active.Import.Register,Power.Active.Import"),
    ("HeartbeatInterval", "60", "60"),
])
def test_configuration_that_would_undo_the_cap(key, value, expected):
    decision = guard_configuration({"key": key, "value": value}, Needs(10))
    if expected is None:
        assert isinstance(decision, AnswerLocally) and decision.answer == {"status": "Rejected"}
    else:
        assert isinstance(decision, Forward) and decision.request["value"] == expected
        assert bool(decision.note) == (expected != value)


def test_variables_that_would_undo_the_cap():
    items = [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Enabled"},
         "attributeValue": "false"},
        {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
         "attributeValue": "600"},
        {"component": {"name": "SmartChargingCtrlr"},
         "variable": {"name": "ProfileStackLevel"}, "attributeValue": "99"},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "attributeValue": "60"},
    ]
    plan = guard_variables({"setVariableData": items}, Needs(10))
    assert plan.forwarded == (1, 3)
    assert plan.request is not None
    assert plan.request["setVariableData"][0]["attributeValue"] == "10"
    station_answer = {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": items[i]["component"],
         "variable": items[i]["variable"]} for i in (1, 3)]}
    statuses = [r["attributeStatus"] for r in plan.answer(station_answer)["setVariableResult"]]
    assert statuses == ["Rejected", "Accepted", "Rejected", "Accepted"]
    assert "Enabled" in plan.note and "ProfileStackLevel" in plan.note
    nothing = guard_variables({"setVariableData": items[:1]}, Needs(10))
    assert nothing.request is None and len(nothing.answer(None)["setVariableResult"]) == 1


async def test_over_real_websockets_the_operator_reads_the_true_composite():
    """The operator's requests, as drbridge would forward them, to a real station over a
    real websocket; what the operator then reads is the station's own composite."""
    top = 3
    sim = SimulatedStation(StationSpec("CP1", max_stack_level=top, ev_max_current_a=32.0,
                                       id_tag="ALLOWED"), "")
    async with UpstreamCsms(id_tags=["ALLOWED"]) as edge:
        sim.url = f"{edge.url}/CP1"
        task = asyncio.create_task(sim.run())
        try:
            await wait_until(lambda: sim.transaction_id is not None, what="a session")
            composer = UpstreamProfiles("1.6", reserved(top))
            dr = (Step(NOW - timedelta(seconds=5), 11_040.0, "DR event: 16 A"),)
            connector, first = ours(dr, top)
            assert (await edge.request("CP1", "SetChargingProfile", {
                "connectorId": connector, "csChargingProfiles": first}))["status"] == "Accepted"
            # the operator: a TxProfile of 32 A above everything, then a cap of its own
            for connector_id, body in [
                (1, profile_16(41, top, TX, 32.0, tx=sim.transaction_id)),
                (0, profile_16(42, top, STATION_MAX, 25.0)),
            ]:
                decision = composer.on_set(
                    {"connectorId": connector_id, "csChargingProfiles": body}, NOW)
                assert isinstance(decision, Forward)
                answer = await edge.request("CP1", "SetChargingProfile", decision.request)
                assert answer == {"status": "Accepted"}
                composer.accepted(decision.remember)  # type: ignore[arg-type]
            composite = await edge.request("CP1", "GetCompositeSchedule", {
                "connectorId": 0, "duration": 300, "chargingRateUnit": "A"})
            assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] <= 16.0
            await wait_until(lambda: sim.power_w <= 11_040.0 + 1, what="the EV at the limit")
        finally:
            await sim.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
