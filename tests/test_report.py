"""`drbridge report`: CSV, PNG and summary from a real SQLite store."""

import contextlib
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.cli import main
from bridge.retention import Pass
from bridge.store import MeterSample, Store
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Step

START = datetime(2025, 11, 26, 17, 0, tzinfo=UTC)  # a Wednesday, in the past
END = START + timedelta(minutes=30)

CONFIG = """\
ven: {vtn_url: 'http://127.0.0.1:1/OpenADR2/Simple/2.0b', ven_name: site}
site: {capacity_kw: 40}
storage: {path: var/site.db}
report:
  baseline_days: 3
  baseline_min_days: 2
  interval_s: 600
"""


def event() -> DrEvent:
    interval = SignalInterval(start=START, duration=END - START, value=2)
    return DrEvent(event_id="evt-7", modification_number=0, status=EventStatus.ACTIVE,
                   start=START, duration=END - START,
                   signals=(EventSignal(name="SIMPLE", type="level", intervals=(interval,)),))


def fill(store: Store, start: datetime, end: datetime, load_w: float, limit_w: float) -> None:
    at = start
    while at < end:
        store.add_site_load(at, load_w, limit_w)
        at += timedelta(minutes=1)


def site_with_event(tmp_path: Path) -> Path:
    """A config, and a store with the event, its load and baseline days, profiles, samples
    and holds; the config's path."""
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    store = Store(tmp_path / "var" / "site.db")
    store.save_event(event(), "optIn", "policy default acts on SIMPLE", START)
    for back in (1, 2):  # Tuesday and Monday
        day = timedelta(days=back)
        fill(store, START - day, END - day, 30_000, 40_000)
    fill(store, START, END, 9_000, 10_000)
    schedule = (Step(START, 5_000, "event evt-7"),)
    for sid in ("CP1", "CP2"):
        store.record_profile(sid, START - timedelta(minutes=1), "W", "{}", schedule, "Accepted")
    store.add_samples(
        MeterSample(sid, 1, START + timedelta(seconds=s), power, None)
        for s in range(0, 1800, 30)
        for sid, power in (("CP1", 4_500.0), ("CP2", 7_000.0))
    )
    store.set_hold("CP9", "exempt", "clinic", START - timedelta(hours=1))
    store.set_hold("CP8", "exempt", "fleet car", START - timedelta(hours=1))
    store.clear_hold("CP8", START - timedelta(minutes=1))  # lifted before the event
    store.close()
    return config


def test_report_writes_csv_png_and_summary(tmp_path, capsys):
    config = site_with_event(tmp_path)

    assert main(["report", "evt-7", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "achieved shed       21.00 kW" in printed
    assert "requested shed      20.00 kW" in printed
    assert "compliance          100 %" in printed
    assert "stations opted out  CP9" in printed
    assert "non-compliant       CP2" in printed
    assert "2 previous weekdays with data (2025-11-25, 2025-11-24)" in printed

    with (tmp_path / "out" / "event-evt-7.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3
    assert rows[0] == {"interval_start": START.isoformat(),
                       "interval_end": (START + timedelta(minutes=10)).isoformat(),
                       "baseline_w": "30000.0", "measured_w": "9000.0", "limit_w": "10000.0",
                       "shed_w": "21000.0"}
    png = (tmp_path / "out" / "event-evt-7.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert (tmp_path / "out" / "event-evt-7.txt").read_text().startswith("DR event evt-7")


def test_a_report_says_when_retention_took_what_stations_are_judged_by(tmp_path, capsys):
    config = site_with_event(tmp_path)
    cutoff = END + timedelta(days=1)
    with contextlib.closing(Store(tmp_path / "var" / "site.db")) as store:
        for table in ("samples", "profiles"):
            run = Pass(table, cutoff)
            while not run.done:
                store.prune(run)

    assert main(["report", "evt-7", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "non-compliant       unknown: the meter samples and profiles from before " \
           f"{cutoff:%Y-%m-%d %H:%M} UTC are no longer kept (storage.retention)" in printed
    assert "achieved shed       21.00 kW" in printed  # from the site load, kept longer


def test_report_on_unknown_event_and_bad_config(tmp_path, capsys):
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    assert main(["report", "nope", "--config", str(config)]) == 1
    assert "no event 'nope'" in capsys.readouterr().err
    config.write_text(CONFIG + "  baseline_dayz: 3\n")
    assert main(["report", "nope", "--config", str(config)]) == 2
    assert "report.baseline_dayz" in capsys.readouterr().err
