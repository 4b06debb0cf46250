"""``drbridge simulate``: the engine over a simulated fleet, a table and a plot."""

from pathlib import Path

from bridge.cli import main
from bridge.config import Config, load_config
from bridge.simulate import Row, load_scenario, simulate, table
from policies.validation import InvalidDocument

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "site-depot.yaml"
PEAK = ROOT / "examples" / "event-peak.yaml"

SHORT = """
duration_min: 40
interval_s: 60
fleet: {stations: 6, need_kwh: [30, 40], arrive_within_min: 0}
events:
  - id: e
    start_min: 10
    signals:
      - {name: SIMPLE, type: level, intervals: [{minutes: 10, value: 2}]}
"""


def test_simulation_holds_the_limit_and_follows_the_event():
    config = load_config(SITE)
    rows = simulate(config, load_scenario(SHORT, "short.yaml"))
    assert len(rows) == 40
    for row in rows:
        assert row.allocated_w <= row.site_limit_w + 1e-6
        assert row.load_w <= row.allocated_w + 1e-6
    during = [r for r in rows if 10 <= (r.at - rows[0].at).total_seconds() / 60 < 20]
    assert {r.site_limit_w for r in during} == {21_000}  # fleet-depot level 2: 35 % of 60 kW
    assert all("event e" in r.reason for r in during)
    assert rows[5].load_w > 40_000 and rows[-1].load_w > 40_000
    text = table(rows)
    assert "limit kW" in text.splitlines()[0] and "SIMPLE level 2" in text


def test_fleet_size_from_the_command_line(tmp_path):
    config = load_config(SITE)
    rows = simulate(config, load_scenario(SHORT, "short.yaml"), fleet_size=20)
    assert max(r.charging + r.paused for r in rows) == 20  # 12 listed stations and 8 more


def test_cli_prints_the_table_and_writes_the_png(tmp_path, capsys):
    png = tmp_path / "peak.png"
    assert main(["simulate", "--config", str(SITE), "--event", str(PEAK), "--fleet", "8",
                 "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "event dispatch; LOAD_DISPATCH setpoint 30 kW" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_event_file_names_line_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - id: e\n    start_min: -5\n    signals: []\n")
    assert main(["simulate", "--config", str(SITE), "--event", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: events[0].start_min: Input should be greater than or equal to 0" in err
    assert f"{bad}:4: events[0].signals" in err


def run_example(name: str) -> tuple[Config, list[Row]]:
    """``drbridge simulate`` over examples/site-NAME.yaml and examples/event-NAME.yaml."""
    config = load_config(ROOT / "examples" / f"site-{name}.yaml")
    scenario = ROOT / "examples" / f"event-{name}.yaml"
    return config, simulate(config, load_scenario(scenario.read_text(), str(scenario)))


def test_a_weak_feeder_is_held_above_the_minimum_current_point_and_restored():
    config, rows = run_example("feeder")
    floor = 0.90 * config.site.voltage_v
    # without the rule the EVs would pull the feeder below the floor; with it, never
    assert min(r.free_voltage_v for r in rows) < floor
    assert min(r.voltage_v for r in rows) >= floor
    assert any("voltage:" in r.reason for r in rows)
    # after the tap change every EV charges at its own limit again
    last = rows[-1]
    assert last.load_w == 110_000 and "voltage:" not in last.reason
    assert "volts" in table(rows).splitlines()[0]


def test_a_pv_surplus_sets_the_price_limit_aside_and_the_floor_settles():
    config, rows = run_example("pv")
    price_w = 0.40 * config.site.capacity_w
    surplus = [r for r in rows if "over-voltage" in r.reason]
    assert surplus and all(r.site_limit_w > price_w for r in surplus)
    assert all(r.site_limit_w <= config.site.capacity_w for r in rows)
    # the floor rises once, then only falls, and holds the voltage under the rule's full
    limits = [r.site_limit_w for r in surplus]
    peak = limits.index(max(limits))
    assert all(b <= a for a, b in zip(limits[peak:], limits[peak + 1:], strict=False))
    assert max(r.voltage_v or 0.0 for r in surplus[peak + 10:]) < 1.08 * config.site.voltage_v
    # before the surplus and after it the price's limit holds
    assert rows[30].site_limit_w == rows[-1].site_limit_w == price_w
    assert "over-voltage" not in rows[-1].reason


def test_the_feeder_in_a_scenario_is_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("feeder:\n  source_v: 230\n  impedance_ohm: -1\n")
    try:
        load_scenario(bad.read_text(), str(bad))
    except InvalidDocument as error:
        assert f"{bad}:3: feeder.impedance_ohm" in str(error)
    else:
        raise AssertionError("a negative impedance was accepted")
