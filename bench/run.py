"""drbridge benchmarks: connect storm, steady state, replans, DR dispatch, throughput,
forwarding in local-controller mode.

    python -m bench.run                 # every scenario, three runs each (make bench)
    python -m bench.run --quick         # small sizes, one run each: a smoke test of the harness
    python -m bench.run --workers N     # the bridge's OCPP edge in N worker processes
    python -m bench.run --only local-controller [--quick]   # that scenario alone, printed
    python -m bench.run --only throughput [--runs N]        # the throughput rounds alone

Everything runs on loopback in separate processes: the bridge (``drbridge run``), the load
generators (``bench.loadgen``, up to 2,500 stations each), the reference central system
(``bench.ocpp_example_cs``), the lean operator CSMS (``bench.upstream_cs``) and, in this
process, an openleadr VTN.

One *fleet run* per size and run: the stations connect (all at once, or spread), the bridge
settles, then three windows are measured (see ``WINDOWS``): *steady* (no plan inside),
*replan* (a periodic plan inside) and *event* (a DR event handed on and dispatched, and its
first seconds). The *throughput* rounds flood drbridge and the reference with MeterValues.
The *local controller* runs put drbridge between the stations and an operator's CSMS
(``ocpp.upstream``) and compare with the same stations talking to that CSMS straight.

The run's figures go to ``docs/benchmarks.json``, and :mod:`bench.report` writes
``docs/benchmarks.md`` (and the README's results paragraph) from that file alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import analysis
from bench.fd_limit import raise_fd_limit
from bridge.ocpp.listening import BACKLOG
from bridge.plan_json import decode_schedules
from bridge.runtime.planning import REPLAN_COALESCE_S, REPLAN_PERIOD_S
from bridge.sim.vtn import DemoVtn, free_port

ROOT = Path(__file__).resolve().parents[1]
PER_GENERATOR = 2_500
VEN_NAME = "bench-site"  # the VEN the bridge registers as (one per fleet run: fleet_run)
KW_PER_STATION = 7.0  # site capacity per station: every EV gets 7 kW until an event
VOLTS, PHASES = 230.0, 3
MIN_CURRENT_A = 6.0  # the default policy's
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (stations, how they connect): "storm" all at once, "spread" evenly over SPREAD_S
FLEETS = [(1_000, "storm"), (5_000, "storm"), (10_000, "spread")]
QUICK_FLEETS = [(50, "storm"), (200, "storm"), (300, "spread")]
SPREAD_S = 20.0
STEADY_WINDOW_S = 15.0
QUIET_S, QUIET_LIMIT_S = 5.0, 90.0  # the boot storm is over: no call to a station for 5 s
EVENT_LEAD_S = 8.0  # the DR event starts this long after the VTN has it
EVENT_WINDOW_S = 16.0  # from the VEN handing it on: dispatch, then the event's first seconds
EVENT_LEVEL = 1  # SIMPLE level 1: half the capacity under the default policy
PLAN_DUE_S = REPLAN_PERIOD_S + REPLAN_COALESCE_S  # a periodic plan comes this long after the last
REPLAN_WINDOW = (-3.0, 9.0)  # around when the next periodic plan is due
FLOOD_STATIONS, FLOOD_S = 200, 10.0
SERVERS = ("drbridge", "example_defaults", "example_sync")
WINDOWS = {
    "steady": "MeterValues only: opens once the boot storm is over and between two plans",
    "replan": "around a periodic plan (every 30 s, with nothing else changing)",
    "event": "from the VEN handing a DR event on: the plan, the profile wave, the event's"
             " first seconds",
}
# local controller: stations, latency window (s), flood (s); one run per CSMS in a full run
LC_SIZES = {False: (1_000, 30.0, 15.0), True: (100, 10.0, 5.0)}  # by --quick
LC_CSMS = ("reference", "lean")


# the machine -------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_gb = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_gb = int(line.split()[1]) / 1024 / 1024
    import ocpp
    import websockets
    return {"cores": os.cpu_count(), "cpu": model, "memory_gb": round(memory_gb, 1),
            "linux": platform.release(), "python": platform.python_version(),
            "ocpp": getattr(ocpp, "__version__", _version("ocpp")),
            "websockets": websockets.version.version,
            "somaxconn": int(Path("/proc/sys/net/core/somaxconn").read_text())}


def _version(package: str) -> str:
    from importlib.metadata import version
    return version(package)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def listen_overflows() -> int | None:
    """Connections the kernel dropped because a listener's queue was full, so far, for every
    listener in this network namespace (the machine's, or a container's own; a connection
    dropped there comes back 1 or 3 s later); None where /proc does not tell."""
    try:
        return overflows_in(Path("/proc/net/netstat").read_text())
    except OSError:
        return None


def overflows_in(netstat: str) -> int | None:
    """TcpExt's ListenOverflows from the text of /proc/net/netstat (pairs of lines: the
    counters' names, then their values)."""
    lines = netstat.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            found = counters.get("ListenOverflows")
            return int(found) if found is not None else None
    return None


def git_state() -> tuple[str, bool]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    changed = [line for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("docs/benchmarks")]
    return git("rev-parse", "--short=10", "HEAD") or "unknown", bool(changed)


def process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def with_children(pid: int) -> list[int]:
    """``pid`` and its processes still running, the children's children too (the bridge's
    OCPP edge workers)."""
    children = _children_by_parent()
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        found.append(parent)
        todo += children.get(parent, [])
    return found


def _children_by_parent() -> dict[int, list[int]]:
    """Every running process by its parent, from /proc/<pid>/stat (which every Linux has;
    /proc/<pid>/task/<tid>/children needs a kernel option)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def tree_cpu_s(pid: int) -> float:
    """CPU time of a process and of its running children (the bridge with its workers)."""
    return sum(process_cpu_s(p) for p in with_children(pid))


def tree_rss_mb(pid: int) -> float:
    return sum(rss_mb(p) for p in with_children(pid))


@dataclass
class MachineSample:
    """What the whole machine and the benchmark's own processes had used by one moment."""

    at: float
    busy_s: float  # user + nice + system, every core (softirq left out: loopback's own)
    steal_s: float
    ours_s: float
    load1: float

    @classmethod
    def take(cls, pids: list[int]) -> MachineSample:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system = values[0], values[1], values[2]
        steal = values[7] if len(values) > 7 else 0
        return cls(at=time.monotonic(), busy_s=(user + nice + system) / CLK_TCK,
                   steal_s=steal / CLK_TCK,
                   ours_s=sum(tree_cpu_s(pid) for pid in pids), load1=load_average()[0])


def noise(first: MachineSample, last: MachineSample) -> dict[str, float]:
    """Others' CPU (% of one core: the machine's busy time less ours) and steal, between two
    samples."""
    elapsed = max(last.at - first.at, 1e-6)
    others = (last.busy_s - first.busy_s) - (last.ours_s - first.ours_s)
    return {"others_cpu_pct": round(max(100 * others / elapsed, 0.0), 1),
            "steal_pct": round(100 * (last.steal_s - first.steal_s) / elapsed, 1),
            "load1": last.load1}


# processes ---------------------------------------------------------------------------------------
def wait_for_port(port: int, timeout: float = 30, process: subprocess.Popen[bytes] | None = None,
                  log: Path | None = None) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"the process exited with {process.returncode}:\n{tail}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Server:
    """A central system under test, in its own process."""

    process: subprocess.Popen[bytes]
    port: int
    db: Path | None = None  # drbridge's store
    web_port: int | None = None  # drbridge's /metrics

    @property
    def pid(self) -> int:
        return self.process.pid

    def scrape(self) -> dict[str, float]:
        assert self.web_port is not None
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=60) as response:
            return analysis.parse_metrics(response.read().decode())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bridge_config(workdir: Path, stations: int, port: int, vtn_url: str | None,
                  web_port: int | None, workers: int, upstream_url: str | None = None,
                  ven_name: str = VEN_NAME) -> Path:
    db = workdir / f"bridge-{port}.db"
    web = f"{{host: 127.0.0.1, port: {web_port}}}" if web_port else "{enabled: false}"
    # Without a VTN the URL points at a closed port: the VEN keeps retrying, stations are served.
    url = vtn_url or f"http://127.0.0.1:{free_port()}/OpenADR2/Simple/2.0b"
    more = f", workers: {workers}" if workers else ""
    # a CSMS slow under load is not an outage here: drbridge waits for it as a station would
    if upstream_url:
        more += f", upstream: {{url: '{upstream_url}', call_timeout_s: 30}}"
    config = workdir / f"bridge-{port}.yaml"
    config.write_text(textwrap.dedent(f"""\
        ven: {{vtn_url: "{url}", ven_name: {ven_name}}}
        ocpp: {{host: 127.0.0.1, port: {port}, call_timeout_s: 30, retry_s: 2{more}}}
        site: {{capacity_kw: {max(stations, 1) * KW_PER_STATION}}}
        storage: {{path: {db}}}
        telemetry: {{interval_s: 60, stale_after_s: 60}}
        web: {web}
        """))
    return config


@contextmanager
def drbridge(workdir: Path, stations: int, workers: int, vtn_url: str | None = None,
             metrics: bool = True, upstream_url: str | None = None,
             ven_name: str = VEN_NAME) -> Iterator[Server]:
    """``drbridge run`` in its own process; ``metrics``: with its web server (for /metrics);
    ``upstream_url``: in local-controller mode, forwarding to that CSMS; ``ven_name``: the
    VEN it registers as."""
    port = free_port()
    web_port = free_port() if metrics else None
    config = bridge_config(workdir, stations, port, vtn_url, web_port, workers, upstream_url,
                           ven_name)
    log_path = workdir / f"bridge-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                                    str(config)], stdout=log, stderr=log,
                                   preexec_fn=raise_fd_limit)
    try:
        wait_for_port(port, process=process, log=log_path)
        if web_port is not None:
            wait_for_port(web_port, process=process, log=log_path)
        yield Server(process, port, workdir / f"bridge-{port}.db", web_port)
    finally:
        _stop(process)


@contextmanager
def example_cs(workdir: Path, variant: str) -> Iterator[Server]:
    """The reference: ``defaults`` as documented, or ``sync`` (validation on the event loop,
    drbridge's listen backlog)."""
    port = free_port()
    extra = ["--sync-validation", "--backlog", str(BACKLOG)] if variant == "sync" else []
    log_path = workdir / f"example-{variant}-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.ocpp_example_cs", "--port",
                                    str(port), *extra], stdout=log, stderr=log,
                                   preexec_fn=raise_fd_limit)
    try:
        wait_for_port(port, process=process, log=log_path)
        yield Server(process, port)
    finally:
        _stop(process)


@contextmanager
def upstream_cs(workdir: Path, kind: str) -> Iterator[Server]:
    """An operator's CSMS in its own process: ``reference`` (the ``ocpp`` library's example
    with its defaults, written the usual way) or ``lean`` (``bench.upstream_cs``: raw
    frames, so that what is measured through drbridge is drbridge)."""
    if kind == "reference":
        with example_cs(workdir, "defaults") as server:
            yield server
        return
    port = free_port()
    log_path = workdir / f"upstream-cs-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.upstream_cs", "--port",
                                    str(port)], stdout=log, stderr=log,
                                   preexec_fn=raise_fd_limit)
    try:
        wait_for_port(port, process=process, log=log_path)
        yield Server(process, port)
    finally:
        _stop(process)


@dataclass
class Generators:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        """End the stations now; each generator still writes its results."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        for process in self.processes:
            process.wait(timeout)
        return [json.loads(out.read_text()) for out in self.outputs]


# asyncio reads a socket into a fresh 256 KiB buffer each time. glibc serves that from
# mmap (and shrinks it with mremap, frees it with munmap) until a freed mapping lifts its
# threshold, which in the generator it never did: three system calls for each answer it
# read (strace). Below 1 MiB, allocations come from the heap, and the heap is given back
# to the system only beyond 8 MiB free (else each read grew and trimmed it: two brk calls).
GENERATOR_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
                 "MALLOC_TRIM_THRESHOLD_": str(8 << 20)}


def generators(workdir: Path, port: int, count: int, mode: str, start_at: float,
               duration: float, spread: float = 0.0, record_after: float = 0.0) -> Generators:
    result = Generators()
    n = max(1, -(-count // PER_GENERATOR))
    for g in range(n):
        share = count // n + (1 if g < count % n else 0)
        out = workdir / f"loadgen-{port}-{mode}-{g}.json"
        result.outputs.append(out)
        with (workdir / f"loadgen-{port}-{g}.log").open("w") as log:
            result.processes.append(subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "--url", f"ws://127.0.0.1:{port}",
                 "--prefix", f"G{g}-", "--count", str(share), "--mode", mode,
                 "--meter-interval", "10", "--duration", str(duration),
                 "--start-at", str(start_at), "--connect-spread", str(spread * share / count),
                 "--out", str(out), "--record-after", str(record_after)],
                stdout=subprocess.DEVNULL, stderr=log, preexec_fn=raise_fd_limit,
                env=GENERATOR_ENV))
    return result


def merged(outputs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stations: dict[str, dict[str, Any]] = {}
    for out in outputs:
        stations.update(out["stations"])
    return stations


# windows -----------------------------------------------------------------------------------------
async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(t - time.time(), 0.0))


@dataclass
class Mark:
    """One edge of a window: the bridge's /metrics, its CPU, the machine."""

    t: float
    metrics: dict[str, float]
    cpu_s: float  # the bridge's, with its OCPP edge workers
    machine: MachineSample
    main_cpu_s: float = 0.0  # the bridge's own process alone


async def mark(server: Server, pids: list[int]) -> Mark:
    """Scrape first, then read the clocks: the scrape's own cost stays outside the window."""
    metrics = await asyncio.to_thread(server.scrape)
    return Mark(time.time(), metrics, tree_cpu_s(server.pid), MachineSample.take(pids),
                process_cpu_s(server.pid))


def window(first: Mark, last: Mark, stations: dict[str, dict[str, Any]],
           outputs: list[dict[str, Any]], replies_from: float | None = None,
           replies_until: float | None = None) -> dict[str, Any]:
    begin = replies_from if replies_from is not None else first.t
    end = replies_until if replies_until is not None else last.t
    latencies = analysis.reply_latencies(stations, begin, end)
    lag, lag_sum, lag_count = analysis.histogram_delta(
        first.metrics, last.metrics, "drbridge_event_loop_lag_seconds")
    _, plan_sum, plans = analysis.histogram_delta(
        first.metrics, last.metrics, "drbridge_plan_duration_seconds")
    worst_lag = max((bound for bound, n in _per_bucket(lag) if n > 0), default=0.0)
    lags = [row for out in outputs for row in out.get("lag") or ()]
    return {
        "begin": round(begin, 3), "seconds": round(end - begin, 2),
        "cpu_pct": round(100 * (last.cpu_s - first.cpu_s) / max(last.t - first.t, 1e-6), 1),
        # with edge workers: the part of cpu_pct in the bridge's own process (the planner,
        # the store, every frame's OCPP; the workers have the websockets)
        "main_cpu_pct": round(100 * (last.main_cpu_s - first.main_cpu_s)
                              / max(last.t - first.t, 1e-6), 1),
        "replies": len(latencies),
        "reply_p50_ms": round(1000 * analysis.pct(latencies, 0.5), 1),
        "reply_p99_ms": round(1000 * analysis.pct(latencies, 0.99), 1),
        "reply_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
        "loop_lag_p99_s": analysis.histogram_quantile(lag, 0.99),
        "loop_lag_worst_bucket_s": worst_lag,
        "loop_held_s": round(lag_sum, 3), "loop_lag_samples": lag_count,
        "plans": int(plans), "plan_s": round(plan_sum, 3),
        "generator_lag_max_ms": round(1000 * analysis.generator_lag(lags, begin, end), 1),
        **noise(first.machine, last.machine),
    }


def _per_bucket(cumulative: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative buckets -> (upper bound, count in that bucket alone)."""
    out, before = [], 0.0
    for bound, n in cumulative:
        out.append((bound, n - before))
        before = n
    return out


async def wait_until_quiet(server: Server, count: int, quiet_s: float, limit_s: float) -> float:
    """Until every session has started, no call went to a station for ``quiet_s``
    (profiles, configuration, checks: the joins' work) and the dispatcher works on none.
    Seconds waited (``limit_s`` when the bridge never went quiet)."""
    began = time.monotonic()
    last: tuple[float, float] = (-1.0, -1.0)
    since = time.monotonic()
    while time.monotonic() - began < limit_s:
        try:
            metrics = await asyncio.to_thread(server.scrape)
        except OSError:  # too busy to answer /metrics (a timeout): not quiet yet
            if server.process.poll() is not None:
                raise RuntimeError(f"the bridge exited with {server.process.returncode}"
                                   " while the fleet settled") from None
            since = time.monotonic()
            await asyncio.sleep(0.5)
            continue
        now = (metrics.get("drbridge_sessions_active", 0.0),
               sum(v for k, v in metrics.items()
                   if k.startswith("drbridge_ocpp_calls_sent_total{")))
        # no call for a while is not enough: a wave whose raises wait for lowers may pause
        # its calls for longer; every station must hold what the plan says
        busy = metrics.get("drbridge_stations_dispatching", 0.0) > 0
        if now != last or busy:
            last, since = now, time.monotonic()
        elif now[0] >= count and time.monotonic() - since >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - began


def event_handed_on(db: Path, event_id: str) -> float | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("select received_at from events where event_id = ?",
                           (event_id,)).fetchone()
    return datetime.fromisoformat(row[0]).timestamp() if row else None


def event_plan(db: Path, handed_on: float, probe: float) -> tuple[dict[str, float], float]:
    """(each station's watts at ``probe``, the site's) in the first plan made after the event
    was handed on and holding it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("select made_at, site, stations, schedules from plans"
                            " order by id").fetchall()
    for made_at, site, stations, schedules in rows:
        if datetime.fromisoformat(made_at).timestamp() < handed_on - 1e-3:
            continue
        site_w = _steps_at(json.loads(site), probe)
        per_station = {sid: _steps_at(steps, probe) for sid, steps
                       in decode_schedules(stations, schedules).items()}
        return per_station, site_w
    raise RuntimeError("no plan was stored after the event was handed on")


def _steps_at(steps: list[list[Any]], t: float) -> float:
    value = float("nan")
    for start, watts, *_ in steps:
        if datetime.fromisoformat(start).timestamp() > t:
            break
        value = float(watts)
    return value


# a fleet run -------------------------------------------------------------------------------------
async def fleet_run(workdir: Path, vtn: DemoVtn, size: int, connect: str, workers: int,
                    steady_s: float, number: int) -> dict[str, Any]:
    spread = SPREAD_S * min(1.0, size / 10_000) if connect == "spread" else 0.0
    event_id = f"bench-{size}-{number}"
    # A VEN of its own for each run: the VTN keeps a VEN's events (ten minutes long), and a
    # later run registered under the same name would be sent the events of the runs before
    # it, still in force (its storm and its event's plan then under several events).
    ven_name = f"{VEN_NAME}-{size}-{number}"
    result: dict[str, Any] = {"stations": size, "connect": connect, "spread_s": spread}
    overflows_before = listen_overflows()
    with drbridge(workdir, size, workers, vtn.url, ven_name=ven_name) as server:
        start_at = time.time() + 3
        budget = spread + QUIET_LIMIT_S + 2 * PLAN_DUE_S + EVENT_WINDOW_S + 60
        gens = generators(workdir, server.port, size, "steady", start_at, budget, spread)
        pids = [server.pid, *gens.pids, os.getpid()]
        try:
            await sleep_until(start_at)
            joining = (tree_cpu_s(server.pid), process_cpu_s(server.pid))
            await sleep_until(start_at + spread)
            result["settled_s"] = round(spread + await wait_until_quiet(
                server, size, QUIET_S, QUIET_LIMIT_S), 1)
            # CPU seconds from the first connection until settled: the bridge with its edge
            # workers, and its own process alone
            result["join_cpu_s"] = round(tree_cpu_s(server.pid) - joining[0], 2)
            result["join_main_cpu_s"] = round(process_cpu_s(server.pid) - joining[1], 2)
            # dropped from the bridge's start until the fleet settled (every listener here,
            # the harness's VTN too)
            overflows = listen_overflows()
            result["listen_overflows"] = None if overflows is None or overflows_before is None \
                else overflows - overflows_before
            marks: dict[str, tuple[Mark, Mark]] = {}
            first = await mark(server, pids)
            last_plan = first.metrics.get("drbridge_plan_last_end_timestamp_seconds", 0.0)
            due = last_plan + PLAN_DUE_S
            if due - first.t >= steady_s + 2:  # room for the steady window before the plan
                marks["steady"] = (first, await _after(server, pids, first.t + steady_s))
                marks["replan"] = await _around_plan(server, pids, due)
            else:
                marks["replan"] = await _around_plan(server, pids, due)
                ended = marks["replan"][1].metrics.get(
                    "drbridge_plan_last_end_timestamp_seconds", 0.0)
                await sleep_until(ended + 1.0)
                opened = await mark(server, pids)
                marks["steady"] = (opened, await _after(server, pids, opened.t + steady_s))
            result["rss_mb"] = round(tree_rss_mb(server.pid), 1)
            ven_id = vtn.ven_id(ven_name)
            assert ven_id is not None, "the bridge did not register with the VTN"
            before = await mark(server, pids)
            event_start = datetime.now(UTC) + timedelta(seconds=EVENT_LEAD_S)
            vtn.add_simple_event(ven_id, event_start, [(timedelta(minutes=10), EVENT_LEVEL)],
                                 event_id=event_id)
            handed_on = None
            while handed_on is None and time.time() < before.t + 30:
                await asyncio.sleep(0.2)
                handed_on = await asyncio.to_thread(event_handed_on, server.db, event_id)
            if handed_on is None:
                raise RuntimeError("the DR event never reached the bridge")
            marks["event"] = (before, await _after(server, pids, handed_on + EVENT_WINDOW_S))
            result["rss_end_mb"] = round(tree_rss_mb(server.pid), 1)
        finally:
            gens.stop()
        outputs = await asyncio.to_thread(gens.wait, 120)
        assert server.db is not None
        probe = event_start.timestamp() + 2.0
        planned_w, event_limit_w = event_plan(server.db, handed_on, probe)
    stations = merged(outputs)
    result["booted"] = sum(1 for r in stations.values() if r.get("t_booted"))
    result["errors"] = sum(r.get("n_errors", 0) for r in stations.values())
    result["generator_cpu_s"] = round(sum(out.get("cpu_s", 0.0) for out in outputs), 1)
    result["windows"] = {}
    for name, (first_mark, last_mark) in marks.items():
        span = (handed_on, handed_on + EVENT_WINDOW_S) if name == "event" else (None, None)
        result["windows"][name] = window(first_mark, last_mark, stations, outputs,
                                         *span)
    result["storm"] = analysis.storm(stations, size * KW_PER_STATION * 1000, handed_on).as_dict()
    result["dispatch"] = analysis.dispatch(stations, handed_on, probe, planned_w, event_limit_w,
                                           MIN_CURRENT_A, VOLTS, PHASES).as_dict()
    return result


async def _after(server: Server, pids: list[int], end: float) -> Mark:
    await sleep_until(end)
    return await mark(server, pids)


async def _around_plan(server: Server, pids: list[int], due: float) -> tuple[Mark, Mark]:
    await sleep_until(due + REPLAN_WINDOW[0])
    opened = await mark(server, pids)
    return opened, await _after(server, pids, due + REPLAN_WINDOW[1])


# throughput --------------------------------------------------------------------------------------
async def flood(workdir: Path, server: Server, seconds: float,
                stations_n: int = FLOOD_STATIONS, behind: Server | None = None,
                joined_s: float | None = None) -> dict[str, float]:
    """``behind``: the CSMS ``server`` forwards to (its CPU is the benchmark's, not others').
    ``joined_s``: also the rate of what was sent from this long after the start on (the
    stations' joins done), as ``per_s_joined``."""
    start_at = time.time() + 2
    gens = generators(workdir, server.port, stations_n, "flood", start_at, seconds,
                      record_after=start_at + (joined_s or 0.0))
    pids = [server.pid, *gens.pids, os.getpid(), *([behind.pid] if behind else [])]
    await sleep_until(start_at)
    cpu0, machine0 = tree_cpu_s(server.pid), MachineSample.take(pids)
    await sleep_until(start_at + seconds)
    cpu1, machine1 = tree_cpu_s(server.pid), MachineSample.take(pids)
    outputs = await asyncio.to_thread(gens.wait, seconds + 60)
    stations = merged(outputs)
    replies = sum(r.get("meter_replies", 0) for r in stations.values())
    cpu = cpu1 - cpu0
    joined = {}
    if joined_s is not None:
        after = sum(r.get("meter_replies_after", 0) for r in stations.values())
        joined["per_s_joined"] = round(after / max(seconds - joined_s, 1e-6), 1)
    return {"per_s": round(replies / seconds, 1), "cpu_pct": round(100 * cpu / seconds, 1),
            "per_cpu_s": round(replies / cpu, 1) if cpu > 0 else float("nan"),
            "generator_cpu_s": round(sum(out.get("cpu_s", 0.0) for out in outputs), 1),
            "booted": sum(1 for r in stations.values() if r.get("t_booted")),
            **joined, **noise(machine0, machine1)}


async def throughput_round(workdir: Path, workers: int, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in SERVERS:
        if name == "drbridge":
            with drbridge(workdir, FLOOD_STATIONS, workers, metrics=False) as server:
                result[name] = await flood(workdir, server, seconds)
        else:
            with example_cs(workdir, name.removeprefix("example_")) as server:
                result[name] = await flood(workdir, server, seconds)
    return result


async def throughput_rounds(workdir: Path, runs: int, workers: int) -> list[dict[str, Any]]:
    """``runs`` rounds, each printed as it ends."""
    rounds = []
    for number in range(1, runs + 1):
        rates = await throughput_round(workdir, workers, FLOOD_S)
        rounds.append(rates)
        print(f"throughput round {number}: " + ", ".join(
            f"{name} {r['per_s']:.0f}/s ({r['cpu_pct']:.0f} % CPU)"
            for name, r in rates.items()), flush=True)
    return rounds


# local controller --------------------------------------------------------------------------------
FORWARD_HISTOGRAM = "drbridge_upstream_forward_added_seconds"
LAG_HISTOGRAM = "drbridge_event_loop_lag_seconds"


async def replies_in_window(workdir: Path, server: Server, count: int, spread: float,
                            settle: float, window_s: float, behind: Server | None = None,
                            ) -> dict[str, float]:
    """Each station a MeterValues every 10 s, connecting over ``spread``; once ``settle``
    more seconds have passed (the joins' work done), the replies to what was sent in the
    next ``window_s`` seconds, as the stations measured them. ``behind``: ``server`` is
    drbridge in local-controller mode forwarding to that CSMS; its histogram of the time a
    forwarded message spent in it, over the same window, too."""
    start_at = time.time() + 2
    opens = start_at + spread + settle
    gens = generators(workdir, server.port, count, "steady", start_at,
                      spread + settle + window_s + 5, spread, record_after=opens)
    forwarding = behind is not None
    pids = [server.pid, *gens.pids, os.getpid(), *([behind.pid] if behind else [])]
    try:
        await sleep_until(opens)
        before = await asyncio.to_thread(server.scrape) if forwarding else {}
        first = MachineSample.take(pids)
        cpu = [tree_cpu_s(server.pid), *([process_cpu_s(behind.pid)] if behind else [])]
        began = time.time()
        await sleep_until(opens + window_s)
        cpu = [tree_cpu_s(server.pid) - cpu[0],
               *([process_cpu_s(behind.pid) - cpu[1]] if behind else [])]
        spent = time.time() - began
        last = MachineSample.take(pids)
        after = await asyncio.to_thread(server.scrape) if forwarding else {}
        await asyncio.sleep(2.0)  # the window's last replies come in
    finally:
        gens.stop()
    stations = merged(await asyncio.to_thread(gens.wait, 120))
    latencies = [1000 * s for s in analysis.reply_latencies(stations, opens, opens + window_s)]
    result = {"booted": float(sum(1 for r in stations.values() if r.get("t_booted"))),
              "replies": float(len(latencies)),
              "p50_ms": analysis.pct(latencies, 0.5), "p99_ms": analysis.pct(latencies, 0.99),
              # the CPU of the process the stations talk to (the CSMS, or drbridge)
              "cpu_pct": round(100 * cpu[0] / spent, 1), **noise(first, last)}
    if forwarding:
        buckets, _, messages = analysis.histogram_delta(before, after, FORWARD_HISTOGRAM)
        # how long frames waited for drbridge's event loop: the loop's lag over the window
        lag, held, samples = analysis.histogram_delta(before, after, LAG_HISTOGRAM)
        result.update(in_bridge_messages=messages,
                      in_bridge_p50_ms=1000 * analysis.histogram_quantile(buckets, 0.5),
                      in_bridge_p99_ms=1000 * analysis.histogram_quantile(buckets, 0.99),
                      loop_lag_p50_ms=1000 * analysis.histogram_quantile(lag, 0.5),
                      loop_lag_p99_ms=1000 * analysis.histogram_quantile(lag, 0.99),
                      loop_held_s=round(held, 3), loop_lag_samples=samples,
                      csms_cpu_pct=round(100 * cpu[1] / spent, 1))
    return result


async def local_controller(workdir: Path, count: int, kind: str, window_s: float,
                           flood_s: float, workers: int = 0) -> dict[str, Any]:
    """Stations to a CSMS straight, then through drbridge in local-controller mode to the
    same CSMS: the latency drbridge adds to a forwarded message, and the forwarded
    MeterValues throughput against the straight one."""
    spread = min(10.0, count / 100)
    settle = max(5.0, count / 100)
    result: dict[str, Any] = {"csms": kind, "stations": count}
    with upstream_cs(workdir, kind) as csms:
        url = f"ws://127.0.0.1:{csms.port}"
        result["straight"] = await replies_in_window(workdir, csms, count, spread, settle,
                                                     window_s)
        with drbridge(workdir, count, workers, upstream_url=url) as running:
            result["forwarded"] = await replies_in_window(workdir, running, count, spread,
                                                          settle, window_s, behind=csms)
        # the second half of a flood: the 1,000 joins through drbridge are behind it
        joined_s = flood_s / 2
        result["straight_flood"] = await flood(workdir, csms, flood_s, count,
                                               joined_s=joined_s)
        with drbridge(workdir, count, workers, metrics=False, upstream_url=url) as running:
            result["forwarded_flood"] = await flood(workdir, running, flood_s, count, csms,
                                                    joined_s)
    straight, forwarded = result["straight_flood"]["per_s"], result["forwarded_flood"]["per_s"]
    result["ratio"] = forwarded / straight if straight else float("nan")
    straight, forwarded = (result[f"{part}_flood"].get("per_s_joined", float("nan"))
                           for part in ("straight", "forwarded"))
    result["ratio_joined"] = forwarded / straight if straight else float("nan")
    return result


def _lc_brief(outcome: dict[str, Any]) -> str:
    straight, forwarded = outcome["straight"], outcome["forwarded"]
    floods = outcome["straight_flood"], outcome["forwarded_flood"]
    return (f"straight p50/p99 {straight['p50_ms']:.1f}/{straight['p99_ms']:.1f} ms,"
            f" forwarded {forwarded['p50_ms']:.1f}/{forwarded['p99_ms']:.1f} ms (in drbridge"
            f" ≤ {forwarded['in_bridge_p50_ms']:.1f}/≤ {forwarded['in_bridge_p99_ms']:.1f} ms;"
            f" loop lag p99 ≤ {forwarded['loop_lag_p99_ms']:.1f} ms, held"
            f" {forwarded['loop_held_s']:.2f} s; CPU {forwarded['cpu_pct']:.0f} %, CSMS"
            f" {forwarded['csms_cpu_pct']:.0f} %); flood straight {floods[0]['per_s']:.0f}/s,"
            f" forwarded {floods[1]['per_s']:.0f}/s ({100 * outcome['ratio']:.0f} %); joined"
            f" half: {floods[0].get('per_s_joined', float('nan')):.0f}/s,"
            f" {floods[1].get('per_s_joined', float('nan')):.0f}/s"
            f" ({100 * outcome.get('ratio_joined', float('nan')):.0f} %); drbridge CPU"
            f" {floods[1]['cpu_pct']:.0f} %, {floods[1]['per_cpu_s']:.0f} msg per CPU-s")


async def local_controller_runs(workdir: Path, quick: bool, runs: int, workers: int = 0
                                ) -> dict[str, Any]:
    """``runs`` runs per CSMS, in turn; the figures as ``results["local_controller"]``."""
    count, window_s, flood_s = LC_SIZES[quick]
    found: dict[str, Any] = {"stations": count, "window_s": window_s, "flood_s": flood_s,
                             "runs": {kind: [] for kind in LC_CSMS}}
    for number in range(1, runs + 1):
        for kind in LC_CSMS:
            outcome = await local_controller(workdir, count, kind, window_s, flood_s, workers)
            found["runs"][kind].append(outcome)
            print(f"local controller ({kind}) run {number}: {_lc_brief(outcome)}", flush=True)
    return found


# the run -----------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    runs = 1 if args.quick else args.runs
    if args.only == "local-controller":  # printed only: the committed figures stay as they are
        with tempfile.TemporaryDirectory(prefix="drbridge-bench-") as tmp:
            found = await local_controller_runs(Path(tmp), args.quick, runs, args.workers)
        from bench import report
        print(json.dumps(found, indent=1, allow_nan=True))
        print(report.local_controller_table({"local_controller": found}))
        return
    if args.only == "throughput":  # printed only, as above
        with tempfile.TemporaryDirectory(prefix="drbridge-bench-") as tmp:
            rounds = await throughput_rounds(Path(tmp), runs, args.workers)
        from bench import report
        print(json.dumps(rounds, indent=1, allow_nan=True))
        print(report.throughput_table({"throughput": rounds, "settings": {
            "backlog": BACKLOG, "flood_s": FLOOD_S}}))
        return
    fleets = QUICK_FLEETS if args.quick else FLEETS
    if args.sizes:
        fleets = [f for f in fleets if f[0] in args.sizes] or \
            [(n, "storm" if n <= 5_000 else "spread") for n in args.sizes]
    steady_s = 8.0 if args.quick else STEADY_WINDOW_S
    commit, dirty = git_state()
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "run_id": f"{started:%Y%m%dT%H%MZ}-{commit}{'-dirty' if dirty else ''}",
        "started": started.isoformat(timespec="seconds"),
        "commit": commit, "dirty": dirty, "quick": args.quick, "runs": runs,
        "edge_workers": args.workers, "machine": machine(), "load_before": load_average(),
        "settings": {"kw_per_station": KW_PER_STATION, "spread_s": SPREAD_S,
                     "steady_window_s": steady_s, "event_lead_s": EVENT_LEAD_S,
                     "event_window_s": EVENT_WINDOW_S, "event_level": EVENT_LEVEL,
                     "quiet_s": QUIET_S, "flood_stations": FLOOD_STATIONS, "flood_s": FLOOD_S,
                     "backlog": BACKLOG, "replan_period_s": REPLAN_PERIOD_S,
                     "replan_before_s": -REPLAN_WINDOW[0], "replan_after_s": REPLAN_WINDOW[1]},
        "fleets": {}, "throughput": [],
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="drbridge-bench-") as tmp:
        workdir = Path(tmp)
        vtn = DemoVtn(poll_interval=timedelta(seconds=1))
        await vtn.start()
        try:
            for size, connect in fleets:
                runs_of_size = results["fleets"].setdefault(str(size), [])
                for number in range(1, runs + 1):
                    outcome = await fleet_run(workdir, vtn, size, connect, args.workers,
                                              steady_s, number)
                    runs_of_size.append(outcome)
                    print(f"fleet {size} run {number}: {_brief(outcome)}", flush=True)
        finally:
            await vtn.stop()
        if not args.skip_throughput:
            results["throughput"] = await throughput_rounds(workdir, runs, args.workers)
        if not args.skip_local_controller:
            # one run per CSMS (about five minutes for both at 1,000 stations)
            results["local_controller"] = await local_controller_runs(workdir, args.quick, 1,
                                                                      args.workers)
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.iterdir():
                if path.suffix in (".json", ".log", ".db"):
                    path.replace(keep / path.name)
    results["seconds"] = round(time.monotonic() - began)
    results["load_after"] = load_average()
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    print(f"wrote {out} ({results['seconds']} s)")
    if not args.no_report:
        from bench import report
        for path in report.write(out, ROOT / args.markdown,
                                 ROOT / "README.md" if args.readme else None):
            print(f"wrote {path}")


def _brief(outcome: dict[str, Any]) -> str:
    windows = outcome["windows"]
    storm, dispatch = outcome["storm"], outcome["dispatch"]
    return (f"settled {outcome['settled_s']} s; held {storm['hold_max_s']:.2f} s, over share"
            f" {storm['over_share_max_s']:.2f} s; steady {windows['steady']['cpu_pct']} % CPU,"
            f" {outcome['rss_mb']} MB, p99 {windows['steady']['reply_p99_ms']} ms"
            f" (replan {windows['replan']['reply_p99_ms']} ms, event"
            f" {windows['event']['reply_p99_ms']} ms); dispatch all {dispatch['all_s']:.3f} s"
            f" ({int(dispatch['counted'])}/{int(dispatch['stations'])}); others"
            f" {max(w['others_cpu_pct'] for w in windows.values())} % CPU; listen overflows"
            f" {outcome.get('listen_overflows')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", help="only these fleet sizes")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 0),
                        help="the bridge's OCPP edge worker processes (ocpp.workers; default 0:"
                             " the edge in the bridge's own process; $WORKERS)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-local-controller", action="store_true")
    parser.add_argument("--only", choices=("local-controller", "throughput"),
                        help="run this scenario alone (--runs runs per CSMS, or rounds) and"
                             " print its figures and table (docs untouched)")
    parser.add_argument("--out", default="docs/benchmarks.json", help="the run's figures")
    parser.add_argument("--markdown", default="docs/benchmarks.md")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=True,
                        help="update the README's results paragraph too (default yes)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the generators' records, logs and stores here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.runs > 10:
        parser.error("--runs must be 1..10")
    if not 0 <= args.workers <= 64:
        parser.error("--workers must be 0..64 (ocpp.workers)")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
