"""A small OpenADR 2.0b VTN on openleadr's ``OpenADRServer``, for the demo and the tests.

It registers any VEN, asks for every real-power (W) value of the TELEMETRY_USAGE
report the VEN offers at the VEN's own sampling rate, keeps what arrives, and issues
SIMPLE events. Tests can also make it answer polls with raw payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr import OpenADRServer
from openleadr.messaging import parse_message
from openleadr.service import VTNService, handler, service

VTN_ID = "DEMO-VTN"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    registrations: list[dict[str, Any]] = field(default_factory=list)
    opts: list[tuple[str, str, str]] = field(default_factory=list)  # (ven_id, event_id, opt)
    # power readings (W): (ven_id, resource_id, at, watts)
    reports: list[tuple[str, str, datetime, float]] = field(default_factory=list)
    # every reading: (ven_id, resource_id, measurement, unit, at, value)
    readings: list[tuple[str, str, str, str, datetime, float]] = field(default_factory=list)
    created_opts: list[dict[str, Any]] = field(default_factory=list)  # oadrCreateOpt payloads
    # every eventResponse of every oadrCreatedEvent, as openleadr parses them
    event_responses: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # all, as parsed
    bodies: list[tuple[str, bytes]] = field(default_factory=list)  # all, as sent
    cancelled_opts: list[tuple[str, str]] = field(default_factory=list)  # (ven_id, opt_id)


@service("EiOpt")
class _OptService(VTNService):
    """EiOpt, which openleadr's server leaves out: acknowledges and keeps every opt."""

    def __init__(self, vtn_id: str, received: Received) -> None:
        super().__init__(vtn_id)
        self.received = received

    @handler("oadrCreateOpt")
    async def create_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.received.created_opts.append(payload)
        return "oadrCreatedOpt", {"opt_id": payload["opt_id"]}

    @handler("oadrCancelOpt")
    async def cancel_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.received.cancelled_opts.append((payload["ven_id"], payload["opt_id"]))
        return "oadrCanceledOpt", {"opt_id": payload["opt_id"]}


@dataclass(frozen=True)
class VtnTls:
    """HTTPS with client certificates required (and, with ``sign``, signed messages)."""

    cert: str
    key: str
    ca_file: str  # the CA that VEN client certificates must chain to
    sign: bool = False  # sign our messages with cert/key, and require signed ones


class DemoVtn:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 poll_interval: timedelta = timedelta(seconds=1),
                 tls: VtnTls | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.received = Received()
        self.tls = tls
        self._vens: dict[str, dict[str, str]] = {}
        secure: dict[str, Any] = {}
        if tls is not None:
            secure = {"http_cert": tls.cert, "http_key": tls.key, "http_ca_file": tls.ca_file,
                      "verify_message_signatures": tls.sign}
            if tls.sign:
                secure |= {"cert": tls.cert, "key": tls.key}
        self.server = OpenADRServer(
            vtn_id=VTN_ID,
            http_host=host,
            http_port=self.port,
            requested_poll_freq=poll_interval,
            show_fingerprint=False,
            ven_lookup=self._ven_lookup,
            **secure,
        )
        self.server.add_handler("on_create_party_registration", self._on_registration)
        self.server.add_handler("on_register_report", self._on_register_report)
        opt_service = _OptService(VTN_ID, self.received)
        opt_service.ven_lookup = self._ven_lookup  # type: ignore[attr-defined]
        self.server.app.router.add_post(f"{self.server.http_path_prefix}/EiOpt",
                                        opt_service.handler)
        # Messages queued here answer the next polls instead of openleadr's own: raw payloads
        # (oadrDistributeEvent written by hand, hostile ones) through a real VTN's transport.
        self.raw_replies: list[bytes] = []
        self.server.app.middlewares.append(self._intercept)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/OpenADR2/Simple/2.0b"

    async def start(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # openleadr prints a banner
            await self.server.run()

    async def stop(self) -> None:
        # aiohttp waits up to a minute for open requests; a demo VTN need not be so patient
        try:
            await asyncio.wait_for(self.server.stop(), 10)
        except TimeoutError:
            pass

    def ven_id(self, ven_name: str) -> str | None:
        for ven_id, ven in self._vens.items():
            if ven["ven_name"] == ven_name:
                return ven_id
        return None

    def add_simple_event(self, ven_id: str, start: datetime,
                         levels: list[tuple[timedelta, int]], event_id: str | None = None,
                         response_required: str = "always") -> str:
        """An event with one SIMPLE signal: consecutive (duration, level) intervals from start."""
        intervals = []
        at = start
        for duration, level in levels:
            intervals.append({"dtstart": at, "duration": duration, "signal_payload": level})
            at += duration
        return str(self.server.add_event(
            ven_id=ven_id, signal_name="SIMPLE", signal_type="level", intervals=intervals,
            callback=self._on_opt, event_id=event_id, response_required=response_required,
        ))

    def cancel_event(self, ven_id: str, event_id: str) -> None:
        self.server.cancel_event(ven_id, event_id)

    def send_raw(self, payload: bytes) -> None:
        """Answer the VEN's next poll with these bytes."""
        self.raw_replies.append(payload)

    def request_reregistration(self, ven_id: str) -> None:
        self.send_raw(self._message("oadrRequestReregistration", ven_id=ven_id))

    def cancel_registration(self, ven_id: str) -> None:
        ven = self._vens[ven_id]
        self.send_raw(self._message("oadrCancelPartyRegistration", request_id="cancel-1",
                                    ven_id=ven_id, registration_id=ven["registration_id"]))

    def _message(self, message_type: str, **payload: Any) -> bytes:
        service = self.server.services["poll_service"]
        return str(service._create_message(message_type, **payload)).encode()

    @web.middleware
    async def _intercept(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
        message_type, payload = "", {}
        with contextlib.suppress(Exception):  # openleadr's own handler judges bad input
            body = await request.read()
            message_type, payload = parse_message(body)
            self.received.messages.append((message_type, payload))
            self.received.bodies.append((message_type, body))
        if message_type == "oadrCreatedEvent":
            self.received.event_responses.extend(payload.get("event_responses") or [])
            if any(r.get("event_id") not in self._openleadr_events(payload["ven_id"])
                   for r in payload.get("event_responses") or []):
                # events written by hand are not in openleadr's books: just acknowledge
                return web.Response(text="", content_type="application/xml")
        if message_type == "oadrCanceledPartyRegistration":  # openleadr has no handler for it
            return web.Response(text="", content_type="application/xml")
        if request.path.endswith("/OadrPoll") and self.raw_replies:
            return web.Response(body=self.raw_replies.pop(0), content_type="application/xml")
        return await handler(request)

    def _openleadr_events(self, ven_id: str) -> set[str]:
        events = self.server.services["event_service"].events.get(ven_id, [])
        return {e.event_descriptor.event_id if hasattr(e, "event_descriptor")
                else e["event_descriptor"]["event_id"] for e in events}

    # openleadr handlers ---------------------------------------------------------------------
    def _ven_lookup(self, ven_id: str) -> dict[str, str]:
        return self._vens.get(ven_id, {})

    async def _on_registration(self, registration_info: dict[str, Any]) -> tuple[str, str]:
        self.received.registrations.append(registration_info)
        ven_name = registration_info["ven_name"]
        ven_id = registration_info.get("ven_id") or f"ven-{ven_name}"
        # over TLS openleadr hands us the client certificate's fingerprint; later messages
        # from this VEN must come with the same certificate
        self._vens[ven_id] = {"ven_id": ven_id, "ven_name": ven_name,
                              "registration_id": f"reg-{ven_id}",
                              "fingerprint": registration_info.get("fingerprint") or ""}
        return ven_id, f"reg-{ven_id}"

    async def _on_register_report(
        self, ven_id: str, resource_id: str, measurement: str, unit: str, scale: str,
        min_sampling_interval: timedelta, max_sampling_interval: timedelta,
    ) -> tuple[Any, timedelta] | None:
        if unit not in ("W", "Wh", "V"):
            # power, energy and voltage: openleadr's VTN cannot read the status payloads
            # (oadrPayloadResourceStatus) of TELEMETRY_STATUS
            return None
        def on_data(data: list[tuple[datetime, float]]) -> None:
            for at, value in data:
                self.received.readings.append(
                    (ven_id, resource_id, measurement, unit, at, float(value)))
                if unit == "W":
                    self.received.reports.append((ven_id, resource_id, at, float(value)))
        return on_data, min_sampling_interval

    def _on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.received.opts.append((ven_id, event_id, opt_type))
