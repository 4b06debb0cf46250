"""docs/benchmarks.md (and the README's results paragraph) from one run's figures.

    python -m bench.report [docs/benchmarks.json] [--markdown docs/benchmarks.md] [--no-readme]

The whole file is written from ``bench/benchmarks.md.in`` (the method, in words, with no
figures of any run) and the run's JSON (every figure): a hand-written number cannot end
up beside another run's. Notes written by hand live in ``docs/benchmarks-notes.md``,
each dated and tied to a run id.

A target is met when the *worst* of the runs meets it (the median is shown beside it).
A run is *quiet* when, in every measured window, the other processes on the machine took
at most ``QUIET_OTHERS_PCT`` % of a core and the hypervisor stole at most
``QUIET_STEAL_PCT`` %; a noisy run says so at the top.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("benchmarks.md.in")
README_BEGIN = "<!-- bench:begin: written by `python -m bench.report` from docs/benchmarks.json -->"
README_END = "<!-- bench:end -->"
QUIET_OTHERS_PCT = 10.0
QUIET_STEAL_PCT = 5.0
WINDOW_NAMES = ("steady", "replan", "event")

Run = dict[str, Any]


# numbers -----------------------------------------------------------------------------------------
def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, digits: int = 1, thousands: bool = False) -> str:
    number = _num(value)
    if math.isnan(number):
        return "—"
    if math.isinf(number):
        return "never" if number > 0 else "—"
    return f"{number:,.{digits}f}" if thousands else f"{number:.{digits}f}"


def median_worst(values: Iterable[Any], worst: Callable[[Sequence[float]], float] = max
                 ) -> tuple[float, float]:
    """(median, worst); NaN for none. An infinite value (never happened) is the worst."""
    numbers = [_num(v) for v in values]
    numbers = [n for n in numbers if not math.isnan(n)]
    if not numbers:
        return math.nan, math.nan
    return statistics.median(numbers), worst(numbers)


def mw(values: Iterable[Any], digits: int = 1, worst: Callable[[Sequence[float]], float] = max,
       thousands: bool = False) -> str:
    """"median (worst)", or one figure for one run."""
    values = list(values)
    median, bad = median_worst(values, worst)
    if len(values) == 1:
        return fmt(median, digits, thousands)
    return f"{fmt(median, digits, thousands)} ({fmt(bad, digits, thousands)})"


def _table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# targets -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _fleet(run: Run, size: int) -> list[Run]:
    return run["fleets"].get(str(size), [])


def _windows(runs: list[Run], name: str, key: str) -> list[float]:
    return [r["windows"][name][key] for r in runs]


def verdicts(run: Run) -> list[Verdict]:
    out: list[Verdict] = []

    def add(target: str, values: list[float], limit: float, unit: str, digits: int = 1,
            below: bool = True, strict: bool = True) -> None:
        if not values:
            out.append(Verdict(target, "not measured in this run", None))
            return
        median, worst = median_worst(values, max if below else min)
        ok = (worst < limit if strict else worst <= limit) if below else \
            (worst > limit if strict else worst >= limit)
        n = len(values)
        measured = f"{fmt(worst, digits)} {unit}" + \
            (f" worst of {n}, median {fmt(median, digits)}" if n > 1 else "")
        out.append(Verdict(target, measured, bool(ok)))

    big = _fleet(run, 10_000)
    add("steady, 10,000 stations @10 s: < 25 % of a core",
        _windows(big, "steady", "cpu_pct"), 25, "%", 0)
    add("steady, 10,000 stations: < 300 MB RSS", [r["rss_mb"] for r in big], 300, "MB", 0)
    for name, words in (("steady", "steady window"), ("replan", "while a plan runs"),
                        ("event", "during a DR event")):
        add(f"steady, 10,000 stations: MeterValues reply p99 < 100 ms, {words}",
            _windows(big, name, "reply_p99_ms"), 100, "ms", 0)
    storm = _fleet(run, 5_000)
    storm = [r for r in storm if r["connect"] == "storm"]
    add("connect storm, 5,000 stations: every station holds its final limit ≤ 5 s after"
        " the first connection", [r["storm"]["hold_max_s"] for r in storm], 5.0, "s", 2,
        strict=False)
    add("connect storm, 5,000 stations: none draws above its share for more than 2 s",
        [r["storm"]["over_share_max_s"] for r in storm], 2.0, "s", 2, strict=False)
    add("dispatch, 1,000 stations ≤ 0.25 s",
        [r["dispatch"]["all_s"] for r in _fleet(run, 1_000)], 0.25, "s", 3, strict=False)
    add("dispatch, 10,000 stations ≤ 2 s",
        [r["dispatch"]["all_s"] for r in big], 2.0, "s", 3, strict=False)
    rounds = run.get("throughput") or []
    add("throughput ≥ 10× the ocpp example with its defaults",
        [_ratio(r, "example_defaults") for r in rounds], 10, "×", 1, below=False, strict=False)
    add("throughput ≥ 3× the ocpp example with async validation off (same backlog)",
        [_ratio(r, "example_sync") for r in rounds], 3, "×", 1, below=False, strict=False)
    lc = run.get("local_controller")
    if lc:  # a run from before the scenario, or with it skipped, has no such targets
        every = [r for runs in lc["runs"].values() for r in runs]
        lean = lc["runs"].get("lean") or []
        n = f"{lc['stations']:,}"
        add(f"local controller, {n} stations: the stations' reply p99 forwarded < 5 ms more"
            " than straight (either CSMS)",
            [r["forwarded"]["p99_ms"] - r["straight"]["p99_ms"] for r in every], 5, "ms", 1)
        add(f"local controller, {n} stations: drbridge's own time for a forwarded message,"
            " p99 < 5 ms (its histogram's bucket)",
            [r["forwarded"]["in_bridge_p99_ms"] for r in every], 5, "ms", 1)
        add(f"local controller, {n} stations: forwarded MeterValues/s ≥ 70 % of straight"
            " (the lean CSMS)", [100 * r["ratio"] for r in lean], 70, "%", 0, below=False,
            strict=False)
    return out


def _ratio(round_: Run, reference: str, key: str = "per_s") -> float:
    theirs = _num(round_[reference][key])
    return _num(round_["drbridge"][key]) / theirs if theirs else math.nan


# quiet or not -------------------------------------------------------------------------------------
def noise(run: Run) -> tuple[float, float]:
    """(the most CPU others took in any window, % of a core; the most steal)."""
    windows = [w for runs in run["fleets"].values() for r in runs for w in r["windows"].values()]
    windows += [s for r in run.get("throughput") or [] for s in r.values()]
    lc = run.get("local_controller")
    windows += [r[part] for runs in (lc["runs"].values() if lc else ()) for r in runs
                for part in ("straight", "forwarded", "straight_flood", "forwarded_flood")]
    return (max((_num(w["others_cpu_pct"]) for w in windows), default=math.nan),
            max((_num(w["steal_pct"]) for w in windows), default=math.nan))


def is_quiet(run: Run) -> bool:
    others, steal = noise(run)
    return others <= QUIET_OTHERS_PCT and steal <= QUIET_STEAL_PCT


# sections ---------------------------------------------------------------------------------------
def targets_table(run: Run) -> str:
    rows = []
    for v in verdicts(run):
        met = "—" if v.met is None else ("yes" if v.met else "**no**")
        rows.append((v.target, v.measured, met))
    return _table(("target", "measured", "met?"), "llr", rows)


def storm_table(run: Run) -> str:
    rows = []
    for size, runs in sorted(run["fleets"].items(), key=lambda kv: int(kv[0])):
        storms = [r["storm"] for r in runs]
        connect = runs[0]["connect"]
        how = "at once" if connect == "storm" else f"over {fmt(runs[0]['spread_s'], 0)} s"
        rows.append((
            f"{int(size):,} ({how})",
            mw([r["booted"] for r in runs], 0, min, True),
            mw([s["hold_p50_s"] for s in storms], 2),
            mw([s["hold_max_s"] for s in storms], 2),
            mw([s["over_share_max_s"] for s in storms], 2),
            mw([s["over_share_stations"] for s in storms], 0, thousands=True),
            mw([s["site_peak_ratio"] for s in storms], 2),
            mw([s["site_over_s"] for s in storms], 1),
            mw([r["settled_s"] for r in runs], 0),
        ))
    return _table(("stations (connecting)", "booted", "held final limit, p50 (s)",
                   "all held (s)", "longest above share (s)", "stations above share > 2 s",
                   "site draw peak / capacity", "site above capacity (s)",
                   "bridge quiet after (s)"), "lrrrrrrrr", rows)


def windows_table(run: Run) -> str:
    rows = []
    for size, runs in sorted(run["fleets"].items(), key=lambda kv: int(kv[0])):
        for name in WINDOW_NAMES:
            w = [r["windows"][name] for r in runs]
            rows.append((
                f"{int(size):,}", name,
                mw([x["seconds"] for x in w], 0),
                mw([x["cpu_pct"] for x in w], 0),
                mw([r["rss_mb"] for r in runs], 0) if name == "steady" else
                (mw([r["rss_end_mb"] for r in runs], 0) if name == "event" else ""),
                mw([x["replies"] for x in w], 0, min, True),
                mw([x["reply_p50_ms"] for x in w], 1),
                mw([x["reply_p99_ms"] for x in w], 0),
                mw([x["reply_max_ms"] for x in w], 0),
                mw([x["loop_held_s"] for x in w], 2),
                mw([x["loop_lag_worst_bucket_s"] for x in w], 3),
                mw([x["plans"] for x in w], 0),
                mw([x["plan_s"] for x in w], 2),
                mw([x["generator_lag_max_ms"] for x in w], 0),
                mw([x["others_cpu_pct"] for x in w], 0),
            ))
    return _table(("stations", "window", "length (s)", "bridge CPU (% of a core)", "RSS (MB)",
                   "replies", "reply p50 (ms)", "reply p99 (ms)", "reply max (ms)",
                   "loop held (s)", "worst loop lag ≤ (s)", "plans", "plan time (s)",
                   "generators' worst lag (ms)", "others' CPU (%)"),
                  "rlrrrrrrrrrrrrr", rows)


def dispatch_table(run: Run) -> str:
    rows = []
    for size, runs in sorted(run["fleets"].items(), key=lambda kv: int(kv[0])):
        d = [r["dispatch"] for r in runs]
        rows.append((
            f"{int(size):,}",
            mw([x["counted"] for x in d], 0, min, True),
            mw([x["wrong"] for x in d], 0, thousands=True),
            mw([x["p50_s"] for x in d], 3),
            mw([x["p99_s"] for x in d], 3),
            mw([x["all_s"] for x in d], 3),
            mw([x["received_all_s"] for x in d], 3),
            mw([x["event_limit_w"] / 1000 for x in d], 0, thousands=True),
            mw([x["planned_sum_w"] / 1000 for x in d], 0, thousands=True),
            mw([x["held_sum_w"] / 1000 for x in d], 0, thousands=True),
        ))
    return _table(("stations", "counted", "got other profiles only", "p50 (s)", "p99 (s)",
                   "all acknowledged (s)", "all received (s)", "event's site limit (kW)",
                   "plan's sum (kW)", "held by stations, sum (kW)"), "rrrrrrrrrr", rows)


def throughput_table(run: Run) -> str:
    rows = []
    flood_s = float(run["settings"]["flood_s"])
    for i, r in enumerate(run.get("throughput") or [], 1):
        rows.append((
            str(i),
            f"{fmt(r['drbridge']['per_s'], 0, True)} ({fmt(r['drbridge']['cpu_pct'], 0)} %)",
            f"{fmt(r['example_defaults']['per_s'], 0, True)}"
            f" ({fmt(r['example_defaults']['cpu_pct'], 0)} %)",
            f"{fmt(r['example_sync']['per_s'], 0, True)}"
            f" ({fmt(r['example_sync']['cpu_pct'], 0)} %)",
            fmt(_ratio(r, "example_defaults"), 2), fmt(_ratio(r, "example_sync"), 2),
            fmt(_ratio(r, "example_defaults", "per_cpu_s"), 2),
            fmt(_ratio(r, "example_sync", "per_cpu_s"), 2),
            # the generator must not be the limit: its CPU while it loaded drbridge
            fmt(100 * _num(r["drbridge"].get("generator_cpu_s")) / flood_s, 0),
            fmt(max(_num(s["others_cpu_pct"]) for s in r.values()), 0),
        ))
    if not rows:
        return "Not measured in this run."
    backlog = run["settings"]["backlog"]
    return _table(("round", "drbridge, msg/s (server CPU)", "example, defaults",
                   f"example, sync validation, backlog {backlog:,}", "× defaults", "× sync",
                   "× defaults per CPU-second", "× sync per CPU-second",
                   "generator's CPU loading drbridge (%)", "others' CPU (%)"),
                  "rrrrrrrrrr", rows)


def one_process_table(run: Run) -> str:
    """What a station costs the one bridge process at each size, steady, and how many
    stations a core would carry at that rate (a straight line: an estimate, not a run)."""
    sizes = sorted(run["fleets"].items(), key=lambda kv: int(kv[0]))
    if not sizes:
        return "Not measured in this run."
    base_size = int(sizes[0][0])
    base_rss, _ = median_worst([r["rss_mb"] for r in sizes[0][1]])
    rows = []
    for size, runs in sizes:
        stations = int(size)
        cpu, _ = median_worst(_windows(runs, "steady", "cpu_pct"))
        rss, _ = median_worst([r["rss_mb"] for r in runs])
        event_cpu, _ = median_worst(_windows(runs, "event", "cpu_pct"))
        # memory above the smallest fleet's: the process's own base is not per station
        added = (fmt(1000 * (rss - base_rss) / (stations - base_size), 0)
                 if stations > base_size else "—")
        rows.append((
            f"{stations:,}", fmt(cpu, 0), fmt(event_cpu, 0), fmt(rss, 0), added,
            fmt(1000 * cpu / stations, 2) if cpu > 0 else "—",
            fmt(100 * stations / cpu, 0, thousands=True) if cpu > 0 else "—",
        ))
    return _table(("stations", "steady CPU (% of a core)", "event window CPU (%)", "RSS (MB)",
                   f"RSS per 1,000 more than {base_size:,} (MB)",
                   "steady CPU per 1,000 stations (%)",
                   "stations one core would carry at this rate (estimate)"), "rrrrrrr", rows)


def _bound_ms(value: Any) -> str:
    """A histogram quantile's bucket bound, in ms."""
    number = _num(value)
    return "> 1,000" if math.isinf(number) else f"≤ {fmt(number, 1)}"


def local_controller_table(run: Run) -> str:
    lc = run.get("local_controller")
    if not lc:
        return "Not measured in this run."
    rows = []
    for kind, runs in lc["runs"].items():
        for i, r in enumerate(runs, 1):
            straight, forwarded = r["straight"], r["forwarded"]
            rows.append((
                kind, str(i),
                f"{fmt(straight['p50_ms'])} / {fmt(straight['p99_ms'])}",
                f"{fmt(forwarded['p50_ms'])} / {fmt(forwarded['p99_ms'])}",
                f"{_bound_ms(forwarded['in_bridge_p50_ms'])} /"
                f" {_bound_ms(forwarded['in_bridge_p99_ms'])}",
                fmt(r["straight_flood"]["per_s"], 0, True),
                fmt(r["forwarded_flood"]["per_s"], 0, True),
                f"{fmt(100 * _num(r['ratio']), 0)} %",
                fmt(max(_num(r[part]["others_cpu_pct"]) for part in
                        ("straight", "forwarded", "straight_flood", "forwarded_flood")), 0),
            ))
    return _table(("CSMS", "run", "straight p50 / p99 (ms)", "forwarded p50 / p99 (ms)",
                   "in drbridge p50 / p99 (ms)", "straight (msg/s)", "forwarded (msg/s)",
                   "forwarded/straight", "others' CPU (%)"), "lrrrrrrrr", rows)


def edge_workers(run: Run) -> str:
    """Where the run's OCPP edge was (runs before edge workers existed name none, and had it
    in the bridge's process)."""
    count = run.get("edge_workers", 0)
    return f"WORKERS={count} (" + ("the OCPP edge in the bridge's own process)" if not count
                                   else f"the OCPP edge in {count} worker processes)")


def header(run: Run) -> str:
    m = run["machine"]
    others, steal = noise(run)
    quiet = is_quiet(run)
    lines = [
        f"Run `{run['run_id']}`: started {run['started']}, {fmt(run['seconds'] / 60, 1)} min;"
        f" commit `{run['commit']}`{' with uncommitted changes' if run['dirty'] else ''};"
        f" {edge_workers(run)}; {run['runs']} run(s) per size"
        f"{'; --quick (small sizes)' if run['quick'] else ''}.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {fmt(m['memory_gb'], 0)} GB; Linux"
        f" {m['linux']}; Python {m['python']}; ocpp {m['ocpp']}, websockets {m['websockets']}."
        f" Load average before {' / '.join(fmt(x, 2) for x in run['load_before'])}, after"
        f" {' / '.join(fmt(x, 2) for x in run['load_after'])}.",
        "",
    ]
    if quiet:
        lines.append(f"A quiet run: in every window the machine's other processes took at most"
                     f" {fmt(others, 0)} % of a core and steal was {fmt(steal, 0)} % or less.")
    else:
        lines.append(f"**A noisy run: its figures are not the committed results.** In some"
                     f" window the machine's other processes took {fmt(others, 0)} % of a core"
                     f" (steal up to {fmt(steal, 0)} %); a quiet run keeps both under"
                     f" {fmt(QUIET_OTHERS_PCT, 0)} % and {fmt(QUIET_STEAL_PCT, 0)} %.")
    return "\n".join(lines)


def render(run: Run, template: str) -> str:
    settings = run["settings"]
    fields = {
        "header": header(run),
        "targets": targets_table(run),
        "storm": storm_table(run),
        "windows": windows_table(run),
        "dispatch": dispatch_table(run),
        "throughput": throughput_table(run),
        "local_controller": local_controller_table(run),
        "one_process": one_process_table(run),
        **{f"lc_{k}": fmt((run.get("local_controller") or {}).get(k), 0, thousands=True)
           for k in ("stations", "window_s", "flood_s")},
        "run_id": run["run_id"],
        "somaxconn": str(run["machine"].get("somaxconn", "—")),
        **{k: fmt(v, 0 if float(v).is_integer() else 1, thousands=True)
           for k, v in settings.items()},
    }
    return Template(template).substitute(fields)


def readme_paragraph(run: Run) -> str:
    met = [v for v in verdicts(run) if v.met is not None]
    missed = [v for v in met if not v.met]
    state = "a quiet run" if is_quiet(run) else "a noisy run, not to be quoted"
    text = (f"The committed run, `{run['run_id']}` ({state}), met {len(met) - len(missed)} of"
            f" the benchmark's {len(met)} measured targets")
    if missed:
        text += "; missed: " + "; ".join(f"{v.target} ({v.measured})" for v in missed)
    return text + ". Every figure, and how it was measured, is in" \
        " [`docs/benchmarks.md`](docs/benchmarks.md)."


def update_readme(text: str, paragraph: str) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {README_BEGIN} ... {README_END} block")
    return text[:start + len(README_BEGIN)] + "\n" + paragraph + "\n" + text[end:]


def write(results: Path, markdown: Path, readme: Path | None) -> list[Path]:
    run = json.loads(results.read_text())
    markdown.write_text(render(run, TEMPLATE.read_text()))
    written = [markdown]
    if readme is not None:
        readme.write_text(update_readme(readme.read_text(), readme_paragraph(run)))
        written.append(readme)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "docs/benchmarks.json"))
    parser.add_argument("--markdown", default=str(ROOT / "docs/benchmarks.md"))
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    for path in write(Path(args.results), Path(args.markdown),
                      None if args.no_readme else ROOT / "README.md"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
