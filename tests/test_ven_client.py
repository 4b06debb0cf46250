"""The VEN against VTNs that are down, slow to appear, or send garbage, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from conftest import wait_until

from bridge.sim.vtn import DemoVtn, free_port
from ven.client import Registration, Ven, VenSettings
from ven.events import DrEvent, OptType
from ven.reports import SiteStatus

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "openadr20b"


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
    """An HTTP server that answers every OpenADR request with the body it is given."""

    def __init__(self) -> None:
        self.body = b""
        self.port = free_port()
        self.app = web.Application()
        self.app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self.handle)
        self.runner = web.AppRunner(self.app)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type="application/xml")

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


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared OpenADR fixtures not beside the repo")
async def test_valid_distribute_event_from_another_implementation_is_read(bad_vtn: BadVtn):
    from ven.messages import events_of, wrap

    bad_vtn.body = wrap((FIXTURES / "eievent" / "oadrDistributeEvent.xml").read_bytes())
    ven = Ven(settings(bad_vtn.url), Listener())
    try:
        message_type, payload = await ven._client._perform_request("OadrPoll", b"<x/>")
    finally:
        await ven.stop()
    assert message_type == "oadrDistributeEvent"
    assert [e.event_id for e in events_of(payload)] == ["Event_939393"]
