"""What the store's growing tables take on disk, and what pruning them costs the event loop.

In-process and bounded, on a real SQLite file in a temporary folder (WAL, as the bridge
runs it): a fleet of ``--stations`` stations, each with a charging session, planned once
with a SIMPLE level 1 event in force (as ``bench.plan_cost``); every station's profile
built from its schedule as the dispatcher builds it (``build_profile``) and recorded as
the dispatcher records it, ``--waves`` waves old (60 days) and as many recent; meter
samples with voltage and current per line, ``--rounds`` rounds old and as many recent; the
plan stored ``--plans`` times old and as many recent; site-load rows.

Prints, per table, its bytes per row (table and indexes, SQLite's ``dbstat``), and what
one pruning pass costs: the batches, the rows deleted, and the CPU time of each batch on
the calling thread (``time.thread_time``: the time the event loop would be held; other
processes on a shared machine do not count, their cache effects do): median, 90th
percentile and max; and the most wall time a batch took. A batch whose commit brings the
WAL past SQLite's 1,000 pages also copies them into the database file and waits for the
disk (a checkpoint, as any write of the bridge does then): wall, not CPU time.
Then the same backlog again, worked off by the bridge's pruner: the rows a tick deletes
within its budget. With ``--index``, then, alternated ``--runs`` times each: a wave of
profiles flushed, and a report's reading of every station's accepted schedules, with and
without an index on the profile log by (station, answer, time), which retention could
use and does not add.

    python -m bench.retention_cost [--stations 1000] [--waves 20] [--rounds 30] [--index]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.plan_cost import NOW, cases
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.profiles import TX_DEFAULT, build_profile
from bridge.retention import Pass, Retention
from bridge.runtime.retention import TICK_BUDGET_S, Pruner
from bridge.store import MeterSample, Store
from policies.fleet import Plan, StationInfo

MAX_STATIONS = 5_000  # keeps a run bounded in time, memory and disk
CAPS = Capabilities(rate_units=frozenset({"A", "W"}), max_periods=24, known=True)
INDEX = "idx_profiles_station_id_status_sent_at"
OLD = timedelta(days=60)


def record_wave(store: Store, plan: Plan, age: timedelta, offset: timedelta) -> float:
    """A profile to every station, recorded and flushed; the CPU time of the flush."""
    at = NOW - age + offset
    for station_id, steps in plan.stations.items():
        info = StationInfo(station_id, 3, 230.0, 32.0)
        built = build_profile(steps, info, CAPS, at, 6.0, purpose=TX_DEFAULT, connector_id=1)
        store.record_profile(station_id, at, built.unit, built.payload_json, built.applied,
                             "Accepted")
    began = time.thread_time()
    store.flush()
    return time.thread_time() - began


def add_round(store: Store, stations: list[str], age: timedelta, offset: timedelta) -> None:
    at = NOW - age + offset
    store.add_samples(MeterSample(sid, 1, at, 7_000.0, 12_345.0, (231.0, 230.5, 229.8),
                                  (10.1, 10.0, 10.2), 50.0) for sid in stations)
    store.add_site_load(at, 7_000.0 * len(stations), 3_500.0 * len(stations))


def bytes_per_row(store: Store, table: str) -> float:
    size = store.db.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name = ? OR name IN (SELECT name FROM"
        " sqlite_master WHERE type = 'index' AND tbl_name = ?)", [table, table]).fetchone()[0]
    rows = store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return size / rows if rows else 0.0


def prune_pass(store: Store, table: str) -> tuple[int, int, list[float], list[float]]:
    """One pass with a cut-off of 30 days: batches, rows deleted, and the CPU and the wall
    time of each batch (s)."""
    run, times, walls = Pass(table, NOW - timedelta(days=30)), [], []
    while not run.done:
        began, wall = time.thread_time(), time.perf_counter()
        store.prune(run)
        times.append(time.thread_time() - began)
        walls.append(time.perf_counter() - wall)
    return len(times), run.deleted, times, walls


async def catch_up(store: Store) -> int:
    """Ticks of the bridge's pruner until its passes are done."""
    pruner = Pruner(store, Retention(), lambda: NOW)
    ticks = 0
    while ticks == 0 or pruner.busy:
        await pruner.tick()
        ticks += 1
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--waves", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--index", action="store_true")
    args = parser.parse_args()
    count = min(max(args.stations, 1), MAX_STATIONS)
    waves, rounds = min(max(args.waves, 1), 100), min(max(args.rounds, 1), 200)
    plans, runs = min(max(args.plans, 1), 50), min(max(args.runs, 1), 10)
    plan = cases(count)["SIMPLE 1"]()
    stations = list(plan.stations)
    print(f"Retention cost, {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores, Python {platform.python_version()}, SQLite "
          f"{__import__('sqlite3').sqlite_version}; {count:,} stations\n")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.db")
        for age in (OLD, timedelta(days=1)):
            for i in range(waves):
                record_wave(store, plan, age, timedelta(seconds=30 * i))
            for i in range(rounds):
                add_round(store, stations, age, timedelta(seconds=10 * i))
            for i in range(plans):
                store.save_plan(NOW - age + timedelta(seconds=30 * i), plan.site,
                                plan.stations)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print("| table | rows | bytes per row (with indexes) | batches | rows deleted |"
              " CPU per batch: median | 90th percentile | max | wall: max |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for table in ("profiles", "samples", "grid_samples", "site_load", "plans"):
            rows = store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            size = bytes_per_row(store, table)
            batches, deleted, times, walls = prune_pass(store, table)
            times.sort()
            print(f"| {table} | {rows:,} | {size:,.0f} | {batches} | {deleted:,} | "
                  f"{statistics.median(times) * 1000:.1f} ms | "
                  f"{times[len(times) * 9 // 10] * 1000:.1f} ms | {times[-1] * 1000:.1f} ms | "
                  f"{max(walls) * 1000:.1f} ms |")

        # the same backlog again, worked off by the bridge's pruner: rows per tick (once a
        # second in the bridge), within its budget of wall time
        for age in (OLD, timedelta(days=1)):
            for i in range(waves):
                record_wave(store, plan, age, timedelta(seconds=30 * i + 1))
            for i in range(rounds):
                add_round(store, stations, age, timedelta(seconds=10 * i + 1))
        before = sum(store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("profiles", "samples", "grid_samples"))
        ticks = asyncio.run(catch_up(store))
        after = sum(store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("profiles", "samples", "grid_samples"))
        print(f"\nA backlog of {before - after:,} rows (profiles, samples, grid readings) "
              f"deleted by the pruner in {ticks} ticks of at most {TICK_BUDGET_S * 1000:.0f}"
              f" ms: {(before - after) / ticks:,.0f} rows a tick (a tick a second)")
        if not args.index:
            store.close()
            return
        print(f"\nA wave of {count:,} profiles flushed, and a report's accepted schedules of"
              f" every station (CPU, ms; {runs} runs each, alternated):\n")
        flush: dict[bool, list[float]] = {True: [], False: []}
        report: dict[bool, list[float]] = {True: [], False: []}
        for run in range(runs):
            for indexed in (run % 2 == 0, run % 2 != 0):
                if indexed:
                    store.db["profiles"].create_index(["station_id", "status", "sent_at"],
                                                      if_not_exists=True)
                else:
                    store.db.execute(f"DROP INDEX IF EXISTS {INDEX}")
                flush[indexed].append(record_wave(store, plan, timedelta(0),
                                                  timedelta(seconds=run)))
                began = time.thread_time()
                for station_id in stations:
                    store.accepted_schedules(station_id, NOW + timedelta(days=1))
                report[indexed].append(time.thread_time() - began)
        print("| | with the index | without |")
        print("|---|---:|---:|")
        for name, figures in (("wave flushed", flush),
                              ("accepted schedules, every station", report)):
            cells = [", ".join(f"{t * 1000:.0f}" for t in figures[k]) for k in (True, False)]
            print(f"| {name} | {cells[0]} | {cells[1]} |")
        store.close()


if __name__ == "__main__":
    main()
