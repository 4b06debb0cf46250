"""The outage queue: kept before answered, replayed in order and once, ids mapped, kill-safe."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlite_utils
from outage_helper import replay_to, session_16

from bridge.sim.csms import UpstreamCsms
from bridge.upstream.outage import LOCAL_TX_BASE, OutageQueue

HELPER = Path(__file__).with_name("outage_helper.py")
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def csms() -> AsyncIterator[UpstreamCsms]:
    server = UpstreamCsms(id_tags=["ALLOWED"])
    await server.start()
    yield server
    await server.stop()


def open_queue(path: Path) -> OutageQueue:
    db = sqlite_utils.Database(path)
    db.enable_wal()
    return OutageQueue(db)


def queue_session(queue: OutageQueue, station_id: str, count: int) -> int:
    start = queue.enqueue(station_id, "1.6", *session_16(0, count)[0], NOW)
    assert start.local_tx is not None
    for action, payload in session_16(start.local_tx, count)[1:]:
        queue.enqueue(station_id, "1.6", action, payload, NOW)
    return start.local_tx


def test_local_transaction_ids_are_far_from_a_csms_and_never_reused(tmp_path):
    queue = open_queue(tmp_path / "bridge.db")
    first = queue_session(queue, "CP1", 3)
    second = queue_session(queue, "CP2", 3)
    assert first == LOCAL_TX_BASE and second == LOCAL_TX_BASE + 1
    again = open_queue(tmp_path / "bridge.db")  # a restart continues the count
    assert queue_session(again, "CP1", 3) == LOCAL_TX_BASE + 2
    assert again.lengths() == {"CP1": 6, "CP2": 3}


def test_enqueue_leaves_the_databases_sync_setting_as_it_found_it(tmp_path):
    queue = open_queue(tmp_path / "bridge.db")
    queue.db.execute("PRAGMA synchronous=NORMAL")
    queue_session(queue, "CP1", 3)
    assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 1


async def test_replay_maps_the_local_transaction_id_to_the_operators(tmp_path, csms):
    queue = open_queue(tmp_path / "bridge.db")
    local_tx = queue_session(queue, "CP1", 5)
    result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert result.done and result.delivered == 5 and result.resent == 0
    calls = csms.calls(station_id="CP1")
    assert [c.action for c in calls] == ["StartTransaction", *["MeterValues"] * 3,
                                         "StopTransaction"]
    assert csms.transactions == {5000: ("CP1", 1, "ALLOWED")}
    assert {c.payload["transactionId"] for c in calls[1:]} == {5000}
    assert queue.upstream_tx("CP1", local_tx) == 5000
    assert queue.station_tx("CP1", 5000) == local_tx  # RemoteStop(5000) reaches the station
    assert queue.upstream_tx("CP1", 42) == 42  # a transaction started online: unchanged
    assert queue.length("CP1") == 0
    again = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert again.done and again.delivered == 0
    assert len(csms.calls(station_id="CP1")) == 5


async def test_stations_replay_independently(tmp_path, csms):
    queue = open_queue(tmp_path / "bridge.db")
    queue_session(queue, "CP1", 3)
    queue_session(queue, "CP2", 3)
    await asyncio.gather(replay_to(queue, "CP1", csms.url, "ocpp1.6"),
                         replay_to(queue, "CP2", csms.url, "ocpp1.6"))
    for station_id in ("CP1", "CP2"):
        calls = csms.calls(station_id=station_id)
        assert [c.action for c in calls] == ["StartTransaction", "MeterValues",
                                             "StopTransaction"]
        tx = calls[1].payload["transactionId"]
        assert csms.transactions[tx][0] == station_id
        assert calls[2].payload["transactionId"] == tx


def start_helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HELPER), *args], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def read_lines(process: subprocess.Popen[str], count: int, timeout: float = 60) -> list[str]:
    """The helper's first ``count`` lines, read without blocking the event loop."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while len(lines) < count:
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, f"the helper ended early after {lines}"
            lines.append(line.strip())
    return lines


def kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


async def test_kill_9_mid_outage_then_every_message_is_replayed_exactly_once(tmp_path, csms):
    path = tmp_path / "bridge.db"
    open_queue(path)  # the tables exist before the helper writes
    helper = start_helper("write", str(path), "CP1", "400")
    answered = await read_lines(helper, 60)  # killed while the session goes on
    kill(helper)
    answered_seqs = {int(line.split()[1]) for line in answered}

    queue = open_queue(path)  # the restarted bridge
    assert queue.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = list(queue.db.execute("SELECT seq, action, state FROM upstream_queue ORDER BY seq"))
    seqs = [seq for seq, _, _ in rows]
    assert answered_seqs <= set(seqs), "a message the station was answered for is lost"
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < 400
    assert {state for _, _, state in rows} == {"queued"}

    result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert result.done and result.delivered == len(seqs) and result.resent == 0
    calls = csms.calls(station_id="CP1")
    assert len(calls) == len(seqs)
    assert calls[0].action == "StartTransaction"
    energies = [int(c.payload["meterValue"][0]["sampledValue"][0]["value"]) for c in calls[1:]]
    assert energies == [100 * (i + 1) for i in range(len(seqs) - 1)], "order or count off"
    assert {c.payload["transactionId"] for c in calls[1:]} == {5000}

    restarted = open_queue(path)  # and once more: nothing is sent twice
    assert (await replay_to(restarted, "CP1", csms.url, "ocpp1.6")).delivered == 0
    assert len(csms.calls(station_id="CP1")) == len(seqs)


async def test_kill_9_during_replay_resends_only_the_message_in_flight(tmp_path, csms):
    path = tmp_path / "bridge.db"
    queue_session(open_queue(path), "CP1", 6)
    csms.hold("MeterValues")  # the operator is slow to answer the first meter values
    helper = start_helper("replay", str(path), "CP1", csms.url)
    try:
        await csms.wait_for("MeterValues", station_id="CP1", timeout=60)
    finally:
        kill(helper)
    csms.release("MeterValues")

    queue = open_queue(path)
    result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert result.done and result.delivered == 5 and result.resent == 1
    actions = [c.action for c in csms.calls(station_id="CP1")]
    # StartTransaction was answered and recorded before the kill: not sent again. The
    # first MeterValues was in flight: the operator sees it twice (at-least-once).
    assert actions == ["StartTransaction", "MeterValues", "MeterValues", "MeterValues",
                       "MeterValues", "MeterValues", "StopTransaction"]
    first, repeat = csms.calls("MeterValues", "CP1")[:2]
    assert first.payload == repeat.payload
    rows = {r["seq"]: r for r in queue.db["upstream_queue"].rows}
    assert rows[2]["attempts"] == 2 and all(r["attempts"] == 1 for s, r in rows.items() if s != 2)
    assert csms.calls("StopTransaction", "CP1")[0].payload["transactionId"] == 5000


async def test_a_message_the_operator_keeps_refusing_is_set_aside(tmp_path, csms):
    queue = open_queue(tmp_path / "bridge.db")
    bad = queue.enqueue("CP1", "1.6", "StatusNotification",
                        {"connectorId": 1, "status": "Charging"}, NOW)  # no errorCode
    queue_session(queue, "CP1", 3)
    for _ in range(2):
        result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
        assert not result.done and result.delivered == 0  # the rest waits behind it
    result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert result.done and result.refused == 1 and result.delivered == 3
    row = queue.row(bad.seq)
    assert row is not None and row["state"] == "refused" and row["refusals"] == 2
    assert json.loads(row["answer"])["refused"].startswith("ProtocolError")
    assert len(csms.calls("StatusNotification", "CP1")) == 3


async def test_messages_of_a_refused_start_are_set_aside_with_it(tmp_path, csms):
    queue = open_queue(tmp_path / "bridge.db")
    start = queue.enqueue("CP1", "1.6", "StartTransaction",
                          {"connectorId": 1, "idTag": "ALLOWED", "timestamp": "x"}, NOW)
    assert start.local_tx is not None
    stop = queue.enqueue("CP1", "1.6", "StopTransaction",
                         {"transactionId": start.local_tx, "meterStop": 5,
                          "timestamp": "2025-06-01T12:00:00Z"}, NOW)
    for _ in range(3):
        result = await replay_to(queue, "CP1", csms.url, "ocpp1.6")
    assert result.done and result.refused == 2
    assert queue.row(stop.seq)["state"] == "refused"  # type: ignore[index]
    assert csms.calls("StopTransaction") == []
    assert queue.upstream_tx("CP1", start.local_tx) is None


async def test_201_transaction_events_replay_in_order(tmp_path, csms):
    queue = open_queue(tmp_path / "bridge.db")
    for seq_no, event in enumerate(("Started", "Updated", "Updated", "Ended")):
        payload = {"eventType": event, "timestamp": "2025-06-01T12:00:00Z",
                   "triggerReason": "MeterValuePeriodic", "seqNo": seq_no,
                   "transactionInfo": {"transactionId": "EV1-tx1"}}
        if event == "Started":
            payload["idToken"] = {"idToken": "ALLOWED", "type": "ISO14443"}
        queue.enqueue("EV1", "2.0.1", "TransactionEvent", payload, NOW)
    result = await replay_to(queue, "EV1", csms.url, "ocpp2.0.1")
    assert result.done and result.delivered == 4
    events = csms.calls("TransactionEvent", "EV1")
    assert [e.payload["seqNo"] for e in events] == [0, 1, 2, 3]
    assert result.answers is not None
    assert result.answers[0][1] == {"idTokenInfo": {"status": "Accepted"}}
