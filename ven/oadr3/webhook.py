"""The endpoint a VTN calls when a subscribed object changes (OpenADR 3 webhooks).

A small aiohttp server (TLS when given a certificate) at one path. The VTN must present the
bearer token the VEN put in its subscription; anything else is refused with 401, a body
over :data:`MAX_NOTIFICATION` bytes with 413, a body that is not a JSON object with 400.
The handler runs before the VTN gets its answer (persist before acknowledging).
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_NOTIFICATION = 1024 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookServer:
    def __init__(self, host: str, port: int, path: str, token: str, handler: Handler,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._host = host
        self._port = port
        self._path = path
        self._token = token
        self._handler = handler
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.received = 0  # notifications taken (the tests count them)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_NOTIFICATION)
        app.router.add_post(self._path, self._notify)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        log.info("listening for VTN notifications on %s://%s:%d%s",
                 "https" if self._ssl else "http", self._host, self._port, self._path)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            log.warning("refused a notification from %s: wrong or missing bearer token",
                        request.remote)
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("refused a notification from %s: larger than %d bytes",
                        request.remote, MAX_NOTIFICATION)
            return web.json_response({"title": "Payload Too Large", "status": 413}, status=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python reads
            data = None
        if not isinstance(data, dict):
            log.warning("refused a notification from %s: not a JSON object", request.remote)
            return web.json_response({"title": "Bad Request", "status": 400}, status=400)
        self.received += 1
        await self._handler(data)
        return web.json_response({})
