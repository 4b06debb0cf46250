"""How long a plan holds the event loop: loop lag while the bridge's planner plans a fleet.

In-process and bounded, no network: a :class:`~bridge.app.Bridge` is built from a config
(not run: no OCPP server, no VEN), its dispatcher is told of ``--stations`` stations whose
links never answer (so their workers sit idle, as stations waiting for a reply), each
with a charging session and a meter reading, as the OCPP edge would report them. Then the
bridge's own planner makes ``--plans`` plans, one after the other (the first, which
starts from no state, is a warm-up and not counted), while a task measures the loop's lag
as ``/metrics`` does (:func:`bridge.timings.sample_loop_lag`), here every
``--interval`` seconds: how much later than asked it woke up. Any stall of the loop, by
the plan or by anything else the loop runs meanwhile, shows up in it. With ``--event``, a
SIMPLE level 1 event (half the capacity: sessions pause and take turns) is in force, as
in ``bench.plan_cost``. The collector is
tuned as ``drbridge run`` tunes it (:mod:`bridge.gc_tuning`), before the fleet is built.

Prints, per plan, its wall time and the lag samples taken during it (count, median, p99,
max), and the lag over all plans; with ``--json``, also the raw figures. Runs on whichever
planner the checkout has (on the loop: ``replan_now``; in its thread: ``replan``), so the
same script compares two checkouts (``PYTHONPATH=<checkout> python -m bench.plan_lag``).
From 2,000 stations on, a planner with a planning process makes its plans there once the
process runs (the first plan, while it starts, in the thread).

    python -m bench.plan_lag [--stations 10000] [--plans 4] [--interval 0.01] [--event]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.plan_cost import simple_event
from bridge.app import Bridge
from bridge.config import load_config
from bridge.gc_tuning import tune_for_many_connections
from bridge.store import StoredEvent
from bridge.timings import LAG_BUCKETS_S, Histogram, sample_loop_lag

MAX_STATIONS = 20_000  # keeps a run bounded in time and memory
MAX_PLANS = 10
KW_PER_STATION = 7.0


class RecordedHistogram(Histogram):
    """The /metrics histogram, keeping each sample too (for percentiles and the max)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        super().__init__(bounds)
        self.samples: list[float] = []

    def observe(self, value: float) -> None:
        super().observe(value)
        self.samples.append(value)


class SilentLink:
    """A station's link that never answers: its dispatcher worker waits, costing nothing."""

    def __init__(self, station_id: str) -> None:
        self.id = station_id
        self.registered = asyncio.Event()
        self.registered.set()
        self._never = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        async def waits_for_ever(*_: Any, **__: Any) -> Any:
            await self._never.wait()
        return waits_for_ever


def config_text(stations: int) -> str:
    return textwrap.dedent(f"""\
        ven: {{vtn_url: "http://127.0.0.1:1/OpenADR2/Simple/2.0b", ven_name: bench-site}}
        ocpp: {{host: 127.0.0.1, port: 1}}
        site: {{capacity_kw: {stations * KW_PER_STATION}}}
        policy: default
        storage: {{path: bridge.db}}
        web: {{enabled: false}}
        """)


def fleet(bridge: Bridge, count: int) -> None:
    now = datetime.now(UTC)
    events = bridge.station_events
    for i in range(count):
        station_id = f"CP{i:05d}"
        bridge.dispatcher.connected(bridge.config.station_info(station_id),
                                    SilentLink(station_id))  # type: ignore[arg-type]
        events.transaction_started(station_id, 1, "BENCH", 0, now)
        events.meter_values(station_id, 1, [{"timestamp": now.isoformat(), "sampledValue": [
            {"measurand": "Power.Active.Import", "unit": "W", "value": "7000"}]}])
    bridge.store.flush()


async def plan_once(bridge: Bridge) -> None:
    planner: Any = bridge.planner
    if hasattr(planner, "replan"):
        await planner.replan()
    else:
        planner.replan_now()  # the planner of a checkout that plans on the loop


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples) or [0.0]
    return {"samples": len(samples), "median_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
            "max_ms": ordered[-1] * 1000}


async def measure(stations: int, plans: int, interval: float,
                  event: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "site.yaml"
        path.write_text(config_text(stations))
        bridge = Bridge(load_config(path))
        try:
            fleet(bridge, stations)
            if event:
                dr = simple_event(1).model_copy(update={"start": datetime.now(UTC)})
                bridge.dr.events[dr.event_id] = StoredEvent(dr, "optIn", "bench")
            await asyncio.sleep(0)  # the workers start, and wait on their links
            await plan_once(bridge)  # warm-up: the first plan starts from no state
            lag = RecordedHistogram(LAG_BUCKETS_S)
            sampler = asyncio.create_task(sample_loop_lag(lag, interval))
            await asyncio.sleep(10 * interval)  # the sampler's own rhythm first
            results = []
            for _ in range(plans):
                first = len(lag.samples)
                began = time.perf_counter()
                await plan_once(bridge)
                wall = time.perf_counter() - began
                await asyncio.sleep(2 * interval)  # the sample a stall delayed lands
                results.append({"wall_s": wall, **summary(lag.samples[first:])})
                await asyncio.sleep(5 * interval)
            sampler.cancel()
            return {"stations": stations, "event": event, "interval_s": interval,
                    "plans": results,
                    "all": summary(lag.samples), "lag_sum_s": lag.total}
        finally:
            await bridge.dispatcher.close()
            close = getattr(bridge.planner, "close", None)
            if close is not None:
                closed = close()
                if asyncio.iscoroutine(closed):  # the planner with a planning process
                    await closed
            bridge.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--plans", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between lag samples (/metrics samples every 0.1)")
    parser.add_argument("--event", action="store_true", help="a SIMPLE level 1 event in force")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    stations = min(max(args.stations, 1), MAX_STATIONS)
    plans = min(max(args.plans, 1), MAX_PLANS)
    interval = min(max(args.interval, 0.001), 1.0)
    tune_for_many_connections()  # as drbridge run does at start
    result = asyncio.run(measure(stations, plans, interval, args.event))
    if args.json:
        print(json.dumps(result))
        return
    during = ", a SIMPLE level 1 event in force" if args.event else ""
    print(f"Loop lag while a plan for {stations:,} stations runs{during}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}; "
          f"a lag sample every {interval * 1000:g} ms\n")
    print("| plan | wall (s) | samples | lag median (ms) | lag p99 (ms) | lag max (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, plan in enumerate(result["plans"], 1):
        print(f"| {n} | {plan['wall_s']:.2f} | {plan['samples']} | {plan['median_ms']:.1f} | "
              f"{plan['p99_ms']:.1f} | {plan['max_ms']:.1f} |")


if __name__ == "__main__":
    main()
