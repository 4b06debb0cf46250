"""Station passwords (OCPP security profiles 1 and 2) stored as salted scrypt hashes.

A hash reads ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>`` (salt and key in unpadded
base64), so the cost travels with the hash and can be raised later without breaking
the hashes already in a config. Pure: no I/O, no logging.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
# n = 2**14, r = 8: 16 MiB and some tens of milliseconds per check. Checks run once per
# station and bridge process (see bridge.ocpp.auth), so a boot storm of a large site
# costs seconds, while an offline guess at a stolen hash stays expensive.
DEFAULT_LOG2_N = 14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# A generated password: 20 random bytes as 40 hex digits, what OCPP 1.6's security
# whitepaper asks of an AuthorizationKey (16 to 20 bytes) and what a display can show.
GENERATED_BYTES = 20


class NotAPasswordHash(ValueError):
    pass


@dataclass(frozen=True)
class PasswordHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        return "$".join((SCHEME, str(self.log2_n), str(self.r), str(self.p),
                         _b64(self.salt), _b64(self.key)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: bytes, log2_n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL refuses scrypt above its default memory ceiling (32 MiB); allow what n and r need.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def hash_password(password: bytes, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R,
                  p: int = DEFAULT_P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, log2_n, r, p, salt, KEY_BYTES)
    return PasswordHash(log2_n, r, p, salt, key).encode()


def parse_hash(encoded: str) -> PasswordHash:
    """The parts of a stored hash; raises NotAPasswordHash with what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise NotAPasswordHash(
            f"not a password hash (expected {SCHEME}$<log2 n>$<r>$<p>$<salt>$<key>)")
    try:
        log2_n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        raise NotAPasswordHash("a password hash with a malformed number or base64 part") \
            from None
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise NotAPasswordHash("scrypt parameters out of range (log2 n 10-20, r 1-32, p 1-16)")
    if len(salt) < 8 or len(key) < 16:
        raise NotAPasswordHash("salt or key too short")
    return PasswordHash(log2_n, r, p, salt, key)


def verify_password(password: bytes, encoded: str) -> bool:
    """True when ``password`` matches; slow on purpose (a KDF), constant-time comparison."""
    stored = parse_hash(encoded)
    candidate = _derive(password, stored.log2_n, stored.r, stored.p, stored.salt,
                        len(stored.key))
    return hmac.compare_digest(candidate, stored.key)


def generate_password() -> str:
    return secrets.token_hex(GENERATED_BYTES).upper()
