"""The counts /metrics reads from the store on every scrape."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from bridge.store import Store
from policies.fleet import Step

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SCHEDULE = (Step(NOW, 7_000.0, "plan"),)


def _sent(store: Store, *statuses: str) -> None:
    for status in statuses:
        store.record_profile("CP1", NOW, "W", '{"chargingProfileId":9001}', SCHEDULE, status)


def test_profile_counts_are_read_once_then_kept_up_without_scanning_the_log(tmp_path: Path):
    path = tmp_path / "bridge.db"
    with contextlib.closing(Store(path)) as earlier:  # a run before this one
        _sent(earlier, "Accepted", "Accepted", "Rejected")
        earlier.flush()
    store = Store(path)
    _sent(store, "Accepted")  # queued, not yet written
    assert store.profile_counts() == {"Accepted": 3, "Rejected": 1}
    scans: list[str] = []
    store.db.conn.set_trace_callback(scans.append)
    _sent(store, "Failed", "Accepted")
    store.flush()
    assert store.profile_counts() == {"Accepted": 4, "Rejected": 1, "Failed": 1}
    assert not [sql for sql in scans if "count(" in sql.lower()]  # the table was not read
    # what another process reads from the file agrees
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert dict(conn.execute("SELECT status, count(*) FROM profiles GROUP BY status")
                    .fetchall()) == {"Accepted": 4, "Rejected": 1, "Failed": 1}
    store.db.close()
