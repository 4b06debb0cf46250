"""What an idle station costs the bridge: no task of its own waiting for something to do
(its dispatcher worker runs only while there is work; one keepalive task pings every
connection), and a connection that stops answering pings is still closed."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from functools import partial
from typing import Any

from conftest import SiteHarness, wait_steered, wait_until
from websockets.asyncio.server import ServerConnection, serve

from bridge.aio import Wake, first_of
from bridge.ocpp.keepalive import Keepalive
from bridge.ocpp.upstream_link import ForwardingLink16
from bridge.ocpp.v16 import StationLink16
from bridge.ocpp.v201 import StationLink201
from bridge.sim.station import SimulatedStation

wait = partial(wait_until, timeout=30)


class _AnyString(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    __hash__ = str.__hash__


ANY_STRING = _AnyString()


def count(station: SimulatedStation, action: str) -> int:
    return sum(1 for a, _ in station.received if a == action)


def tasks_by_coroutine() -> Counter[str]:
    """The tasks running, by coroutine; websockets' keepalive tasks of the simulated
    stations' (client) connections left out."""
    counts: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", "?")
        owner = coro.cr_frame.f_locals.get("self") if getattr(coro, "cr_frame", None) else None
        if name != "Connection.keepalive" or isinstance(owner, ServerConnection):
            counts[name] += 1
    return counts


def awaiting(coroutine: Any) -> list[str]:
    """A suspended coroutine, each it awaits in turn, and what the last one awaits."""
    chain = []
    while getattr(coroutine, "cr_frame", None) is not None:
        chain.append(coroutine.__qualname__)
        coroutine = coroutine.cr_await
    return [*chain, type(coroutine).__name__]


async def test_a_steered_idle_station_has_only_its_connection_handler_task(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    for n in range(4):
        site.add_station(f"IDLE{n}", plugged_in=n % 2 == 0)
    await wait_steered(bridge, *(f"IDLE{n}" for n in range(4)))
    await wait(lambda: all(s.life.phase == "verified" for s in bridge.dispatcher.stations.values()),
               what="every limit verified by its composite schedule")
    await wait(lambda: all(s.task is None and not s.starting
                           for s in bridge.dispatcher.stations.values()),
               what="no dispatcher worker left running")
    tasks = tasks_by_coroutine()
    assert tasks["Dispatcher._worker"] == 0
    assert tasks["Connection.keepalive"] == 0  # websockets' own: one task per connection
    assert tasks["Keepalive.run"] == 1
    assert tasks["StationSocket._open"] == 4  # each connection's frames
    # and no deeper than these, the last waiting on a plain future (a frame is about 0.2 KB)
    assert {tuple(awaiting(task.get_coro())) for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == "StationSocket._open"} == {
        ("StationSocket._open", "OcppServer._serve", "OcppJLink.start", "FutureIter")}

    # woken again (an EV plugged in: a new share), a worker comes, sends it and ends
    station = site.stations[1]
    sets = count(station, "SetChargingProfile")
    station.plug_in()
    await wait(lambda: count(station, "SetChargingProfile") > sets, what="its new limit")
    await wait_steered(bridge, "IDLE1")
    await wait(lambda: all(s.task is None and not s.starting
                           for s in bridge.dispatcher.stations.values()),
               what="the workers done again")


async def test_a_station_routine_report_is_answered_in_the_socket_callback_not_its_task(
        site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=40)
    station = site.add_station("QUICK")
    await wait_steered(bridge, "QUICK")
    socket = bridge.ocpp.links["QUICK"].connection
    waiter = socket._waiter
    assert waiter is not None and not waiter.done()  # its link's task waits for a message
    assert await station.request("Heartbeat", {}) == {"currentTime": ANY_STRING}
    assert await station.request("MeterValues", {"connectorId": 1, "meterValue": [
        {"timestamp": "2026-12-04T12:00:00Z", "sampledValue": [{"value": "10"}]}]}) == {}
    # answered without waking the task: it still waits on the same future
    assert socket._waiter is waiter and not waiter.done()
    # any other request goes through the task, in turn with the limits it may lead to
    assert await station.request("DataTransfer", {"vendorId": "x"}) == {"status": "UnknownVendorId"}
    assert socket._waiter is not waiter and waiter.done()


def test_which_requests_are_routine_reports():
    link16 = StationLink16("A", None, None, 30.0)  # type: ignore[arg-type]
    assert link16._routine("MeterValues", {}) and link16._routine("Heartbeat", {})
    for action in ("BootNotification", "StartTransaction", "StopTransaction",
                   "StatusNotification", "Authorize", "DataTransfer"):
        assert not link16._routine(action, {})
    link201 = StationLink201("B", None, None, 30.0)  # type: ignore[arg-type]
    link201._transactions["tx-1"] = (7, 1)
    periodic = {"eventType": "Updated", "triggerReason": "MeterValuePeriodic",
                "transactionInfo": {"transactionId": "tx-1"}}
    assert link201._routine("TransactionEvent", periodic)
    assert link201._routine("MeterValues", {})
    for changed in ({"eventType": "Started"}, {"eventType": "Ended"},
                    {"triggerReason": "ChargingStateChanged"},
                    {"transactionInfo": {"transactionId": "tx-2"}},  # one it does not know
                    {"transactionInfo": {"transactionId": ["tx-1"]}},
                    {"transactionInfo": "tx-1"}):
        assert not link201._routine("TransactionEvent", {**periodic, **changed})
    assert not link201._routine("TransactionEvent", ["not", "an", "object"])


def test_a_link_that_replaces_a_routing_step_is_routed_in_its_task_only():
    assert StationLink16.ANSWERS_AT_ONCE and StationLink201.ANSWERS_AT_ONCE
    assert not ForwardingLink16.ANSWERS_AT_ONCE  # it relays: its calls wait their turn

    class Counting(StationLink16):
        async def _on_call(self, unique_id: str, action: str, payload: Any) -> None:
            await super()._on_call(unique_id, action, payload)

    assert not Counting.ANSWERS_AT_ONCE


async def _silent_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completes the websocket handshake and then reads nothing more: as a
    station whose network vanished, it never answers a ping."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /SILENT HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def test_keepalive_closes_a_connection_without_pongs_and_keeps_one_that_answers():
    from websockets.asyncio.client import connect

    connections: dict[str, ServerConnection] = {}
    closed: dict[str, int | None] = {}

    async def handler(connection: ServerConnection) -> None:
        name = connection.request.path.strip("/") if connection.request else "?"
        connections[name] = connection
        await connection.wait_closed()
        sent = connection.protocol.close_sent
        closed[name] = sent.code if sent is not None else None

    keepalive = Keepalive(lambda: list(connections.items()), interval_s=0.3, timeout_s=0.6,
                          tick_s=0.1)
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=1) as server:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(keepalive.run())
        try:
            async with connect(f"ws://127.0.0.1:{port}/LIVE", ping_interval=None):
                _, writer = await _silent_client(port)
                await wait(lambda: "SILENT" in closed, what="the silent connection closed")
                assert closed["SILENT"] == 1011  # keepalive ping timeout, as websockets closes
                assert keepalive.timed_out == 1
                assert "LIVE" not in closed  # it answered every ping meanwhile
                assert connections["LIVE"].latency > 0  # and it was pinged
                writer.close()
        finally:
            task.cancel()


async def test_a_wake_tells_each_set_wakes_its_waiters_and_keeps_none_after():
    told: list[int] = []
    wake = Wake(on_set=lambda: told.append(1))
    waiter = asyncio.ensure_future(wake.wait())
    cancelled = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert not waiter.done() and wake._waiters is not None and len(wake._waiters) == 1
    wake.set()
    await asyncio.wait_for(waiter, 1)
    assert wake.is_set() and wake._waiters is None and told == [1]
    wake.set()  # set again while set: told again (a worker may have ended meanwhile)
    assert told == [1, 1]
    await asyncio.wait_for(wake.wait(), 1)  # set: returns at once
    wake.clear()
    assert not wake.is_set()


async def test_first_of_returns_at_the_first_flag_or_the_timeout_and_leaves_no_waiter():
    one, other = Wake(), Wake()
    waiting = asyncio.ensure_future(first_of((one, other), 10))
    await asyncio.sleep(0)
    assert not waiting.done() and one._waiters and other._waiters
    other.set()
    await asyncio.wait_for(waiting, 1)
    assert one._waiters is None and other._waiters is None
    await asyncio.wait_for(first_of((one, other), 10), 1)  # other is set already: at once
    assert other._waiters is None
    other.clear()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await first_of((one, other), 0.05)  # neither is set: the timeout
    assert loop.time() - began >= 0.04 and one._waiters is None and other._waiters is None
    cancelled = asyncio.ensure_future(first_of((one, other), 10))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert one._waiters is None and other._waiters is None


async def test_thousands_wait_on_one_flag_and_leave_it_one_by_one():
    shared = Wake()
    own = [Wake() for _ in range(2_000)]
    tasks = [asyncio.ensure_future(first_of((wake, shared), 10)) for wake in own]
    await asyncio.sleep(0)
    assert len(shared._waiters or ()) == 2_000
    for wake in own[:1_000]:
        wake.set()
    await asyncio.gather(*tasks[:1_000])
    assert len(shared._waiters or ()) == 1_000
    shared.set()
    await asyncio.gather(*tasks[1_000:])
    assert shared._waiters is None and all(w._waiters is None for w in own)
