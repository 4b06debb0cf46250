"""The stations' websocket layer (bridge.ocpp.station_socket) on loopback, with websockets'
own client as the station."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from pki import Pki
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from bridge.ocpp import station_socket
from bridge.ocpp.station_socket import StationSocket, StationSockets

Serve = Callable[[StationSocket], Awaitable[None]]


class Harness:
    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.released: list[str] = []
        self.refuse = False
        self.judging: asyncio.Event | None = None  # set: the judge waits for it
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
        if self.judging is not None:
            await self.judging.wait()
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
    assert not harness.sockets.sockets


HANDSHAKE = (b"GET /CP-1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")


def frame(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=True, extensions=[])


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


async def test_messages_are_answered_at_once_while_the_link_waits_and_in_order_when_not(
        harness: Harness):
    routed: list[str | bytes] = []

    async def serve(socket: StationSocket) -> None:
        def at_once(message: str | bytes) -> bool:
            if message == "task's":
                return False  # left to the task
            routed.append(message)
            socket.send_now(f"at once: {message!s}")
            return True

        socket.answer_at_once(SimpleNamespace(route_now=at_once))
        while True:  # what reaches the task: answered in order, after the one it has
            message = await socket.recv()
            await socket.send(f"in the task: {message!s}")

    harness.serve = serve
    async with station(harness) as ws:
        await ws.send("a")
        assert await ws.recv() == "at once: a"
        socket = harness.served[0]
        socket.pause_writing()  # the station stops reading what we send
        await ws.send("b")
        await ws.send("c")
        await asyncio.sleep(0.05)
        socket.resume_writing()
        assert [await ws.recv(), await ws.recv()] == ["in the task: b", "in the task: c"]
        await ws.send("d")  # the task waits again: answered at once
        assert await ws.recv() == "at once: d"
        await ws.send("task's")  # one the router leaves
        assert await ws.recv() == "in the task: task's"
        await ws.send("e")
        assert await ws.recv() == "at once: e"
    assert routed == ["a", "d", "e"]


async def test_a_frame_read_is_not_held_until_the_next_one(harness: Harness):
    # websockets' parser keeps the last frame it read as a variable of its generator
    payload = "x" * 900
    async with station(harness) as ws:
        await ws.send(payload)
        assert await ws.recv() == payload
        (served,) = harness.served
        held = [value for generator in _yielding_from(served.protocol.parser)
                for value in generator.gi_frame.f_locals.values() if isinstance(value, Frame)]
        assert [frame.opcode for frame in held] == [Opcode.TEXT]  # the variable is there
        assert held[0].data == b""  # its payload is not


def _yielding_from(generator: Any) -> Iterator[Any]:
    """A suspended generator and each it is suspended in (``yield from``)."""
    while generator is not None and generator.gi_frame is not None:
        yield generator
        generator = generator.gi_yieldfrom


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


async def test_sending_while_the_connection_closes_waits_for_the_close(harness: Harness):
    outcome: list[BaseException] = []

    async def closes_then_sends(socket: StationSocket) -> None:
        await socket.recv()
        closing = asyncio.ensure_future(socket.close(1000))
        await asyncio.sleep(0)  # our close frame is sent
        try:
            await socket.send("too late")
        except BaseException as error:
            outcome.append(error)
        await closing

    harness.serve = closes_then_sends
    async with station(harness) as ws:
        await ws.send("x")
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
    await asyncio.wait_for(_until(lambda: bool(outcome)), 5)
    assert isinstance(outcome[0], websockets.ConnectionClosedOK)


async def test_a_station_that_keeps_sending_after_its_close_is_cut_off_in_time(
        harness: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(station_socket, "CLOSE_TIMEOUT_S", 0.3)
    ended: list[float] = []

    async def reads(socket: StationSocket) -> None:  # nothing waits on the close but this
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await socket.recv()
        ended.append(asyncio.get_running_loop().time())

    harness.serve = reads
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.sockets.port)
    writer.write(HANDSHAKE)
    assert b"101" in await reader.readuntil(b"\r\n\r\n")
    writer.write(frame(Opcode.CLOSE, b"\x03\xe8"))  # 1000, and then it keeps talking
    began = asyncio.get_running_loop().time()
    with contextlib.suppress(ConnectionError):
        while not ended and asyncio.get_running_loop().time() - began < 10:
            writer.write(frame(Opcode.PING, b"hi"))
            await asyncio.sleep(0.05)
    # cut off by the close deadline, once (each ping put it off before, for ever)
    assert ended and ended[0] - began < 5
    writer.close()


async def test_a_station_that_breaks_the_protocol_before_its_handshake_is_answered(
        harness: Harness, caplog: pytest.LogCaptureFixture):
    harness.judging = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.sockets.port)
    writer.write(HANDSHAKE + b"\xff\xff\xff\xff")  # a frame with a reserved opcode
    await writer.drain()
    await asyncio.sleep(0.1)
    harness.judging.set()  # the judge answers after the protocol gave up on the station
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no 101: closed
    assert harness.served == []
    writer.close()
    await asyncio.wait_for(_until(lambda: not harness.sockets.sockets), 5)
    await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_closing_drops_a_connection_whose_handshake_is_being_judged(harness: Harness):
    harness.judging = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.sockets.port)
    writer.write(HANDSHAKE)
    await asyncio.wait_for(_until(lambda: bool(harness.sockets.sockets)), 5)
    closing = asyncio.ensure_future(harness.sockets.close(5))
    await asyncio.sleep(0.05)
    harness.judging.set()
    assert await closing
    with contextlib.suppress(ConnectionError):  # dropped: reset, or closed
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert harness.served == [] and not harness.sockets.sockets
    writer.close()


async def test_every_ping_has_its_own_payload(harness: Harness,
                                             monkeypatch: pytest.MonkeyPatch):
    payloads = iter([b"same", b"same", b"diff"])
    monkeypatch.setattr(station_socket, "_ping_payload", lambda: next(payloads))
    async with station(harness) as ws:
        await ws.send("x")
        await ws.recv()
        first = await harness.served[0].ping()
        second = await harness.served[0].ping()
        assert await asyncio.wait_for(first, 5) and await asyncio.wait_for(second, 5)


async def test_a_tls_handshake_that_never_comes_is_dropped_as_a_websocket_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(station_socket, "OPEN_TIMEOUT_S", 0.3)
    pki = Pki.create(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    harness = Harness()
    await harness.sockets.start("127.0.0.1", 0, context, 16)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.sockets.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no TLS hello sent: dropped
        writer.close()
    finally:
        await harness.sockets.close(5)
