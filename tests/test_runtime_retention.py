"""A running bridge keeps its store within ``storage.retention``: over a real SQLite file
from an earlier run, with /metrics read over HTTP before and after."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from conftest import SiteHarness, wait_until

from bridge.store import MeterSample, Store
from policies.fleet import Step


def seed(path: Path, now: datetime) -> None:
    """What months of an earlier run left: profiles, samples and plans, old and recent."""
    def send(station_id: str, days: float, status: str, limit_w: float) -> None:
        at = now - timedelta(days=days)
        store.record_profile(station_id, at, "W", '{"chargingProfileId":9001}',
                             (Step(at, limit_w, "plan"),), status)

    with contextlib.closing(Store(path)) as store:
        send("CP1", 90, "Accepted", 1_000)
        send("CP1", 60, "Accepted", 2_000)  # CP1's newest accepted profile
        send("CP1", 50, "Rejected", 3_000)
        send("CP1", 45, "Rejected", 4_000)  # and its latest sent
        send("CP2", 40, "Accepted", 5_000)
        send("CP2", 2, "Accepted", 6_000)
        for days in (60, 40, 2):
            at = now - timedelta(days=days)
            store.add_samples([MeterSample("CP1", 1, at, 7_000.0, 100.0)])
            store.save_plan(at, (Step(at, 44_000.0, "site capacity"),), {})


def on_file(path: Path) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [(sid, status, json_limit) for sid, status, json_limit in conn.execute(
            "SELECT station_id, status, json_extract(schedule, '$[0][1]') FROM profiles"
            " ORDER BY id")]


def count(path: Path, table: str, column: str, days: float) -> int:
    """Rows of the table at least this many days old."""
    before = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {column} < ?",
                                [before]).fetchone()[0])


async def profile_metrics(site: SiteHarness) -> dict[str, float]:
    bridge = site.bridge
    assert bridge is not None and bridge.web is not None
    await wait_until(bridge.web.ready.is_set, what="the web server")
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{bridge.web.port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines()
             if line.startswith("drbridge_profiles_"))}


async def test_a_running_bridge_prunes_what_is_past_retention_and_counts_on(
        site: SiteHarness, tmp_path: Path):
    site.write_config()
    path = tmp_path / "var" / "bridge.db"
    seed(path, datetime.now(UTC))
    expected = {
        "drbridge_profiles_sent_total": 6.0,
        "drbridge_profiles_rejected_total": 2.0,
        'drbridge_profiles_total{status="Accepted"}': 4.0,
        'drbridge_profiles_total{status="Rejected"}': 2.0,
    }

    await site.start_bridge()
    # the default retention: 30 days of profiles and samples, 7 days of plans
    await wait_until(lambda: count(path, "samples", "at", 30) == 0
                     and count(path, "plans", "made_at", 7) == 0,
                     what="old samples and plans deleted")
    assert count(path, "samples", "at", 1) == count(path, "plans", "made_at", 1) == 1
    await wait_until(lambda: len(on_file(path)) == 4, what="old profiles deleted")
    assert on_file(path) == [("CP1", "Accepted", 2_000), ("CP1", "Rejected", 4_000),
                             ("CP2", "Accepted", 5_000), ("CP2", "Accepted", 6_000)]
    assert await profile_metrics(site) == expected  # no counter went down
    await site.stop_bridge()

    await site.start_bridge()  # the next run counts what was deleted too
    assert await profile_metrics(site) == expected
