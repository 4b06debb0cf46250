"""The calls drbridge makes to each station, counted at the stations: on a first join, when
the same stations reconnect and boot again (an outage, a gateway restart), when they
reconnect without a boot, and when the bridge restarts under them.

    python -m bench.setup_calls --stations loadgen --count 1000
    python -m bench.setup_calls --stations sim16 --count 500 --station-interval 60
    python -m bench.setup_calls --stations sim201 --count 500 --station-interval 60
    python -m bench.setup_calls ... --bridge-src DIR   # the bridge of another checkout

The bridge runs as ``drbridge run`` in its own process, configured as ``bench.run``
configures it (meter interval 10 s; the grid measurands asked, as telemetry.voltage is on by
default); ``--bridge-src`` puts another checkout first on its PYTHONPATH, for a before/after
comparison with the same stations. The stations run here:

- ``loadgen``: ``bench.loadgen``'s (OCPP 1.6, raw frames, a session each, a boot on every
  connection; their meter keys read-only, reported as they sample). Steps: join, then the
  same ids connect again (and boot).
- ``sim16``, ``sim201``: ``bridge.sim``'s stations (OCPP 1.6 or 2.0.1, no session), which
  report the meter settings they hold (an interval of ``--station-interval`` s at first)
  and take new ones. Steps: join; every link dropped, the stations reconnect and boot;
  dropped again, they reconnect without a boot; the bridge restarted on the same store,
  they reconnect without a boot.

After each step the fleet is left until every station is connected and no call went to any
for ``--quiet`` seconds; the step's calls are those the stations received meanwhile. Prints
a Markdown table: calls per station by action, per step. Counts, not timings: a shared
machine changes when calls go, not which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import loadgen
from bench.fd_limit import raise_fd_limit
from bench.run import _stop, bridge_config, wait_for_port
from bridge.dispatch import BOOT_WAIT_S, FOLLOW_UP_MAX_WAIT_S
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.station201 import SimulatedStation201
from bridge.sim.vtn import free_port

# A follow-up call (the meter settings, the composite check) waits for the fleet's limits
# for up to FOLLOW_UP_MAX_WAIT_S: a step ends only after longer than that without a call.
QUIET_S = FOLLOW_UP_MAX_WAIT_S + 2.0
STEP_LIMIT_S = 180.0
BRIDGE_METER_INTERVAL_S = 10  # bridge.config's default, which bench.run keeps


def start_bridge(workdir: Path, count: int, port: int, src: Path | None
                 ) -> subprocess.Popen[bytes]:
    config = bridge_config(workdir, count, port, None, None, 1)
    env = dict(os.environ)
    if src is not None:  # first on the path: ``-m`` puts the working directory there
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    log = (workdir / "bridge.log").open("a")
    process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                                str(config)], stdout=log, stderr=log, env=env, cwd=src,
                               preexec_fn=raise_fd_limit)
    wait_for_port(port, process=process, log=workdir / "bridge.log")
    return process


async def until_quiet(counts: Callable[[], Counter[str]], connected: Callable[[], bool],
                      quiet_s: float, limit_s: float = STEP_LIMIT_S) -> Counter[str]:
    """The calls counted once every station is connected and none came for ``quiet_s``."""
    began = time.monotonic()
    last, since = Counter[str](), time.monotonic()
    while time.monotonic() - began < limit_s:
        now = counts()
        if now != last or not connected():
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the fleet did not settle in {limit_s:.0f} s (all connected: "
                       f"{connected()}; calls so far: {dict(last)})")


def received(stations: Sequence[SimulatedStation | SimulatedStation201]) -> Counter[str]:
    return Counter(action for s in stations for action, _ in s.received)


async def loadgen_steps(url: str, count: int, quiet_s: float) -> dict[str, Counter[str]]:
    options = loadgen.Options(url, "steady", float(BRIDGE_METER_INTERVAL_S), "Current", False)
    steps: dict[str, Counter[str]] = {}
    for step in ("join", "reconnect, boot"):
        now = time.time()
        fleet = [loadgen.Station(f"SC-{i:05d}", options, now, now + 3600) for i in range(count)]
        tasks = [asyncio.create_task(s.run()) for s in fleet]
        try:
            steps[step] = await until_quiet(
                lambda fleet=fleet: sum((Counter(s.rec["calls"]) for s in fleet), Counter()),
                lambda fleet=fleet: all(s.rec["t_tx"] is not None for s in fleet), quiet_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return steps


async def sim_steps(url: str, count: int, version: str, interval_s: float, quiet_s: float,
                    restart: Callable[[], None]) -> dict[str, Counter[str]]:
    kind = SimulatedStation if version == "1.6" else SimulatedStation201
    fleet = [kind(StationSpec(station_id=f"SC-{i:05d}", plugged_in=False,
                              meter_interval_s=interval_s), url) for i in range(count)]
    tasks = [asyncio.create_task(s.run()) for s in fleet]  # type: ignore[attr-defined]

    def connected() -> bool:
        return all(s.connected for s in fleet)

    steps: dict[str, Counter[str]] = {}
    try:
        before = Counter[str]()
        for step in ("join", "reconnect, boot", "reconnect, no boot", "bridge restart"):
            if step == "reconnect, no boot":
                for station in fleet:
                    station.spec.boots_on_reconnect = False
            if step in ("reconnect, boot", "reconnect, no boot"):
                for station in fleet:
                    await station.drop_connection()
            if step == "bridge restart":
                restart()
            # the drops seen before "connected" is asked; a station back without a boot
            # that keeps silent is served after the bridge's boot wait
            await asyncio.sleep(1.0 if step in ("join", "reconnect, boot") else BOOT_WAIT_S + 1)
            total = await until_quiet(lambda: received(fleet), connected, quiet_s)
            steps[step], before = total - before, total
            print(f"{step}: {dict(steps[step])}", file=sys.stderr)
    finally:
        await asyncio.gather(*(s.stop() for s in fleet))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return steps


def table(steps: dict[str, Counter[str]], count: int) -> str:
    actions = sorted({a for calls in steps.values() for a in calls})
    lines = ["| step | " + " | ".join(actions) + " | all |",
             "|---|" + "---:|" * (len(actions) + 1)]
    for step, calls in steps.items():
        cells = [f"{calls[a] / count:.2f}" for a in actions]
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {sum(calls.values()) / count:.2f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="setup-calls-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        bridge = start_bridge(workdir, args.count, port, args.bridge_src)

        def restart() -> None:
            nonlocal bridge
            _stop(bridge)
            bridge = start_bridge(workdir, args.count, port, args.bridge_src)

        try:
            if args.stations == "loadgen":
                steps = await loadgen_steps(url, args.count, args.quiet)
            else:
                version = "1.6" if args.stations == "sim16" else "2.0.1"
                steps = await sim_steps(url, args.count, version, args.station_interval,
                                        args.quiet, restart)
        finally:
            _stop(bridge)
    source = args.bridge_src or "this checkout"
    print(f"{args.count} {args.stations} stations, the bridge from {source}; calls per "
          "station, by action:\n")
    print(table(steps, args.count))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.setup_calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", choices=("loadgen", "sim16", "sim201"), required=True)
    parser.add_argument("--count", type=int, required=True, help="stations")
    parser.add_argument("--station-interval", type=float, default=60.0,
                        help="sim stations: the meter interval they hold at first (default 60)")
    parser.add_argument("--quiet", type=float, default=QUIET_S,
                        help=f"seconds without a call that end a step (default {QUIET_S:g})")
    parser.add_argument("--bridge-src", type=Path, default=None,
                        help="run the bridge from this checkout (its package first on "
                             "PYTHONPATH)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.quiet <= 0:
        parser.error("--count and --quiet must be positive")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
