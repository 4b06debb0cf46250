"""The HTTP side: dashboard, JSON API, login and operator actions, Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.holds import HOLD_MODES
from bridge.web import views
from bridge.web.auth import (
    LoginThrottle,
    MetricsToken,
    Sessions,
    presented_token,
    verify_password,
)
from bridge.web.metrics import render_metrics
from bridge.web.openapi import openapi_document
from bridge.web.port import EventOver, OperatorControls, SiteReader, UnknownEvent
from bridge.web.transport import TrustedProxies, tls_context

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "drbridge_session"
MAX_HOURS = 48.0
MAX_REASON = 500
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_CHALLENGE = 'Bearer realm="drbridge metrics", Basic realm="drbridge metrics"'


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, allow_nan=False))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object body; anything else is a 400. Requiring JSON also keeps a plain
    cross-site form from posting actions."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='{"error": "send application/json"}',
                                           content_type="application/json")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object"}',
                                 content_type="application/json")
    return body


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise web.HTTPBadRequest(text='{"error": "reason must be a string"}',
                                 content_type="application/json")
    return reason.strip()[:MAX_REASON] or "operator action"


class WebServer:
    """Serves what ``reader`` shows; the operator's actions go to ``operator``."""

    def __init__(self, reader: SiteReader, operator: OperatorControls) -> None:
        self.reader = reader
        self.operator = operator
        self.settings = reader.config.model.web
        self.sessions = Sessions(ttl=timedelta(seconds=self.settings.session_ttl_s))
        self.throttle = LoginThrottle()
        self.proxies = TrustedProxies.parse(self.settings.trusted_proxies)
        token_hash = self.settings.metrics_token_hash
        self.metrics_token = MetricsToken(token_hash) if token_hash else None
        self.ssl_context = None
        if self.settings.tls_certificate and self.settings.tls_private_key:
            # load_config has checked that they load
            resolve = reader.config.resolve
            self.ssl_context = tls_context(resolve(self.settings.tls_certificate),
                                           resolve(self.settings.tls_private_key))
        self._runner: web.AppRunner | None = None
        self.port = self.settings.port
        self.ready = asyncio.Event()  # set once listening (or given up)

    @property
    def url(self) -> str:
        return f"{self.settings.scheme}://{self.settings.host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self.index),
            web.get("/api/site", self.site),
            web.get("/api/events", self.events),
            web.get("/api/stations", self.stations),
            web.get("/api/load", self.load),
            web.get("/api/openapi.json", self.openapi),
            web.get("/api/session", self.session),
            web.post("/api/login", self.login),
            web.post("/api/logout", self.logout),
            web.post("/api/events/{event_id}/opt-out", self.opt_out),
            web.delete("/api/events/{event_id}/opt-out", self.withdraw_opt_out),
            web.put("/api/stations/{station_id}/hold", self.set_hold),
            web.delete("/api/stations/{station_id}/hold", self.clear_hold),
            web.get("/metrics", self.metrics),
            web.static("/static", STATIC),
        ])
        return app

    async def start(self) -> None:
        """Serve; a port already taken is logged, not fatal: the stations' limits matter
        more than the operator's view of them."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port,
                           ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as error:
            log.error("dashboard not served: cannot listen on %s:%d (%s); set web.port",
                      self.settings.host, self.settings.port, error.strerror)
            await self.close()
            self.ready.set()
            return
        sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("dashboard at %s", self.url)
        self.ready.set()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # pages and data ---------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def site(self, request: web.Request) -> web.Response:
        self._require_reader(request)
        return _json(views.site_view(self.reader))

    async def events(self, request: web.Request) -> web.Response:
        self._require_reader(request)
        return _json(views.events_view(self.reader))

    async def stations(self, request: web.Request) -> web.Response:
        self._require_reader(request)
        return _json(views.stations_view(self.reader))

    async def load(self, request: web.Request) -> web.Response:
        self._require_reader(request)
        try:
            hours = float(request.query.get("hours", "3"))
        except ValueError:
            return _error(400, "hours must be a number")
        if not 0 < hours <= MAX_HOURS:
            return _error(400, f"hours must be above 0 and at most {MAX_HOURS:g}")
        return _json(views.load_series(self.reader, hours))

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def metrics(self, request: web.Request) -> web.Response:
        if self.settings.login_required and not self._logged_in(request):
            await self._check_scraper(request)
        return web.Response(body=render_metrics(self.reader).encode("utf-8"),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _check_scraper(self, request: web.Request) -> None:
        """Let a scraper with the metrics token through; raise 401 (or 429) otherwise."""
        token = presented_token(request.headers.get("Authorization"))
        challenge = {"WWW-Authenticate": METRICS_CHALLENGE} if self.metrics_token else {}
        if token is None or self.metrics_token is None:
            raise web.HTTPUnauthorized(
                text='{"error": "log in first, or send the metrics token"}',
                content_type="application/json", headers=challenge)
        client, now = self._client(request), self.reader.now()
        if not self.throttle.allowed(client, now):
            raise web.HTTPTooManyRequests(text='{"error": "too many failed attempts"}',
                                          content_type="application/json")
        if not await self.metrics_token.matches(token):
            self.throttle.failed(client, now)
            log.warning("dashboard: wrong metrics token from %s", client)
            raise web.HTTPUnauthorized(text='{"error": "wrong metrics token"}',
                                       content_type="application/json", headers=challenge)

    # who is asking ----------------------------------------------------------------------------
    def _client(self, request: web.Request) -> str:
        """The client's address; behind a trusted proxy, the one it forwarded for."""
        return self.proxies.client(request.remote,
                                   request.headers.getall("X-Forwarded-For", ()))

    def _secure(self, request: web.Request) -> bool:
        """Whether the client speaks HTTPS: to us, or to a trusted proxy in front."""
        return request.secure or self.proxies.https(
            request.remote, request.headers.getall("X-Forwarded-Proto", ()))

    # login ------------------------------------------------------------------------------------
    def _logged_in(self, request: web.Request) -> bool:
        return self.sessions.valid(request.cookies.get(COOKIE), self.reader.now())

    def _require_reader(self, request: web.Request) -> None:
        if self.settings.login_required:
            self._require_login(request)

    async def session(self, request: web.Request) -> web.Response:
        return _json({"logged_in": self._logged_in(request),
                      "login_enabled": self.settings.password_hash is not None,
                      "login_required": self.settings.login_required})

    async def login(self, request: web.Request) -> web.Response:
        body = await _body(request)
        password = body.get("password")
        stored = self.settings.password_hash
        if stored is None:
            return _error(403, "no operator password is configured (web.password_hash)")
        if not isinstance(password, str):
            return _error(400, "password must be a string")
        client, now = self._client(request), self.reader.now()
        if not self.throttle.allowed(client, now):
            return _error(429, "too many failed logins; wait a few minutes")
        # scrypt takes a tenth of a second by design: off the event loop
        ok = await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, stored)
        if not ok:
            self.throttle.failed(client, now)
            log.warning("dashboard: failed login from %s", client)
            return _error(401, "wrong password")
        self.throttle.succeeded(client)
        token = self.sessions.create(now)
        response = _json({"logged_in": True})
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                            max_age=int(self.settings.session_ttl_s),
                            secure=self._secure(request))
        log.info("dashboard: operator logged in from %s", client)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(request.cookies.get(COOKIE))
        response = _json({"logged_in": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # actions ----------------------------------------------------------------------------------
    def _require_login(self, request: web.Request) -> None:
        if not self._logged_in(request):
            raise web.HTTPUnauthorized(text='{"error": "log in first"}',
                                       content_type="application/json")

    async def opt_out(self, request: web.Request) -> web.Response:
        self._require_login(request)
        body = await _body(request)
        event_id = request.match_info["event_id"]
        reason = _reason(body)
        log.info("dashboard: operator opts out of %s (%s)", event_id, reason)
        try:
            await self.operator.opt_out_event(event_id, reason)
        except UnknownEvent:
            return _error(404, f"no event {event_id}")
        except EventOver as error:
            return _error(409, str(error))
        return _json({"event_id": event_id, "opt": "optOut", "reason": reason})

    async def withdraw_opt_out(self, request: web.Request) -> web.Response:
        """Undo the operator's opt-out: the event goes back to the policy's decision."""
        self._require_login(request)
        event_id = request.match_info["event_id"]
        opt = self.reader.standing_opt_outs().get(event_id)
        if opt is None:
            return _error(404, f"no operator opt-out of {event_id}")
        log.info("dashboard: operator withdraws the opt-out of %s", event_id)
        await self.operator.cancel_opt(opt.opt_id)
        return _json({"event_id": event_id, "withdrawn": opt.opt_id})

    def _station(self, request: web.Request) -> str:
        station_id = request.match_info["station_id"]
        if not self.reader.has_station(station_id):
            raise web.HTTPNotFound(text=json.dumps({"error": f"no station {station_id}"}),
                                   content_type="application/json")
        return station_id

    async def set_hold(self, request: web.Request) -> web.Response:
        self._require_login(request)
        body = await _body(request)
        station_id = self._station(request)
        mode = body.get("mode")
        if mode not in HOLD_MODES:
            return _error(400, f"mode must be one of {', '.join(HOLD_MODES)}")
        reason = _reason(body)
        await self.operator.set_hold(station_id, mode, reason)
        return _json({"station_id": station_id, "mode": mode, "reason": reason})

    async def clear_hold(self, request: web.Request) -> web.Response:
        self._require_login(request)
        station_id = self._station(request)
        await self.operator.clear_hold(station_id)
        return _json({"station_id": station_id, "mode": None})
