"""The HTTP exchange with an OpenADR 3 VTN: credentials, bounds, strict JSON out.

Strict in what it sends: JSON without explicit nulls (real VTNs refuse ``null`` where the
OpenAPI document allows it) and without NaN. Lenient in what it reads, within bounds: a
reply larger than :data:`MAX_REPLY` or that is not JSON is refused, and logged by the
caller. Every 2xx reply counts as contact with the VTN (:attr:`VtnHttp.last_contact`),
which the policy's fail-safe watches.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ven.oadr3.auth import AuthFailed, Credentials
from ven.oadr3.bounded import read_bounded

log = logging.getLogger(__name__)

MAX_REPLY = 8 * 1024 * 1024


class VtnUnreachable(Exception):
    """The VTN did not answer, or answered 5xx, or its token endpoint failed: retry later."""


class VtnRefused(Exception):
    """The VTN answered 4xx."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class VtnBadReply(Exception):
    """A 2xx reply that is too large or not JSON."""


def without_nulls(value: Any) -> Any:
    """A JSON value with every null member and item left out (strict in what we send)."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [without_nulls(v) for v in value if v is not None]
    return value


def _problem(body: bytes) -> str:
    """The detail of an RFC 7807 problem reply, else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("title", "detail", "error", "error_description")
                 if k in data]
        if parts:
            return "; ".join(parts)[:300]
    return body[:200].decode(errors="replace")


class VtnHttp:
    def __init__(self, base_url: str, credentials: Credentials,
                 ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._ssl = ssl_context
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.last_contact: datetime | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30, sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                      body: Mapping[str, Any] | None = None) -> Any:
        """The reply's JSON (None for an empty 2xx reply); raises the exceptions above."""
        session = self._client()
        data = None if body is None else json.dumps(without_nulls(body), allow_nan=False)
        query = None if params is None else [
            (key, str(item)) for key, value in params.items() if value is not None
            for item in (value if isinstance(value, list | tuple) else [value])]
        for attempt in (1, 2):
            try:
                headers = await self._credentials.headers(session)
            except AuthFailed as error:
                raise VtnUnreachable(str(error)) from error
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with session.request(method, f"{self.base_url}{path}", params=query,
                                           data=data, headers=headers) as reply:
                    status = reply.status
                    content = await read_bounded(reply, MAX_REPLY)
            except (aiohttp.ClientError, TimeoutError) as error:
                raise VtnUnreachable(f"{method} {path}: {type(error).__name__}: {error}") \
                    from error
            if status == 401 and attempt == 1 and self._credentials.rejected():
                continue  # the token expired early or was revoked: once more with a new one
            break
        if status >= 500:
            raise VtnUnreachable(f"{method} {path}: HTTP {status}: {_problem(content)}")
        if status >= 400:
            raise VtnRefused(status, _problem(content))
        if len(content) > MAX_REPLY:
            raise VtnBadReply(f"{method} {path}: reply larger than {MAX_REPLY} bytes")
        try:
            parsed = json.loads(content) if content.strip() else None
        except ValueError as error:
            raise VtnBadReply(f"{method} {path}: reply is not JSON ({error})") from None
        except RecursionError:  # within MAX_REPLY, nesting deeper than Python reads
            raise VtnBadReply(f"{method} {path}: reply nests too deep to read") from None
        self.last_contact = self._clock()
        return parsed
