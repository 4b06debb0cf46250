"""A local OpenADR 2.0b VTN that issues one SIMPLE event to the first VEN that registers.

    python examples/vtn.py --level 2 --start-in 60 --duration 300

Pair it with `drbridge run --config config/site-a.yaml` and `python examples/fleet.py`.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from bridge.sim.vtn import DemoVtn


async def main(args: argparse.Namespace) -> None:
    vtn = DemoVtn(host="127.0.0.1", port=args.port)
    await vtn.start()
    print(f"VTN listening at {vtn.url}; waiting for a VEN to register")
    while not vtn.received.registrations:
        await asyncio.sleep(1)
    ven_name = vtn.received.registrations[0]["ven_name"]
    ven_id = vtn.ven_id(ven_name)
    assert ven_id is not None
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=args.start_in)
    event_id = vtn.add_simple_event(ven_id, start,
                                    [(timedelta(seconds=args.duration), args.level)])
    print(f"issued {event_id} to {ven_name}: SIMPLE level {args.level} "
          f"from {start:%H:%M:%S} UTC for {args.duration} s")
    seen = 0
    while True:
        await asyncio.sleep(1)
        for ven, event, opt in vtn.received.opts[seen:]:
            print(f"{ven} answered {opt} to {event}")
        seen = len(vtn.received.opts)
        if vtn.received.reports:
            at, value = vtn.received.reports[-1][2:]
            print(f"latest telemetry: {value / 1000:.1f} kW at {at:%H:%M:%S}", end="\r")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--level", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--start-in", type=int, default=60, help="seconds until the event")
    parser.add_argument("--duration", type=int, default=300, help="event length in seconds")
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        pass
