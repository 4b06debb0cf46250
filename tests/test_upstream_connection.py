"""One station's link to the operator's CSMS (``bridge.upstream.connection``), against a
real CSMS on loopback: what happens to the operator's calls when the link closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import wait_until

from bridge.sim.csms import UpstreamCsms
from bridge.upstream.connection import UpstreamConnection


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms()
    await server.start()
    yield server
    await server.stop()


async def _nothing() -> None:
    return None


async def test_an_answer_under_way_reaches_the_operator_before_the_link_closes(
        csms: UpstreamCsms) -> None:
    # A station answers the operator's Reset and reboots at once: the link to the operator
    # closes with the station's, and the answer it already gave must still go up first.
    arrived, answered = asyncio.Event(), asyncio.Event()

    async def on_call(unique_id: str, action: str, payload: dict[str, Any]) -> None:
        arrived.set()
        await answered.wait()
        await link.answer([3, unique_id, {"status": "Accepted"}])

    link = UpstreamConnection(csms.url, "CP1", "ocpp1.6", None, None, call_timeout_s=5.0,
                              reconnect_min_s=0.1, reconnect_max_s=0.5, on_call=on_call,
                              on_open=_nothing)
    running = asyncio.create_task(link.run())
    await asyncio.wait_for(link.connected.wait(), 5)
    await wait_until(lambda: "CP1" in csms.stations, what="the CSMS seeing the station")
    reset = asyncio.create_task(csms.request("CP1", "Reset", {"type": "Soft"}))
    await asyncio.wait_for(arrived.wait(), 5)
    answered.set()  # the answer is on its way: the close comes before it is sent
    await link.close()
    assert await asyncio.wait_for(reset, 5) == {"status": "Accepted"}
    await asyncio.wait_for(running, 5)
