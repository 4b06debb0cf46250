"""Volt-watt in the running bridge: a weak feeder, real stations, a real VTN and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from conftest import SiteHarness, site_config, wait_until
from oadr_payloads import Event, Signal, distribute_event, price

from bridge.config import load_config
from bridge.ocpp.v201 import sampled_values
from bridge.sim.feeder import Feeder
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.station201 import SimulatedStation201
from bridge.telemetry import read_meter_value
from bridge.web.metrics import render_metrics
from bridge.web.views import site_view, stations_view

NOMINAL_V = 230.0
FLOOR_PU = 0.90  # the curve reaches the minimum current here
EV_A = 16.0
# A weak feeder: two EVs at 16 A pull it to 204 V (0.889 pu), below the floor.
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


async def start_on_feeder(site: SiteHarness, feeder: Feeder, policy: str = FEEDER_POLICY,
                          **config: object) -> list[SimulatedStation]:
    (site.tmp_path / "feeder.yaml").write_text(policy)
    site.config_path.write_text(
        site_config(site.vtn.url, site.ocpp_port, **config).replace(
            "policy: default", "policy: feeder.yaml"))
    load_config(site.config_path)
    await site.start_bridge()
    stations = []
    for index in range(2):
        station = site.add_station(f"CP{index}", rate_unit="Current",
                                   ev_max_current_a=EV_A)
        station.attach_feeder(feeder)
        stations.append(station)
    return stations


def limits_a(stations: list[SimulatedStation]) -> tuple[float, ...]:
    return tuple(round(s.composite_limit_a(), 1) for s in stations)


async def watch(stations: list[SimulatedStation], feeder: Feeder, seconds: float,
                until: Callable[[], bool] | None = None,
                ) -> tuple[list[tuple[float, ...]], list[float]]:
    """Each station's limit and the feeder's lowest voltage every 50 ms, for ``seconds``
    (or, with ``until``, until it holds, failing after ``seconds``)."""
    limits, volts = [], []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while until is None or not until():
        if loop.time() >= end:
            assert until is None, f"timed out; limits {limits[-5:]}"
            break
        limits.append(limits_a(stations))
        volts.append(min(feeder.voltages_v()))
        await asyncio.sleep(0.05)
    return limits, volts


async def held_still(stations: list[SimulatedStation], feeder: Feeder, quiet_s: float = 1.0,
                     timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: tuple[float, ...] | None = None
    since = loop.time()
    while True:
        now = limits_a(stations)
        restricted = all(0 < amps < EV_A for amps in now)
        if now != last or not restricted or min(feeder.voltages_v()) < FLOOR_PU * NOMINAL_V:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet_s:
            return
        if loop.time() > deadline:
            raise AssertionError(f"the volt-watt response did not settle; limits {now}")
        await asyncio.sleep(0.05)


def never_falls(series: list[tuple[float, ...]]) -> bool:
    return all(b >= a - 0.05 for before, after in zip(series, series[1:], strict=False)
               for a, b in zip(before, after, strict=True))


async def test_the_bridge_holds_the_feeder_above_the_floor_and_restores(site: SiteHarness):
    feeder = Feeder(source_v=NOMINAL_V, impedance_ohm=0.8)
    stations = await start_on_feeder(site, feeder, telemetry_interval_s=1)
    bridge = site.bridge
    assert bridge is not None
    # both charge, pull the feeder below the floor, and are held back for the voltage
    await wait_until(lambda: all(s.transaction_id for s in stations), what="sessions")
    await wait_until(lambda: all(0 < s.composite_limit_a() < EV_A for s in stations),
                     timeout=20, what="volt-watt limits below what the EVs draw")
    # The first restrictions follow each other while the second EV joins and readings
    # arrive; the response is complete once the voltage is back above the floor and the
    # limits have held still for a second.
    await held_still(stations, feeder)
    # from now on the voltage stays above the floor, and no limit falls again: it only
    # eases (in steps, a hold time apart) until the voltage settles inside the band
    limits, volts = await watch(stations, feeder, 7.0)
    assert min(volts) >= FLOOR_PU * NOMINAL_V, min(volts)
    assert never_falls(limits), limits
    settled = limits[-1]
    assert all(6 <= amps < EV_A for amps in settled), settled
    # the reason chain says why
    plan = bridge.planner.plan
    assert plan is not None and plan.state is not None
    for station in stations:
        chain = plan.stations[station.spec.station_id][0].chain
        assert [w.kind for w in chain].count("voltage") == 1, chain
        assert "pu on L" in plan.stations[station.spec.station_id][0].reason
    # the stations were asked for the grid measurands, and their voltages are stored
    assert all("Voltage" in s.measurands for s in stations)
    bridge.reports.flush()
    now = datetime.now(UTC)
    stored = bridge.store.grid_samples_between(now - timedelta(minutes=1), now)
    assert {s.station_id for s in stored} == {"CP0", "CP1"}
    assert min(s.voltages_v[0] for s in stored) < FLOOR_PU * NOMINAL_V  # before the response
    assert all(s.currents_a[2] is not None for s in stored)

    # the source voltage recovers: power comes back, still without a limit falling
    feeder.source_v = 250.0
    limits, _ = await watch(stations, feeder, 20.0, until=lambda: all(
        s.composite_limit_a() >= EV_A for s in stations))
    assert all(abs(s.power_w - EV_A * 3 * NOMINAL_V) < 1 for s in stations)
    later, _ = await watch(stations, feeder, 1.0)
    assert never_falls([settled, *limits, *later]), limits

    # TELEMETRY_USAGE carries the lowest and the mean voltage of each phase
    def voltages(resource: str) -> list[float]:
        return [r[5] for r in site.vtn.received.readings if r[1] == resource]

    resources = [f"test-site-{p}-{s}" for p in ("L1", "L2", "L3") for s in ("min", "mean")]
    await wait_until(lambda: all(voltages(r) for r in resources), timeout=10,
                     what="voltage readings at the VTN")
    units = {(r[2], r[3]) for r in site.vtn.received.readings if r[1] in resources}
    assert units == {("Voltage", "V")}, units
    low = voltages("test-site-L1-min")
    assert min(low) < FLOOR_PU * NOMINAL_V + 10 and max(low) <= 250
    # the lowest never exceeds the mean; each report carries both statistics of a phase, so
    # the n-th reading of one pairs with the n-th of the other
    pairs = list(zip(voltages("test-site-L2-min"), voltages("test-site-L2-mean"), strict=False))
    assert pairs and all(low <= mean for low, mean in pairs), pairs
    # and the dashboard shows them
    shown = site_view(bridge.view)["voltage"]
    assert shown["nominal_v"] == NOMINAL_V and set(shown["phases"]) == {"L1", "L2", "L3"}
    assert all(200 < p["min_v"] <= p["mean_v"] < 250 for p in shown["phases"].values())
    assert 'drbridge_site_voltage_volts{phase="L3",stat="mean"}' in render_metrics(bridge.view)
    rows = {row["station_id"]: row for row in stations_view(bridge.view)["stations"]}
    assert set(rows["CP0"]["voltage_v"]) == {"L1", "L2", "L3"}


# A site with PV: at noon the feeder's voltage rises while the price says "do not charge".
PV_POLICY = """\
name: pv site
electricity_price:
  tiers:
    - {above: 0.40, limit: 0%}
voltage:
  curve: {0.95: 100%, 0.90: min}
  over_voltage: {start: 1.04, full: 1.08}
  hysteresis: 0.01
  hold_s: 2
  ease_step: 25%
  stale_after_s: 30
allocation:
  resume_s: 2  # time compressed as hold_s is: a resume's minute at the minimum
"""


def changes(series: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    return [now for i, now in enumerate(series) if i == 0 or now != series[i - 1]]


def swings(series: list[tuple[float, ...]]) -> int:
    """How often the fleet's total limit turns from falling to rising or back."""
    totals = [sum(point) for point in changes(series)]
    moves = [b - a for a, b in zip(totals, totals[1:], strict=False) if abs(b - a) > 0.05]
    return sum(1 for a, b in zip(moves, moves[1:], strict=False) if (a > 0) != (b > 0))


async def test_over_voltage_sets_a_price_limit_aside_and_settles(site: SiteHarness):
    feeder = Feeder(source_v=NOMINAL_V, impedance_ohm=0.8)
    # two EVs of 11 kW on a 22 kW site
    stations = await start_on_feeder(site, feeder, PV_POLICY, capacity_kw=22)
    loop = asyncio.get_running_loop()
    last_change = [loop.time(), limits_a(stations)]

    def unchanged_for(seconds: float) -> bool:
        now = limits_a(stations)
        if now != last_change[1]:
            last_change[:] = [loop.time(), now]
        return loop.time() - last_change[0] >= seconds
    bridge = site.bridge
    assert bridge is not None
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    start = datetime.now(UTC) - timedelta(seconds=5)
    site.vtn.send_raw(distribute_event([Event("ev-price", start, [Signal(
        "ELECTRICITY_PRICE", "price", [(timedelta(minutes=5), 0.5)], price("EUR"))])]))
    await wait_until(lambda: all(s.transaction_id for s in stations)
                     and all(s.composite_limit_a() == 0 for s in stations),
                     timeout=20, what="charging held back by the price")

    # The PV surplus lifts the feeder to 255 V (1.109 pu): the floor rises at once, and the
    # EVs charge at the price's expense. It then falls in steps while the voltage allows.
    # On this stiff feeder a 25 % step lifts the voltage past the rule's start, so the
    # floor comes back up, and each such swing halves the step: it settles where charging
    # holds the voltage inside the rule's band instead of swinging on.
    feeder.source_v = 255.0

    def floor_share() -> float:
        plan = bridge.planner.plan
        state = plan.state if plan is not None else None
        return state.absorb.share if state is not None and state.absorb is not None else 0.0
    # The floor rises to the whole site at once; the sessions resume at their minimum first
    # (allocation.resume_s), and by the time their full share is due the voltage their
    # minimum pulls down may already have eased the floor: so the floor, not full power.
    await wait_until(lambda: floor_share() >= 0.99, timeout=15,
                     what="the floor up to the site capacity for the over-voltage")
    await wait_until(lambda: all(s.composite_limit_a() >= 6 for s in stations), timeout=15,
                     what="charging resumed for the over-voltage")
    limits, _ = await watch(stations, feeder, 60.0, until=lambda: unchanged_for(6.0))
    assert swings(limits) <= 4, changes(limits)
    settled, volts = await watch(stations, feeder, 6.0)
    assert len(set(settled)) == 1, changes(settled)  # three hold times without a change
    assert all(6 <= amps < EV_A for amps in settled[-1]), settled[-1]
    assert max(volts) < 1.07 * NOMINAL_V  # held down from the surplus's 1.109 pu
    plan = bridge.planner.plan
    assert plan is not None and plan.state is not None and plan.state.absorb is not None
    assert "over-voltage" in plan.site[0].reason and plan.site[0].chain[-1].kind == "voltage"
    # the operator sees the floor on the dashboard's API and in the metrics
    shown = site_view(bridge.view)["voltage"]["over_voltage_floor"]
    assert shown is not None and shown["share"] == round(plan.state.absorb.share, 3) > 0
    [line] = [m for m in render_metrics(bridge.view).splitlines()
              if m.startswith("drbridge_over_voltage_floor_ratio ")]
    assert float(line.split()[1]) == shown["share"]
    # the surplus gone, the price holds charging back again
    feeder.source_v = NOMINAL_V
    await wait_until(lambda: all(s.composite_limit_a() == 0 for s in stations),
                     timeout=20, what="the price's limit back")
    # (the floor may still ease its last step below the minimum current, a hold time on)
    await wait_until(lambda: site_view(bridge.view)["voltage"]["over_voltage_floor"] is None,
                     timeout=20, what="the floor gone")


async def test_a_201_station_is_asked_for_the_measurands_and_a_refusal_is_harmless(
        site: SiteHarness):
    (site.tmp_path / "feeder.yaml").write_text(FEEDER_POLICY)
    site.config_path.write_text(site_config(site.vtn.url, site.ocpp_port).replace(
        "policy: default", "policy: feeder.yaml"))
    await site.start_bridge()
    station = SimulatedStation201(StationSpec(station_id="CP201", measurands_setting=False),
                                  site.url)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))

    def asked() -> list[dict]:
        return [data for action, payload in station.received if action == "SetVariables"
                for data in payload["setVariableData"]
                if data["variable"]["name"] == "TxUpdatedMeasurands"]

    await wait_until(lambda: bool(asked()), what="SetVariables TxUpdatedMeasurands")
    assert asked()[0]["component"]["name"] == "SampledDataCtrlr"
    assert "Voltage" in asked()[0]["attributeValue"].split(",")
    # this station knows no such variable: it charges under a profile all the same
    await wait_until(lambda: station.composite_limit_w() > 0, what="a limit for CP201")
    # and the voltages it sends in its TransactionEvents are stored per line
    bridge = site.bridge
    assert bridge is not None

    def stored() -> list:
        bridge.reports.flush()
        now = datetime.now(UTC)
        return [s for s in bridge.store.grid_samples_between(now - timedelta(minutes=1), now)
                if s.station_id == "CP201"]

    await wait_until(lambda: bool(stored()), what="CP201's voltages stored")
    assert stored()[-1].voltages_v == (230.0, 230.0, 230.0)


def test_201_voltages_reach_the_reading():
    meter_value = {"timestamp": "2026-11-25T12:00:00Z", "sampledValue": [
        {"value": 0.2281, "measurand": "Voltage", "phase": "L1-N",
         "unitOfMeasure": {"unit": "V", "multiplier": 3}},
        {"value": 226, "measurand": "Voltage", "phase": "L2-N"},
        {"value": 50.01, "measurand": "Frequency"},
        {"value": 16, "measurand": "Current.Import", "phase": "L3"},
    ]}
    reading = read_meter_value(sampled_values(meter_value), NOMINAL_V)
    assert reading is not None
    assert reading.voltages_v == (pytest.approx(228.1), 226.0, None)
    assert reading.frequency_hz == 50.01 and reading.currents_a == (None, None, 16.0)
