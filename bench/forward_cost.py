"""What one forwarded frame costs drbridge in local-controller mode, against the same frame
answered by drbridge as a central system.

In-process and bounded, beside :mod:`bench.link_cost`: a station's MeterValues (or 2.0.1
TransactionEvent) goes through the forwarding link (``bridge.ocpp.upstream_link``, with a
real :class:`~bridge.upstream.controller.LocalController` over a SQLite file): read as in
central-system mode, queued for the station's worker, sent upstream under drbridge's id,
the operator's answer taken in by the upstream connection's frame reader and sent back to
the station under the station's id. The two websockets are stand-ins whose ``send``
returns at once; the operator's answer (``[3,<id>,{}]``, as ``bench.upstream_cs`` gives)
arrives on the next turn of a real event loop, so the tasks, futures and loop turns a
forwarded frame costs are counted, and the websockets library's framing and the socket
calls are not (two frames more per forwarded message than in central-system mode; see
``docs/benchmarks-notes.md``). Stations' listener does nothing (as ``bench.link_cost``'s).

CPU time (``time.process_time``) per frame, best of ``--repeat`` batches of ``--number``
frames sent one after the other, each once the previous one is answered. Prints a Markdown
table.

    python -m bench.forward_cost [--number 5000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from bench.link_cost import QuietListener, frames
from bridge.clock import utcnow
from bridge.config import load_config_text
from bridge.ocpp.server import SUBPROTOCOLS
from bridge.ocpp.upstream_link import FORWARDING_LINKS
from bridge.upstream.controller import LocalController

CONFIG = """\
ven: {vtn_url: "http://127.0.0.1:9/OpenADR2/Simple/2.0b", ven_name: bench}
ocpp: {host: 127.0.0.1, port: 9, upstream: {url: "ws://127.0.0.1:9"}}
site: {capacity_kw: 100}
storage: {path: bench.db}
web: {enabled: false}
"""
_CALL_ID = re.compile(r'\[\s*2\s*,\s*"([^"]*)"')
_REPLY_ID = re.compile(r'\[\s*3\s*,\s*"([^"]*)"')


class StationEnd:
    """The station's websocket as drbridge sees it: its sends resolve the waiting call."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[str] | None = None
        self.last = ""

    async def send(self, message: str) -> None:
        self.last = message
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(message)


class OperatorEnd:
    """The operator's websocket as drbridge sees it: each CALL answered with an empty
    CALLRESULT on the loop's next turn, handed to ``received`` as a frame read off it."""

    def __init__(self, received: Callable[[str], None]) -> None:
        self._received = received
        self._loop = asyncio.get_running_loop()

    async def send(self, message: str) -> None:
        found = _CALL_ID.match(message)
        if found is not None:
            self._loop.call_soon(self._received, f'[3,"{found.group(1)}",{{}}]')


def site(workdir: Path, subprotocol: str) -> LocalController:
    """Local-controller mode for the whole site, its store a SQLite file in ``workdir``."""
    config = load_config_text(CONFIG, workdir / "bench.yaml")
    db = sqlite_utils.Database(workdir / f"bench-{subprotocol}.db")
    controller = LocalController(config, db, utcnow, lambda _: None, lambda _: False,
                                 lambda _: None, 10.0)
    controller.listener = QuietListener()  # type: ignore[assignment]
    return controller


def forwarding(controller: LocalController, station_id: str, subprotocol: str,
               station: StationEnd) -> Any:
    """A station's forwarding link, its upstream link open to :class:`OperatorEnd`."""
    link = FORWARDING_LINKS[subprotocol](station_id, station,  # type: ignore[arg-type]
                                         controller.listener, 10.0, controller, None,
                                         subprotocol)
    upstream = link.upstream
    upstream._connection = OperatorEnd(upstream._received)
    upstream.connected.set()
    upstream.first_attempt_done.set()
    link._ready.set()
    controller.attach(link)
    return link


async def one_by_one(route: Callable[[str], Awaitable[None]], station: StationEnd, frame: str,
                     number: int) -> None:
    """``number`` frames from one station, each sent once the one before is answered."""
    loop = asyncio.get_running_loop()
    for _ in range(number):
        station.answered = loop.create_future()
        await route(frame)
        await station.answered


async def fleet(stations: list[tuple[StationEnd, Callable[[str], Awaitable[None]]]], frame: str,
                number: int) -> float:
    """CPU seconds for ``number`` frames in all from the stations at once."""
    each = max(1, number // len(stations))
    began = time.process_time()
    await asyncio.gather(*(one_by_one(route, end, frame, each) for end, route in stations))
    return time.process_time() - began


async def measure(number: int, repeat: int, stations: int) -> list[tuple[str, float, float]]:
    """(case, best µs per frame answered as a central system, best µs forwarded)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="drbridge-forward-cost-") as tmp:
        for case, (subprotocol, frame) in frames().items():
            controller = site(Path(tmp), subprotocol)
            central: list[tuple[StationEnd, Callable[[str], Awaitable[None]]]] = []
            forwarded: list[tuple[StationEnd, Callable[[str], Awaitable[None]]]] = []
            workers = []
            for n in range(stations):
                end = StationEnd()
                link = SUBPROTOCOLS[subprotocol](f"C{n}", end, QuietListener(), 10.0)
                central.append((end, link.route_message))
                end = StationEnd()
                forwarding_link = forwarding(controller, f"F{n}", subprotocol, end)
                forwarded.append((end, forwarding_link.route_message))
                workers.append(asyncio.create_task(forwarding_link._answer_in_order()))
            try:
                for kind in (central, forwarded):
                    await fleet(kind, frame, stations)  # schemas compiled
                    last = kind[0][0].last
                    if not last.startswith('[3,"42"'):  # timing a refusal would mislead
                        raise RuntimeError(f"{case}: not answered with a CALLRESULT: {last}")
                best = [float("inf"), float("inf")]
                for _ in range(repeat):  # interleaved: both see the same machine
                    for index, kind in enumerate((central, forwarded)):
                        best[index] = min(best[index], await fleet(kind, frame, number))
                if controller.stats.messages["to_operator", "forwarded"] < number:
                    raise RuntimeError(f"{case}: the frames were not forwarded")
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
            done = max(1, number // stations) * stations
            results.append((case, best[0] / done * 1e6, best[1] / done * 1e6))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5_000, help="frames per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best is shown")
    parser.add_argument("--stations", type=int, default=50,
                        help="stations sending at once, each its next frame once answered")
    args = parser.parse_args(argv)
    stations = max(1, min(args.stations, 1_000))
    results = asyncio.run(measure(min(args.number, 100_000), min(args.repeat, 50), stations))
    print(f"{stations} stations at once, CPU time per frame, best of {args.repeat} x"
          f" {args.number} frames ({datetime.now(UTC):%Y-%m-%d})\n")
    print("| frame | central system (µs) | forwarded (µs) | forwarding's own (µs) |")
    print("|---|---:|---:|---:|")
    for case, central, forwarded in results:
        print(f"| {case} | {central:.1f} | {forwarded:.1f} | {forwarded - central:.1f} |")


if __name__ == "__main__":
    main()
