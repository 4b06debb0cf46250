"""What one frame costs the OCPP edge: a station's MeterValues through the link's routing.

In-process and bounded: one link per protocol version (the classes ``bridge.ocpp.server``
serves each subprotocol with), a listener that does nothing and a connection whose
``send`` returns at once, so what is timed is the link alone: the JSON decode, the
schema validation, the handler and the encoded answer. MeterValues (TransactionEvent in
2.0.1) from thousands of stations are the bridge's hot path. Prints a Markdown table.

    python -m bench.link_cost [--number 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bridge.ocpp.server import SUBPROTOCOLS

AT = "2026-11-25T12:00:00.000Z"


class QuietConnection:
    """A websocket whose sends return at once (the answers are counted, not sent)."""

    def __init__(self) -> None:
        self.last = ""

    async def send(self, message: str) -> None:
        self.last = message

    def send_now(self, message: str) -> bool:
        self.last = message
        return True


class QuietListener:
    """Hears everything and does nothing; knows the one open transaction."""

    def station_booted(self, station_id: str, info: dict[str, str]) -> None:
        pass

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None:
        pass

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime,
                            station_tx: str | None = None) -> int:
        return 1

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None:
        pass

    def meter_values(self, station_id: str, connector_id: int,
                     meter_values: list[dict[str, Any]]) -> None:
        pass

    def transaction_of(self, station_id: str, station_tx: str,
                       connector_id: int | None) -> tuple[int, int] | None:
        return 1, 1

    def station_transaction(self, station_id: str, transaction_id: int) -> str | None:
        return "tx-1"

    def call_sent(self, station_id: str, action: str) -> None:
        pass

    def request_repaired(self, station_id: str, action: str, repairs: Sequence[Any]) -> None:
        pass

    def voltage_observed(self, station_id: str, observation: Any) -> None:
        pass

    def external_limit(self, station_id: str, limit: Any) -> None:
        pass


def _sampled_16(measurand: str, unit: str, value: str, phase: str | None = None) -> dict[str, str]:
    sample = {"context": "Sample.Periodic", "measurand": measurand, "unit": unit,
              "value": value}
    if phase:
        sample["phase"] = phase
    return sample


def _sampled_201(measurand: str, unit: str, value: float,
                 phase: str | None = None) -> dict[str, Any]:
    sample: dict[str, Any] = {"context": "Sample.Periodic", "measurand": measurand,
                              "unitOfMeasure": {"unit": unit}, "value": value}
    if phase:
        sample["phase"] = phase
    return sample


def frames() -> dict[str, tuple[str, str]]:
    """Case name -> (subprotocol, frame): what the benchmark's stations send (as
    ``bench.loadgen``: power, energy and the current of each phase)."""
    samples_16 = [_sampled_16("Power.Active.Import", "W", "11040"),
                  _sampled_16("Energy.Active.Import.Register", "Wh", "1234.5"),
                  *(_sampled_16("Current.Import", "A", "16.0", p) for p in ("L1", "L2", "L3"))]
    samples_201 = [_sampled_201("Power.Active.Import", "W", 11040),
                   _sampled_201("Energy.Active.Import.Register", "Wh", 1234.5),
                   *(_sampled_201("Current.Import", "A", 16.0, p) for p in ("L1", "L2", "L3"))]
    meter_16 = {"connectorId": 1, "transactionId": 1,
                "meterValue": [{"timestamp": AT, "sampledValue": samples_16}]}
    meter_201 = {"evseId": 1, "meterValue": [{"timestamp": AT, "sampledValue": samples_201}]}
    event_201 = {"eventType": "Updated", "timestamp": AT, "triggerReason": "MeterValuePeriodic",
                 "seqNo": 2, "transactionInfo": {"transactionId": "tx-1"},
                 "meterValue": [{"timestamp": AT, "sampledValue": samples_201}]}

    def call(action: str, payload: dict[str, Any]) -> str:
        return json.dumps([2, "42", action, payload], separators=(",", ":"))

    return {
        "1.6 MeterValues": ("ocpp1.6", call("MeterValues", meter_16)),
        "2.0.1 MeterValues": ("ocpp2.0.1", call("MeterValues", meter_201)),
        "2.0.1 TransactionEvent (Updated)": ("ocpp2.0.1", call("TransactionEvent", event_201)),
    }


def _run_through(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (its sends return at once) without a loop turn."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("the link waited on something: the benchmark would time the loop")


def _route(route: Callable[[str], Coroutine[Any, Any, None]], frame: str) -> None:
    _run_through(route(frame))


async def measure(number: int, repeat: int) -> list[tuple[str, float, float]]:
    """(case, best µs per frame through route_message, the same through route_now)."""
    results = []
    for case, (subprotocol, frame) in frames().items():
        connection = QuietConnection()
        link = SUBPROTOCOLS[subprotocol]("BENCH", connection, QuietListener(), 10.0)
        route = link.route_message
        _route(route, frame)  # the schema compiled, the transaction known
        if not connection.last.startswith("[3,"):  # timing a refusal would mislead
            raise RuntimeError(f"{case}: not answered with a CALLRESULT: {connection.last}")
        # CPU time, not wall time: on a shared machine, others' load does not count
        best = min(timeit.repeat(partial(_route, route, frame), timer=time.process_time,
                                 number=number, repeat=repeat))
        best_now = min(timeit.repeat(partial(link.route_now, frame), timer=time.process_time,
                                     number=number, repeat=repeat))
        results.append((case, best / number * 1e6, best_now / number * 1e6))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="frames per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best is shown")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(min(args.number, 200_000), min(args.repeat, 50)))
    print(f"A frame through the link, CPU time, best of {args.repeat} x {args.number} frames "
          f"({datetime.now(UTC):%Y-%m-%d}); route_now is the usual path (in the socket's "
          f"callback), route_message the link task's\n")
    print("| frame | route_message (µs) | route_now (µs) |")
    print("|---|---:|---:|")
    for case, micros, micros_now in results:
        print(f"| {case} | {micros:.2f} | {micros_now:.2f} |")


if __name__ == "__main__":
    main()
