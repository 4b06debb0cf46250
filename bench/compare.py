"""A table comparing fleet runs of ``bench.run`` (their JSON files, in the order given), one
row per fleet run: how long the fleet took to settle and hold its limits, and the bridge's
CPU both with its OCPP edge workers and in its own process alone (``WORKERS``).

    python -m bench.compare RUN.json [RUN.json ...] > table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HEADER = (
    "| run | stations | WORKERS | commit | settled (s) | hold, worst station (s)"
    " | over share, worst (s) | join CPU: all / bridge process (CPU-s)"
    " | steady CPU: all / bridge process (% of a core) | RSS, all (MB) | steady p99 (ms)"
    " | replan window p99 (ms) | event window p99 (ms)"
    " | event window CPU: all / bridge process (%) | event window plans: count, time (s)"
    " | dispatch, all stations (s) | others' CPU, worst window (%)"
    " | listen overflows, start to settled |\n"
    "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(number: int, run: dict[str, Any], size: str, fleet: dict[str, Any]) -> str:
    windows = fleet["windows"]
    steady, event = windows["steady"], windows["event"]
    commit = run["commit"] + (" (uncommitted changes)" if run["dirty"] else "")

    def pair(all_value: float | None, main_value: float | None, digits: int) -> str:
        if all_value is None or main_value is None:
            return "—"
        return f"{all_value:.{digits}f} / {main_value:.{digits}f}"

    others = max(w["others_cpu_pct"] for w in windows.values())
    return (f"| {number} | {int(size):,} | {run.get('edge_workers', 0)} | `{commit}`"
            f" | {fleet['settled_s']} | {fleet['storm']['hold_max_s']:.1f}"
            f" | {fleet['storm']['over_share_max_s']:.1f}"
            f" | {pair(fleet.get('join_cpu_s'), fleet.get('join_main_cpu_s'), 1)}"
            f" | {pair(steady['cpu_pct'], steady.get('main_cpu_pct'), 0)}"
            f" | {fleet['rss_mb']:.0f} | {steady['reply_p99_ms']:.0f}"
            f" | {windows['replan']['reply_p99_ms']:.0f} | {event['reply_p99_ms']:.0f}"
            f" | {pair(event['cpu_pct'], event.get('main_cpu_pct'), 0)}"
            f" | {event['plans']}, {event['plan_s']:.2f}"
            f" | {fleet['dispatch']['all_s']:.2f} | {others:.1f}"
            f" | {_or_dash(fleet.get('listen_overflows'))} |")


def _or_dash(value: int | None) -> str:
    """A figure runs before it was recorded do not have."""
    return "—" if value is None else f"{value:,}"


def table(paths: list[Path]) -> str:
    rows = [HEADER]
    for number, path in enumerate(paths, 1):
        run = json.loads(path.read_text())
        for size, fleets in run["fleets"].items():
            rows += [row(number, run, size, fleet) for fleet in fleets]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    print(table(parser.parse_args().runs))


if __name__ == "__main__":
    main()
