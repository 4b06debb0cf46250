"""What a DR wave costs the bridge per station: the dispatcher's work from a new schedule
to the station's accepted answer on record.

In-process and bounded, no network: a :class:`~bridge.dispatch.Dispatcher` on a real store
(a SQLite file in a temporary folder), ``--stations`` OCPP 1.6 stations each on a real
:class:`~bridge.ocpp.v16.StationLink16` whose connection answers every call in the next
turn of the event loop (SetChargingProfile "Accepted", ClearChargingProfile "Unknown",
GetCompositeSchedule "Rejected"). Every station holds a limit and is
given a lower one, as a DR event does; the wave is timed until every station's answer is
on record (the follow-up calls that come after it are not). What is timed is the bridge's own
CPU (``time.process_time``: this process only); the stations cost nothing here, unlike
in ``bench.run``, where the load generators share the machine.

    python -m bench.wave_cost [--stations 10000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import platform
import pstats
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.link_cost import QuietListener
from bridge.dispatch import Dispatcher, StationRecord
from bridge.gc_tuning import tune_for_many_connections
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.v16 import StationLink16
from bridge.station_life import Event
from bridge.store import Store
from policies.fleet import StationInfo, Step

MAX_STATIONS = 20_000  # keeps a run bounded in time and memory


REPLIES = {"SetChargingProfile": '{"status":"Accepted"}',
           "ClearChargingProfile": '{"status":"Unknown"}',
           "GetCompositeSchedule": '{"status":"Rejected"}'}


class AnsweringConnection:
    """A station's websocket that answers each CALL in the next turn of the loop."""

    def __init__(self) -> None:
        self.link: StationLink16 | None = None

    async def send(self, message: str) -> None:
        # read no more of the frame than its id and action: the station's side of the
        # exchange should cost as little as it can, since the timing counts this process
        if not message.startswith("[2,"):
            return
        _, unique_id, _, action, _ = message.split('"', 4)
        reply = REPLIES.get(action, "{}")
        assert self.link is not None
        asyncio.get_running_loop().call_soon(_route, self.link, f'[3,"{unique_id}",{reply}]')

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def _route(link: StationLink16, text: str) -> None:
    asyncio.ensure_future(link.route_message(text))


def fleet(folder: Path, count: int) -> tuple[Dispatcher, Store]:
    store = Store(folder / "bridge.db")
    now = datetime.now(UTC)
    dispatch = Dispatcher(store, min_current_a=6, retry_s=1, on_change=lambda: None,
                          clock=lambda: datetime.now(UTC))
    listener = QuietListener()
    before = (Step(now - timedelta(minutes=1), 11040.0, "before"),)
    for n in range(count):
        sid = f"CP{n:05d}"
        state = dispatch.stations[sid] = StationRecord(info=StationInfo(sid, 3, 230.0, 32.0))
        connection = AnsweringConnection()
        link = StationLink16(sid, connection, listener, 30.0)  # type: ignore[arg-type]
        connection.link = link
        link.registered.set()
        state.link = link
        state.caps = Capabilities(known=True)
        state.handling.foreign = frozenset()
        state.applied = state.desired = before
        state.wake.on_set = functools.partial(dispatch._serve, state)
        for event in (Event.CONNECTED, Event.REGISTERED, Event.SENT, Event.ACCEPTED):
            state.life.fire(event, now)
    return dispatch, store


async def one_wave(count: int, limit_w: float, profile: cProfile.Profile | None
                   ) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        dispatch, store = fleet(Path(folder), count)
        try:
            now = datetime.now(UTC)
            # one schedule for all, as a plan shares its step objects among equal shares
            schedule = (Step(now, limit_w, "event"),)
            wanted = {sid: schedule for sid in dispatch.stations}
            await asyncio.sleep(0)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            dispatch.set_desired(wanted)
            while any(s.applied is None or s.applied[0].limit_w != limit_w
                      for s in dispatch.stations.values()):
                await asyncio.sleep(0.005)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            if profile:
                profile.disable()
            await dispatch.limits_sent(timeout=120)
            return {"accepted_cpu_us": 1e6 * (cpu1 - cpu0) / count,
                    "accepted_wall_s": wall1 - wall0}
        finally:
            await dispatch.close()
            store.db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the last wave")
    args = parser.parse_args()
    count = min(args.stations, MAX_STATIONS)
    tune_for_many_connections()
    results = []
    profile = None
    for run in range(args.runs):
        profile = cProfile.Profile() if args.profile and run == args.runs - 1 else None
        results.append(asyncio.run(one_wave(count, 5520.0, profile)))
    print(f"A wave to {count} stations, {args.runs} runs ({datetime.now(UTC):%Y-%m-%d},"
          f" Python {platform.python_version()})\n")
    print("| part | median | range |\n|---|---:|---:|")
    for key, label in (("accepted_cpu_us", "CPU per station to the answer on record (µs)"),
                       ("accepted_wall_s", "wall time to the last answer on record (s)")):
        values = [r[key] for r in results]
        print(f"| {label} | {statistics.median(values):.2f} |"
              f" {min(values):.2f}–{max(values):.2f} |")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
