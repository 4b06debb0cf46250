"""A small OpenADR 3 VTN (3.0.1 or 3.1.0) on aiohttp, for the tests and the demo.

It follows the OpenAPI document for what a VEN uses: ``/auth/server`` and ``/auth/token``
(client credentials in the form body; HTTP Basic is refused, as real VTNs do), programs,
events, vens, resources (``/resources`` in 3.1.0, ``/vens/{id}/resources`` in 3.0.1),
reports, subscriptions (with webhook notifications) and ``/notifiers``. Business logic
(programs, events, granted targets) is driven from Python, not over HTTP.

It is strict about what a VEN sends (explicit ``null`` is refused, as are targets a VEN
may not set and the wrong ``objectType``) and can misbehave on demand: be down (not
listening), send time stamps without ``T`` or zone, refuse the next reports, and serve
hostile JSON in its event list.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

Json = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _naive(value: Any) -> Any:
    """Time stamps as some VTNs write them: a space for T, no zone."""
    if isinstance(value, dict):
        return {k: _naive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_naive(v) for v in value]
    if isinstance(value, str) and len(value) == 20 and value[10] == "T" and value[-1] == "Z":
        return value[:10] + " " + value[11:19]
    return value


def _problem(status: int, title: str, detail: str = "") -> web.Response:
    return web.json_response({"type": "about:blank", "title": title, "status": status,
                              "detail": detail}, status=status)


@dataclass
class Client:
    client_id: str
    secret: str
    role: str = "VEN"  # VEN or BL


@dataclass
class Received:
    reports: list[Json] = field(default_factory=list)  # accepted, as posted
    refused_reports: list[Json] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # form bodies
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, body)
    event_lists: int = 0  # GET /events answered
    notifications: list[tuple[str, Json, int | None]] = field(default_factory=list)
    # (callback, body, HTTP status or None when unreachable)


class Vtn3:
    def __init__(self, port: int, host: str = "127.0.0.1", version: str = "3.1.0",
                 token_lifetime_s: float = 3600,
                 clients: tuple[Client, ...] = (Client("site-a", "secret-a"),),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.host = host
        self.port = port
        self.version = version
        self.base_path = f"/openadr3/{version}"
        self.token_lifetime_s = token_lifetime_s
        # copies: a test that changes a client's secret must not change the next VTN's
        self.clients = {c.client_id: replace(c) for c in clients}
        self._clock = clock
        self.received = Received()
        self.programs: dict[str, Json] = {}
        self.events: dict[str, Json] = {}
        self.vens: dict[str, Json] = {}
        self.resources: dict[str, Json] = {}
        self.subscriptions: dict[str, Json] = {}
        self._tokens: dict[str, tuple[str, datetime]] = {}  # token -> (client id, expiry)
        self._ids = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        # misbehaviour on demand (and features a VTN may lack)
        self.naive_timestamps = False  # time stamps without T or zone
        self.refuse_reports = 0  # refuse this many report POSTs (400)
        self.hostile_events: list[Any] = []  # served in GET /events before the real ones
        self.raw_events: str | None = None  # served as GET /events instead of the list
        self.offer_webhooks = True
        self.paging = True  # off: skip and limit are ignored, every list comes whole
        self.object_privacy = True  # 3.1.0 target filtering; off: every VEN sees every event
        self.static_tokens: dict[str, str] = {}  # token -> client id (issued out of band)
        self.callback_ssl: ssl.SSLContext | None = None  # trust for https callbacks

    # lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        b = self.base_path
        routes = [
            web.post(f"{b}/auth/token", self._token),
            web.get(f"{b}/programs", self._list_programs),
            web.get(f"{b}/events", self._list_events),
            web.get(f"{b}/events/{{id}}", self._get_event),
            web.get(f"{b}/vens", self._list_vens),
            web.post(f"{b}/vens", self._create_ven),
            web.get(f"{b}/reports", self._list_reports),
            web.post(f"{b}/reports", self._create_report),
            web.get(f"{b}/subscriptions", self._list_subscriptions),
            web.post(f"{b}/subscriptions", self._create_subscription),
            web.delete(f"{b}/subscriptions/{{id}}", self._delete_subscription),
        ]
        if self.version == "3.0.1":
            routes += [web.get(f"{b}/vens/{{ven}}/resources", self._list_resources),
                       web.post(f"{b}/vens/{{ven}}/resources", self._create_resource)]
        else:  # /auth/server is new in 3.1.0
            routes += [web.get(f"{b}/auth/server", self._auth_server),
                       web.get(f"{b}/resources", self._list_resources),
                       web.post(f"{b}/resources", self._create_resource),
                       web.get(f"{b}/notifiers", self._notifiers)]
        app.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # business logic (driven by the tests) ----------------------------------------------------
    def _new_id(self, kind: str) -> str:
        self._ids += 1
        return f"{kind}-{self._ids}"

    def _stamp(self, kind: str, body: Json, object_id: str | None = None) -> Json:
        now = iso(self._clock())
        stamped = {"id": object_id or self._new_id(kind.lower()), "createdDateTime": now,
                   "modificationDateTime": now, "objectType": kind, **copy.deepcopy(body)}
        return stamped

    def add_program(self, name: str, **fields: Any) -> str:
        program = self._stamp("PROGRAM", {"programName": name, **fields})
        self.programs[program["id"]] = program
        return str(program["id"])

    async def add_event(self, body: Json) -> str:
        event = self._stamp("EVENT", body)
        self.events[event["id"]] = event
        await self._notify("EVENT", "CREATE", event)
        return str(event["id"])

    async def modify_event(self, event_id: str, changes: Json) -> None:
        event = self.events[event_id]
        event.update(copy.deepcopy(changes))
        event["modificationDateTime"] = iso(self._clock())
        await self._notify("EVENT", "UPDATE", event)

    async def delete_event(self, event_id: str) -> None:
        event = self.events.pop(event_id)
        await self._notify("EVENT", "DELETE", event)

    def grant(self, ven_name: str, targets: list[str], resource_name: str | None = None
              ) -> None:
        """BL grants targets to a VEN's ven object (or one of its resources)."""
        ven = next(v for v in self.vens.values() if v["venName"] == ven_name)
        if resource_name is None:
            ven["targets"] = targets
            return
        resource = next(r for r in self.resources.values()
                        if r["venID"] == ven["id"] and r["resourceName"] == resource_name)
        resource["targets"] = targets

    def reports_for(self, event_id: str) -> list[Json]:
        return [r for r in self.received.reports if r.get("eventID") == event_id]

    # auth ------------------------------------------------------------------------------------
    async def _auth_server(self, request: web.Request) -> web.Response:
        return web.json_response({"tokenURL": f"{self.url}/auth/token"})

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").startswith("Basic"):
            return web.json_response({"error": "invalid_request", "error_description":
                                      "client credentials go in the form body"}, status=400)
        form = dict(await request.post())
        self.received.token_requests.append({k: str(v) for k, v in form.items()})
        client = self.clients.get(str(form.get("client_id")))
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if client is None or client.secret != form.get("client_secret"):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_hex(16)
        self._tokens[token] = (client.client_id,
                               self._clock() + timedelta(seconds=self.token_lifetime_s))
        return web.json_response({"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.token_lifetime_s})

    def _client(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header[7:]
        if token in self.static_tokens:
            return self.static_tokens[token]
        found = self._tokens.get(token)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def _body(self, request: web.Request) -> Json | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "Bad Request", "body is not JSON")
        self.received.requests.append((request.method, request.path, copy.deepcopy(body)))
        if not isinstance(body, dict):
            return _problem(400, "Bad Request", "body is not an object")
        if _has_null(body):
            return _problem(400, "Bad Request", "explicit null is not accepted")
        return body

    # reading ---------------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[Json]) -> web.Response:
        skip = int(request.query.get("skip", 0)) if self.paging else 0
        limit = min(int(request.query.get("limit", 50)), 50) if self.paging else len(items)
        page = items[skip:skip + limit]
        body = _naive(page) if self.naive_timestamps else page
        return web.json_response(body)

    def _visible(self, request: web.Request, client_id: str, items: list[Json]) -> list[Json]:
        """3.1.0 object privacy: an object with targets is shown only when the request asks
        for some of them that were granted to the VEN, and only with those targets."""
        if self.version == "3.0.1" or not self.object_privacy:
            return items
        asked = set(request.query.getall("targets", []))
        ven = next((v for v in self.vens.values() if v.get("clientID") == client_id), None)
        granted = set(ven.get("targets") or []) if ven else set()
        if ven is not None:
            for resource in self.resources.values():
                if resource["venID"] == ven["id"]:
                    granted |= set(resource.get("targets") or [])
        usable = asked & granted
        shown = []
        for item in items:
            targets = item.get("targets")
            if not targets:
                shown.append(item)
            elif usable & set(targets):
                shown.append({**item, "targets": sorted(usable & set(targets))})
        return shown

    async def _list_programs(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        return self._page(request, self._visible(request, client, list(self.programs.values())))

    async def _list_events(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        self.received.event_lists += 1
        if self.raw_events is not None:  # what json.dumps cannot write (deep nesting)
            return web.Response(text=self.raw_events, content_type="application/json")
        events = self._visible(request, client, list(self.events.values()))
        program = request.query.get("programID")
        if program:
            events = [e for e in events if e.get("programID") == program]
        skip = int(request.query.get("skip", 0)) if self.paging else 0
        hostile = self.hostile_events if skip == 0 else []
        body = _naive(events) if self.naive_timestamps else events
        limit = min(int(request.query.get("limit", 50)), 50) if self.paging else len(body)
        return web.Response(text=json.dumps(hostile + body[skip:skip + limit]),
                            content_type="application/json")

    async def _get_event(self, request: web.Request) -> web.Response:
        if self._client(request) is None:
            return _problem(401, "Unauthorized")
        event = self.events.get(request.match_info["id"])
        return web.json_response(event) if event else _problem(404, "Not Found")

    async def _list_vens(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        vens = [v for v in self.vens.values() if v.get("clientID") == client]
        name = request.query.get("venName")
        if name:
            vens = [v for v in vens if v["venName"] == name]
        return self._page(request, vens)

    async def _list_resources(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        ven_id = request.match_info.get("ven") or request.query.get("venID")
        found = [r for r in self.resources.values() if r.get("clientID") == client
                 and (ven_id is None or r["venID"] == ven_id)]
        return self._page(request, found)

    async def _list_reports(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        return self._page(request, [r for r in self.received.reports
                                    if r.get("clientID") == client])

    async def _list_subscriptions(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        return self._page(request, [s for s in self.subscriptions.values()
                                    if s.get("clientID") == client])

    async def _notifiers(self, request: web.Request) -> web.Response:
        if self._client(request) is None:
            return _problem(401, "Unauthorized")
        return web.json_response({"WEBHOOK": self.offer_webhooks})

    # writing ---------------------------------------------------------------------------------
    async def _create_ven(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if "targets" in body:
            return _problem(403, "Forbidden", "only business logic may set targets")
        if self.version != "3.0.1" and body.get("objectType") != "VEN_VEN_REQUEST":
            return _problem(400, "Bad Request", "objectType must be VEN_VEN_REQUEST")
        if not isinstance(body.get("venName"), str) or not body["venName"]:
            return _problem(400, "Bad Request", "venName is required")
        if any(v["venName"] == body["venName"] for v in self.vens.values()):
            return _problem(409, "Conflict", "venName exists")
        body.pop("objectType", None)
        ven = self._stamp("VEN", {**body, "clientID": client})
        self.vens[ven["id"]] = ven
        return web.json_response(ven, status=201)

    async def _create_resource(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if "targets" in body:
            return _problem(403, "Forbidden", "only business logic may set targets")
        if self.version != "3.0.1" and body.get("objectType") != "VEN_RESOURCE_REQUEST":
            return _problem(400, "Bad Request", "objectType must be VEN_RESOURCE_REQUEST")
        ven_id = request.match_info.get("ven") or body.get("venID")
        ven = self.vens.get(str(ven_id))
        if ven is None or ven.get("clientID") != client:
            return _problem(404, "Not Found", "no such ven")
        body.pop("objectType", None)
        resource = self._stamp("RESOURCE", {**body, "venID": ven_id, "clientID": client})
        self.resources[resource["id"]] = resource
        return web.json_response(resource, status=201)

    async def _create_report(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        required = ("eventID", "clientName", "resources") + (
            ("programID",) if self.version == "3.0.1" else ())
        missing = [k for k in required if k not in body]
        if missing:
            return _problem(400, "Bad Request", f"missing {', '.join(missing)}")
        if self.version != "3.0.1" and "programID" in body:
            return _problem(400, "Bad Request", "3.1.0 reports carry no programID")
        if self.refuse_reports > 0:
            self.refuse_reports -= 1
            self.received.refused_reports.append(body)
            return _problem(400, "Bad Request", "report refused (on demand)")
        report = self._stamp("REPORT", {**body, "clientID": client})
        self.received.reports.append(report)
        return web.json_response(report, status=201)

    async def _create_subscription(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if self.version == "3.0.1" and "programID" not in body:
            return _problem(400, "Bad Request", "programID is required")
        subscription = self._stamp("SUBSCRIPTION", {**body, "clientID": client})
        self.subscriptions[subscription["id"]] = subscription
        return web.json_response(subscription, status=201)

    async def _delete_subscription(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return _problem(401, "Unauthorized")
        found = self.subscriptions.get(request.match_info["id"])
        if found is None or found.get("clientID") != client:
            return _problem(404, "Not Found")
        del self.subscriptions[found["id"]]
        return web.json_response(found)

    # webhooks --------------------------------------------------------------------------------
    async def _notify(self, kind: str, operation: str, item: Json) -> None:
        """Call every subscription's callback for this object and operation (once each)."""
        if self.version == "3.0.1":
            operation = {"CREATE": "POST", "UPDATE": "PUT"}.get(operation, operation)
        wanted = {"POST": "CREATE", "PUT": "UPDATE"}.get(operation, operation)
        calls = []
        for subscription in list(self.subscriptions.values()):
            program = subscription.get("programID")
            if program is not None and program != item.get("programID"):
                continue
            for op in subscription.get("objectOperations") or []:
                if kind in op.get("objects", []) and wanted in op.get("operations", []):
                    calls.append((op["callbackUrl"], op.get("bearerToken")))
        if not calls:
            return
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.callback_ssl) if self.callback_ssl \
                else None
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(total=10))
        body = {"objectType": kind, "operation": operation, "object": item}
        if self.naive_timestamps:
            body = _naive(body)
        for url, token in dict.fromkeys(calls):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status: int | None = None
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self._session.post(url, json=body, headers=headers) as reply:
                    status = reply.status
            self.received.notifications.append((url, body, status))
