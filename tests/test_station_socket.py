"""The stations' websocket layer (bridge.ocpp.station_socket) on loopback, with websockets'
own client as the station."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import websockets
from websockets.http11 import Request, Response

from bridge.ocpp import station_socket
from bridge.ocpp.station_socket import StationSocket, StationSockets

Serve = Callable[[StationSocket], Awaitable[None]]


class Harness:
    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.released: list[str] = []
        self.refuse = False
        self.serve: Serve = self._echo
        self.served: list[StationSocket] = []
        self.sockets = StationSockets(self._judge, self._serve, self._admit,
                                      self.released.append, ["ocpp1.6"], 1024,
                                      logging.getLogger("test.station_socket"))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.sockets.port}"

    def _admit(self, host: str) -> bool:
        self.admitted.append(host)
        return True

    async def _judge(self, socket: StationSocket, request: Request) -> Response | None:
        return socket.protocol.reject(403, "no\n") if self.refuse else None

    async def _serve(self, socket: StationSocket) -> None:
        self.served.append(socket)
        await self.serve(socket)

    @staticmethod
    async def _echo(socket: StationSocket) -> None:
        while True:
            message = await socket.recv()
            await socket.send(message if isinstance(message, str) else f"bytes {message!r}")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.sockets.start("127.0.0.1", 0, None, 16)
    yield harness
    await harness.sockets.close(5)


def station(harness: Harness, path: str = "/CP-1") -> websockets.connect:
    return websockets.connect(harness.url + path, subprotocols=[websockets.Subprotocol("ocpp1.6")],
                              ping_interval=None, open_timeout=5)


async def test_messages_in_order_whole_fragmented_and_binary(harness: Harness):
    async with station(harness) as ws:
        assert ws.subprotocol == "ocpp1.6"
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.send(["[2,", '"1",', '"Heartbeat",{}]'])  # one message in three frames
        assert await ws.recv() == '[2,"1","Heartbeat",{}]'
        await ws.send(b"\x01\x02")
        assert await ws.recv() == "bytes b'\\x01\\x02'"
    assert harness.admitted == ["127.0.0.1"]
    await asyncio.wait_for(_until(lambda: harness.released == ["127.0.0.1"]), 5)


async def test_text_that_is_not_utf8_is_handed_on_as_bytes_and_the_link_lives(harness: Harness):
    async with station(harness) as ws:
        await ws.send(b"[\xff]", text=True)
        assert await ws.recv() == "bytes b'[\\xff]'"
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_a_refused_handshake_gets_its_status_and_nothing_is_served(harness: Harness):
    harness.refuse = True
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with station(harness):
            pass
    assert refused.value.response.status_code == 403
    assert harness.served == []
    await asyncio.wait_for(_until(lambda: harness.released == ["127.0.0.1"]), 5)


async def test_a_silent_socket_is_dropped_when_its_handshake_is_overdue(
        harness: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(station_socket, "OPEN_TIMEOUT_S", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.sockets.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the bridge
    writer.close()
    await asyncio.wait_for(_until(lambda: harness.released == ["127.0.0.1"]), 5)


async def test_unread_messages_pause_reading_until_the_link_catches_up(harness: Harness):
    go = asyncio.Event()
    received: list[str | bytes] = []

    async def slow(socket: StationSocket) -> None:
        await go.wait()
        while len(received) < 40:
            received.append(await socket.recv())

    harness.serve = slow
    async with station(harness) as ws:
        for n in range(40):
            await ws.send(str(n))
        await asyncio.wait_for(_until(lambda: bool(harness.served) and not
                                      harness.served[0].transport.is_reading()), 5)
        go.set()
        await asyncio.wait_for(_until(lambda: len(received) == 40), 5)
        assert received == [str(n) for n in range(40)]
        assert harness.served[0].transport.is_reading()


async def test_a_ping_is_answered_by_the_pong(harness: Harness):
    async with station(harness) as ws:
        await ws.send("x")
        await ws.recv()
        pong = await harness.served[0].ping()
        assert await asyncio.wait_for(pong, 5) > 0


async def test_a_failing_handler_closes_with_1011(harness: Harness):
    async def failing(socket: StationSocket) -> None:
        await socket.recv()
        raise RuntimeError("bug")

    harness.serve = failing
    async with station(harness) as ws:
        await ws.send("x")
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_an_oversized_message_closes_with_1009(harness: Harness):
    async with station(harness) as ws:
        await ws.send("x" * 2000)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_closing_closes_every_station_with_1001_and_waits_for_its_handler(
        harness: Harness):
    ended: list[str] = []

    async def serve(socket: StationSocket) -> None:
        try:
            await Harness._echo(socket)
        finally:
            ended.append("yes")

    harness.serve = serve
    async with station(harness) as ws:
        await ws.send("x")
        await ws.recv()
        assert await harness.sockets.close(5)
        assert ended == ["yes"]
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1001


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
