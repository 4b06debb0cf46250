"""What a plan costs the event loop around the policy: its inputs taken, the schedules
handed to the dispatcher, the plan stored.

In-process and bounded, no network, built as :mod:`bench.plan_lag` builds its bridge
(stations whose links never answer, each with a session and a meter reading). Two plans
are made, without and with a SIMPLE level 1 event in force (so every station's share
differs between them), and then, ``--runs`` times each, alternately: the planner's inputs
taken (``Planner._inputs``), each plan handed to the dispatcher (``Dispatcher.set_desired``:
every station's schedule changed), and each stored as the planner stores a changed plan
(``Planner._store_changed`` once the planning thread encoded it, or the checkout's
calls that encode and store it on the loop). Prints the median
and range of each part's CPU time on the calling thread (``time.thread_time``: what
other processes on a shared machine do does not count, their cache effects do).

    python -m bench.plan_apply [--stations 10000] [--runs 5]

Compares two checkouts as ``PYTHONPATH=<checkout> python -m bench.plan_apply``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.plan_cost import simple_event
from bench.plan_lag import config_text, fleet
from bridge.app import Bridge
from bridge.config import load_config
from bridge.gc_tuning import tune_for_many_connections
from bridge.store import StoredEvent

MAX_STATIONS = 20_000
MAX_RUNS = 20


def _timed(part: Callable[[], Any]) -> float:
    began = time.thread_time()
    part()
    return time.thread_time() - began


def _store(bridge: Bridge, plan: Any) -> Callable[[], Any]:
    """Storing a changed plan as the checkout's planner does it on the loop (where the
    planning thread encodes it, that part is not timed)."""
    planner: Any = bridge.planner
    if hasattr(planner, "_store_changed"):
        from bridge.store import encode_plan  # type: ignore[attr-defined]

        encoded = encode_plan(plan.made_at, plan.site, plan.stations, plan.state)
        return lambda: planner._store_changed(encoded)

    def store() -> None:  # the planner before ``_store_changed``
        bridge.store.save_plan(plan.made_at, plan.site, plan.stations)
        if plan.state is not None:
            bridge.dr.prune_baselines()
            bridge.store.save_plan_state(plan.state, bridge.dr.baselines)
    return store


async def measure(stations: int, runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "site.yaml"
        path.write_text(config_text(stations))
        bridge = Bridge(load_config(path))
        planner: Any = bridge.planner
        try:
            fleet(bridge, stations)
            await asyncio.sleep(0)
            plans = []
            for event in (False, True):
                if event:
                    dr = simple_event(1).model_copy(update={"start": datetime.now(UTC)})
                    bridge.dr.events[dr.event_id] = StoredEvent(dr, "optIn", "bench")
                inputs = planner._inputs(datetime.now(UTC))
                made = inputs.plan()
                plans.append(made[0] if isinstance(made, tuple) else made)
            running: dict[str, dict[int, int]] = {}
            for tx_id, session in bridge.station_events.sessions.items():
                running.setdefault(session.station_id, {})[session.connector_id] = tx_id
            parts: dict[str, list[float]] = {"inputs": [], "set_desired": [], "store": []}
            for _ in range(runs):
                for plan in plans:
                    parts["inputs"].append(_timed(lambda: planner._inputs(datetime.now(UTC))))
                    parts["set_desired"].append(_timed(
                        lambda plan=plan: bridge.dispatcher.set_desired(plan.stations, running)))
                    parts["store"].append(_timed(_store(bridge, plan)))
                    await asyncio.sleep(0)
            return parts
        finally:
            await bridge.dispatcher.close()
            close = getattr(planner, "close", None)
            if close is not None:
                closed = close()
                if asyncio.iscoroutine(closed):  # the planner with a planning process
                    await closed
            bridge.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    stations = min(max(args.stations, 1), MAX_STATIONS)
    runs = min(max(args.runs, 1), MAX_RUNS)
    tune_for_many_connections()  # as drbridge run does at start
    parts = asyncio.run(measure(stations, runs))
    print(f"On-loop parts of a plan for {stations:,} stations, {2 * runs} of each; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}; "
          f"CPU time of the loop's thread\n")
    print("| part | median (ms) | min (ms) | max (ms) |")
    print("|---|---:|---:|---:|")
    for name, values in parts.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | {min(values) * 1000:.1f} | "
              f"{max(values) * 1000:.1f} |")


if __name__ == "__main__":
    main()
