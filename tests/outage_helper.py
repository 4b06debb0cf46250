"""A separate process for the outage-queue tests, so that they can kill it with SIGKILL.

``write DB STATION N``: queue a 1.6 session as a station sends it during an outage
(StartTransaction, N-2 MeterValues, StopTransaction), printing ``answered <seq>`` once
each message is committed, i.e. when drbridge would answer the station.
``replay DB STATION URL``: replay the station's queue to a CSMS at URL, printing
``acked <seq>`` after each answer is recorded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
import websockets

from bridge.upstream.message_ids import LegIds, Own
from bridge.upstream.outage import OutageQueue, UpstreamRefused, replay


def session_16(transaction_id: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """What a 1.6 station sends for one session; ``transaction_id`` as the station knows it."""
    at = "2025-06-01T12:00:00Z"
    messages: list[tuple[str, dict[str, Any]]] = [
        ("StartTransaction", {"connectorId": 1, "idTag": "ALLOWED", "meterStart": 0,
                              "timestamp": at})]
    for i in range(count - 2):
        messages.append(("MeterValues", {
            "connectorId": 1, "transactionId": transaction_id,
            "meterValue": [{"timestamp": at, "sampledValue": [
                {"value": str(100 * (i + 1)), "measurand": "Energy.Active.Import.Register"}]}]}))
    messages.append(("StopTransaction", {"transactionId": transaction_id,
                                         "meterStop": 100 * count, "timestamp": at}))
    return messages


class OcppCaller:
    """drbridge's end of a station's upstream link, reduced to what replay needs: one CALL
    at a time over a real websocket, its answer or its CALLERROR."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.ids = LegIds()

    async def __call__(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        wire_id = self.ids.own(action)
        await self.connection.send(json.dumps([2, wire_id, action, payload]))
        while True:
            frame = json.loads(await self.connection.recv())
            if frame[0] in (3, 4) and isinstance(self.ids.resolve(frame[1]), Own):
                break
        if frame[0] == 4:
            raise UpstreamRefused(frame[2], frame[3])
        return frame[2]


async def replay_to(queue: OutageQueue, station_id: str, url: str, subprotocol: str,
                    printing: bool = False) -> Any:
    async with websockets.connect(f"{url}/{station_id}", subprotocols=[subprotocol]) as ws:
        caller = OcppCaller(ws)

        async def send(action: str, payload: dict[str, Any]) -> dict[str, Any]:
            answer = await caller(action, payload)
            if printing:
                print(f"answered {action}", flush=True)
            return answer

        return await replay(queue, station_id, send)


def main() -> None:
    mode, path, station_id = sys.argv[1:4]
    queue = OutageQueue(sqlite_utils.Database(path))
    queue.db.enable_wal()
    if mode == "write":
        count = int(sys.argv[4])
        # the local id is known once StartTransaction is queued; the rest refer to it
        first = queue.enqueue(station_id, "1.6", "StartTransaction",
                              session_16(0, count)[0][1], datetime.now(UTC))
        print(f"answered {first.seq} local_tx {first.local_tx}", flush=True)
        for action, payload in session_16(int(first.local_tx or 0), count)[1:]:
            time.sleep(0.01)
            queued = queue.enqueue(station_id, "1.6", action, payload, datetime.now(UTC))
            print(f"answered {queued.seq}", flush=True)
        print("done", flush=True)
    elif mode == "replay":
        asyncio.run(replay_to(queue, station_id, sys.argv[4], "ocpp1.6", printing=True))
        print("done", flush=True)


if __name__ == "__main__":
    main()
