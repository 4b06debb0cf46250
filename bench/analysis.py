"""What the benchmark's figures are, computed from what the stations recorded (pure).

The load generators write, per station, what it was told and when it answered
(:mod:`bench.loadgen`); the functions here turn that into the figures the benchmark
reports, so that every figure is judged by the stations' own records:

- :func:`reply_latencies`: MeterValues round trips sent inside a window;
- :func:`storm`: when every station held the limit it ended with, and how long any
  station drew above its fair share, modelling what each EV draws under the profiles
  it holds (:mod:`bench.profiles`);
- :func:`dispatch`: when every station held a profile that carries the DR event's limit
  for it, counted from the moment its answer was handed to its socket;
- :func:`histogram_delta` and :func:`histogram_quantile`: the bridge's ``/metrics``
  histograms over a window.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.profiles import PHASES, VOLTAGE_V, ProfileStack, Transaction, parse_profile

Record = Mapping[str, Any]  # one station's record, as the load generator wrote it
EV_MAX_A = 16.0


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(math.ceil(q * len(ordered)) - 1, 0))]


# replies --------------------------------------------------------------------------------------
def reply_latencies(stations: Mapping[str, Record], begin: float, end: float) -> list[float]:
    """Seconds to the reply of every MeterValues sent in [begin, end)."""
    return [latency for record in stations.values()
            for sent, latency in record.get("meter_log") or () if begin <= sent < end]


def generator_lag(lags: Iterable[Sequence[float]], begin: float, end: float) -> float:
    """The generators' worst event-loop lag in the window ([second, worst] rows), 0 if none
    was recorded (they record seconds above a few milliseconds only)."""
    return max((worst for second, worst in lags if begin - 1 <= second < end), default=0.0)


# a station's draw ------------------------------------------------------------------------------
def value_at(points: Sequence[Sequence[Any]], t: float) -> Any:
    """A change-point series' value at ``t`` (None before its first point)."""
    i = bisect_right([p[0] for p in points], t)
    return points[i - 1][1] if i else None


def draw_points(record: Record, ev_max_a: float = EV_MAX_A) -> list[tuple[float, float]]:
    """What the station's EV draws (A per phase), as change points: nothing before its
    transaction started, then the lower of what the EV can take and the composite limit."""
    started = record.get("t_tx")
    if started is None:
        return []
    points: list[tuple[float, float]] = []
    limits = record.get("limits") or []
    before = value_at(limits, started)
    series = [(started, before), *((t, a) for t, a in limits if t > started)]
    for t, limit in series:
        amps = ev_max_a if limit is None else max(min(limit, ev_max_a), 0.0)
        if not points or points[-1][1] != amps:
            points.append((t, amps))
    return points


# connect storm ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Storm:
    stations: int
    holding: int  # stations that held a profile's limit at ``until``
    first_connect: float  # unix time of the fleet's first connection attempt
    hold_p50_s: float  # after the first connection, until a station held its final limit
    hold_max_s: float  # inf unless every station held one
    over_share_max_s: float  # the longest time any station drew above its share
    over_share_stations: int  # stations above their share for more than ``over_limit_s``
    over_limit_s: float
    site_peak_ratio: float  # the highest total draw / site capacity
    site_over_s: float  # time the total draw was above the capacity (plus tolerance)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def storm(stations: Mapping[str, Record], capacity_w: float, until: float,
          ev_max_a: float = EV_MAX_A, volts: float = VOLTAGE_V, phases: int = PHASES,
          grid_s: float = 0.05, tolerance_a: float = 0.1, over_limit_s: float = 2.0
          ) -> Storm:
    """The storm's figures up to ``until`` (when a DR event, or the end, changes the limits).

    A station's *final limit* is the composite limit it held just before ``until``; it
    *holds* it from the start of the last stretch at that value. Its *share* at any
    moment is the site capacity split evenly between the stations whose EVs are charging
    then (an EV charges from its transaction's start), capped at what an EV can take. Draws
    are sampled every ``grid_s`` seconds; above means by more than ``tolerance_a`` (the
    0.1 A a profile's limit is rounded down to).
    """
    first = min((r["t_connect_start"] for r in stations.values()
                 if r.get("t_connect_start") is not None), default=until)
    holds: list[float] = []
    for record in stations.values():
        limits = [p for p in record.get("limits") or [] if p[0] < until]
        if not limits or limits[-1][1] is None:
            continue  # no profile limits it: it holds no limit at all
        holds.append(limits[-1][0] - first)
    holding = len(holds)
    capacity_a = capacity_w / (volts * phases)
    starts = sorted(r["t_tx"] for r in stations.values() if r.get("t_tx") is not None)
    # the grid ends a little after the last change before ``until``: nothing moves later
    last_change = max((p[0] for r in stations.values() for p in r.get("limits") or []
                       if p[0] < until), default=first)
    end = min(until, max(last_change, starts[-1] if starts else first) + 1.0)
    steps = max(int(math.ceil((end - first) / grid_s)), 1)
    grid = [first + i * grid_s for i in range(steps)]
    shares = []
    for t in grid:
        charging = bisect_right(starts, t)
        shares.append(min(ev_max_a, capacity_a / charging) if charging else ev_max_a)
    totals = [0.0] * steps
    longest_over: list[float] = []
    for record in stations.values():
        points = draw_points(record, ev_max_a)
        if not points:
            continue
        j, amps, run, longest = 0, 0.0, 0, 0
        for i, t in enumerate(grid):
            while j < len(points) and points[j][0] <= t:
                amps = points[j][1]
                j += 1
            totals[i] += amps
            if amps > shares[i] + tolerance_a:
                run += 1
                longest = max(longest, run)
            else:
                run = 0
        # over its share at the grid's end: it stays so until ``until`` (nothing changes)
        tail = until - grid[-1] - grid_s if run else 0.0
        longest_over.append(max(longest * grid_s, run * grid_s + tail))
    limit = capacity_a * 1.001 + tolerance_a
    over_capacity = [total for total in totals if total > limit]
    if totals[-1] > limit:
        over_capacity += [totals[-1]] * int((until - grid[-1] - grid_s) / grid_s)
    return Storm(
        stations=len(stations),
        holding=holding,
        first_connect=first,
        hold_p50_s=pct(holds, 0.5),
        hold_max_s=max(holds) if holding == len(stations) and holds else math.inf,
        over_share_max_s=max(longest_over, default=0.0),
        over_share_stations=sum(1 for s in longest_over if s > over_limit_s),
        over_limit_s=over_limit_s,
        site_peak_ratio=max(totals) / capacity_a if capacity_a else math.nan,
        site_over_s=len(over_capacity) * grid_s,
    )


# dispatch --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dispatch:
    stations: int
    counted: int  # held a profile with the event's limit, and their answer was sent
    received_only: int  # got such a profile but had not answered by the end
    wrong: int  # got profiles after the event, none with its limit for them
    p50_s: float
    p99_s: float
    all_s: float  # inf unless every station is counted
    received_all_s: float  # the same, counted when the profile arrived (not answered)
    planned_sum_w: float  # what the plan gives the stations at the probe time, summed
    held_sum_w: float  # what the stations hold for the probe time at the end, summed
    event_limit_w: float  # the site limit the plan holds at the probe time

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _limit_matches(held_a: float | None, planned_w: float, volts: float, phases: int,
                   min_current_a: float) -> bool:
    """A profile limit carries the plan's: the plan's watts in A per phase rounded down to
    0.1 A, or 0 where that is below the minimum current (the EV pauses)."""
    if held_a is None:
        return False
    planned_a = planned_w / (volts * phases)
    if planned_a < min_current_a - 1e-9:
        return held_a <= 1e-9
    return planned_a - 0.1 - 1e-6 <= held_a <= planned_a + 1e-6


def _tx(record: Record) -> Transaction | None:
    if record.get("t_tx") is None or record.get("tx_id") is None:
        return None
    return Transaction(int(record["tx_id"]), 1, float(record["t_tx"]))


def dispatch(stations: Mapping[str, Record], handed_on: float, probe: float,
             planned_w: Mapping[str, float], event_limit_w: float,
             min_current_a: float = 6.0, volts: float = VOLTAGE_V, phases: int = PHASES
             ) -> Dispatch:
    """How long after ``handed_on`` each station held a profile with the event's limit.

    ``probe``: a moment inside the event; ``planned_w``: what the plan made for the event
    gives each station then. A station counts once a profile it received after
    ``handed_on`` makes its composite limit at ``probe`` the plan's, from the moment its
    answer was handed to its socket (on loopback, the bridge's socket has it then).
    """
    latencies, received, wrong, unanswered = [], [], 0, 0
    held_sum_a = 0.0
    for station_id, record in stations.items():
        tx = _tx(record)
        stack = ProfileStack()
        hit: Mapping[str, Any] | None = None
        after = 0
        want = planned_w.get(station_id)
        for op in record.get("charging") or ():
            if op["op"] == "set":
                stack.install(parse_profile(int(op["connector"]), op["profile"], float(op["t"])))
            else:
                stack.clear(op["request"])
            if float(op["t"]) < handed_on:
                continue
            after += 1
            if hit is None and want is not None and _limit_matches(
                    stack.limit_a(probe, 1, tx), want, volts, phases, min_current_a):
                hit = op
        held = stack.limit_a(probe, 1, tx)
        held_sum_a += min(held, EV_MAX_A) if held is not None else EV_MAX_A
        if hit is None:
            wrong += 1 if after else 0
            continue
        received.append(float(hit["t"]) - handed_on)
        if hit.get("t_answered") is None:
            unanswered += 1
            continue
        latencies.append(float(hit["t_answered"]) - handed_on)
    everyone = len(latencies) == len(stations)
    return Dispatch(
        stations=len(stations),
        counted=len(latencies),
        received_only=unanswered,
        wrong=wrong,
        p50_s=pct(latencies, 0.5),
        p99_s=pct(latencies, 0.99),
        all_s=max(latencies) if everyone and latencies else math.inf,
        received_all_s=max(received) if len(received) == len(stations) and received
        else math.inf,
        planned_sum_w=sum(planned_w.values()),
        held_sum_w=held_sum_a * volts * phases,
        event_limit_w=event_limit_w,
    )


# /metrics --------------------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def histogram(metrics: Mapping[str, float], name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets [(upper bound, count)], +Inf last."""
    prefix = f'{name}_bucket{{le="'
    buckets = [(float(key[len(prefix):-2]), value) for key, value in metrics.items()
               if key.startswith(prefix)]
    return sorted(buckets)


def histogram_delta(before: Mapping[str, float], after: Mapping[str, float], name: str
                    ) -> tuple[list[tuple[float, float]], float, float]:
    """(buckets, sum, count) of what was observed between two scrapes."""
    then = dict(histogram(before, name))
    buckets = [(bound, n - then.get(bound, 0.0)) for bound, n in histogram(after, name)]
    return (buckets, after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0),
            after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0))


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket that holds the q-quantile (as Prometheus bounds it:
    an over-estimate by at most one bucket's width); NaN when nothing was observed."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    for bound, n in buckets:
        if n >= rank:
            return bound
    return math.inf
