"""``drbridge report EVENT_ID``: an event's performance as CSV, a PNG plot and a text summary.

Reads the store (it may run beside a live bridge: SQLite in WAL mode lets it
read), computes with :mod:`bridge.performance` and writes three files.
"""

from __future__ import annotations

import csv
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.config import Config
from bridge.performance import (
    LoadRow,
    Performance,
    evaluate,
    exempt_during,
    history_windows,
    non_compliant_stations,
)
from bridge.store import Store, StoredEvent
from bridge.web.views import baseline_settings, event_cap_w, event_end


def performance_of(config: Config, store: Store, stored: StoredEvent,
                   now: datetime) -> Performance:
    event = stored.event
    start = event.start
    end = min(event_end(event), now)
    if end <= start:
        end = start  # not started yet: no intervals, the method still says how
    settings = baseline_settings(config)
    rows: list[LoadRow] = []
    for a, b in history_windows(start, max(end, start + timedelta(seconds=1)), settings):
        rows.extend(store.site_load_between(a, b))
    rows.extend(store.site_load_between(start, end))
    samples = store.samples_between(start, end)
    station_ids = sorted({s.station_id for s in samples})
    accepted = {sid: store.accepted_schedules(sid, end) for sid in station_ids}
    exempt = exempt_during(store.hold_log(end), start, max(end, start + timedelta(seconds=1)))
    return evaluate(
        event.event_id, start, end, rows, timedelta(seconds=config.model.report.interval_s),
        settings, cap_w=event_cap_w(config, event), stations_opted_out=exempt,
        stations_non_compliant=non_compliant_stations(
            ((s.station_id, s.at, s.power_w) for s in samples), accepted, start, end,
            tolerance_w=config.model.ocpp.compliance_tolerance_w,
            grace=timedelta(seconds=config.model.ocpp.compliance_grace_s)),
    )


def _kw(watts: float | None) -> str:
    return "n/a" if watts is None else f"{watts / 1000:.2f} kW"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def compliance_data_gone(store: Store, perf: Performance) -> datetime | None:
    """When retention deleted meter samples or profiles from before the event's end: what
    the stations are judged by may be gone (the site load, kept longer, still holds the
    rest). The latest such cut-off, or None."""
    gone = [at for table in ("samples", "profiles")
            if (at := store.pruned_before(table)) is not None and perf.start < at]
    return max(gone, default=None)


def summary_text(perf: Performance, stored: StoredEvent,
                 compliance_gone_before: datetime | None = None) -> str:
    lines = [
        f"DR event {perf.event_id}",
        f"  window              {perf.start:%Y-%m-%d %H:%M:%S} – {perf.end:%H:%M:%S} UTC "
        f"({len(perf.intervals)} intervals)",
        f"  site's answer       {stored.opt} ({stored.opt_reason})",
        f"  baseline            {_kw(perf.baseline_w)}",
        f"  measured load       {_kw(perf.measured_w)}",
        f"  requested shed      {_kw(perf.requested_shed_w)} (baseline above the limit, mean)",
        f"  achieved shed       {_kw(perf.achieved_shed_w)} (baseline minus measured, mean)"
        f", {_pct(perf.delivered_pct)} of requested",
        f"  compliance          {_pct(perf.compliance_pct)} of intervals at or under the limit",
        "  stations opted out  " + (", ".join(perf.stations_opted_out)
                                    + " (exempt from DR by the operator)"
                                    if perf.stations_opted_out else "none"),
        "  non-compliant       " + (
            f"unknown: the meter samples and profiles from before "
            f"{compliance_gone_before:%Y-%m-%d %H:%M} UTC are no longer kept "
            "(storage.retention)" if compliance_gone_before is not None
            else ", ".join(perf.stations_non_compliant)
            + " (measured above the limit they accepted)"
            if perf.stations_non_compliant else "none"),
        f"  baseline method     {perf.method}",
    ]
    return "\n".join(lines) + "\n"


def write_csv(perf: Performance, path: Path) -> None:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["interval_start", "interval_end", "baseline_w", "measured_w",
                         "limit_w", "shed_w"])
        for i in perf.intervals:
            writer.writerow([i.start.isoformat(), i.end.isoformat(), number(i.baseline_w),
                             number(i.measured_w), number(i.limit_w), number(i.shed_w)])


def write_plot(perf: Performance, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 4.5), dpi=100)
    times = [i.start for i in perf.intervals] + ([perf.intervals[-1].end] if perf.intervals
                                                 else [])

    def series(values: list[float | None]) -> list[float]:
        kw = [float("nan") if v is None else v / 1000 for v in values]
        return kw + kw[-1:]  # a step plot needs the last value at the end of the window

    for label, values, style in (
        ("baseline", [i.baseline_w for i in perf.intervals], {"color": "#6e7781",
                                                              "linestyle": ":"}),
        ("limit", [i.limit_w for i in perf.intervals], {"color": "#d1242f", "linestyle": "--"}),
        ("measured", [i.measured_w for i in perf.intervals], {"color": "#1f6feb"}),
    ):
        if times:
            axes.step(times, series(values), where="post", label=label, **style)
    axes.set_title(f"DR event {perf.event_id}")
    axes.set_ylabel("site load, kW")
    axes.set_xlabel("UTC")
    values_kw = [v / 1000 for i in perf.intervals
                 for v in (i.baseline_w, i.measured_w, i.limit_w) if v is not None]
    axes.set_ylim(bottom=0, top=max(values_kw, default=1.0) * 1.25 or 1.0)
    axes.grid(alpha=0.3)
    if times:
        axes.legend(loc="upper right", ncols=3)
    figure.autofmt_xdate()
    figure.text(0.01, 0.01, f"baseline: {perf.method}"[:150], fontsize=7, color="#57606a")
    figure.savefig(path)
    pyplot.close(figure)


def _file_stem(event_id: str) -> str:
    return "event-" + (re.sub(r"[^A-Za-z0-9._-]", "_", event_id)[:100] or "unnamed")


def write_report(config: Config, event_id: str, out: Path | None,
                 now: datetime | None = None) -> int:
    store = Store(config.storage_path)
    try:
        events = {e.event.event_id: e for e in store.events()}
        stored = events.get(event_id)
        if stored is None:
            known = ", ".join(list(events)[-5:]) or "none yet"
            print(f"drbridge: no event {event_id!r} in {config.storage_path} "
                  f"(latest: {known})", file=sys.stderr)
            return 1
        perf = performance_of(config, store, stored, now or datetime.now(UTC))
        gone = compliance_data_gone(store, perf)
    finally:
        store.close()
    folder = out or config.storage_path.parent / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / _file_stem(event_id)
    text = summary_text(perf, stored, gone)
    write_csv(perf, Path(f"{stem}.csv"))
    write_plot(perf, Path(f"{stem}.png"))
    Path(f"{stem}.txt").write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"  files               {stem}.csv, .png, .txt")
    return 0
