"""The reference central system: OCPP 1.6J the way the ``ocpp`` library documents it.

    python -m bench.ocpp_example_cs --host 127.0.0.1 --port 9100
    python -m bench.ocpp_example_cs --port 9100 --sync-validation --backlog 4096

A ``ocpp.v16.ChargePoint`` subclass with one ``@on`` handler per action, served by
``websockets.serve(on_connect, host, port, subprotocols=["ocpp1.6"])`` with every other
setting at the library defaults (schema validation on, in the library's default manner;
websockets' default backlog, compression and keepalive). It is the baseline drbridge's own
OCPP edge is compared against: what a central system written from the documentation costs.

What it validates, as the library does it: every request from a station against the
OCPP 1.6 JSON schema, and every answer it sends against the answer's schema, with
``jsonschema``'s ``Draft4Validator`` and no format checker (so a ``date-time`` is only
checked to be a string). By default (``ocpp.messages.ASYNC_VALIDATION``) each validation
runs in the event loop's default thread pool. Two switches make the fairest comparison
with drbridge, which validates on the event loop and listens with a backlog of 4,096:
``--sync-validation`` validates on the event loop, ``--backlog`` sets the listen backlog.

One deliberate difference from the documented example: logging is at WARNING, not INFO. At
INFO the library logs every frame received and sent, which would only slow it further and
make the comparison about logging rather than about OCPP handling.

Prints ``ready`` on stdout once listening; runs until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import ocpp.messages
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as cp
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection

log = logging.getLogger("ocpp_example_cs")

_transaction_ids = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ChargePoint(cp):
    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **kwargs: Any) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=_now(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str,
                               **kwargs: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                             timestamp: str, **kwargs: Any) -> call_result.StartTransaction:
        return call_result.StartTransaction(
            transaction_id=next(_transaction_ids),
            id_tag_info={"status": AuthorizationStatus.accepted},
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                            **kwargs: Any) -> call_result.StopTransaction:
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]],
                        **kwargs: Any) -> call_result.MeterValues:
        return call_result.MeterValues()


async def on_connect(websocket: ServerConnection) -> None:
    """For every station that connects: check the subprotocol, then serve it until it leaves."""
    assert websocket.request is not None
    requested = websocket.request.headers.get("Sec-WebSocket-Protocol")
    if requested is None:
        log.warning("%s asked for no subprotocol; closing", websocket.request.path)
        await websocket.close()
        return
    if not websocket.subprotocol:
        log.warning("%s asked for %s, not ocpp1.6; closing", websocket.request.path, requested)
        await websocket.close()
        return
    charge_point_id = websocket.request.path.strip("/")
    charge_point = ChargePoint(charge_point_id, websocket)
    try:
        await charge_point.start()
    except websockets.ConnectionClosed:
        pass  # the station left


async def serve(host: str, port: int, backlog: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    options = {"backlog": backlog} if backlog is not None else {}
    async with websockets.serve(on_connect, host, port, subprotocols=["ocpp1.6"],
                                **options) as server:
        print("ready", flush=True)
        await stop.wait()
        server.close()
        try:
            async with asyncio.timeout(10):
                await server.wait_closed()
        except TimeoutError:
            log.warning("some connections did not close in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ocpp_example_cs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--sync-validation", action="store_true",
                        help="validate on the event loop (ocpp.messages.ASYNC_VALIDATION = False)")
    parser.add_argument("--backlog", type=int, default=None,
                        help="listen backlog (default: websockets' default, asyncio's 100)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.sync_validation:
        ocpp.messages.ASYNC_VALIDATION = False
    asyncio.run(serve(args.host, args.port, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
