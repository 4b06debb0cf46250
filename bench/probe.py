"""Where a large fleet's memory and CPU go: the bridge under instruments, in its own process.

    python -m bench.probe --stations 10000 --connect spread --memory --out /tmp/probe
    python -m bench.probe --stations 10000 --connect spread --profile-plans --event --out ...
    python -m bench.probe --stations 5000 --connect storm --out /tmp/storm   # a timeline

The bridge runs as ``drbridge run`` would (the same parts, the collector tuned the same
way, but every plan made in its planning thread, never in the planning process, so that
the hooks see it), with hooks: every plan's policy part is timed (and, with
``--profile-plans``, profiled with cProfile once the fleet is large), and on SIGUSR1 it
writes a memory report: RSS, the
objects the collector tracks by type (count and shallow size), the asyncio tasks by
coroutine and, with ``--memory``, tracemalloc's largest allocation sites and the growth
since start-up. Load comes from ``bench.loadgen`` processes. Everything it writes lands
in ``--out``; a summary is printed. A probe, not a benchmark: tracemalloc and cProfile
slow the bridge down.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import gc
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import run as bench
from bench.fd_limit import raise_fd_limit

PROFILE_FROM = 1_000  # plans for fewer stations are not profiled
MAX_PROFILES = 4


# inside the bridge's process -------------------------------------------------------------------
def memory_report(bridge: Any, baseline: tracemalloc.Snapshot | None) -> str:
    out = io.StringIO()
    stations = max(len(bridge.dispatcher.stations), 1)
    gc.collect()
    print(f"at {datetime.now(UTC):%H:%M:%S}: {len(bridge.dispatcher.stations)} stations known,"
          f" {len(bridge.ocpp.links)} links, RSS {bench.rss_mb(os.getpid()):.1f} MB", file=out)
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    print(f"\nobjects the collector tracks (not frozen): {sum(counts.values()):,},"
          f" shallow {sum(sizes.values()) / 2**20:.1f} MB; frozen {gc.get_freeze_count():,}",
          file=out)
    print(f"{'type':60} {'count':>10} {'per station':>11} {'shallow MB':>10}", file=out)
    for name, size in sizes.most_common(40):
        print(f"{name[:60]:60} {counts[name]:>10,} {counts[name] / stations:>11.2f}"
              f" {size / 2**20:>10.1f}", file=out)
    print("\nwho holds them (the types of their referrers, of up to 200 of each):", file=out)
    for name, _ in sizes.most_common(12):
        print(f"  {name}: {held_by(name)}", file=out)
    tasks: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        tasks[getattr(coro, "__qualname__", type(coro).__name__)] += 1
    print(f"\nasyncio tasks: {sum(tasks.values()):,}", file=out)
    for name, n in tasks.most_common(20):
        print(f"  {n:>8,} {n / stations:6.2f}/station  {name}", file=out)
    print("\nasyncio tasks by where they wait:", file=out)
    for where, n in Counter(waiting_at(task.get_coro()) for task in asyncio.all_tasks()
                            ).most_common(12):
        print(f"  {n:>8,} {n / stations:6.2f}/station  {where}", file=out)
    print(f"\n{allocators()}", file=out)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        traced, peak = tracemalloc.get_traced_memory()
        print(f"\ntracemalloc: {traced / 2**20:.1f} MB traced now, peak {peak / 2**20:.1f} MB",
              file=out)
        print("\nby file:", file=out)
        for stat in snapshot.statistics("filename")[:25]:
            print(f"  {stat.size / 2**20:8.1f} MB {stat.count:>9,}  {stat.traceback[0].filename}",
                  file=out)
        print("\nby line:", file=out)
        for stat in snapshot.statistics("lineno")[:40]:
            frame = stat.traceback[0]
            where = f"{frame.filename}:{frame.lineno}"
            print(f"  {stat.size / 2**20:8.1f} MB {stat.count:>9,}  {where}", file=out)
        if baseline is not None:
            print("\ngrowth since start-up, by line (bytes per station):", file=out)
            for stat in snapshot.compare_to(baseline, "lineno")[:40]:
                frame = stat.traceback[0]
                print(f"  {stat.size_diff / 2**20:+8.1f} MB {stat.size_diff / stations:>+9,.0f}"
                      f" {stat.count_diff:>+9,}  {frame.filename}:{frame.lineno}", file=out)
    return out.getvalue()


def held_by(type_name: str, sample: int = 100) -> str:
    """The types of what refers to objects of one type (a sample of them), most first; an
    instance's attributes are named by the instance's type and the attribute."""
    objects = [o for o in gc.get_objects()
               if f"{type(o).__module__}.{type(o).__qualname__}" == type_name][::97][:sample]
    ids = {id(o) for o in objects}
    skip = (type(sys._getframe()), types.CellType)
    referrers = [r for r in gc.get_referrers(*objects) if r is not objects
                 and not isinstance(r, skip)]  # one pass over the heap, not one per object
    dicts = [r for r in referrers if isinstance(r, dict)]
    owners = {id(o.__dict__): o for o in gc.get_referrers(*dicts)
              if getattr(o, "__dict__", None) is not None and id(o.__dict__)
              in {id(d) for d in dicts}} if dicts else {}
    holders: Counter[str] = Counter()
    for ref in referrers:
        owner = owners.get(id(ref)) if isinstance(ref, dict) else None
        if owner is not None:
            keys = [k for k, v in ref.items() if id(v) in ids]
            holders[f"{type(owner).__qualname__}.{keys[0] if keys else '?'}"] += 1
        else:
            holders[f"{type(ref).__module__}.{type(ref).__qualname__}"] += 1
    del objects, referrers, dicts, owners
    return ", ".join(f"{name} {n}" for name, n in holders.most_common(6))


def waiting_at(coro: Any) -> str:
    """The chain of coroutines a task is suspended in, innermost last, with their lines."""
    chain = []
    while coro is not None and hasattr(coro, "cr_frame"):
        frame = coro.cr_frame
        line = frame.f_lineno if frame is not None else 0
        chain.append(f"{getattr(coro, '__qualname__', '?')}:{line}")
        coro = coro.cr_await
    return " > ".join(chain)


def allocators() -> str:
    """Where RSS goes beyond live objects: pymalloc's arenas (from
    ``sys._debugmallocstats``, which writes to the C stderr) and glibc's heap (mallinfo2),
    then RSS once glibc has returned what it can (malloc_trim: what the process keeps but
    does not use)."""
    lines = []
    with tempfile.TemporaryFile("w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        wanted = ("arenas allocated current", "arenas highwater mark",
                  "bytes in allocated blocks", "bytes in available blocks",
                  "unused pools", "bytes lost to")
        lines += [f"  pymalloc {line.strip()}" for line in capture
                  if any(w in line for w in wanted)]
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "\n".join(lines)

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    lines.append(f"  glibc heap {info.arena / 2**20:.1f} MB: {info.uordblks / 2**20:.1f} MB in"
                 f" use, {info.fordblks / 2**20:.1f} MB free; mmapped {info.hblkhd / 2**20:.1f}"
                 f" MB in {info.hblks} blocks")
    before = bench.rss_mb(os.getpid())
    libc.malloc_trim(0)
    lines.append(f"  RSS {before:.1f} MB, after malloc_trim {bench.rss_mb(os.getpid()):.1f} MB")
    return "\n".join(lines)


async def serve(args: argparse.Namespace) -> None:
    from bridge.app import Bridge
    from bridge.config import load_config
    from bridge.gc_tuning import tune_for_many_connections
    from bridge.runtime import planning
    from bridge.runtime.plan_inputs import PlanInputs

    out = Path(args.out)
    if args.memory:
        tracemalloc.start(1)  # more frames slow a large fleet to a crawl
    plans: list[dict[str, Any]] = []
    planning.PROCESS_FROM_STATIONS = sys.maxsize  # in the thread, where the hooks are
    original = PlanInputs.plan  # the policy's part of a plan, in the planning thread

    def timed(inputs: PlanInputs) -> Any:
        stations = len(inputs.fleet.stations)
        began, wall = time.perf_counter(), time.time()
        profile = args.profile_plans and stations >= args.profile_from and \
            sum(1 for p in plans if p.get("profile")) < MAX_PROFILES
        if profile:
            profiler = cProfile.Profile()
            result = profiler.runcall(original, inputs)
        else:
            result = original(inputs)
        entry: dict[str, Any] = {"start": round(wall, 4), "seconds": round(
            time.perf_counter() - began, 4), "stations": stations}
        if profile:
            path = out / f"plan-{len(plans)}.prof"
            profiler.dump_stats(path)
            entry["profile"] = path.name
        plans.append(entry)
        return result

    PlanInputs.plan = timed  # type: ignore[method-assign]
    bridge = Bridge(load_config(Path(args.config)))
    tune_for_many_connections()
    baseline = tracemalloc.take_snapshot() if args.memory else None
    loop = asyncio.get_running_loop()
    reports = 0

    def dump() -> None:
        nonlocal reports
        reports += 1
        (out / f"memory-{reports}.txt").write_text(memory_report(bridge, baseline))

    loop.add_signal_handler(signal.SIGUSR1, dump)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, bridge.stop)
    try:
        await bridge.run()
    finally:
        (out / "plans.json").write_text(json.dumps(plans))


# the driver ----------------------------------------------------------------------------------
def profile_summary(path: Path, lines: int = 25) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return text.getvalue()


def timeline(stations: dict[str, dict[str, Any]], plans: list[dict[str, Any]], first: float,
             until: float, bucket: float = 0.5) -> str:
    """Per bucket after the first connection: connections, boots, transactions started,
    profiles received, and the plans made."""
    keys = ("t_open", "t_booted", "t_tx")
    rows: dict[int, Counter[str]] = {}

    def count(t: float | None, what: str) -> None:
        if t is not None and first <= t < until:
            rows.setdefault(int((t - first) / bucket), Counter())[what] += 1

    for record in stations.values():
        for key in keys:
            count(record.get(key), key)
        for op in record.get("charging") or ():
            count(op["t"], "profiles" if op["op"] == "set" else "clears")
    for plan in plans:
        count(plan["start"], "plans")
        count(plan["start"] + plan["seconds"], "plan_ends")
    out = [f"{'s':>6} {'open':>6} {'booted':>6} {'tx':>6} {'profiles':>8} {'clears':>6}  plans"]
    for i in sorted(rows):
        row = rows[i]
        planned = [f"{p['seconds']:.2f} s for {p['stations']}" for p in plans
                   if int((p["start"] - first) / bucket) == i]
        out.append(f"{i * bucket:6.1f} {row['t_open']:6} {row['t_booted']:6} {row['t_tx']:6}"
                   f" {row['profiles']:8} {row['clears']:6}  {', '.join(planned)}")
    return "\n".join(out)


async def until_written(path: Path, limit_s: float = 600.0) -> None:
    """Until the bridge has written a report (at most ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while not path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(1)


async def drive(args: argparse.Namespace) -> None:
    from bridge.sim.vtn import DemoVtn, free_port

    raise_fd_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vtn = DemoVtn(poll_interval=timedelta(seconds=1))
    await vtn.start()
    port, web_port = free_port(), free_port()
    config = bench.bridge_config(out, args.stations, port, vtn.url, web_port, args.workers)
    log = (out / "bridge.log").open("w")
    command = [sys.executable, "-m", "bench.probe", "serve", "--config", str(config),
               "--out", str(out)]
    command += ["--memory"] if args.memory else []
    command += ["--profile-plans", "--profile-from", str(args.profile_from)] \
        if args.profile_plans else []
    process = subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=raise_fd_limit)
    server = bench.Server(process, port, out / f"bridge-{port}.db", web_port)
    summary = [f"probe: {args.stations} stations ({args.connect}), memory={args.memory},"
               f" profile_plans={args.profile_plans}, event={args.event};"
               f" load before {bench.load_average()}"]
    try:
        bench.wait_for_port(port, 120, process, out / "bridge.log")
        bench.wait_for_port(web_port, 120, process, out / "bridge.log")
        start_at = time.time() + 3
        spread = bench.SPREAD_S * min(1.0, args.stations / 10_000) \
            if args.connect == "spread" else 0.0
        gens = bench.generators(out, port, args.stations, "steady", start_at, 600, spread)
        try:
            await bench.sleep_until(start_at + spread)
            settled = spread + await bench.wait_until_quiet(server, args.stations, 5.0, 180.0)
            summary.append(f"settled after {settled:.0f} s; RSS {bench.rss_mb(process.pid):.0f} MB")
            await asyncio.sleep(args.wait)
            process.send_signal(signal.SIGUSR1)
            await until_written(out / "memory-1.txt")  # slow under tracemalloc
            await asyncio.sleep(args.hold)
            if args.event:
                ven_id = vtn.ven_id(bench.VEN_NAME)
                assert ven_id is not None
                vtn.add_simple_event(ven_id, datetime.now(UTC) + timedelta(seconds=8),
                                     [(timedelta(minutes=10), 1)], event_id="probe")
                await asyncio.sleep(20)
                process.send_signal(signal.SIGUSR1)
                await until_written(out / "memory-2.txt")
            summary.append(f"RSS at the end {bench.rss_mb(process.pid):.0f} MB;"
                           f" load {bench.load_average()}")
        finally:
            gens.stop()
        stations = bench.merged(await asyncio.to_thread(gens.wait, 180))
    finally:
        bench._stop(process)  # SIGTERM, then SIGKILL after 30 s: never left behind
        log.close()
        await vtn.stop()
    plans = json.loads((out / "plans.json").read_text())
    summary.append("plans: " + ", ".join(f"{p['seconds']:.2f} s ({p['stations']})"
                                         for p in plans))
    first = min(r["t_connect_start"] for r in stations.values() if r.get("t_connect_start"))
    summary.append("timeline (0.5 s buckets after the first connection):\n" +
                   timeline(stations, plans, first, first + args.timeline_s))
    for path in sorted(out.glob("plan-*.prof")):
        (out / f"{path.stem}.txt").write_text(profile_summary(path))
    text = "\n".join(summary)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    for path in sorted(out.glob("memory-*.txt")):
        print(f"\n== {path.name}\n{path.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    inner = sub.add_parser("serve", help="(internal) the instrumented bridge")
    inner.add_argument("--config", required=True)
    for p in (parser, inner):
        p.add_argument("--out", default="var/probe")
        p.add_argument("--memory", action="store_true", help="tracemalloc (slow)")
        p.add_argument("--profile-plans", action="store_true", help="cProfile large plans")
        p.add_argument("--profile-from", type=int, default=PROFILE_FROM,
                       help=f"profile plans for this many stations or more ({PROFILE_FROM})")
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--connect", choices=("storm", "spread"), default="storm")
    parser.add_argument("--event", action="store_true", help="a DR event after settling")
    parser.add_argument("--wait", type=float, default=2.0,
                        help="seconds from settled to the report")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds after the report")
    parser.add_argument("--timeline-s", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="OCPP edge worker processes (ocpp.workers; default 0, as in"
                             " bench.run)")
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args))
    else:
        args.stations = min(max(args.stations, 1), 10_000)
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
