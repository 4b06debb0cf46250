"""The grid monitor (newest voltage per station, site min/mean) and the voltage report items."""

from datetime import UTC, datetime, timedelta

from bridge.grid import GridMonitor
from bridge.sim.feeder import Feeder
from bridge.telemetry import Reading
from ven.oadr20b.grid_reports import voltage_rid, voltage_sample

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def volts(at: datetime, *values: float | None) -> Reading:
    return Reading(at, None, None, tuple(values))  # type: ignore[arg-type]


def test_keeps_the_newest_reading_and_skips_fresh_less_ones():
    grid = GridMonitor(230, stale_after_s=60)
    assert grid.observe("CP1", volts(T0, 220, 221, 222), T0)
    assert not grid.observe("CP1", volts(T0 - timedelta(seconds=1), 200, 200, 200), T0)
    assert not grid.observe("CP1", Reading(T0, 1000, None), T0)  # no voltage in it
    assert grid.latest["CP1"].phases_v == (220, 221, 222)


def test_a_reading_from_a_clock_running_ahead_counts_from_its_arrival():
    grid = GridMonitor(230, stale_after_s=60)
    assert grid.observe("CP1", volts(T0 + timedelta(hours=1), 250, 250, 250), T0)
    assert grid.latest["CP1"].at == T0  # stale a minute after it arrived, not an hour later
    assert grid.observe("CP1", volts(T0 + timedelta(hours=1), 240, 240, 240),
                        T0 + timedelta(seconds=10))


def test_site_minimum_and_mean_per_phase_over_fresh_readings():
    grid = GridMonitor(230, stale_after_s=60)
    grid.observe("CP1", volts(T0, 220, 230, None), T0)
    grid.observe("CP2", volts(T0, 210, 226, 231), T0)
    grid.observe("OLD", volts(T0 - timedelta(minutes=5), 100, 100, 100), T0)  # stale: left out
    site = grid.site(T0 + timedelta(seconds=1))
    assert site.phases == (("L1", 210, 215), ("L2", 226, 228), ("L3", 231, 231))
    assert site.to_json()["L1"] == {"min_v": 210, "mean_v": 215}
    assert grid.site(T0, ["CP1"]).phases == (("L1", 220, 220), ("L2", 230, 230))


class Source:
    def site_voltages(self):
        return {"L1": (210.0, 215.0)}


def test_voltage_report_items_send_nothing_without_data():
    assert voltage_rid("L2", "mean") == "site-voltage-L2-mean"
    assert voltage_sample(Source(), "L1", "min")[0][1] == 210.0
    assert voltage_sample(Source(), "L1", "mean")[0][1] == 215.0
    assert voltage_sample(Source(), "L3", "min") == []


def test_feeder_voltage_falls_with_the_current_on_each_line():
    feeder = Feeder(source_v=230, impedance_ohm=0.5)
    feeder.attach("A", lambda: (16.0, 16.0, 16.0))
    feeder.attach("B", lambda: (10.0, 0.0, 0.0))
    assert feeder.voltages_v() == (217.0, 222.0, 222.0)
    feeder.detach("B")
    assert feeder.voltages_v() == (222.0, 222.0, 222.0)


def test_volt_watt_restrictions_survive_a_restart(tmp_path):
    from bridge.store import Store
    from policies.fleet import PlanState
    from policies.voltwatt import VoltHold

    store = Store(tmp_path / "bridge.db")
    hold = VoltHold(0.4, T0, "voltage 0.912 pu on L2: 40% of allowed power")
    store.save_plan_state(PlanState(T0, 10_000, voltage={"CP1": hold}), {})
    state, _ = store.plan_state()
    assert state is not None and state.voltage == {"CP1": hold}
    store.close()
