"""The operator password (scrypt, salted), login sessions, the login throttle and the token
scrapers of /metrics present.

The password is kept as a salted scrypt hash (:mod:`bridge.passwords`), as
printed by ``drbridge hash-password``; so is the metrics token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge import passwords
from bridge.ocpp.auth import parse_basic

# Clients the login throttle remembers; beyond, the longest quiet is forgotten first. An
# attacker cycling through more addresses than this wins back a few tries each, but
# cannot grow memory.
MAX_TRACKED_CLIENTS = 10_000


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
    cost slows one guesser, this stops a patient one. Remembers at most ``max_clients``
    clients (and ``limit`` failures each)."""

    limit: int = 5
    window: timedelta = timedelta(minutes=5)
    max_clients: int = MAX_TRACKED_CLIENTS
    _failures: OrderedDict[str, list[datetime]] = field(default_factory=OrderedDict)

    def allowed(self, client: str, now: datetime) -> bool:
        failures = self._failures.get(client)
        if failures is None:
            return True
        recent = [t for t in failures if now - t < self.window]
        if recent:
            self._failures[client] = recent
        else:
            del self._failures[client]
        return len(recent) < self.limit

    def failed(self, client: str, now: datetime) -> None:
        failures = self._failures.pop(client, [])
        failures.append(now)
        self._failures[client] = failures[-self.limit:]  # now the most recent entry
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def __len__(self) -> int:
        return len(self._failures)


def presented_token(authorization: str | None) -> bytes | None:
    """The token in ``Authorization: Bearer <token>``, or the password of Basic credentials
    (any user name): what Prometheus sends with ``authorization`` or ``basic_auth``."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip().encode("utf-8") or None
    credentials = parse_basic(authorization)
    return credentials[1] if credentials is not None and credentials[1] else None


class MetricsToken:
    """Checks a scraper's token against its stored hash. The KDF runs once per process for
    the right token: after that its keyed digest (the key lives only in this process)
    answers, so a scrape every few seconds costs next to nothing."""

    def __init__(self, stored: str) -> None:
        self._stored = stored
        self._digest_key = secrets.token_bytes(32)
        self._accepted: bytes | None = None

    async def matches(self, token: bytes) -> bool:
        digest = hmac.new(self._digest_key, token, hashlib.sha256).digest()
        if self._accepted is not None:
            return hmac.compare_digest(digest, self._accepted)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, passwords.verify_password, token, self._stored)
        if ok:
            self._accepted = digest
        return ok
