"""Voltage boundaries in the station through the bridge's own links, over real websockets:
variable monitors on 2.0.1 and 2.1 stations (their events reach the bridge at once), the
VoltWatt DER control on 2.1 stations (set, read back, cleared; carried out by the station
while the bridge is stopped), and stations that refuse either."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from conftest import SiteHarness, site_config, wait_until

from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.wire import validator
from bridge.sim.feeder import Feeder
from bridge.sim.station import StationSpec
from bridge.sim.station21 import DerControl, SimulatedStation21
from bridge.sim.station201_monitors import MonitoringStation201
from policies.model import VoltageRule

V = 230.0
MAX_A = 32.0
RULE = VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=0.88, hold_s=1.0,
                   ease_step=0.5)
FEEDER_POLICY = """\
name: weak feeder
voltage:
  curve: {0.95: 100%, 0.90: min}
  pause_below: 0.88
  hold_s: 2
  ease_step: 15%
  stale_after_s: 5
"""


async def start(site: SiteHarness, policy: str | None = None, meter_interval_s: int = 1) -> None:
    """The bridge; ``meter_interval_s`` 0 leaves the stations' own interval."""
    config = site_config(site.vtn.url, site.ocpp_port).replace(
        "meter_interval_s: 1", f"meter_interval_s: {meter_interval_s}")
    if policy is not None:
        (site.tmp_path / "feeder.yaml").write_text(policy)
        config = config.replace("policy: default", "policy: feeder.yaml")
    site.config_path.write_text(config)
    await site.start_bridge()


def add(site: SiteHarness, kind: type[MonitoringStation201], station_id: str, feeder: Feeder,
        meter_interval_s: float = 60, **options: object) -> MonitoringStation201:
    station = kind(StationSpec(station_id=station_id, max_current_a=MAX_A,
                               meter_interval_s=meter_interval_s), site.url, **options)
    station.attach_feeder(feeder)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


async def link_of(site: SiteHarness, station: MonitoringStation201) -> ChargerLink:
    """The bridge's link to a station that is charging (booted, its transaction known)."""
    bridge = site.bridge
    assert bridge is not None
    await wait_until(lambda: station.id in bridge.ocpp.links and station.transaction_id
                     is not None and any(s.station_id == station.id
                                         for s in bridge.station_events.sessions.values()),
                     timeout=15, what=f"{station.id} charging on the bridge")
    link = bridge.ocpp.links[station.id]
    await asyncio.wait_for(link.registered.wait(), 10)
    return link


# -- 2.0.1 and 2.1: monitors -------------------------------------------------------------

@pytest.mark.parametrize("kind", [MonitoringStation201, SimulatedStation21],
                         ids=["2.0.1", "2.1"])
async def test_monitors_set_read_back_and_cleared_through_the_link(site: SiteHarness, kind):
    await start(site)
    station = add(site, kind, "MON", Feeder(source_v=V, impedance_ohm=0.3))
    link = await link_of(site, station)
    specs = vm.desired_monitors(RULE, V, vm.candidates([1], [1, 2, 3])[0])
    outcome = await link.set_voltage_monitors(specs)
    assert not outcome.refused and [m.spec for m in outcome.installed] == specs
    ids = {m.monitor_id for m in outcome.installed}
    assert ids == set(station.monitors)
    held = {(m.instance, m.kind, m.value) for m in station.monitors.values()}
    assert held == {(s.variable.instance, s.kind, s.volts) for s in specs}

    # a restart lost the ids: the station answers Duplicate, and its report gives them back
    again = await link.set_voltage_monitors(specs)
    assert not again.installed and {s for _, s in again.refused} == {"Duplicate"}
    found = await link.read_voltage_monitors(specs)
    assert {(m.monitor_id, m.spec) for m in found} == {
        (m.monitor_id, m.spec) for m in outcome.installed}

    first = sorted(ids)[:2]
    assert await link.clear_voltage_monitors(first) == set(first)
    assert set(station.monitors) == ids - set(first)
    assert await link.clear_voltage_monitors(first) == set(first)  # gone already: NotFound
    assert await link.clear_voltage_monitors(sorted(ids)) == ids
    assert not station.monitors
    assert await link.read_voltage_monitors(specs) == []  # EmptyResultSet


async def test_a_monitor_event_reaches_the_bridge_at_once_and_the_rule_acts_on_it(
        site: SiteHarness):
    """The station samples its meter once a minute; a sag its monitor sees is at the bridge
    within a second, as a fresh reading, and the volt-watt rule restricts the station
    before any meter value could have told. (The bridge sets the monitors itself.)"""
    await start(site, FEEDER_POLICY, meter_interval_s=0)
    bridge = site.bridge
    assert bridge is not None and bridge.config.policy.voltage is not None
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = add(site, MonitoringStation201, "MON201", feeder)
    await link_of(site, station)
    specs = vm.desired_monitors(bridge.config.policy.voltage, V,
                                vm.candidates([1], [1, 2, 3])[0])
    await wait_until(lambda: {(m.instance, m.kind, m.value) for m in station.monitors.values()}
                     == {(s.variable.instance, s.kind, s.volts) for s in specs}, timeout=15,
                     what="the bridge's monitors on the station")
    await wait_until(lambda: station.power_w == pytest.approx(16 * V * 3), timeout=15,
                     what="the EV at full power (225.2 V at the station)")
    assert "pu on L" not in bridge.planner.plan.stations["MON201"][0].reason  # type: ignore[union-attr]
    assert not bridge.station_events.voltage_notices  # nothing crossed
    meter_values = station._seq

    dipped = time.monotonic()
    dipped_at = datetime.now(UTC)
    feeder.source_v = 215.0  # 210.2 V at the station: 0.914 pu
    await wait_until(lambda: "MON201" in bridge.station_events.voltage_notices, timeout=5,
                     what="the monitor's event at the bridge")
    arrived = time.monotonic() - dipped
    notice = bridge.station_events.voltage_notices["MON201"]
    assert (notice.source, notice.volts, notice.returned_to_normal) == ("monitor", 210.2, False)
    assert notice.detail.startswith("station's monitor event: 210.2 V on L")
    assert notice.detail.endswith("(curve 0.9-0.95 pu)") or "curve point" in notice.detail
    assert arrived < 1.0, f"the event took {arrived:.2f} s to reach the bridge"
    reading = bridge.station_events.grid.latest["MON201"]
    assert reading.at >= dipped_at.replace(microsecond=0) and 210.2 in reading.phases_v

    def restricted() -> bool:
        plan = bridge.planner.plan
        return plan is not None and "pu on L" in plan.stations["MON201"][0].reason
    await wait_until(restricted, timeout=5, what="the volt-watt rule restricting the station")
    assert station._seq == meter_values  # no meter value came in between
    await wait_until(lambda: 0 < station.composite_limit_a() < 16, timeout=10,
                     what="the restriction at the station")


@pytest.mark.parametrize("refusal", ["rejected", "not-supported"])
async def test_a_station_refusing_monitors_says_so_through_the_link(site: SiteHarness, refusal):
    await start(site)
    station = add(site, MonitoringStation201, "NOMON", Feeder(), monitors=refusal)
    link = await link_of(site, station)
    specs = vm.desired_monitors(RULE, V, vm.candidates([1], [1, 2, 3])[0])
    outcome = await link.set_voltage_monitors(specs)
    assert not outcome.installed and len(outcome.refused) == len(specs)
    expected = "Rejected" if refusal == "rejected" else "NotSupported"
    assert {status for _, status in outcome.refused} == {expected}
    assert outcome.unsupported == (refusal == "not-supported")
    assert await link.read_voltage_monitors(specs) == []
    assert await link.read_der_support() is False  # 2.0.1: no DER control, without a call
    assert (await link.set_der_control(der.volt_watt_curve(RULE, 6 / MAX_A))).status == \
        "not-supported"
    assert not any(a.endswith("DERControl") for a, _ in station.received)


# -- 2.1: DER control --------------------------------------------------------------------

async def test_der_control_set_read_back_and_cleared_through_the_link(site: SiteHarness):
    await start(site)
    station = add(site, SimulatedStation21, "DER21", Feeder())
    link = await link_of(site, station)
    assert await link.read_der_support() is True
    curve = der.volt_watt_curve(RULE, 6 / MAX_A)
    assert isinstance(curve, der.DerCurve)
    assert (await link.set_der_control(curve)).status == "accepted"
    assert set(station.der_controls) == {der.CONTROL_ID}
    report = await link.read_der_control()
    assert report.reply.status == "accepted"
    assert report.control is not None and report.control.curve.same_as(curve)
    assert not report.control.superseded
    # replaced in place when the rule changes
    lower = der.volt_watt_curve(VoltageRule(curve={0.93: 1.0, 0.89: "min"}), 6 / MAX_A)
    assert isinstance(lower, der.DerCurve)
    assert (await link.set_der_control(lower)).status == "accepted"
    report = await link.read_der_control()
    assert report.control is not None and report.control.curve.same_as(lower)
    assert (await link.clear_der_control()).status == "accepted"
    assert station.der_controls == {}
    assert (await link.clear_der_control()).status == "not-found"
    report = await link.read_der_control()
    assert report.reply.status == "not-found" and report.control is None


async def test_a_grid_operators_control_supersedes_ours(site: SiteHarness):
    await start(site)
    station = add(site, SimulatedStation21, "DSO21", Feeder())
    link = await link_of(site, station)
    dso = der.DerCurve(((85.0, -25.0), (95.0, -25.0)), response_time_s=0.0)
    # the grid operator's own default control, of the highest priority (0)
    station.der_controls["dso-1"] = DerControl("dso-1", True, "VoltWatt", dso.payload(0), 0,
                                               None, None)
    curve = der.volt_watt_curve(RULE, 6 / MAX_A)
    assert isinstance(curve, der.DerCurve)
    assert (await link.set_der_control(curve)).status == "superseded"
    report = await link.read_der_control()
    assert report.control is not None and report.control.superseded


async def test_a_21_station_without_der_control_says_so_and_keeps_its_monitors(site: SiteHarness):
    await start(site)
    station = add(site, SimulatedStation21, "NODER", Feeder(), der="not-supported")
    link = await link_of(site, station)
    assert await link.read_der_support() is False
    curve = der.volt_watt_curve(RULE, 6 / MAX_A)
    assert isinstance(curve, der.DerCurve)
    assert (await link.set_der_control(curve)).status == "not-supported"
    # asked by our control's id, it holds none of that id
    assert (await link.read_der_control()).reply.status == "not-found"
    assert (await link.clear_der_control()).status == "not-found"
    specs = vm.desired_monitors(RULE, V, vm.candidates([1], [1, 2, 3])[0])
    assert len((await link.set_voltage_monitors(specs)).installed) == len(specs)


async def test_the_curve_pushed_through_the_link_holds_while_the_bridge_is_stopped(
        site: SiteHarness):
    """The bridge pushes its curve and stops; the feeder sags; the station backs off to the
    minimum current by itself, and tells the bridge of its alarms once it is back."""
    await start(site)
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = add(site, SimulatedStation21, "AUTO21", feeder, meter_interval_s=1)
    link = await link_of(site, station)
    await wait_until(lambda: station.power_w == pytest.approx(16 * V * 3), timeout=10,
                     what="full power")
    curve = der.volt_watt_curve(RULE, 6 / MAX_A)
    assert isinstance(curve, der.DerCurve)
    assert (await link.set_der_control(curve)).status == "accepted"

    await site.stop_bridge()
    await wait_until(lambda: not station.connected, timeout=15, what="the station to notice")
    feeder.source_v = 205.0  # 200.2 V at 16 A: 0.87 pu
    await wait_until(lambda: station.power_w == pytest.approx(6 * V * 3), timeout=15,
                     what="the station at the minimum current by itself")
    assert not station.connected

    bridge = await site.start_bridge()  # back: the alarm kept while offline arrives
    await wait_until(lambda: "AUTO21" in bridge.station_events.voltage_notices, timeout=20,
                     what="the DER alarm at the bridge")
    notice = bridge.station_events.voltage_notices["AUTO21"]
    assert notice.source == "der-control"
    assert notice.detail == "station's own DER control (VoltWatt): UnderVoltage alarm raised"


# -- pure: what the links send and read --------------------------------------------------

@pytest.mark.parametrize("version", ["v201", "v21"])
def test_the_monitoring_report_query_passes_the_schemas(version):
    specs = vm.desired_monitors(RULE, V, vm.candidates([1, 2], [1, 2, 3])[0])
    query = vm.monitoring_report_query(specs)
    assert len(query["componentVariable"]) == 6  # one per variable, not per threshold
    assert query["monitoringCriteria"] == ["ThresholdMonitoring"]
    validator(version, "GetMonitoringReportRequest")({"requestId": 1, **query})
    validator(version, "SetVariableMonitoringRequest")(vm.set_monitoring_request(specs))
    validator(version, "ClearVariableMonitoringRequest")(vm.clear_monitoring_request([1, 2]))


def test_an_outcome_tells_a_station_without_monitoring_from_one_that_refuses():
    spec = vm.MonitorSpec(vm.VoltageVariable("ChargingStation"), "LowerThreshold", 216.2)
    assert vm.MonitorOutcome.all_refused([spec], "NotSupported").unsupported
    assert vm.MonitorOutcome.all_refused([spec], "NotImplemented").unsupported
    assert not vm.MonitorOutcome.all_refused([spec], "Rejected").unsupported
    assert not vm.MonitorOutcome.all_refused([], "NotSupported").unsupported
    assert not vm.MonitorOutcome((vm.InstalledMonitor(1, spec),), ()).unsupported
