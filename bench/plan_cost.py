"""What one plan costs: make_plan (through plan_with_holds, as the bridge calls it) per fleet size.

In-process and bounded: a flat site with 7 kW per station (as ``bench.run``), the default
preset, every station with a charging session, with and without an active SIMPLE level 1
event (half the capacity, so sessions pause and take turns). Prints a Markdown table.

    python -m bench.plan_cost [--sizes 1000 5000 10000] [--runs 3] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bridge.holds import plan_with_holds
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Plan, Session, Site, StationInfo
from policies.model import parse_policy, preset_text
from policies.plan import Conditions

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KW_PER_STATION = 7.0
MAX_SIZE = 20_000  # keeps a run bounded in time and memory
POLICY = parse_policy(preset_text("default"), "default")


def scenario(count: int) -> tuple[Site, Fleet]:
    stations = {f"CP{i:05d}": StationInfo(f"CP{i:05d}", 3, 230.0, 32.0) for i in range(count)}
    sessions = tuple(Session(sid, 1, NOW - timedelta(seconds=i))
                     for i, sid in enumerate(stations))
    return Site(capacity_w=count * KW_PER_STATION * 1000), Fleet(stations, sessions)


def simple_event(level: float) -> DrEvent:
    start = NOW - timedelta(minutes=5)
    return DrEvent(
        event_id="bench", modification_number=0, status=EventStatus.ACTIVE, start=start,
        duration=timedelta(hours=1),
        signals=(EventSignal(name="SIMPLE", type="level", intervals=(
            SignalInterval(start=start, duration=timedelta(hours=1), value=level),)),))


def cases(count: int) -> dict[str, Callable[[], Plan]]:
    site, fleet = scenario(count)
    event = simple_event(1)
    conditions = Conditions()

    def plan(events: tuple[DrEvent, ...]) -> Callable[[], Plan]:
        return lambda: plan_with_holds(events, POLICY, site, fleet, NOW, {}, None, conditions)

    def follow_up() -> Plan:
        # the next plan a few seconds later, carrying the state on (what a replan does)
        first = plan_with_holds((event,), POLICY, site, fleet, NOW, {}, None, conditions)
        return plan_with_holds((event,), POLICY, site, fleet, NOW + timedelta(seconds=5), {},
                               first.state, conditions)

    return {"no event": plan(()), "SIMPLE 1": plan((event,)), "SIMPLE 1, two plans": follow_up}


def timed(make: Callable[[], Plan], runs: int) -> tuple[float, float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        make()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=int, metavar="N",
                        help="profile the SIMPLE 1 plan for N stations instead (cProfile)")
    args = parser.parse_args()
    sizes = [min(max(n, 1), MAX_SIZE) for n in args.sizes]
    runs = min(max(args.runs, 1), 20)
    if args.profile:
        make = cases(min(max(args.profile, 1), MAX_SIZE))["SIMPLE 1"]
        profiler = cProfile.Profile()
        profiler.runcall(make)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        return
    print(f"Plan cost, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; median and worst of {runs} runs, seconds\n")
    names = list(cases(1))
    print("| stations | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for count in sizes:
        cells = []
        for make in cases(count).values():
            median, worst = timed(make, runs)
            cells.append(f"{median:.3f} ({worst:.3f})")
        print(f"| {count:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
