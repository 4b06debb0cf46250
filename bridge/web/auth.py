"""The operator password (scrypt, salted) and login sessions.

A hash reads ``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>``, so the cost can be
raised later without breaking the hashes already in configs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SCHEME = "scrypt"
# 2**14 x 8 x 1: 16 MiB and ~50 ms per check, the interactive-login cost scrypt's authors give.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + 2**20, dklen=KEY_BYTES)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, DEFAULT_N, DEFAULT_R, DEFAULT_P)
    return f"{SCHEME}${DEFAULT_N}${DEFAULT_R}${DEFAULT_P}${salt.hex()}${key.hex()}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f"expected {SCHEME}$n$r$p$salt$key as printed by `drbridge hash-password`")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError("n, r, p must be numbers and salt, key hex; run "
                         "`drbridge hash-password` again") from None
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError("n must be a power of two up to 2**20, r in 1..64, p in 1..16")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt or key too short; run `drbridge hash-password` again")
    return n, r, p, salt, key


def check_hash_format(stored: str) -> None:
    """Raises ValueError saying what is wrong with a stored hash."""
    _parse(stored)


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, key = _parse(stored)
    return hmac.compare_digest(_derive(password, salt, n, r, p)[: len(key)], key)


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
