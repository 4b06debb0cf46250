"""Voltage boundaries set in the chargers by the running bridge, end to end: real 2.0.1 and
2.1 station simulators on a simulated feeder over websockets, a real VTN, SQLite.

- 2.0.1 and 2.1 stations get the bridge's threshold monitors; a dip a monitor reports is
  acted on within a second, with meter values only once a minute;
- a 2.1 station gets the rule's VoltWatt curve and backs off by itself while the bridge is
  stopped;
- stations that refuse monitors or DER control keep the central rule, and say so;
- monitors and curve follow the rule across restarts, and are cleared (ours only) when it
  is removed;
- an external limit a station reports lowers its share and the others get the rest;
- the site cap and a DR event hold by what the stations draw.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from conftest import SiteHarness, site_config, wait_steered, wait_until

from bridge.app import Bridge
from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.sim.feeder import Feeder
from bridge.sim.station import StationSpec
from bridge.sim.station21 import DerControl, SimulatedStation21
from bridge.sim.station201_monitors import Monitor, MonitoringStation201
from policies.model import parse_policy

V = 230.0
FULL_W = 16 * V * 3  # the simulated EV: 16 A on three phases

RULE = """\
  curve: {0.95: 100%, 0.90: min}
  pause_below: 0.88
  hold_s: 2
  ease_step: 15%
  stale_after_s: 120
"""


def policy(rule: str | None = RULE, name: str = "weak feeder") -> str:
    return f"name: {name}\n" + (f"voltage:\n{rule}" if rule is not None else "")


async def start(site: SiteHarness, rule: str | None = RULE, capacity_kw: float = 44,
                meter_interval_s: int = 0) -> Bridge:
    """The bridge with the rule (none: no voltage section); ``meter_interval_s`` 0 leaves
    the stations' own interval (60 s here)."""
    (site.tmp_path / "feeder.yaml").write_text(policy(rule))
    site.config_path.write_text(
        site_config(site.vtn.url, site.ocpp_port, capacity_kw=capacity_kw)
        .replace("policy: default", "policy: feeder.yaml")
        .replace("meter_interval_s: 1", f"meter_interval_s: {meter_interval_s}"))
    return await site.start_bridge()


def add(site: SiteHarness, kind: type[MonitoringStation201], station_id: str,
        feeder: Feeder | None, meter_interval_s: float = 60, **options: Any
        ) -> MonitoringStation201:
    spec = options.pop("spec", {})
    station = kind(StationSpec(station_id=station_id, meter_interval_s=meter_interval_s,
                               rate_unit="Current", **spec), site.url, **options)
    if feeder is not None:
        station.attach_feeder(feeder)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


def controls(bridge: Bridge, station_id: str) -> dict[str, Any]:
    """The station's row as /api/stations serves it (the read view the API answers from)."""
    from bridge.web.views import stations_view

    rows = {row["station_id"]: row for row in stations_view(bridge.view)["stations"]}
    return rows.get(station_id, {"voltage_source": None, "voltage_control": None})


def state_of(bridge: Bridge, station_id: str, part: str) -> str | None:
    control = controls(bridge, station_id)["voltage_control"]
    return control[part]["state"] if control else None


def wanted_monitors(bridge: Bridge, evses: int = 1) -> set[tuple[Any, ...]]:
    rule = bridge.config.policy.voltage
    assert rule is not None
    specs = vm.desired_monitors(rule, V, vm.candidates(list(range(1, evses + 1)), [1, 2, 3])[0])
    return {(s.variable.evse_id, s.variable.instance, s.kind, s.volts) for s in specs}


def held(station: MonitoringStation201, exclude: set[int] = frozenset()) -> set[tuple[Any, ...]]:
    return {(m.evse_id, m.instance, m.kind, m.value) for i, m in station.monitors.items()
            if i not in exclude}


# -- 2.0.1 and 2.1: monitors set by the bridge; a dip acted on within a second ------------

@pytest.mark.parametrize("kind", [MonitoringStation201, SimulatedStation21],
                         ids=["2.0.1", "2.1"])
async def test_a_dip_a_monitor_reports_is_acted_on_within_a_second(site: SiteHarness, kind):
    bridge = await start(site)
    feeder = Feeder(source_v=V, impedance_ohm=0.3)  # 225.2 V at 16 A: 0.979 pu
    station = add(site, kind, "MON", feeder, der="not-supported") \
        if kind is SimulatedStation21 else add(site, kind, "MON", feeder)
    await wait_until(lambda: held(station) == wanted_monitors(bridge), timeout=20,
                     what="the bridge's monitors on every line of the EVSE")
    await wait_until(lambda: state_of(bridge, "MON", "monitors") == "installed", timeout=10,
                     what="the monitors installed on the dashboard")
    await wait_steered(bridge, "MON")
    await wait_until(lambda: station.power_w == pytest.approx(FULL_W), timeout=15,
                     what="the EV at full power")
    assert controls(bridge, "MON")["voltage_source"] == "monitors"
    meter_values = station._seq  # TransactionEvents so far: one a minute

    feeder.source_v = 215.0  # 210.2 V at the station: 0.914 pu
    crossed = time.monotonic()
    deadline = crossed + 10
    while station.composite_limit_a() >= 16 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    took = time.monotonic() - crossed
    assert station.composite_limit_a() < 16, "the station's limit never dropped"
    assert took < 1.0, f"the station's limit dropped {took:.2f} s after the crossing"
    assert station._seq == meter_values  # no meter value came in between
    reason = bridge.planner.plan.stations["MON"][0].reason  # type: ignore[union-attr]
    assert "pu on L" in reason and "(station's monitor event " in reason, reason
    row = controls(bridge, "MON")
    assert row["voltage_source"] == "monitors"
    assert row["voltage_control"]["last_event"]["source"] == "monitor"
    assert row["voltage_control"]["last_event"]["volts"] == 210.2
    await wait_until(lambda: station.power_w < FULL_W, what="the EV drawing less")


# -- 2.1: the curve pushed, carried out while the bridge is stopped -----------------------

async def test_a_21_station_with_the_curve_backs_off_by_itself_while_the_bridge_is_stopped(
        site: SiteHarness):
    bridge = await start(site)
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station = add(site, SimulatedStation21, "AUTO21", feeder)
    await wait_until(lambda: state_of(bridge, "AUTO21", "der") == "in-force", timeout=20,
                     what="the curve in force")
    control = station.der_controls[der.CONTROL_ID]
    assert control.is_default and control.control_type == "VoltWatt"
    assert controls(bridge, "AUTO21")["voltage_source"] == "der-control"
    sent = [a for a, _ in station.received]
    assert "SetDERControl" in sent and sent.index("SetChargingProfile") < \
        sent.index("SetDERControl")  # its limits first
    assert "GetDERControl" in sent[sent.index("SetDERControl"):]  # and checked
    await wait_until(lambda: station.power_w == pytest.approx(FULL_W), timeout=15,
                     what="full power")

    await site.stop_bridge()
    await wait_until(lambda: not station.connected, timeout=15, what="the station to notice")
    feeder.source_v = 205.0  # 200.2 V at 16 A: 0.87 pu, below pause_below
    await wait_until(lambda: station.power_w == pytest.approx(6 * V * 3), timeout=15,
                     what="the station at the minimum current by itself")
    assert not station.connected

    bridge = await site.start_bridge()  # back: the alarm kept while offline arrives
    await wait_until(lambda: controls(bridge, "AUTO21")["voltage_control"] is not None
                     and controls(bridge, "AUTO21")["voltage_control"]["der"]["notice"]
                     is not None, timeout=20, what="the DER alarm on the dashboard")
    await wait_until(lambda: state_of(bridge, "AUTO21", "der") == "in-force", timeout=20,
                     what="the curve found in force again")
    row = controls(bridge, "AUTO21")
    notice = row["voltage_control"]["der"]["notice"]
    assert notice["detail"] == "station's own DER control (VoltWatt): UnderVoltage alarm raised"
    assert "it draws less by itself" in row["limit_reason"]
    # read back, not pushed again: it holds our curve
    assert sum(1 for a, _ in station.received if a == "SetDERControl") == 1


# -- refusals: the central rule on meter values -------------------------------------------

async def test_stations_refusing_monitors_or_der_control_keep_the_central_rule(
        site: SiteHarness):
    bridge = await start(site, meter_interval_s=1)
    feeder = Feeder(source_v=V, impedance_ohm=0.8)  # two EVs at 16 A: 204.4 V, 0.889 pu
    refusing = add(site, MonitoringStation201, "REF201", feeder, meter_interval_s=1,
                   monitors="rejected")
    bare = add(site, SimulatedStation21, "BARE21", feeder, meter_interval_s=1,
               monitors="not-supported", der="not-supported")
    # offers VoltWatt, but refuses a control from anyone but its grid operator
    rejecting = add(site, SimulatedStation21, "REJ21", Feeder(source_v=V, impedance_ohm=1.6),
                    meter_interval_s=1, monitors="rejected", der="rejected")
    stations = (refusing, bare, rejecting)
    await wait_until(lambda: state_of(bridge, "REF201", "monitors") == "refused"
                     and state_of(bridge, "BARE21", "monitors") == "not-supported"
                     and state_of(bridge, "BARE21", "der") == "not-supported"
                     and state_of(bridge, "REJ21", "monitors") == "refused"
                     and state_of(bridge, "REJ21", "der") == "refused", timeout=20,
                     what="the refusals on the dashboard")
    await wait_until(lambda: all(0 < s.composite_limit_a() < 16 for s in stations),
                     timeout=30, what="volt-watt limits from the central rule")
    for name in ("REF201", "BARE21", "REJ21"):
        reason = bridge.planner.plan.stations[name][0].reason  # type: ignore[union-attr]
        assert "pu on L" in reason and "(meter value " in reason, reason
        row = controls(bridge, name)
        assert row["voltage_source"] == "meter values"
    assert controls(bridge, "REF201")["voltage_control"]["monitors"]["detail"] == \
        "the station refused them (Rejected)"
    assert controls(bridge, "REJ21")["voltage_control"]["der"]["detail"] == \
        "SetDERControl rejected: NotAuthorized only the grid operator sets DER controls"
    assert not any(s.monitors for s in stations)
    assert not bare.der_controls and not rejecting.der_controls
    assert "SetDERControl" in [a for a, _ in rejecting.received]
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{bridge.web.port}/metrics") as response:  # type: ignore[union-attr]
        metrics = await response.text()
    assert 'drbridge_voltage_monitors{state="refused"} 2' in metrics
    assert 'drbridge_voltage_monitors{state="not-supported"} 1' in metrics
    assert 'drbridge_der_controls{state="not-supported"} 2' in metrics
    assert 'drbridge_der_controls{state="refused"} 1' in metrics


async def test_a_curve_superseded_by_the_grid_operators_leaves_the_central_rule(
        site: SiteHarness):
    """The grid operator's own VoltWatt control (priority 0) outranks ours: the station
    keeps ours but follows theirs; the dashboard says so, and the central rule acts on the
    station's monitor events."""
    station = SimulatedStation21(StationSpec(station_id="DSO21", meter_interval_s=60,
                                             rate_unit="Current"), site.url)
    feeder = Feeder(source_v=V, impedance_ohm=0.3)
    station.attach_feeder(feeder)
    flat = der.DerCurve(((50.0, -100.0), (150.0, -100.0)), response_time_s=0.0)
    station.der_controls["dso-1"] = DerControl("dso-1", True, "VoltWatt", flat.payload(0), 0,
                                               None, None)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    bridge = await start(site)
    await wait_until(lambda: state_of(bridge, "DSO21", "der") == "superseded"
                     and state_of(bridge, "DSO21", "monitors") == "installed", timeout=20,
                     what="ours superseded, the monitors installed")
    assert station.der_controls[der.CONTROL_ID].superseded
    row = controls(bridge, "DSO21")
    assert row["voltage_source"] == "monitors"
    assert "central rule holds" in row["voltage_control"]["der"]["detail"]
    await wait_steered(bridge, "DSO21")
    await wait_until(lambda: station.power_w == pytest.approx(FULL_W), timeout=15,
                     what="full power")
    feeder.source_v = 215.0  # 0.914 pu: theirs does not mind, the central rule does
    await wait_until(lambda: station.composite_limit_a() < 16, timeout=5,
                     what="the central rule on the monitor's event")
    assert station.der_share == 1.0  # the station's own control in force is theirs


# -- following the rule across restarts; ours cleared, others' untouched ------------------

CHANGED_RULE = RULE.replace("{0.95: 100%, 0.90: min}", "{0.96: 100%, 0.91: min}")


async def test_monitors_and_curve_follow_the_rule_and_only_ours_are_cleared(site: SiteHarness):
    station = SimulatedStation21(StationSpec(station_id="FOL21", meter_interval_s=60),
                                 site.url)
    station.attach_feeder(Feeder(source_v=V, impedance_ohm=0.3))
    # another party's: a monitor of its own, one identical to one of ours, and a VoltWatt
    # control that asked for less precedence than ours
    rule = parse_policy(policy(), "test").voltage
    assert rule is not None
    same = vm.desired_monitors(rule, V, vm.candidates([1], [1, 2, 3])[0])[0]
    theirs = {
        901: Monitor(901, "ChargingStation", None, None, "UpperThreshold", 253.0, 4, False),
        902: Monitor(902, "EVSE", 1, same.variable.instance, same.kind, same.volts,
                     same.severity, False),
    }
    station.monitors.update(theirs)
    others_curve = der.DerCurve(((80.0, -50.0), (120.0, -50.0)), response_time_s=0.0)
    station.der_controls["ems-7"] = DerControl("ems-7", True, "VoltWatt",
                                               others_curve.payload(50), 50, None, None)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))

    bridge = await start(site)
    first = wanted_monitors(bridge)
    identical = (1, same.variable.instance, same.kind, same.volts)
    assert identical in first
    await wait_until(lambda: held(station, exclude=set(theirs)) == first - {identical},
                     timeout=20, what="ours beside the identical one of another party")
    await wait_until(lambda: state_of(bridge, "FOL21", "der") == "in-force", timeout=20,
                     what="our curve in force")
    curve_before = station.der_controls[der.CONTROL_ID].setting["curveData"]
    assert controls(bridge, "FOL21")["voltage_control"]["monitors"]["held"] == len(first)

    await site.stop_bridge()  # the rule changes
    bridge = await start(site, CHANGED_RULE)
    moved = wanted_monitors(bridge)
    assert moved != first and identical in moved  # pause_below stays
    await wait_until(lambda: held(station, exclude=set(theirs)) == moved - {identical},
                     timeout=20, what="ours moved to the new thresholds")
    await wait_until(lambda: state_of(bridge, "FOL21", "der") == "in-force"
                     and station.der_controls[der.CONTROL_ID].setting["curveData"]
                     != curve_before, timeout=20, what="our curve pushed again")
    assert {(x["x"], x["y"]) for x in station.der_controls[der.CONTROL_ID]
            .setting["curveData"]} >= {(91.0, round(-100 * 6 / 32, 2)), (96.0, -100.0)}

    await site.stop_bridge()  # the rule is removed
    bridge = await start(site, rule=None)
    await wait_until(lambda: set(station.monitors) == set(theirs), timeout=20,
                     what="ours cleared, theirs left")
    await wait_until(lambda: set(station.der_controls) == {"ems-7"}, timeout=20,
                     what="our curve cleared, theirs left")
    assert station.monitors[902].value == same.volts
    await wait_until(lambda: bridge.store.voltage_controls().get("FOL21") == ("[]", None),
                     what="nothing of ours on record")
    cleared = [p for a, p in station.received if a == "ClearVariableMonitoring"]
    assert all(not {901, 902} & set(p["id"]) for p in cleared)
    assert all(p.get("controlId") == der.CONTROL_ID
               for a, p in station.received if a == "ClearDERControl")


# -- external limits counted in the plan --------------------------------------------------

async def test_an_external_limit_lowers_that_station_and_the_others_get_the_rest(
        site: SiteHarness):
    bridge = await start(site, rule=None, capacity_kw=22, meter_interval_s=1)
    stations = [add(site, SimulatedStation21, f"EX{i}", None, meter_interval_s=1)
                for i in range(3)]
    ids = [s.id for s in stations]
    await wait_steered(bridge, *ids)
    share = 22_000 / 3  # 7.3 kW each, below the EVs' 11 kW
    await wait_until(lambda: all(s.composite_limit_w() == pytest.approx(share, abs=100)
                                 for s in stations), timeout=15, what="equal shares")

    limited, others = stations[0], stations[1:]
    limited.set_external_limit(6.7, "EMS")  # the building's energy manager: 4.6 kW
    ext_w = 6.7 * V * 3
    await wait_until(lambda: all(s.composite_limit_w() == pytest.approx(
        (22_000 - ext_w) / 2, abs=100) for s in others), timeout=15,
        what="the others given what the limited station cannot draw")
    await wait_until(lambda: limited.power_w == pytest.approx(ext_w, abs=10)
                     and all(s.power_w == pytest.approx((22_000 - ext_w) / 2, abs=100)
                             for s in others), timeout=15, what="the stations drawing so")
    assert sum(s.power_w for s in stations) <= 22_000 + 1
    step = bridge.planner.plan.stations["EX0"][0]  # type: ignore[union-attr]
    assert step.limit_w == pytest.approx(ext_w, abs=1)
    assert "station's external constraint (EMS): 4.6 kW" in step.reason
    # lower than ours is no fault: none flagged, all steered and verified
    await wait_until(lambda: bridge.dispatcher.stations["EX0"].life.phase == "verified", timeout=15,
                     what="its composite schedule checked")
    assert all(bridge.view.snapshot().station_status[sid] == "steered" for sid in ids)

    limited.set_external_limit(None)
    await wait_until(lambda: all(s.composite_limit_w() == pytest.approx(share, abs=100)
                                 for s in stations), timeout=15, what="equal shares again")


# -- the site cap and DR limits still hold, by the stations' own draw ---------------------

async def test_the_site_cap_and_a_dr_event_hold_beside_monitors_and_der_control(
        site: SiteHarness):
    bridge = await start(site, capacity_kw=22, meter_interval_s=1)
    feeder = Feeder(source_v=V, impedance_ohm=0.05)  # stiff: no voltage restriction
    stations: list[Any] = [
        add(site, SimulatedStation21, "CAP21", feeder, meter_interval_s=1),
        add(site, MonitoringStation201, "CAP201", feeder, meter_interval_s=1),
        site.add_station("CAP16"),
    ]

    def drawn() -> float:
        return sum(s.power_w for s in stations)

    await wait_until(lambda: state_of(bridge, "CAP21", "der") == "in-force"
                     and state_of(bridge, "CAP201", "monitors") == "installed"
                     and state_of(bridge, "CAP16", "monitors") == "not-supported", timeout=20,
                     what="the curve and monitors in place (1.6: none)")
    await wait_until(lambda: drawn() > 20_000, timeout=15, what="the site charging")
    assert drawn() <= 22_000 + 1

    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    ven_id = site.vtn.ven_id("test-site")
    assert ven_id is not None
    start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    site.vtn.add_simple_event(ven_id, start_at, [(timedelta(seconds=40), 2)])  # 25 %: 5.5 kW
    during = start_at + timedelta(seconds=2)
    await wait_until(lambda: sum(s.composite_limit_w(during) for s in stations) <= 5_500 + 1,
                     timeout=30, what="every station's profile carrying the event")
    await wait_until(lambda: datetime.now(UTC) >= during, timeout=20,
                     what="the event under way")
    worst = 0.0
    for _ in range(20):  # a few seconds of the event, by what the stations draw
        worst = max(worst, drawn())
        await asyncio.sleep(0.1)
    assert 0 < drawn() and worst <= 5_500 + 1, worst
