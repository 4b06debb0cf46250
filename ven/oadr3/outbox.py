"""Reports waiting for the VTN: persisted before the first attempt, dropped once accepted.

Each report has a key naming what it reports (event, descriptor, last interval), so a
restarted VEN neither loses a report the VTN refused nor sends one twice. A report the VTN
refuses stays queued and is retried; once accepted its key is remembered as sent.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

import sqlite_utils

TABLE = "oadr3_reports"


class ReportOutbox(Protocol):
    def seen(self, key: str) -> bool:
        """Whether the report was ever queued, or settled without sending."""
        ...

    def put(self, key: str, body: str, now: datetime) -> None:
        """Queue a report (JSON text); durable when this returns."""
        ...

    def pending(self) -> list[tuple[str, str]]:
        """(key, body) of every report not yet accepted, oldest first."""
        ...

    def settle(self, key: str, now: datetime) -> None:
        """The VTN accepted it, or there is nothing to send: never again."""
        ...


class MemoryOutbox:
    """A :class:`ReportOutbox` that forgets on restart (tests, tools)."""

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}
        self._settled: set[str] = set()

    def seen(self, key: str) -> bool:
        return key in self._pending or key in self._settled

    def put(self, key: str, body: str, now: datetime) -> None:
        if key not in self._settled:
            self._pending.setdefault(key, body)

    def pending(self) -> list[tuple[str, str]]:
        return list(self._pending.items())

    def settle(self, key: str, now: datetime) -> None:
        self._pending.pop(key, None)
        self._settled.add(key)


class SqliteOutbox:
    """A :class:`ReportOutbox` in a table of an SQLite file (the bridge's own, or another)."""

    def __init__(self, db: sqlite_utils.Database | Path | str) -> None:
        self._db = db if isinstance(db, sqlite_utils.Database) else sqlite_utils.Database(db)
        if TABLE not in self._db.table_names():
            self._db[TABLE].create({"key": str, "body": str, "queued_at": str,
                                    "sent_at": str}, pk="key", not_null={"key"})

    def seen(self, key: str) -> bool:
        return self._db.execute(f"SELECT 1 FROM {TABLE} WHERE key = ?", [key]).fetchone() \
            is not None

    def put(self, key: str, body: str, now: datetime) -> None:
        with self._db.conn:
            self._db.execute(f"INSERT OR IGNORE INTO {TABLE} (key, body, queued_at) "
                             "VALUES (?, ?, ?)", [key, body, now.isoformat()])

    def pending(self) -> list[tuple[str, str]]:
        rows = self._db.execute(f"SELECT key, body FROM {TABLE} WHERE sent_at IS NULL "
                                "ORDER BY queued_at, key").fetchall()
        return [(key, body) for key, body in rows]

    def settle(self, key: str, now: datetime) -> None:
        with self._db.conn:
            self._db.execute(f"INSERT INTO {TABLE} (key, sent_at) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET sent_at = excluded.sent_at",
                             [key, now.isoformat()])
