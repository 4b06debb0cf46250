"""The OpenAPI 3.1 description of the dashboard's API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

NUM = {"type": ["number", "null"]}
STR = {"type": ["string", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}
# The phases a station may be seen in (a forgotten one is no longer listed) and how the
# planner may count it (bridge.station_life; the web does not import it).
PHASES = ("offline", "connected", "registered", "reading", "limit_in_flight", "refusing",
          "acknowledged", "verified", "unmanageable")
COUNTINGS = ("share", "last_acknowledged", "hardware_maximum", "measured_draw")
ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string"}}),
    "Vtn": _obj({"url": {"type": "string"},
                 "protocol": {"enum": ["OpenADR 2.0b", "OpenADR 3.0.1", "OpenADR 3.1.0"]},
                 "programs": {"type": "array", "items": {"type": "string"},
                              "description": "the programs the VTN shows this VEN "
                                             "(OpenADR 3; none in 2.0b)"},
                 "state": {"enum": ["online", "unreachable", "never contacted"]},
                 "registered": {"type": "boolean"}, "ven_id": STR, "last_contact": TIME,
                 "seconds_since_contact": NUM}),
    "Site": _obj({
        "at": TIME, "load_w": NUM, "limit_w": NUM, "limit_reason": {"type": "string"},
        "capacity_w": NUM,
        "dr_banner": _obj({"active": {"type": "boolean"},
                           "events": {"type": "array", "items": {"type": "string"}},
                           "text": STR}),
        "vtn": {"$ref": "#/components/schemas/Vtn"},
        "stations_connected": {"type": "integer"}, "stations_known": {"type": "integer"},
        "sessions": {"type": "integer"},
        "upstream": {
            "type": ["object", "null"], "description": "local-controller mode: the operator's"
            " CSMS behind drbridge (null: drbridge is the central system)", "properties": {
                "url": {"type": "string"},
                "links": {"type": "object", "description": "stations' upstream links by state",
                          "additionalProperties": {"type": "integer"}},
                "queue": {"type": "integer",
                          "description": "messages waiting to be sent to the operator"},
                "offline_authorization": {"enum": ["cache", "accept", "reject"]}}},
        "voltage": _obj({
            "nominal_v": NUM,
            "phases": {"type": "object", "description": "L1..L3 with fresh readings",
                       "additionalProperties": _obj({"min_v": NUM, "mean_v": NUM})},
            "over_voltage_floor": {
                "type": ["object", "null"],
                "description": "the share of site capacity price signals may not hold "
                               "back (policy voltage.over_voltage); null: none",
                "properties": {"share": NUM, "since": TIME, "reason": STR}}}),
    }),
    "Load": _obj({"since": TIME, "capacity_w": NUM, "points": {"type": "array", "items": _obj(
        {"at": TIME, "load_w": NUM, "limit_w": NUM})}}),
    "Event": _obj({
        "event_id": {"type": "string"}, "modification_number": {"type": "integer"},
        "status": {"type": "string", "description": "as the VTN sent it"},
        "state": {"enum": ["upcoming", "active", "completed", "cancelled"]},
        "start": TIME, "end": TIME, "opt": {"enum": ["optIn", "optOut"]},
        "opt_reason": {"type": "string"}, "market_context": {"type": "string"},
        "test_event": {"type": "boolean"},
        "signals": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "type": {"type": "string"}, "unit": STR,
            "intervals": {"type": "array", "items": _obj(
                {"start": TIME, "end": TIME, "value": {"type": "number"}})}})},
        "cap_w": {**NUM, "description": "lowest site limit the event asks for"},
        "baseline_w": NUM, "measured_w": NUM,
        "shed_w": {**NUM, "description": "baseline minus measured, mean over the event so far"},
        "baseline_method": STR,
        "operator_opt": {"type": ["object", "null"], "properties": {
            "opt_id": {"type": "string"}, "reason": {"type": "string"},
            "requested_at": TIME, "vtn_acknowledged_at": TIME}},
    }),
    "Events": _obj({k: {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                    for k in ("active", "upcoming", "history")}),
    "Station": _obj({
        "station_id": {"type": "string"}, "connected": {"type": "boolean"}, "last_seen": TIME,
        "power_w": NUM, "limit_w": {**NUM, "description": "limit the station acknowledged"},
        "limit_reason": {"type": "string", "description": "event, policy rule and allocation"},
        "planned": {"type": ["object", "null"], "properties": {
            "since": TIME, "limit_w": NUM, "reason": {"type": "string"}}},
        "profile_state": {"enum": ["accepted", "rejected", "unverified", "non-compliant"]},
        "profile_detail": {"type": "string",
                           "description": "the station's state in words, and why"},
        "verified": {"type": "boolean",
                     "description": "GetCompositeSchedule confirmed the limit"},
        "life": {"type": ["object", "null"], "description":
                 "where the station is in its life as the bridge follows it (null: not "
                 "connected since the bridge started)", "properties": {
                     "phase": {"enum": list(PHASES), "description":
                               "offline; connected (no call before its boot is accepted); "
                               "registered; reading (its capabilities); limit_in_flight "
                               "(its first limit on this connection); refusing (that limit "
                               "rejected or unanswered, retried); acknowledged (steered); "
                               "verified (its composite schedule confirms the limit); "
                               "unmanageable (no smart charging)"},
                     "since": {**TIME, "description": "null: since before the bridge started"},
                     "counted_as": {"enum": [*COUNTINGS, None], "description":
                                    "how the planner counts it: the share it gives it, the "
                                    "schedule it last acknowledged, its hardware maximum or "
                                    "its measured draw (null: not planned yet)"}}},
        "max_w": NUM,
        "counted": {"type": ["object", "null"], "description":
                    "while the bridge cannot steer it: what the planner counts it at, and why "
                    "(its configuration, its meter's lines, a key of its own, its measured "
                    "peak)", "properties": {"watts": NUM, "reason": {"type": "string"}}},
        "hold": {"type": ["object", "null"], "properties": {
            "mode": {"enum": ["pause", "exempt"]}, "reason": {"type": "string"}, "since": TIME}},
        "voltage_v": {"type": ["object", "null"], "description":
                      "latest line-to-neutral voltage per phase (L1..L3), while fresh",
                      "additionalProperties": NUM},
        "voltage_source": {"enum": ["meter values", "monitors", "der-control"],
                           "description": "how the volt-watt rule reaches the station: its "
                                          "meter values, its voltage monitors' events (at "
                                          "once), or its own DER control (it backs off by "
                                          "itself)"},
        "voltage_control": _obj({
            "monitors": _obj({"state": {"enum": ["off", "pending", "installed", "refused",
                                                 "not-supported"]},
                              "detail": {"type": "string"}, "held": {"type": "integer"}}),
            "der": _obj({"state": {"enum": ["off", "pending", "in-force", "superseded",
                                            "mismatch", "refused", "not-supported",
                                            "unexpressible"]},
                         "detail": {"type": "string"},
                         "notice": {"$ref": "#/components/schemas/VoltageNotice"}}),
            "last_event": {"$ref": "#/components/schemas/VoltageNotice"}}),
        "upstream": {
            "type": ["object", "null"], "description": "local-controller mode: the station's"
            " link to the operator's CSMS, its messages waiting for it, and the operator's own"
            " limit beside drbridge's", "properties": {
                "link": {"enum": ["connecting", "up", "replaying", "down", "closed"]},
                "queue": {"type": "integer"},
                "limit_w": {**NUM, "description": "what the operator's profiles alone let it"
                            " draw now"},
                "limit_reason": STR,
                "profiles": {"type": "array", "items": _obj({
                    "id": {"type": "integer"}, "purpose": {"type": "string"},
                    "connector": {"type": "integer"}, "stack_level": {"type": "integer"},
                    "installed_as": {"type": "integer"},
                    "installed_level": {"type": "integer"}})}}},
        "connectors": {"type": "array", "items": _obj({
            "connector_id": {"type": "integer"}, "status": STR, "status_since": TIME,
            "power_w": NUM, "limit_w": {**NUM, "description": "its own profile's limit, if any"},
            "profile_purpose": STR, "session": {"type": ["object", "null"], "properties": {
                "transaction_id": {"type": "integer"}, "started_at": TIME}}})},
    }),
    "VoltageNotice": {"type": ["object", "null"], "description":
                      "a voltage the station told outside its meter values",
                      "properties": {"at": TIME, "source": {"enum": ["monitor", "der-control"]},
                                     "volts": NUM, "phase": STR, "detail": {"type": "string"},
                                     "returned_to_normal": {"type": "boolean"}}},
    "Stations": _obj({"at": TIME, "stations": {"type": "array", "items": {
        "$ref": "#/components/schemas/Station"}}}),
    "Session": _obj({"logged_in": {"type": "boolean"}, "login_enabled": {"type": "boolean"},
                     "login_required": {"type": "boolean", "description":
                                        "the read API and /metrics need a login too"}}),
}

REASON_BODY = {"required": False, "content": {"application/json": {"schema": _obj(
    {"reason": {"type": "string", "maxLength": 500}})}}}
AUTH = [{"session": []}]
# With web.require_login (the default off loopback) reading needs the session cookie too.
READ_AUTH = [{"session": []}, {}]
READ = {"security": READ_AUTH}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "drbridge operator API", "version": "1",
                 "description": "Site, DR events and stations of a running drbridge; "
                                "actions need a session cookie from POST /api/login, and "
                                "so does reading when web.require_login is on (/metrics "
                                "also takes the metrics token)."},
        "paths": {
            "/api/site": {"get": {"summary": "Site load, limit, DR banner, VTN state", **READ,
                                  "responses": {**_ok("Site", "the site now"), "401": ERROR}}},
            "/api/load": {"get": {
                "summary": "Site load and limit over the last hours", **READ,
                "parameters": [{"name": "hours", "in": "query", "required": False,
                                "schema": {"type": "number", "default": 3,
                                           "exclusiveMinimum": 0, "maximum": 48}}],
                "responses": {**_ok("Load", "one point per recorded sample"), "400": ERROR,
                              "401": ERROR}}},
            "/api/events": {"get": {"summary": "Active, upcoming and past DR events", **READ,
                                    "responses": {**_ok("Events", "events"), "401": ERROR}}},
            "/api/stations": {"get": {"summary": "Stations, connectors, limits and reasons",
                                      **READ, "responses": {**_ok("Stations", "stations"),
                                                            "401": ERROR}}},
            "/api/session": {"get": {"summary": "Whether this client is logged in",
                                     "responses": _ok("Session", "session")}},
            "/api/login": {"post": {
                "summary": "Log in with the operator password; sets a session cookie",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj({"password": {"type": "string"}})}}},
                "responses": {**_ok("Session", "logged in"), "401": ERROR, "403": ERROR,
                              "429": ERROR}}},
            "/api/logout": {"post": {"summary": "End the session",
                                     "responses": _ok("Session", "logged out")}},
            "/api/events/{event_id}/opt-out": {"post": {
                "summary": "Opt the site out of an event (tells the VTN)", "security": AUTH,
                "parameters": [{"name": "event_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": REASON_BODY,
                "responses": {"200": {"description": "opted out"}, "401": ERROR,
                              "404": ERROR, "409": ERROR}},
                "delete": {
                    "summary": "Withdraw the operator's opt-out (oadrCancelOpt)",
                    "security": AUTH,
                    "parameters": [{"name": "event_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "withdrawn"}, "401": ERROR,
                                  "404": ERROR}}},
            "/api/stations/{station_id}/hold": {
                "put": {"summary": "Pause a station (0 W) or exempt it from DR",
                        "security": AUTH,
                        "parameters": [{"name": "station_id", "in": "path", "required": True,
                                        "schema": {"type": "string"}}],
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": _obj({"mode": {"enum": ["pause", "exempt"]},
                                            "reason": {"type": "string"}})}}},
                        "responses": {"200": {"description": "held"}, "400": ERROR,
                                      "401": ERROR, "404": ERROR}},
                "delete": {"summary": "Lift a station's hold", "security": AUTH,
                           "parameters": [{"name": "station_id", "in": "path",
                                           "required": True, "schema": {"type": "string"}}],
                           "responses": {"200": {"description": "lifted"}, "401": ERROR,
                                         "404": ERROR}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text format)",
                "security": [{"session": []}, {"metricsToken": []}, {"metricsBasic": []}, {}],
                "responses": {"200": {"description": "metrics", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}, "401": ERROR,
                    "429": ERROR}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "drbridge_session"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "the token of web.metrics_token_hash"},
                "metricsBasic": {"type": "http", "scheme": "basic",
                                 "description": "any user name, the metrics token as password"},
            },
        },
    }
