"""Credentials towards an OpenADR 3 VTN: OAuth2 client credentials, or a static bearer token.

Client credentials (Definition, Security): the token endpoint is the one given, else the
``tokenURL`` of ``GET {vtn}/auth/server`` (3.1.0), else ``{vtn}/auth/token`` (the optional
endpoint of 3.0.1 and 3.1.0). The client id and secret go in the form body, never as HTTP
Basic: the OpenAPI document asks for the form, and real VTNs refuse Basic. A token is
renewed a quarter of its lifetime (at most a minute) before it expires, and at once when
the VTN answers 401.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp
from pydantic import ValidationError

from ven.oadr3.bounded import read_bounded
from ven.oadr3.wire import TokenReply

log = logging.getLogger(__name__)

MAX_TOKEN_REPLY = 64 * 1024


class AuthFailed(Exception):
    """No token could be had: the VTN or its token endpoint is down, or refused us (then
    ``status`` is the token endpoint's HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Credentials(Protocol):
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """The Authorization header to send (empty for an anonymous VTN)."""
        ...

    def rejected(self) -> bool:
        """The VTN answered 401: drop the token. True if a new one may help."""
        ...


class Anonymous:
    """A VTN that asks for no credentials (a public tariff server, say)."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    def rejected(self) -> bool:
        return False


class StaticBearer:
    """A bearer token the utility issued, read from the environment."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def rejected(self) -> bool:
        log.error("the VTN refused our bearer token (HTTP 401); a new one is needed")
        return False


class ClientCredentials:
    def __init__(self, vtn_url: str, client_id: str, client_secret: str,
                 token_url: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._vtn_url = vtn_url.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self._token_url = token_url
        self._given_url = token_url is not None
        self._clock = clock
        self._token: str | None = None
        self._renew_at: datetime | None = None
        self.fetched = 0  # tokens obtained (the tests count refreshes)

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if self._token is None or (self._renew_at is not None and self._clock() >= self._renew_at):
            await self._fetch(session)
        return {"Authorization": f"Bearer {self._token}"}

    def rejected(self) -> bool:
        self._token = None
        return True

    async def _discover(self, session: aiohttp.ClientSession) -> str:
        try:
            async with session.get(f"{self._vtn_url}/auth/server") as reply:
                if reply.status == 200:
                    data = json.loads(await read_bounded(reply, MAX_TOKEN_REPLY))
                    url = data.get("tokenURL") if isinstance(data, dict) else None
                    if isinstance(url, str) and url.startswith(("http://", "https://")):
                        return url
                    log.warning("GET /auth/server gave no usable tokenURL; trying /auth/token")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise AuthFailed(f"GET {self._vtn_url}/auth/server: {error}") from error
        return f"{self._vtn_url}/auth/token"

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        if self._token_url is None:
            self._token_url = await self._discover(session)
        form = {"grant_type": "client_credentials", "client_id": self._client_id,
                "client_secret": self._secret}
        asked = self._clock()
        try:
            async with session.post(self._token_url, data=form) as reply:
                body = await read_bounded(reply, MAX_TOKEN_REPLY)
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise AuthFailed(f"token endpoint {self._token_url}: {error}") from error
        if status != 200:
            asked_at = self._token_url
            if not self._given_url:
                self._token_url = None  # discover again next time: the VTN may have moved it
            raise AuthFailed(f"token endpoint {asked_at} answered HTTP {status}: "
                             f"{body[:200].decode(errors='replace')}", status)
        try:
            token = TokenReply.model_validate_json(body)
        except ValidationError as error:
            raise AuthFailed(f"token endpoint gave no usable token: "
                             f"{error.errors()[0]['msg']}") from None
        if token.token_type is not None and token.token_type.lower() != "bearer":
            raise AuthFailed(f"token endpoint gave a {token.token_type!r} token, not Bearer")
        self._token = token.access_token
        self.fetched += 1
        if token.expires_in is None:
            self._renew_at = None  # renewed when the VTN refuses it
        else:
            lifetime = timedelta(seconds=token.expires_in)
            self._renew_at = asked + lifetime - min(lifetime / 4, timedelta(minutes=1))
        log.info("obtained an access token from %s%s", self._token_url,
                 "" if token.expires_in is None else f" for {token.expires_in:g} s")
