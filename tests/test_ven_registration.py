"""Registration: persisted ids, re-registration and cancellation by the VTN, backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from conftest import wait_until
from test_ven_client import Listener, settings

from bridge.sim.vtn import DemoVtn
from ven.interface import Registration
from ven.oadr20b.client import Ven
from ven.shared import backoff_delays


class Running:
    def __init__(self, vtn: DemoVtn, ven: Ven, listener: Listener) -> None:
        self.vtn, self.ven, self.listener = vtn, ven, listener

    def sent(self, message_type: str) -> list[dict]:
        return [p for t, p in self.vtn.received.messages if t == message_type]


async def start(vtn: DemoVtn, registration: Registration | None = None,
                ) -> tuple[Running, asyncio.Task[None]]:
    listener = Listener()
    ven = Ven(settings(vtn.url), listener, registration=registration)
    task = asyncio.create_task(ven.run())
    await wait_until(lambda: listener.registrations != [], what="registration")
    return Running(vtn, ven, listener), task


@pytest.fixture
async def running(vtn: DemoVtn) -> AsyncIterator[Running]:
    handle, task = await start(vtn)
    yield handle
    await handle.ven.stop()
    await asyncio.wait_for(task, 5)


async def test_reregisters_when_the_vtn_asks(running: Running):
    ven_id = running.listener.registrations[0].ven_id
    running.vtn.request_reregistration(ven_id)
    await wait_until(lambda: len(running.listener.registrations) == 2, what="re-registration")
    again = running.sent("oadrCreatePartyRegistration")[-1]
    assert again["ven_id"] == ven_id and again["registration_id"] == f"reg-{ven_id}"
    assert running.sent("oadrResponse") != []  # the acknowledgement of the request
    # reports offered again, taken on again ...
    await wait_until(lambda: len(running.sent("oadrCreatedReport")) == 2, what="reports")
    assert len(running.sent("oadrRegisterReport")) == 2
    # ... and the ones asked for before are not sent twice from now on
    assert len(running.ven._client.report_requests) == 1


async def test_cancelled_registration_is_confirmed_forgotten_and_made_again(running: Running):
    ven_id = running.listener.registrations[0].ven_id
    running.vtn.cancel_registration(ven_id)
    await wait_until(lambda: running.listener.cancelled == 1, what="the cancellation")
    [confirmed] = running.sent("oadrCanceledPartyRegistration")
    assert confirmed["response"]["response_code"] == 200
    assert confirmed["registration_id"] == f"reg-{ven_id}"
    await wait_until(lambda: len(running.listener.registrations) == 2, what="a new registration")
    # a fresh registration: no registration id of the cancelled one
    assert running.sent("oadrCreatePartyRegistration")[-1].get("registration_id") is None


async def test_a_cancellation_for_another_registration_is_refused(running: Running):
    ven_id = running.listener.registrations[0].ven_id
    running.vtn.send_raw(running.vtn._message(
        "oadrCancelPartyRegistration", request_id="c-9", ven_id=ven_id,
        registration_id="not-ours"))
    await wait_until(lambda: running.sent("oadrCanceledPartyRegistration") != [],
                     what="the answer")
    [answer] = running.sent("oadrCanceledPartyRegistration")
    assert answer["response"]["response_code"] == 452
    assert running.listener.cancelled == 0 and running.ven.registration is not None


async def test_persisted_ids_are_used_after_a_restart(vtn: DemoVtn):
    handle, task = await start(vtn, Registration("ven-kept", "reg-kept"))
    try:
        first = handle.sent("oadrCreatePartyRegistration")[0]
        assert first["ven_id"] == "ven-kept" and first["registration_id"] == "reg-kept"
        assert handle.ven.registration == Registration("ven-kept", "reg-ven-kept")
    finally:
        await handle.ven.stop()
        await asyncio.wait_for(task, 5)


def test_backoff_grows_to_its_cap_with_jitter():
    delays = backoff_delays(1.0, 60.0, random.Random(7))
    seen = [delays() for _ in range(12)]
    ceilings = [min(60.0, 2.0**n) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(seen, ceilings, strict=True))
    assert len({round(d, 6) for d in seen[-5:]}) == 5  # jittered, not in lockstep
    other = backoff_delays(1.0, 60.0, random.Random(8))
    assert [other() for _ in range(12)] != seen
