"""Offline authorization: a cache of the operator's past answers, kept in the bridge's database.

While the upstream link is up, every answer the operator's CSMS gives about an id tag
(1.6 ``idTagInfo`` in Authorize, StartTransaction, StopTransaction; 2.0.1 ``idTokenInfo``
in Authorize and TransactionEvent) is learnt here, refusals included, so that a blocked
card stays blocked. While the link is down, Authorize and the start of a transaction
are answered from it, by the site's ``offline_authorization`` policy:

- ``cache`` (the default): an id the operator answered before gets that answer until
  its expiry; an unknown (or expired) id is refused;
- ``accept``: the same, but an unknown id is accepted (the replayed start tells the
  operator; its answer may end the session then);
- ``reject``: no id starts a session while the operator is away.

The decision itself is pure (:func:`offline_decision`); the cache is one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bridge.sqlite_db import sqlite_utils

TABLE = "upstream_auth_cache"
MAX_ENTRIES = 100_000  # a site sees a few thousand cards; a flood of ids must not grow it
ACCEPTED = "Accepted"


class OfflinePolicy(StrEnum):
    CACHE = "cache"
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class CachedAnswer:
    status: str
    expires: datetime | None
    learned_at: datetime


@dataclass(frozen=True)
class Decision:
    status: str
    reason: str  # for the log: where the answer came from


def offline_decision(cached: CachedAnswer | None, policy: OfflinePolicy, now: datetime,
                     refused: str = "Invalid") -> Decision:
    """What an id gets while the operator is unreachable. ``refused``: the status a
    refusal takes (1.6 ``Invalid``; 2.0.1 may prefer ``Unknown``)."""
    if policy is OfflinePolicy.REJECT:
        return Decision(refused, "offline_authorization: reject")
    if cached is not None and (cached.expires is None or now < cached.expires):
        learned = f"{cached.learned_at:%Y-%m-%d %H:%M}Z"
        return Decision(cached.status, f"the operator's answer of {learned}")
    if policy is OfflinePolicy.ACCEPT:
        return Decision(ACCEPTED, "unknown id, offline_authorization: accept")
    return Decision(refused, "unknown id, offline_authorization: cache")


def token_key(id_token: Mapping[str, Any] | str) -> str:
    """The cache key of a 1.6 idTag (its text) or a 2.0.1 idToken (its type and text)."""
    if isinstance(id_token, str):
        return id_token
    return f"{id_token.get('type', '')}:{id_token.get('idToken', '')}"


def _time(text: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class AuthCache:
    """The operator's answers per id, in one table of the bridge's database."""

    def __init__(self, db: sqlite_utils.Database, max_entries: int = MAX_ENTRIES) -> None:
        self.db = db
        self.max_entries = max_entries
        db[TABLE].create({"token": str, "status": str, "expires": str, "learned_at": str},
                         pk="token", if_not_exists=True)
        db[TABLE].create_index(["learned_at"], if_not_exists=True)

    def learn(self, token: str, info: Mapping[str, Any], now: datetime) -> None:
        """Keep the operator's answer (a 1.6 idTagInfo or a 2.0.1 idTokenInfo, as on the
        wire); an answer without a readable status is ignored."""
        status = info.get("status")
        if not isinstance(status, str) or not status:
            return
        expires = _time(info.get("expiryDate") or info.get("cacheExpiryDateTime") or "")
        with self.db.conn:
            self.db.conn.execute(
                f"INSERT INTO {TABLE} (token, status, expires, learned_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(token) DO UPDATE SET status = excluded.status,"
                " expires = excluded.expires, learned_at = excluded.learned_at",
                [token, status, expires.astimezone(UTC).isoformat() if expires else None,
                 now.astimezone(UTC).isoformat()])
            count = self.db.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            if count > self.max_entries:  # forget the least recently answered
                self.db.conn.execute(
                    f"DELETE FROM {TABLE} WHERE token IN (SELECT token FROM {TABLE}"
                    " ORDER BY learned_at LIMIT ?)", [count - self.max_entries])

    def lookup(self, token: str) -> CachedAnswer | None:
        row = self.db.execute(f"SELECT status, expires, learned_at FROM {TABLE} WHERE token = ?",
                              [token]).fetchone()
        if row is None:
            return None
        learned = _time(row[2]) or datetime.min.replace(tzinfo=UTC)
        return CachedAnswer(row[0], _time(row[1]) if row[1] else None, learned)

    def decide(self, token: str, policy: OfflinePolicy, now: datetime,
               refused: str = "Invalid") -> Decision:
        return offline_decision(self.lookup(token), policy, now, refused)

    def prune(self, now: datetime) -> int:
        """Drop expired answers; how many."""
        with self.db.conn:
            cursor = self.db.conn.execute(
                f"DELETE FROM {TABLE} WHERE expires IS NOT NULL AND expires <= ?",
                [now.astimezone(UTC).isoformat()])
        return cursor.rowcount
