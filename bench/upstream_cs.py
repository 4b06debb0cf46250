"""A lean operator CSMS for the local-controller benchmark: OCPP 1.6J on raw websockets.

    python -m bench.upstream_cs --port 9200

It answers what the load generator's stations send (BootNotification, Heartbeat,
StatusNotification, Authorize, StartTransaction with its own transaction ids,
StopTransaction, MeterValues) and refuses the rest with a CALLERROR, doing as little as
an OCPP-J server can: one JSON decode per frame, answers from templates. So that a
benchmark through drbridge measures drbridge, not the CSMS behind it (the ``ocpp``
library's example central system, ``bench.ocpp_example_cs``, is the other CSMS the
benchmark runs: one written the usual way).

Prints ``ready`` on stdout once listening; runs until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.fd_limit import raise_fd_limit
from bridge.ocpp.listening import BACKLOG

_transaction_ids = itertools.count(1)
ACCEPTED = '{"idTagInfo":{"status":"Accepted"}}'


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def answer(frame: list) -> str:
    unique_id = json.dumps(frame[1])
    action = frame[2]
    if action in ("MeterValues", "StatusNotification", "StopTransaction",
                  "FirmwareStatusNotification", "DiagnosticsStatusNotification"):
        return f"[3,{unique_id},{{}}]"
    if action == "BootNotification":
        return f'[3,{unique_id},{{"currentTime":"{_now()}","interval":300,"status":"Accepted"}}]'
    if action == "Heartbeat":
        return f'[3,{unique_id},{{"currentTime":"{_now()}"}}]'
    if action == "Authorize":
        return f"[3,{unique_id},{ACCEPTED}]"
    if action == "StartTransaction":
        return (f'[3,{unique_id},{{"transactionId":{next(_transaction_ids)},'
                f'"idTagInfo":{{"status":"Accepted"}}}}]')
    return f'[4,{unique_id},"NotImplemented","",{{}}]'


async def station(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            if isinstance(frame, list) and len(frame) == 4 and frame[0] == 2:
                await connection.send(answer(frame))
    except ConnectionClosed:
        pass


async def main_async(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(station, host, port, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     compression=None, backlog=BACKLOG, ping_interval=None) as server:
        print("ready", flush=True)
        await stop.wait()
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_cs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(main_async(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
