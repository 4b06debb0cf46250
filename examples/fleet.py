"""Simulated OCPP 1.6J chargers, each with an EV plugged in, for a bridge to steer.

    python examples/fleet.py --stations 10 --url ws://127.0.0.1:9000

Every few seconds it prints each charger's own composite limit and the EV's draw.
"""

from __future__ import annotations

import argparse
import asyncio

from bridge.sim.station import SimulatedStation, StationSpec

RATE_UNITS = ("Current", "Power", "Current,Power")


async def main(args: argparse.Namespace) -> None:
    fleet = [
        SimulatedStation(StationSpec(station_id=f"CP{n + 1:02d}", rate_unit=RATE_UNITS[n % 3],
                                     ev_max_current_a=args.ev_amps), args.url)
        for n in range(args.stations)
    ]
    tasks = [asyncio.create_task(station.run()) for station in fleet]
    try:
        while True:
            await asyncio.sleep(args.every)
            total = sum(s.power_w for s in fleet)
            row = " ".join(f"{s.id}:{s.composite_limit_a():4.1f}A" for s in fleet)
            print(f"draw {total / 1000:6.1f} kW | {row}")
    finally:
        for station in fleet:
            await station.stop()
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=10)
    parser.add_argument("--url", default="ws://127.0.0.1:9000")
    parser.add_argument("--ev-amps", type=float, default=16.0, help="each EV's own maximum")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between lines")
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        pass
