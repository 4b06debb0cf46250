"""The meter interval and measurands: read with a station's capabilities and set only where
the station holds something else (bridge.ocpp.sampling); real stations over websockets on
loopback, a real SQLite file across a restart."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from conftest import SiteHarness, wait_until
from test_ocpp_201 import add_201

from bridge.app import Bridge
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.sampling import (
    NOT_READ,
    Sampling,
    SamplingChange,
    changes,
    kept,
    measurand_set,
    read_interval,
    read_measurands,
)
from bridge.ocpp.v16 import parse_sampling as parse_sampling_16
from bridge.ocpp.v201 import parse_sampling as parse_sampling_201
from bridge.ocpp.v201 import set_statuses
from bridge.sim.station import SimulatedStation
from bridge.sim.station201 import SimulatedStation201
from bridge.telemetry import GRID_MEASURANDS

# Generous: these tests must hold on a shared machine under load.
wait = partial(wait_until, timeout=30)
GRID = ",".join(GRID_MEASURANDS)
# the grid measurands as a charger may write them back: spaces, another order and case
GRID_WRITTEN_BACK = ("voltage, Frequency ,Current.Import, power.active.import,"
                     "Energy.Active.Import.Register")
INTERVAL_S = 1  # the tests' configuration (conftest.site_config)


# what is read, what is set (pure) ------------------------------------------------------------
@pytest.mark.parametrize(("value", "seconds"), [
    ("10", 10), (" 10 ", 10), ("10.0", 10), (10, 10), (10.0, 10), ("0", 0),
    ("ten", None), ("-5", None), ("2.5", None), ("", None), (None, None), (True, None),
])
def test_the_interval_is_read_as_chargers_write_it(value, seconds):
    assert read_interval(value) == seconds


def test_measurands_are_read_as_a_set_in_any_order_case_and_separator():
    assert read_measurands(GRID_WRITTEN_BACK) == measurand_set(GRID_MEASURANDS)
    assert read_measurands("Energy.Active.Import.Register;Power.Active.Import") \
        == read_measurands("power.active.import  energy.active.import.register")
    assert read_measurands("") == frozenset()  # a value: it samples nothing configurable
    assert read_measurands(None) is None and read_measurands(5) is None  # not read


def test_stations_that_read_alike_share_one_set_and_the_shared_sets_are_bounded(monkeypatch):
    from bridge.ocpp import sampling
    from bridge.shared_values import SharedValues

    assert read_measurands(GRID_WRITTEN_BACK) is read_measurands(GRID_WRITTEN_BACK.upper())
    monkeypatch.setattr(sampling, "shared_sets", SharedValues(2))
    odd = [read_measurands(f"Voltage,SoC.{n}") for n in range(4)]
    assert len(sampling.shared_sets) == 2
    again = [read_measurands(f"Voltage,SoC.{n}") for n in range(4)]
    assert again == odd  # past the bound, equal still: only not the same object
    assert [a is b for a, b in zip(again, odd, strict=True)] == [True, True, False, False]


def test_only_what_the_station_does_not_hold_is_set():
    held = Sampling(INTERVAL_S, read_measurands(GRID_WRITTEN_BACK))
    assert changes(held, INTERVAL_S, GRID_MEASURANDS).empty
    assert changes(held, 10, GRID_MEASURANDS) == SamplingChange(interval_s=10)
    # a subset or a superset of the grid measurands is not the same set: asked again
    fewer = Sampling(INTERVAL_S, measurand_set(GRID_MEASURANDS[:2]))
    more = Sampling(INTERVAL_S, measurand_set([*GRID_MEASURANDS, "SoC"]))
    for other in (fewer, more):
        assert changes(other, INTERVAL_S, GRID_MEASURANDS) \
            == SamplingChange(measurands=GRID_MEASURANDS)
    # what was not read is set, as it always was
    assert changes(NOT_READ, INTERVAL_S, GRID_MEASURANDS) \
        == SamplingChange(INTERVAL_S, GRID_MEASURANDS)
    # no wish (interval 0, no measurands): nothing to set whatever the station holds
    assert changes(NOT_READ, 0, ()).empty
    # what it says it cannot change is not asked (and is said to be kept where it differs)
    fixed = Sampling(60, measurand_set(GRID_MEASURANDS[:2]), interval_fixed=True,
                     measurands_fixed=True)
    assert changes(fixed, INTERVAL_S, GRID_MEASURANDS).empty
    assert kept(fixed, INTERVAL_S, GRID_MEASURANDS) == ["meter interval", "measurands"]
    assert kept(fixed, 60, GRID_MEASURANDS[:2]) == []
    assert kept(held, 10, ()) == []  # it could change it: it is asked, not kept


def test_16_sampling_from_get_configuration():
    keys = [{"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"},
            {"key": "MeterValueSampleInterval", "readonly": False, "value": " 60 "},
            {"key": "meterValuesSampledData", "readonly": False, "value": GRID_WRITTEN_BACK}]
    assert parse_sampling_16(keys) == Sampling(60, measurand_set(GRID_MEASURANDS))
    # unknown keys (not listed), a key without a value, junk: not read
    assert parse_sampling_16([{"key": "MeterValueSampleInterval"}, "junk", {"value": "5"}]) \
        == NOT_READ
    # read-only (true, or "true" in any case): not settable with ChangeConfiguration
    fixed = [{"key": "MeterValueSampleInterval", "readonly": True, "value": "10"},
             {"key": "MeterValuesSampledData", "readonly": " TRUE", "value": "Voltage"}]
    assert parse_sampling_16(fixed) == Sampling(10, frozenset({"voltage"}), True, True)
    assert not parse_sampling_16([{**fixed[0], "readonly": "no"}]).interval_fixed


def test_201_sampling_from_get_variables():
    def result(component: str, variable: str, value: str, status: str = "Accepted") -> dict:
        return {"attributeStatus": status, "attributeValue": value,
                "component": {"name": component}, "variable": {"name": variable}}

    results = [result("SmartChargingCtrlr", "RateUnit", "A,W"),
               result("SampledDataCtrlr", "TxUpdatedInterval", "60", "accepted"),
               result("SampledDataCtrlr", "TxUpdatedMeasurands", GRID)]
    assert parse_sampling_201(results) == Sampling(60, measurand_set(GRID_MEASURANDS))
    # one the station refused to give, or of another component, is not read
    refused = [result("SampledDataCtrlr", "TxUpdatedInterval", "", "UnknownVariable"),
               result("AlignedDataCtrlr", "TxUpdatedMeasurands", GRID)]
    assert parse_sampling_201(refused) == NOT_READ
    assert parse_sampling_201(None) == NOT_READ


def test_201_each_variable_set_has_its_own_answer():
    names = ["TxUpdatedInterval", "TxUpdatedMeasurands"]

    def answer(name: str | None, status: object) -> dict:
        return {"attributeStatus": status, "component": {"name": "SampledDataCtrlr"},
                **({"variable": {"name": name}} if name else {})}

    # found by name, in whatever order
    assert set_statuses([answer("txupdatedmeasurands", "Rejected"),
                         answer("TxUpdatedInterval", "accepted")], names) \
        == ["Accepted", "Rejected"]
    # by place where a result names no variable; none at all, or unreadable: "Unreadable"
    assert set_statuses([answer(None, "Accepted")], names) == ["Accepted", "Unreadable"]
    assert set_statuses([answer("Other", "Accepted"), answer(None, 3)], names) \
        == ["Unreadable", "Unreadable"]
    assert set_statuses("junk", names) == ["Unreadable", "Unreadable"]


def test_the_sampling_stays_out_of_the_stored_capabilities():
    """A row stored before the sampling was read reads as ever; none is written into one."""
    stored = ('{"rate_units": ["A", "W"], "max_stack_level": 8, "max_periods": 24, '
              '"max_profiles": 8, "features": ["Core", "SmartCharging"], "connectors": 1}')
    caps = Capabilities.from_json(stored)
    assert caps is not None and caps.max_stack_level == 8 and caps.known
    assert caps.to_json() == stored


# real stations ------------------------------------------------------------------------------
def calls(station: SimulatedStation | SimulatedStation201, action: str) -> list[dict]:
    return [payload for a, payload in station.received if a == action]


def changed(station: SimulatedStation) -> dict[str, str]:
    return {p["key"]: p["value"] for p in calls(station, "ChangeConfiguration")}


async def settled(bridge: Bridge, station_id: str) -> None:
    """Until the station is verified and its worker has no follow-up call left (the meter
    settings are one): what it was sent by then is all it will be."""
    def done() -> bool:
        state = bridge.dispatcher.stations.get(station_id)
        return state is not None and state.life.phase == "verified" and state.link is not None \
            and not state.follow_ups.due and state.task is None
    await wait(done, what=f"{station_id} set up")


async def back_after_drop(bridge: Bridge, station: SimulatedStation | SimulatedStation201
                          ) -> None:
    """Drop its link; until it is back on a new one (and set up again)."""
    station_id = station.spec.station_id
    link = bridge.ocpp.links[station_id]
    await station.drop_connection()
    await wait(lambda: bridge.ocpp.links.get(station_id) not in (None, link),
               what=f"{station_id} back on a new link")
    await settled(bridge, station_id)


async def test_a_16_station_that_samples_as_asked_is_not_set(site: SiteHarness):
    bridge = await site.start_bridge()
    station = site.add_station("RIGHT", plugged_in=False, meter_interval_s=INTERVAL_S)
    station.measurands = GRID_WRITTEN_BACK
    await settled(bridge, "RIGHT")
    [read] = calls(station, "GetConfiguration")
    assert {"MeterValueSampleInterval", "MeterValuesSampledData"} <= set(read["key"])
    assert calls(station, "ChangeConfiguration") == []
    # a reconnection with a boot reads it again, and sets nothing still
    await back_after_drop(bridge, station)
    assert len(calls(station, "GetConfiguration")) == 2
    assert calls(station, "ChangeConfiguration") == []


async def test_a_16_station_is_set_where_it_differs_and_not_again_on_reconnection(
        site: SiteHarness):
    bridge = await site.start_bridge()
    station = site.add_station("OTHER", plugged_in=False, meter_interval_s=60)
    await settled(bridge, "OTHER")
    assert changed(station) == {"MeterValueSampleInterval": str(INTERVAL_S),
                                "MeterValuesSampledData": GRID}
    assert station.measurands == GRID
    # it booted again on reconnecting: read again, and it holds both
    await back_after_drop(bridge, station)
    assert len(calls(station, "GetConfiguration")) == 2
    assert len(calls(station, "ChangeConfiguration")) == 2


async def test_a_16_station_is_not_asked_to_change_what_it_lists_read_only(
        site: SiteHarness):
    bridge = await site.start_bridge()
    fixed = site.add_station("FIXED", plugged_in=False, meter_interval_s=60,
                             sampling_read_only=True)
    await settled(bridge, "FIXED")
    assert calls(fixed, "ChangeConfiguration") == []  # it would refuse both (Rejected)


async def test_a_16_station_whose_settings_are_not_read_is_set_as_before(site: SiteHarness):
    bridge = await site.start_bridge()
    # no measurands key (its interval is right); no GetConfiguration at all
    no_key = site.add_station("NOKEY", plugged_in=False, meter_interval_s=INTERVAL_S,
                              measurands_setting=False)
    no_read = site.add_station("NOREAD", plugged_in=False, meter_interval_s=INTERVAL_S,
                               supports_get_configuration=False)
    await settled(bridge, "NOKEY")
    await settled(bridge, "NOREAD")
    assert changed(no_key) == {"MeterValuesSampledData": GRID}  # refused: NotSupported
    assert changed(no_read) == {"MeterValueSampleInterval": str(INTERVAL_S),
                                "MeterValuesSampledData": GRID}


async def test_a_station_that_takes_fewer_keys_a_read_is_read_without_its_sampling(
        site: SiteHarness):
    """Eight keys are more than it takes in one GetConfiguration (seven items more than in
    one GetVariables): asked again for its capabilities alone, its meter settings are set."""
    bridge = await site.start_bridge()
    few16 = site.add_station("FEW16", plugged_in=False, max_keys_per_read=6, max_stack_level=3)
    few201 = add_201(site, "FEW201", plugged_in=False, max_keys_per_read=5, max_stack_level=3)
    await settled(bridge, "FEW16")
    await settled(bridge, "FEW201")
    assert [len(p["key"]) for p in calls(few16, "GetConfiguration")] == [8, 6]
    assert bridge.dispatcher.stations["FEW16"].caps.max_stack_level == 3  # its own, read
    assert changed(few16) == {"MeterValueSampleInterval": str(INTERVAL_S),
                              "MeterValuesSampledData": GRID}
    reads = [len(p["getVariableData"]) for p in calls(few201, "GetVariables")]
    assert reads == [7, 5]
    assert bridge.dispatcher.stations["FEW201"].caps.max_stack_level == 3
    assert len(calls(few201, "SetVariables")) == 1


async def test_a_201_station_gets_both_settings_in_one_call_and_none_it_holds(
        site: SiteHarness):
    bridge = await site.start_bridge()
    other = add_201(site, "OTHER201", plugged_in=False, meter_interval_s=60)
    right = add_201(site, "RIGHT201", plugged_in=False, meter_interval_s=INTERVAL_S)
    right.measurands = GRID_WRITTEN_BACK
    await settled(bridge, "OTHER201")
    await settled(bridge, "RIGHT201")
    # read with its smart charging variables, in one GetVariables
    [read] = calls(other, "GetVariables")
    assert {(d["component"]["name"], d["variable"]["name"]) for d in read["getVariableData"]} \
        >= {("SampledDataCtrlr", "TxUpdatedInterval"), ("SampledDataCtrlr", "TxUpdatedMeasurands")}
    [sent] = calls(other, "SetVariables")
    assert {(d["component"]["name"], d["variable"]["name"], d["attributeValue"])
            for d in sent["setVariableData"]} == {
        ("SampledDataCtrlr", "TxUpdatedInterval", str(INTERVAL_S)),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", GRID)}
    assert other.measurands == GRID
    assert calls(right, "SetVariables") == []
    # it booted again on reconnecting: it holds both, so nothing is set
    await back_after_drop(bridge, other)
    assert len(calls(other, "GetVariables")) == 2
    assert len(calls(other, "SetVariables")) == 1


async def test_a_station_known_from_an_earlier_run_is_read_once_and_set_to_this_runs_wish(
        site: SiteHarness):
    """Its capabilities come from the store, so there is no read of them to carry its
    sampling: it is read alone, once a run, and set where this run wants another."""
    bridge = await site.start_bridge()
    station = site.add_station("KNOWN", boots_on_reconnect=False,
                               meter_interval_s=60)
    await settled(bridge, "KNOWN")
    assert len(calls(station, "ChangeConfiguration")) == 2
    await site.stop_bridge()
    config = site.config_path.read_text()
    assert f"meter_interval_s: {INTERVAL_S}\n" in config
    site.config_path.write_text(config.replace(f"meter_interval_s: {INTERVAL_S}\n",
                                               "meter_interval_s: 5\n"))
    before = len(station.received)
    bridge = await site.start_bridge()
    await wait(lambda: "KNOWN" in bridge.ocpp.links, what="the station back")
    await settled(bridge, "KNOWN")
    again = station.received[before:]
    assert [p["key"] for a, p in again if a == "GetConfiguration"] \
        == [["MeterValueSampleInterval", "MeterValuesSampledData"]]
    assert [p for a, p in again if a == "ChangeConfiguration"] \
        == [{"key": "MeterValueSampleInterval", "value": "5"}]  # it holds the measurands
    # known for the rest of this run: a reconnection reads nothing
    during = len(station.received)
    await back_after_drop(bridge, station)
    await asyncio.sleep(0.5)
    assert not [a for a, _ in station.received[during:]
                if a in ("GetConfiguration", "ChangeConfiguration")]
