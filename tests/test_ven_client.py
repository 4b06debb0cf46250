"""The VEN against VTNs that are down, slow to appear, or send garbage, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from conftest import wait_until
from test_ven_fixtures import FIXTURES, requires_fixtures

from bridge.sim.vtn import DemoVtn, free_port
from policies.events import DrEvent, OptType
from ven.interface import Registration, SiteStatus
from ven.oadr20b.client import Ven, VenSettings
from ven.oadr20b.messages import MAX_MESSAGE_BYTES


class Listener:
    def __init__(self) -> None:
        self.events: list[DrEvent] = []
        self.registrations: list[Registration] = []
        self.cancelled = 0
        self.history: list[tuple[datetime, float]] = []

    async def on_event(self, event: DrEvent) -> OptType:
        self.events.append(event)
        return "optIn"

    def on_registration(self, registration: Registration) -> None:
        self.registrations.append(registration)

    def on_registration_cancelled(self) -> None:
        self.cancelled += 1

    def measured_load_w(self) -> float:
        return 1234.0

    def measured_energy_wh(self) -> float:
        return 56_789.0

    def group_load_w(self, group_id: str) -> float:
        return {"vans": 700.0}.get(group_id, 0.0)

    def site_status(self) -> SiteStatus:
        return SiteStatus(online=True, manual_override=False, current_w=11_000.0, min_w=0.0,
                          max_w=44_000.0)

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return [(at, value) for at, value in self.history if start <= at < end]


def settings(url: str) -> VenSettings:
    return VenSettings(vtn_url=url, ven_name="test-site", resource_id="test-site",
                       telemetry_interval=timedelta(seconds=10),
                       retry_initial=timedelta(milliseconds=100),
                       retry_max=timedelta(milliseconds=400))


async def test_registration_retries_until_the_vtn_appears():
    port = free_port()
    listener = Listener()
    ven = Ven(settings(f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"), listener)
    task = asyncio.create_task(ven.run())
    await asyncio.sleep(1.0)  # several attempts against nothing; the VEN must not give up
    assert not task.done()
    vtn = DemoVtn(port=port)
    await vtn.start()
    try:
        await wait_until(lambda: listener.registrations != [], what="registration")
        assert listener.registrations[0].ven_id == "ven-test-site"
    finally:
        await ven.stop()
        await asyncio.wait_for(task, 5)
        await vtn.stop()


class BadVtn:
    """An HTTP server that answers every OpenADR request with the body it is given; or, with
    ``endless``, with a chunked body that never ends; or, with ``declared``, with a body whose
    Content-Length says that many bytes, of which it sends a few and then nothing."""

    BULK = 64 * 1024 * 1024  # an endless body comes this fast, then trickles on for ever

    def __init__(self) -> None:
        self.body = b""
        self.endless = False
        self.declared: int | None = None
        self.sent = 0  # bytes of the last streamed body that went out
        self.hung_up = asyncio.Event()  # the VEN closed the connection of a streamed body
        self.port = free_port()
        self.app = web.Application()
        self.app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self.handle)
        self.runner = web.AppRunner(self.app)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not (self.endless or self.declared):
            return web.Response(body=self.body, content_type="application/xml")
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        if self.declared:
            response.content_length = self.declared
        await response.prepare(request)
        self.sent, self.hung_up = 0, asyncio.Event()
        chunk = b"<a>" * 20_000
        try:
            await response.write(b'<?xml version="1.0"?><oadrPayload>')
            while self.endless:
                await response.write(chunk)
                self.sent += len(chunk)
                if self.sent > self.BULK:
                    await asyncio.sleep(0.05)
            for _ in range(1200):  # a declared body: the rest never comes (for a minute)
                if request.transport is None or request.transport.is_closing():
                    self.hung_up.set()
                    break
                await asyncio.sleep(0.05)
        except (ConnectionError, OSError):  # the VEN hung up, as it should
            self.hung_up.set()
        return response

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"


@pytest.fixture
async def bad_vtn() -> AsyncIterator[BadVtn]:
    server = BadVtn()
    await server.runner.setup()
    await web.TCPSite(server.runner, "127.0.0.1", server.port).start()
    yield server
    await server.runner.cleanup()


XXE = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
       b'<oadrPayload xmlns="http://openadr.org/oadr-2.0b/2012/07">&e;</oadrPayload>')


@pytest.mark.parametrize("body", [
    b"not xml at all", XXE, b"<a>" * 400_000, b"<oadrPayload/>",
], ids=["garbage", "xxe", "oversize", "not-openadr"])
async def test_hostile_replies_are_refused_and_logged(bad_vtn: BadVtn, body: bytes,
                                                      caplog: pytest.LogCaptureFixture):
    bad_vtn.body = body
    ven = Ven(settings(bad_vtn.url), Listener())
    try:
        result = await ven._client._perform_request("OadrPoll", b"<x/>")
    finally:
        await ven.stop()
    assert result == (None, {})
    assert "refused a message from the VTN" in caplog.text


@requires_fixtures
async def test_valid_distribute_event_from_another_implementation_is_read(bad_vtn: BadVtn):
    from ven.oadr20b.messages import events_of, wrap

    bad_vtn.body = wrap((FIXTURES / "eievent" / "oadrDistributeEvent.xml").read_bytes())
    ven = Ven(settings(bad_vtn.url), Listener())
    try:
        message_type, payload = await ven._client._perform_request("OadrPoll", b"<x/>")
    finally:
        await ven.stop()
    assert message_type == "oadrDistributeEvent"
    assert [e.event_id for e in events_of(payload)] == ["Event_939393"]


RESPONSE = (b'<?xml version="1.0" encoding="UTF-8"?>'
            b'<oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" '
            b'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110" '
            b'xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">'
            b"<oadr:oadrSignedObject><oadr:oadrResponse><ei:eiResponse>"
            b"<ei:responseCode>200</ei:responseCode><pyld:requestID>R1</pyld:requestID>"
            b"</ei:eiResponse></oadr:oadrResponse></oadr:oadrSignedObject></oadr:oadrPayload>")


async def test_an_endless_reply_is_cut_off_at_the_size_cap_and_the_ven_carries_on(
        bad_vtn: BadVtn, caplog: pytest.LogCaptureFixture):
    """A VTN that streams a reply without end (chunked, so no Content-Length to judge it
    by): the VEN stops reading past the cap, hangs up, and reads the next reply."""
    bad_vtn.endless = True
    ven = Ven(settings(bad_vtn.url), Listener())
    try:
        began = time.monotonic()
        result = await asyncio.wait_for(
            ven._client._perform_request("OadrPoll", b"<x/>"), timeout=30)
        took = time.monotonic() - began
        assert result == (None, {})
        assert f"over the {MAX_MESSAGE_BYTES}-byte limit (stopped reading)" in caplog.text
        await asyncio.wait_for(bad_vtn.hung_up.wait(), timeout=10)
        # What went out before the hang-up: the cap and what the sockets buffer on loopback,
        # far short of the bulk that would have been read had the VEN read on.
        assert bad_vtn.sent < BadVtn.BULK // 2, bad_vtn.sent
        print(f"cut off after {took:.2f} s; the VTN got {bad_vtn.sent / 1e6:.1f} MB out")

        bad_vtn.endless = False
        bad_vtn.body = RESPONSE
        assert (await ven._client._perform_request("OadrPoll", b"<x/>"))[0] == "oadrResponse"
    finally:
        await ven.stop()


async def test_a_reply_declared_over_the_cap_is_not_read(bad_vtn: BadVtn,
                                                         caplog: pytest.LogCaptureFixture):
    """A Content-Length over the cap is refused before a byte of the body is read (here the
    body never comes, so a VEN that waited for it would hang until its read timeout)."""
    bad_vtn.declared = 50 * MAX_MESSAGE_BYTES
    ven = Ven(settings(bad_vtn.url), Listener())
    try:
        result = await asyncio.wait_for(
            ven._client._perform_request("OadrPoll", b"<x/>"), timeout=30)
        assert result == (None, {})
        assert (f"its Content-Length of {50 * MAX_MESSAGE_BYTES} bytes is over the "
                f"{MAX_MESSAGE_BYTES}-byte limit") in caplog.text
        await asyncio.wait_for(bad_vtn.hung_up.wait(), timeout=10)

        bad_vtn.declared = None
        bad_vtn.body = RESPONSE
        assert (await ven._client._perform_request("OadrPoll", b"<x/>"))[0] == "oadrResponse"
    finally:
        await ven.stop()
