"""The bridge's end of its edge workers (:class:`EdgeWorkers`), with real worker processes
and real websocket clients; what the bridge decides (admission, the verdict, serving a
station) is given by each test, so that it can be slow or refuse on cue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import websockets
from conftest import wait_until
from websockets.typing import Subprotocol

from bench.run import with_children
from bridge.ocpp import edge_workers
from bridge.ocpp.edge_workers import (
    EdgeWorkers,
    Handshake,
    RelayedConnection,
    Verdict,
    WorkerOptions,
)
from bridge.sim.vtn import free_port

OCPP16 = [Subprotocol("ocpp1.6")]
FLOOD = 20_000  # frames of 1 kB: far more than the sockets between station and bridge hold
IN_FLIGHT = FLOOD // 4
Judge = Callable[[Handshake], Awaitable[Verdict]]


class Bridge:
    """What the bridge decides, as the tests want it; what it was asked, kept."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.released: list[str] = []
        self.judged: list[str] = []
        self.served: list[tuple[str, RelayedConnection]] = []
        self.judge: Judge = self.accept
        self.serve_frames: Callable[[RelayedConnection], Awaitable[None]] = echo

    @staticmethod
    async def accept(handshake: Handshake) -> Verdict:
        return Verdict(0)

    def admit(self, host: str) -> bool:
        self.admitted.append(host)
        return True

    async def _judge(self, handshake: Handshake) -> Verdict:
        self.judged.append(handshake.path)
        return await self.judge(handshake)

    async def _serve(self, handshake: Handshake, connection: RelayedConnection) -> None:
        self.served.append((handshake.path, connection))
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.serve_frames(connection)

    def workers(self, count: int, port: int = 0) -> EdgeWorkers:
        return EdgeWorkers(count, WorkerOptions("127.0.0.1", port, ["ocpp1.6"], 65536),
                           admit=self.admit, released=self.released.append,
                           judge=self._judge, serve=self._serve)


async def echo(connection: RelayedConnection) -> None:
    while True:
        await connection.send(str(await connection.recv()))


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    yield Bridge()


@contextlib.asynccontextmanager
async def running(edge: EdgeWorkers) -> AsyncIterator[EdgeWorkers]:
    await edge.start()
    try:
        yield edge
    finally:
        await edge.close()


def url(edge: EdgeWorkers, station: str) -> str:
    return f"ws://127.0.0.1:{edge.port}/{station}"


async def _connect(address: str) -> websockets.ClientConnection:
    return await websockets.connect(address, subprotocols=OCPP16, open_timeout=10)


async def test_a_handshake_judged_across_a_worker_restart_never_opens_another_socket(
        bridge: Bridge):
    good_judged, let_good_go = asyncio.Event(), asyncio.Event()

    async def judge(handshake: Handshake) -> Verdict:
        if handshake.path == "/GOOD":
            good_judged.set()
        await let_good_go.wait()  # GOOD: still judging when its worker dies
        if handshake.path == "/GOOD":
            return Verdict(0)
        await asyncio.sleep(0.3)  # BAD's own verdict comes after GOOD's acceptance
        return Verdict(401)

    bridge.judge = judge
    async with running(bridge.workers(1)) as edge:
        good = asyncio.create_task(_connect(url(edge, "GOOD")))
        await good_judged.wait()
        os.kill(edge.pids[0], signal.SIGKILL)
        with pytest.raises((websockets.InvalidHandshake, OSError, EOFError)):
            await good
        await wait_until(lambda: len(edge.pids) == 1, timeout=20, what="the worker restarted")
        # the new run numbers its sockets afresh: BAD's is the number GOOD's had
        bad = asyncio.create_task(_connect(url(edge, "BAD")))
        await wait_until(lambda: "/BAD" in bridge.judged, what="BAD judged")
        let_good_go.set()  # GOOD's acceptance arrives now: it must not reach BAD's socket
        with pytest.raises(websockets.InvalidStatus) as refused:
            await bad
        assert refused.value.response.status_code == 401
        assert bridge.served == []


async def test_a_socket_closed_while_its_handshake_is_judged_gives_its_slot_back(
        bridge: Bridge):
    judged, let_go = asyncio.Event(), asyncio.Event()

    async def judge(handshake: Handshake) -> Verdict:
        judged.set()
        await let_go.wait()
        return Verdict(0)

    bridge.judge = judge
    async with running(bridge.workers(1)) as edge:
        client = asyncio.create_task(_connect(url(edge, "GONE")))
        await judged.wait()
        client.cancel()  # the station gives up while the bridge judges
        with contextlib.suppress(asyncio.CancelledError):
            await client
        await wait_until(lambda: bridge.released == ["127.0.0.1"], what="the slot released")
        let_go.set()
        await asyncio.sleep(0.2)
        assert bridge.released == ["127.0.0.1"] and bridge.served == []
        # the bridge keeps nothing of it
        [worker] = edge._workers
        assert worker.lifetime is not None
        assert not (worker.lifetime.hosts or worker.lifetime.admitted
                    or worker.lifetime.judging or worker.lifetime.accepted)


async def test_a_second_bridge_on_the_same_port_fails_to_start(bridge: Bridge):
    async with running(bridge.workers(1)) as edge:
        with pytest.raises(OSError):
            await Bridge().workers(1, port=edge.port).start()


async def test_a_station_that_floods_is_read_no_faster_than_the_bridge_reads_it(
        bridge: Bridge):
    let_read = asyncio.Event()
    most_held = 0

    async def slow(connection: RelayedConnection) -> None:
        nonlocal most_held
        await let_read.wait()
        for n in range(FLOOD):
            most_held = max(most_held, len(connection._inbox))
            assert await connection.recv() == json.dumps([n, "x" * 1000])
        await connection.send("all read")

    bridge.serve_frames = slow
    async with running(bridge.workers(1)) as edge:
        async with websockets.connect(url(edge, "FLOOD"), subprotocols=OCPP16) as ws:
            sending = asyncio.create_task(_send_all(ws, FLOOD))
            await wait_until(lambda: bool(bridge.served), what="served")
            connection = bridge.served[0][1]
            # the bridge asked for a pause: what it holds unread stops growing
            await asyncio.sleep(1.0)
            held = len(connection._inbox)
            await asyncio.sleep(0.5)
            # PAUSE_AT, and those the worker had relayed before the pause reached it (up to
            # a socket read's worth each loop turn: how many depends on the machine's load)
            assert len(connection._inbox) == held < IN_FLIGHT
            let_read.set()
            assert await asyncio.wait_for(ws.recv(), 30) == "all read"  # none lost
            await sending
    assert most_held < IN_FLIGHT


async def _send_all(ws: websockets.ClientConnection, count: int) -> None:
    for n in range(count):
        await ws.send(json.dumps([n, "x" * 1000]))
        # This station shares the bridge's event loop; a real one does not hold it while
        # it writes megabytes into its socket.
        await asyncio.sleep(0)


async def test_a_worker_that_fails_to_start_again_is_retried_until_it_does(
        bridge: Bridge, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(edge_workers, "RESTART_AFTER_S", 0.1)
    async with running(bridge.workers(1)) as edge:
        [worker] = edge._workers
        first_run = worker.lifetime
        # its next starts fail: no interpreter to run it
        python = sys.executable
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
        os.kill(edge.pids[0], signal.SIGKILL)
        await wait_until(lambda: edge.failed_starts >= 2, timeout=20, what="failed starts")
        assert edge.pids == [] and edge.restarts == 1
        monkeypatch.setattr(sys, "executable", python)
        await wait_until(lambda: worker.lifetime is not first_run, timeout=20,
                         what="the worker back, accepting")
        async with websockets.connect(url(edge, "BACK"), subprotocols=OCPP16) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"


def test_workers_exit_when_the_bridge_is_killed(tmp_path: Path):
    port, web = free_port(), free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"ven: {{vtn_url: 'http://127.0.0.1:{free_port()}/OpenADR2/Simple/2.0b',"
        " ven_name: site}\n"
        f"ocpp: {{host: 127.0.0.1, port: {port}, workers: 2}}\n"
        "site: {capacity_kw: 22}\n"
        f"storage: {{path: {tmp_path / 'bridge.db'}}}\n"
        f"web: {{port: {web}}}\n")
    bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                               str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = with_children(bridge.pid)[1:]
        assert len(workers) == 2, "the bridge did not start its two workers"
        bridge.kill()
        bridge.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


def _alive(pid: int) -> bool:
    """Running (a zombie whose parent is gone is reaped by init: not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
