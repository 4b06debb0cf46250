"""Retention of the store's growing tables, over a real SQLite file: what goes, what stays
(whatever something still reads), the counts /metrics reads, and the batches."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.config import load_config_text
from bridge.performance import BaselineSettings, baseline_reach
from bridge.retention import Pass, Retention, median_around, profiles_to_delete, young_from
from bridge.runtime.retention import Pruner
from bridge.store import MeterSample, Store
from policies.fleet import Step
from policies.validation import InvalidDocument

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=30)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def schedule(limit_w: float, at: datetime) -> tuple[Step, ...]:
    return (Step(at, limit_w, "plan"),)


def send(store: Store, station_id: str, at: datetime, status: str, limit_w: float = 7_000.0
         ) -> None:
    store.record_profile(station_id, at, "W", '{"chargingProfileId":9001}',
                         schedule(limit_w, at), status)


def profile_rows(path: Path) -> list[tuple[str, str, float]]:
    """(station, answer, limit) of each profile on file, in the log's order."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute("SELECT station_id, status, json_extract(schedule, '$[0][1]')"
                                 " FROM profiles ORDER BY id"))


def prune_all(store: Store, table: str, cutoff: datetime) -> list[int]:
    """A whole pass; the rows each batch deleted."""
    run, deleted = Pass(table, cutoff), []
    while not run.done:
        before = run.deleted
        store.prune(run)
        deleted.append(run.deleted - before)
    return deleted


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "bridge.db")
    yield made
    made.close()


def test_old_profiles_go_but_each_station_keeps_its_newest_of_each_answer(store: Store,
                                                                          tmp_path: Path):
    send(store, "CP1", days_ago(40), "Accepted", 1_000)
    send(store, "CP1", days_ago(35), "Accepted", 2_000)  # in force when the kept log begins
    send(store, "CP1", days_ago(34), "Rejected", 3_000)
    send(store, "CP1", days_ago(33), "Rejected", 4_000)
    send(store, "CP1", days_ago(1), "Accepted", 5_000)
    send(store, "CP2", days_ago(40), "Accepted", 6_000)  # its newest accepted, however old
    send(store, "CP2", days_ago(39), "Failed", 7_000)  # its latest sent
    # a wave sends two profiles at one time: the later of them is the newer
    send(store, "CP3", days_ago(50), "Accepted", 8_000)
    send(store, "CP3", days_ago(50), "Accepted", 9_000)
    store.flush()
    path = tmp_path / "bridge.db"
    counts = store.profile_counts()

    assert sum(prune_all(store, "profiles", CUTOFF)) == 3

    assert profile_rows(path) == [
        ("CP1", "Accepted", 2_000), ("CP1", "Rejected", 4_000), ("CP1", "Accepted", 5_000),
        ("CP2", "Accepted", 6_000), ("CP2", "Failed", 7_000), ("CP3", "Accepted", 9_000)]
    # a report of an event in the kept window judges CP1 by what it had accepted then
    assert store.accepted_schedules("CP1", days_ago(10)) == [
        (days_ago(35), schedule(2_000, days_ago(35)))]
    # the counts /metrics reads never go down: not in this run, not in the next
    assert store.profile_counts() == counts == {"Accepted": 6, "Rejected": 2, "Failed": 1}
    with contextlib.closing(Store(path)) as after:
        assert after.profile_counts() == counts
        send(after, "CP1", NOW, "Accepted")
        assert after.profile_counts() == {**counts, "Accepted": 7}
    # and a second pass finds nothing more to delete
    assert sum(prune_all(store, "profiles", CUTOFF)) == 0


def test_a_pass_walks_back_from_the_cutoff_in_bounded_batches(store: Store):
    for i in range(1_000):  # old, from ten stations: the newest of each stays
        send(store, f"CP{i % 10}", days_ago(60) + timedelta(minutes=i), "Accepted")
    for i in range(500):  # young
        send(store, f"CP{i % 10}", days_ago(1) + timedelta(minutes=i), "Accepted")
    store.flush()
    run = Pass("profiles", CUTOFF)

    store.prune(run)

    assert run.before == 701  # from the cut-off (row 1,001 is the first young one), 300 rows
    assert run.deleted == 290 and not run.done
    batches = 1
    while not run.done:
        store.prune(run)
        batches += 1
    assert batches == 4  # three of 300 rows, and the 100 at the table's start
    assert run.deleted == 990
    assert store.db.execute("SELECT count(*) FROM profiles").fetchone()[0] == 510


def test_a_batch_finds_its_rows_by_rowid_alone(store: Store):
    """No index on the tables written on the hot paths: a batch's rows are a range of the
    table's own b-tree."""
    for sql in ("SELECT rowid FROM samples WHERE rowid < ? ORDER BY rowid DESC LIMIT ?",
                "SELECT id, station_id, status, sent_at FROM profiles WHERE id < ?"
                " ORDER BY id DESC LIMIT ?",
                "SELECT rowid, at FROM samples WHERE rowid >= ? ORDER BY rowid LIMIT ?"):
        plan = store.db.execute(f"EXPLAIN QUERY PLAN {sql}", [1, 1]).fetchall()
        assert [row[-1] for row in plan] == [
            f"SEARCH {'profiles' if 'profiles' in sql else 'samples'} USING INTEGER PRIMARY"
            f" KEY (rowid{'>' if '>=' in sql else '<'}?)"], plan
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN DELETE FROM samples WHERE rowid >= ? AND rowid < ? AND at < ?",
        [1, 2, "x"]).fetchall()
    assert [row[-1] for row in plan] == [
        "SEARCH samples USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"], plan


def test_the_readings_carry_no_index_nothing_reads(tmp_path: Path):
    """Their readers take a time window; an index by station only cost every write and
    every delete. A file from before loses it once."""
    def indexes(store: Store) -> set[str]:
        return {name for (name,) in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN"
            " ('samples', 'grid_samples')")}

    path = tmp_path / "bridge.db"
    with contextlib.closing(Store(path)) as store:
        assert indexes(store) == set()
        store.db.execute("CREATE INDEX idx_samples_station_id_at ON samples (station_id, at)")
        store.db.execute("CREATE INDEX idx_grid_samples_station_id_at ON grid_samples"
                         " (station_id, at)")
        store.add_samples([MeterSample("CP1", 1, NOW, 7_000.0, 1_000.0, (230.0,))])
    with contextlib.closing(Store(path)) as store:
        assert indexes(store) == set()
        assert [s.at for s in store.samples_between(NOW, NOW + timedelta(1))] == [NOW]
        assert [s.voltages_v[0] for s in store.grid_samples_between(
            NOW, NOW + timedelta(1))] == [230.0]


def test_which_profiles_go_walking_the_log_back():
    cutoff = "2026-11-03T12:00:00+00:00"
    newer: set[tuple[str, str]] = set()
    first = [(9, "CP1", "Accepted", "2026-12-01T00:00:00+00:00"),  # younger: not newer
             (8, "CP1", "Accepted", "2026-10-02T00:00:00+00:00"),
             (7, "CP1", "Rejected", "2026-10-01T00:00:00+00:00"),
             (6, "CP2", "Accepted", "2026-10-01T00:00:00+00:00")]
    assert profiles_to_delete(first, cutoff, newer) == []
    assert newer == {("CP1", "Accepted"), ("CP1", "Rejected"), ("CP2", "Accepted")}
    second = [(5, "CP1", "Accepted", "2026-10-01T00:00:00+00:00"),
              (4, "CP1", "Failed", "2026-09-01T00:00:00+00:00"),
              (3, "CP2", "Accepted", "2026-10-01T00:00:00+00:00"),  # same time, older id
              (2, "CP1", "Rejected", "2026-09-01T00:00:00+00:00"),
              (1, "CP3", "Accepted", "2026-12-02T00:00:00+00:00")]
    assert profiles_to_delete(second, cutoff, newer) == [
        (5, "Accepted"), (3, "Accepted"), (2, "Rejected")]


def test_where_a_table_turns_young_despite_a_few_wrong_clocks():
    cutoff = "2026-11"
    times = {rowid: "2026-10" if rowid < 700 else "2026-12" for rowid in range(1, 1001)}
    for gone in range(300, 341):  # rows deleted by an earlier pass
        del times[gone]

    def probe(rowid: int) -> tuple[int, str] | None:
        after = sorted(r for r in times if r >= rowid)[:5]
        before = sorted((r for r in times if r < rowid), reverse=True)[:4]
        return (after[0], median_around([times[r] for r in before],
                                        [times[r] for r in after])) if after else None

    assert young_from(1, 1000, probe, cutoff) == 700
    assert young_from(1, 1000, probe, "1999") == 1  # all young
    assert young_from(1, 1000, probe, "2099") == 1001  # all old
    # a station's clock set wrong puts a few rows far out of place: the search holds
    times.update({500: "2030-01", 650: "2031-01", 690: "2031-01", 750: "2000-01",
                  875: "1970-01"})
    assert young_from(1, 1000, probe, cutoff) == 700
    assert young_from(1, 4, lambda r: probe(r) if r <= 4 else None, cutoff) == 5


def test_the_time_around_a_spot():
    assert median_around([], ["b"]) == "b"
    assert median_around(["a", "a"], ["b"]) == "b"  # the row's own, on the table's edge
    assert median_around(["a"], ["b", "b"]) == "b"
    assert median_around(["a", "a", "z"], ["b", "c", "a"]) == "a"


def test_samples_site_load_plans_and_sessions_age_out(store: Store):
    for at in (days_ago(40), days_ago(31), days_ago(29), NOW):
        store.add_samples([MeterSample("CP1", 1, at, 7_000.0, 1_000.0, (230.0, 231.0, 229.0))])
        store.add_site_load(at, 7_000.0, 44_000.0)
    store.save_plan(days_ago(20), schedule(44_000, days_ago(20)), {})
    store.save_plan(days_ago(10), schedule(33_000, days_ago(10)), {})  # the newest: stays
    closed_old = store.start_transaction("CP1", 1, "TAG", 0, days_ago(500))
    store.stop_transaction(closed_old, 100, days_ago(499))
    still_open = store.start_transaction("CP2", 1, "TAG", 0, days_ago(450))
    closed_recently = store.start_transaction("CP3", 1, "TAG", 0, days_ago(420))
    store.stop_transaction(closed_recently, 100, days_ago(300))
    newest = store.start_transaction("CP1", 1, "TAG", 0, days_ago(410))
    store.stop_transaction(newest, 100, days_ago(405))
    cutoffs = Retention(plans=timedelta(days=7)).cutoffs(NOW)

    for table, cutoff in cutoffs.items():
        prune_all(store, table, cutoff)

    assert [s.at for s in store.samples_between(days_ago(60), NOW + timedelta(1))] == \
        [days_ago(29), NOW]
    assert [s.at for s in store.grid_samples_between(days_ago(60), NOW + timedelta(1))] == \
        [days_ago(29), NOW]
    assert len(store.site_load(days_ago(60))) == 4  # a site load row is kept 400 days
    assert store.db.execute("SELECT count(*) FROM plans").fetchone()[0] == 1
    last = store.last_plan()
    assert last is not None and last[0] == days_ago(10)
    assert [row[0] for row in store.db.execute("SELECT id FROM transactions ORDER BY id")] == \
        [still_open, closed_recently, newest]
    assert [row["id"] for row in store.open_transactions()] == [still_open]


def test_a_table_kept_for_good_is_not_pruned():
    assert set(Retention().cutoffs(NOW)) == {"profiles", "samples", "grid_samples", "site_load",
                                             "plans", "transactions"}
    assert set(Retention(samples=None, plans=None).cutoffs(NOW)) == {
        "profiles", "site_load", "transactions"}
    assert Retention().cutoffs(NOW)["profiles"] == days_ago(30)


async def test_the_pruner_runs_a_pass_per_table_in_batches_and_again_after_a_while(
        store: Store):
    stations = 300  # two profiles each: more than a batch
    for i in range(stations):
        send(store, f"CP{i}", days_ago(60), "Accepted")
        send(store, f"CP{i}", days_ago(59), "Accepted")
    store.flush()
    clock = [NOW]
    only_profiles = Retention(samples=None, plans=None, site_load=None, transactions=None)
    pruner = Pruner(store, only_profiles, lambda: clock[0], budget_s=0.0,
                    every=timedelta(minutes=10))
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)

    def rows() -> int:
        return int(store.db.execute("SELECT count(*) FROM profiles").fetchone()[0])

    await pruner.tick()  # a budget of nothing still runs a batch
    assert pruner.busy
    assert len([s for s in statements if "ORDER BY id DESC LIMIT" in s]) == 1
    assert stations < rows() < 2 * stations
    for _ in range(10):
        await pruner.tick()
        if not pruner.busy:
            break
    assert not pruner.busy
    assert rows() == stations
    send(store, "CP0", days_ago(58), "Accepted")
    store.flush()
    clock[0] += timedelta(minutes=5)
    await pruner.tick()  # no new pass yet
    assert not pruner.busy
    assert rows() == stations + 1
    clock[0] += timedelta(minutes=5)
    await pruner.tick()
    assert pruner.busy
    for _ in range(10):
        await pruner.tick()
    assert rows() == stations


# the configuration ------------------------------------------------------------------------
def config_text(storage: str = "", report: str = "") -> str:
    return textwrap.dedent("""\
        ven: {vtn_url: "http://127.0.0.1:1/OpenADR2/Simple/2.0b", ven_name: test-site}
        site: {capacity_kw: 44}
        storage:
          path: bridge.db
        """) + textwrap.indent(textwrap.dedent(storage), "  ") + report


def test_retention_defaults_and_keys(tmp_path: Path):
    config = load_config_text(config_text(), tmp_path / "site.yaml")
    assert config.retention == Retention()
    config = load_config_text(config_text("""\
        retention:
          profiles_days: 90
          samples_days: 7
          plans_days: null
        """), tmp_path / "site.yaml")
    assert config.retention == Retention(profiles=timedelta(days=90),
                                         samples=timedelta(days=7), plans=None)


def test_a_broken_retention_names_file_line_key_and_fix(tmp_path: Path):
    source = tmp_path / "site.yaml"
    with pytest.raises(InvalidDocument) as caught:
        load_config_text(config_text("retention:\n  profiles_days: 0\n"), source)
    assert f"{source}:6: storage.retention.profiles_days: Input should be greater than or " \
           "equal to 1" in str(caught.value)
    with pytest.raises(InvalidDocument) as caught:
        load_config_text(config_text("retention:\n  site_load_days: 30\n"), source)
    text = str(caught.value)
    assert f"{source}:6: storage.retention.site_load_days: 30 days of site load cannot hold" \
        in text
    assert "reach up to 35 days back" in text and "Fix: set it to at least 36" in text
    # the same days with a baseline of all previous days are enough
    load_config_text(config_text("retention:\n  site_load_days: 30\n",
                                 "report: {comparable_days: all}\n"), source)


def test_how_far_back_a_baseline_reads():
    assert baseline_reach(BaselineSettings(days=10)) == timedelta(days=35)
    assert baseline_reach(BaselineSettings(days=90)) == timedelta(days=315)
    assert baseline_reach(BaselineSettings(days=3, comparable="all")) == timedelta(days=3)
    long_before = BaselineSettings(days=1, comparable="all", pre_event=timedelta(days=3))
    assert baseline_reach(long_before) > timedelta(days=3)


def test_the_sample_configs_load_with_their_retention():
    root = Path(__file__).resolve().parent.parent
    for path in [root / "config" / "site-a.yaml", *sorted((root / "examples").glob("site-*"))]:
        config = load_config_text(path.read_text("utf-8"), path)
        assert config.retention.profiles is not None, path
