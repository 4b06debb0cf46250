"""Who may open a station connection: the handshake decision for OCPP security profiles 0-3.

Profile 0 only checks the station id; 1 and 2 add HTTP Basic auth with the station id as
user name and a per-station password; 3 takes the client certificate (verified by TLS
against the configured CA) and requires its commonName to be the station id. Passwords,
Authorization headers and user names are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from bridge.ocpp.limits import FailureLimiter
from bridge.ocpp.tls import common_names
from bridge.passwords import verify_password

log = logging.getLogger(__name__)

REALM = 'Basic realm="OCPP", charset="UTF-8"'
# The KDF runs in threads; a flood of logins must not take every core.
KDF_SLOTS = 2


@dataclass(frozen=True)
class Refusal:
    status: HTTPStatus
    reason: str  # for the log; never holds a credential
    headers: tuple[tuple[str, str], ...] = ()


def parse_basic(authorization: str) -> tuple[str, bytes] | None:
    """User name and password of an ``Authorization: Basic`` header; None when malformed.

    The password stays bytes: OCPP 1.6 AuthorizationKeys may be raw binary keys."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
        user, colon, password = raw.partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except (binascii.Error, ValueError):
        return None


class Gatekeeper:
    def __init__(
        self,
        profile: int,
        accepts: Callable[[str], bool],
        password_hashes: Mapping[str, str],
        failures: FailureLimiter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self._accepts = accepts
        self._hashes = password_hashes
        self.failures = failures
        self._clock = clock
        self._kdf_slots = asyncio.Semaphore(KDF_SLOTS)
        # A station's accepted password, as a keyed digest, so that its reconnections skip
        # the KDF; the key lives only in this process.
        self._digest_key = secrets.token_bytes(32)
        self._accepted: dict[str, bytes] = {}

    async def check(self, station_id: str, address: str, authorization: str | None,
                    peer_certificate: dict[str, Any] | None) -> Refusal | None:
        """None when the station may connect; otherwise why not, as an HTTP answer."""
        wait = self.failures.blocked_for(address, station_id, self._clock())
        if wait > 0:
            log.debug("station %r from %s refused: still blocked for %.0f s",
                      station_id, address, wait)
            return Refusal(HTTPStatus.TOO_MANY_REQUESTS, "too many failed attempts",
                           (("Retry-After", str(math.ceil(wait))),))
        if not self._accepts(station_id):
            return self._failed(station_id, address, HTTPStatus.NOT_FOUND, "unknown station")
        if self.profile == 3:
            names = common_names(peer_certificate)
            if names != [station_id]:
                return self._failed(station_id, address, HTTPStatus.FORBIDDEN,
                                    "client certificate is not issued to this station id")
            return None
        if self.profile in (1, 2):
            return await self._check_password(station_id, address, authorization)
        return None

    async def _check_password(self, station_id: str, address: str,
                              authorization: str | None) -> Refusal | None:
        if authorization is None:
            # Not counted as a failure: some HTTP clients ask before sending credentials.
            log.info("station %r from %s sent no credentials", station_id, address)
            return Refusal(HTTPStatus.UNAUTHORIZED, "credentials required",
                           (("WWW-Authenticate", REALM),))
        credentials = parse_basic(authorization)
        if credentials is None:
            return self._failed(station_id, address, HTTPStatus.UNAUTHORIZED,
                                "malformed Basic credentials")
        user, password = credentials
        if user != station_id:
            return self._failed(station_id, address, HTTPStatus.UNAUTHORIZED,
                                "user name is not the station id")
        if not await self._password_matches(station_id, password):
            return self._failed(station_id, address, HTTPStatus.UNAUTHORIZED, "wrong password")
        return None

    async def _password_matches(self, station_id: str, password: bytes) -> bool:
        digest = hmac.new(self._digest_key, password, hashlib.sha256).digest()
        accepted = self._accepted.get(station_id)
        if accepted is not None:
            # The hash admits one password, and we know its digest: no KDF needed either way.
            return hmac.compare_digest(digest, accepted)
        stored = self._hashes.get(station_id)
        if stored is None:  # the config check prevents this; refuse rather than admit
            return False
        async with self._kdf_slots:
            matches = await asyncio.to_thread(verify_password, password, stored)
        if matches:
            self._accepted[station_id] = digest
        return matches

    def _failed(self, station_id: str, address: str, status: HTTPStatus,
                reason: str) -> Refusal:
        log.warning("station %r from %s refused: %s", station_id, address, reason)
        if self.failures.failed(address, station_id, self._clock()):
            log.warning("%s: too many failed attempts (last for station %r); refused for %.0f s",
                        address, station_id, self.failures.policy.block_s)
        return Refusal(status, reason, (("WWW-Authenticate", REALM),)
                       if status is HTTPStatus.UNAUTHORIZED else ())
