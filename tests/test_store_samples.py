"""Meter samples into the store: a samples row for each, a grid row beside those with a
voltage, a current or a frequency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from bridge.store import MeterSample, Store

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
NONE3 = (None, None, None)


def test_a_grid_row_goes_beside_each_sample_that_has_a_grid_measurand(tmp_path: Path):
    store = Store(tmp_path / "grid.db")
    try:
        store.add_samples([
            MeterSample("A", 1, AT, 7_000.0, 1.0, NONE3, (16.0, None, None)),  # as read
            MeterSample("B", 1, AT, 7_000.0, 1.0, NONE3, NONE3),  # no grid measurand
            MeterSample("C", 1, AT, 7_000.0, 1.0, NONE3, NONE3, 50.0),  # frequency alone
            MeterSample("D", 1, AT, 7_000.0, 1.0, (231.0,)),  # a shorter tuple
            MeterSample("E", 1, AT, 7_000.0, 1.0),  # none at all
        ])
        window = (AT, AT + timedelta(seconds=1))
        grid = {s.station_id: s for s in store.grid_samples_between(*window)}
        assert sorted(grid) == ["A", "C", "D"]
        assert grid["A"].currents_a == (16.0, None, None)
        assert grid["C"].frequency_hz == 50.0
        assert grid["D"].voltages_v == (231.0, None, None)
        assert [s.station_id for s in store.samples_between(*window)] == list("ABCDE")
    finally:
        store.close()


def test_samples_taken_at_one_moment_are_stored_at_that_moment_whatever_their_offset(
        tmp_path: Path):
    """Times are formatted once per moment: the same instant written with another offset
    reads the same, and the next moment its own."""
    paris = timezone(timedelta(hours=1))
    later = AT + timedelta(microseconds=1)
    store = Store(tmp_path / "times.db")
    try:
        store.add_samples([
            MeterSample("A", 1, AT, 1.0, 1.0),
            MeterSample("B", 1, AT.astimezone(paris), 1.0, 1.0),
            MeterSample("C", 1, later, 1.0, 1.0),
            MeterSample("D", 1, later.astimezone(paris), 1.0, 1.0),
        ])
        rows = store.db.execute("SELECT station_id, at FROM samples ORDER BY rowid").fetchall()
        assert rows == [("A", AT.isoformat()), ("B", AT.isoformat()),
                        ("C", later.isoformat()), ("D", later.isoformat())]
    finally:
        store.close()


def test_every_shape_of_grid_row_reads_back_as_it_was_written(tmp_path: Path):
    """Lines all there or all missing, mixed, with and without a frequency."""
    volts, amps = (231.0, 229.5, 230.2), (16.0, 15.5, 16.1)
    written = [
        MeterSample("I", 1, AT, 1.0, 1.0, NONE3, amps),
        MeterSample("V", 1, AT, 1.0, 1.0, volts, NONE3),
        MeterSample("VIF", 1, AT, 1.0, 1.0, volts, amps, 49.98),
        MeterSample("IF", 2, AT, 1.0, 1.0, NONE3, amps, 50.01),
        MeterSample("mixed", 1, AT, 1.0, 1.0, (231.0, None, None), (None, 15.5, 16.1), 50.0),
    ]
    store = Store(tmp_path / "shapes.db")
    try:
        store.add_samples(written)
        read = {s.station_id: s for s in store.grid_samples_between(
            AT, AT + timedelta(seconds=1))}
        assert {sid: (s.connector_id, s.voltages_v, s.currents_a, s.frequency_hz)
                for sid, s in read.items()} == {
            s.station_id: (s.connector_id, s.voltages_v, s.currents_a, s.frequency_hz)
            for s in written}
    finally:
        store.close()
