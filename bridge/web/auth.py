"""The operator password (scrypt, salted) and login sessions.

The password is kept as a salted scrypt hash (:mod:`bridge.passwords`), as
printed by ``drbridge hash-password``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge import passwords


def hash_password(password: str) -> str:
    return passwords.hash_password(password.encode("utf-8"))


def verify_password(password: str, stored: str) -> bool:
    return passwords.verify_password(password.encode("utf-8"), stored)


@dataclass
class Sessions:
    """Login sessions in memory: a restart logs the operator out, which is acceptable."""

    ttl: timedelta
    _expiry: dict[str, datetime] = field(default_factory=dict)

    def create(self, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        self._expiry[token] = now + self.ttl
        return token

    def valid(self, token: str | None, now: datetime) -> bool:
        if not token:
            return False
        expiry = self._expiry.get(token)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[token]
            return False
        return True

    def end(self, token: str | None) -> None:
        if token:
            self._expiry.pop(token, None)


@dataclass
class LoginThrottle:
    """Refuses logins from a client after ``limit`` failures within ``window``: scrypt's
    cost slows one guesser, this stops a patient one."""

    limit: int = 5
    window: timedelta = timedelta(minutes=5)
    _failures: dict[str, list[datetime]] = field(default_factory=dict)

    def allowed(self, client: str, now: datetime) -> bool:
        recent = [t for t in self._failures.get(client, ()) if now - t < self.window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) < self.limit

    def failed(self, client: str, now: datetime) -> None:
        self._failures.setdefault(client, []).append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
