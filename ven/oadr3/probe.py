"""One look at an OpenADR 3 VTN with the configured credentials, for ``drbridge check``.

It asks for a token (client credentials) and lists the programs the VTN shows this VEN;
it creates nothing and registers nothing. The answer says whether the VTN was reached,
whether it refused the credentials, and the programs' names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from ven.oadr3.auth import Anonymous, AuthFailed, ClientCredentials, Credentials, StaticBearer
from ven.oadr3.http import VtnBadReply, VtnHttp, VtnRefused, VtnUnreachable
from ven.oadr3.settings import Ven3Settings

# the token endpoint's answers that mean "not these credentials" (RFC 6749 5.2)
_REFUSED = (400, 401, 403)


@dataclass(frozen=True)
class Probe:
    reached: bool  # the VTN answered the program list
    refused: str | None = None  # why the credentials were refused, when they were
    unreachable: str | None = None  # why the VTN could not be asked, when it could not
    programs: tuple[str, ...] = ()


def credentials_of(settings: Ven3Settings) -> Credentials:
    if settings.client_id:
        return ClientCredentials(settings.vtn_url, settings.client_id,
                                 settings.client_secret or "", settings.token_url)
    if settings.bearer_token:
        return StaticBearer(settings.bearer_token)
    return Anonymous()


async def probe(settings: Ven3Settings, timeout_s: float = 10.0) -> Probe:
    try:
        return await asyncio.wait_for(_probe(settings), timeout_s)
    except TimeoutError:
        return Probe(False, unreachable=f"no answer within {timeout_s:g} s")


async def _probe(settings: Ven3Settings) -> Probe:
    credentials = credentials_of(settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            await credentials.headers(session)
        except AuthFailed as error:
            if error.status in _REFUSED:
                return Probe(False, refused=str(error))
            return Probe(False, unreachable=str(error))
    http = VtnHttp(settings.vtn_url, credentials)
    try:
        listed = await http.get("/programs", {"skip": 0, "limit": 50})
    except VtnRefused as error:
        if error.status in (401, 403):
            return Probe(False, refused=f"GET /programs: {error}")
        return Probe(False, unreachable=f"GET /programs: {error}")
    except (VtnUnreachable, VtnBadReply) as error:
        return Probe(False, unreachable=str(error))
    finally:
        await http.close()
    names = tuple(str(p["programName"]) for p in listed if isinstance(p, dict)
                  and isinstance(p.get("programName"), str)) if isinstance(listed, list) else ()
    return Probe(True, programs=names)
