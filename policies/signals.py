"""What one event's signals ask of the site at a moment, under a policy's rules (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.events import SI_SCALE, DrEvent, EventSignal, EventStatus
from policies.fleet import Site, Why
from policies.model import Limit, Policy

# itemUnits of power item bases; some VTNs put the prefix in the unit itself
POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6, "KW": 1e3, "w": 1.0, "kw": 1e3}


@dataclass(frozen=True)
class Need:
    """A session whose remaining energy and departure are known, and what it can draw."""

    energy_wh: float
    departure: datetime
    max_w: float


@dataclass(frozen=True)
class Ask:
    """A limit one signal asks for, and why: event, signal, rule."""

    limit_w: float
    chain: tuple[Why, ...]


def signal_watts(value: float, signal: EventSignal, default_unit: str) -> float | None:
    """A power payload in watts, from the signal's own unit and scale (None: not a power)."""
    unit = signal.unit or default_unit
    if unit not in POWER_UNITS:
        return None
    scale = SI_SCALE.get(signal.scale or "none")
    if scale is None:
        return None
    return value * POWER_UNITS[unit] * scale


def _limit_ask(limit: Limit, site: Site, rule: str, event: Why, signal: Why) -> Ask:
    watts = limit.watts_of(site.capacity_w)
    return Ask(watts, (event, signal, Why("rule", f"{rule} -> {limit.describe()}")))


def cheap_intervals(signal: EventSignal, share: float) -> set[int]:
    """Indices of the cheapest intervals that together make up ``share`` of the curve."""
    total = sum((i.duration for i in signal.intervals), timedelta(0))
    order = sorted(range(len(signal.intervals)),
                   key=lambda k: (signal.intervals[k].value, signal.intervals[k].start))
    chosen: set[int] = set()
    covered = timedelta(0)
    for index in order:
        if covered >= total * share - timedelta(microseconds=1):
            break
        chosen.add(index)
        covered += signal.intervals[index].duration
    return chosen


def _overlap(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    return max((min(end, hi) - max(start, lo)).total_seconds(), 0.0)


def needed_w(signal: EventSignal, cheap: set[int], at: datetime, needs: Sequence[Need]) -> float:
    """Power the sessions with known needs must get in the dear intervals from ``at`` on.

    Each needs what the cheap intervals (and the time after the curve) before its
    departure cannot give it, spread over the dear intervals before its departure.
    """
    curve_end = max(i.end for i in signal.intervals)
    total = 0.0
    for need in needs:
        if need.departure <= at or need.energy_wh <= 0:
            continue
        free_s = _overlap(curve_end, need.departure, at, need.departure)
        dear_s = 0.0
        for index, interval in enumerate(signal.intervals):
            seconds = _overlap(interval.start, interval.end, at, need.departure)
            if index in cheap:
                free_s += seconds
            else:
                dear_s += seconds
        shortfall_wh = need.energy_wh - need.max_w * free_s / 3600
        if shortfall_wh > 0 and dear_s > 0:
            total += min(need.max_w, shortfall_wh * 3600 / dear_s)
    return total


def _cheapest_ask(signal: EventSignal, policy: Policy, site: Site, at: datetime, value: float,
                  who: Why, needs: Sequence[Need]) -> Ask | None:
    rule = policy.electricity_price.cheapest if policy.electricity_price else None
    if rule is None:
        return None
    cheap = cheap_intervals(signal, rule.charge_in)
    index = next((k for k, i in enumerate(signal.intervals) if i.start <= at < i.end), None)
    if index is None or index in cheap:
        return None
    limit = rule.otherwise.watts_of(site.capacity_w)
    text = (f"electricity_price.cheapest: not among the cheapest {rule.charge_in:.0%} "
            f"-> {rule.otherwise.describe()}")
    wanted = needed_w(signal, cheap, at, needs)
    if wanted > limit:
        limit = min(wanted, site.capacity_w)
        text += f", raised to {limit / 1000:g} kW to meet sessions' needs by their departure"
    return Ask(limit, (who, Why("signal", f"ELECTRICITY_PRICE {value:g}"), Why("rule", text)))


def signal_ask(event: DrEvent, signal: EventSignal, policy: Policy, site: Site,
               value: float, baseline_w: float | None, at: datetime | None = None,
               needs: Sequence[Need] = ()) -> Ask | None:
    """The limit one signal's payload asks for under ``policy``; None if it asks nothing."""
    if not policy.handles(signal.name, signal.type):
        return None
    who = Why("event", f"event {event.event_id}")
    kind = signal.type.lower()
    what = Why("signal", f"{signal.name} {signal.type} {value:g}")
    capacity = site.capacity_w
    if signal.name == "SIMPLE" and policy.simple is not None:
        what = Why("signal", f"SIMPLE level {value:g}")
        return _limit_ask(policy.simple.limit(value), site, f"simple.levels[{round(value)}]",
                          who, what)
    if signal.name == "ELECTRICITY_PRICE" and policy.electricity_price is not None:
        tier = policy.electricity_price.tier(value)
        what = Why("signal", f"ELECTRICITY_PRICE {value:g}")
        by_tier = None if tier is None else _limit_ask(
            tier.limit, site, f"electricity_price tier above {tier.above:g}", who, what)
        by_curve = None if at is None else _cheapest_ask(signal, policy, site, at, value, who,
                                                         needs)
        asks = [a for a in (by_tier, by_curve) if a is not None]
        return min(asks, key=lambda a: a.limit_w) if asks else None
    if signal.name == "LOAD_DISPATCH" and policy.load_dispatch is not None:
        rule = policy.load_dispatch
        watts = signal_watts(value, signal, rule.unit)
        if watts is None:
            return None
        what = Why("signal", f"LOAD_DISPATCH {signal.type} {watts / 1000:g} kW")
        if kind == "setpoint":
            other = rule.other_load_kw * 1000
            limit = min(max(watts - other, 0.0), capacity)
            text = "load_dispatch.setpoint: site setpoint"
            if other:
                text += f" less {other / 1000:g} kW of other load"
            return Ask(limit, (who, what, Why("rule", f"{text} -> {limit / 1000:g} kW")))
        base, base_text = _baseline(baseline_w, capacity)
        limit = min(max(base - abs(watts), 0.0), capacity)
        return Ask(limit, (who, what, Why(
            "rule", f"load_dispatch.delta: {base_text} less {abs(watts) / 1000:g} kW"
                    f" -> {limit / 1000:g} kW")))
    if signal.name == "IMPORT_CAPACITY_LIMIT" and policy.capacity_limit is not None:
        rule = policy.capacity_limit
        watts = signal_watts(value, signal, rule.unit)
        if watts is None:
            return None
        other = rule.other_load_kw * 1000
        limit = min(max(watts - other, 0.0), capacity)
        text = "capacity_limit: site import cap"
        if other:
            text += f" less {other / 1000:g} kW of other load"
        return Ask(limit, (who, Why("signal", f"IMPORT_CAPACITY_LIMIT {watts / 1000:g} kW"),
                           Why("rule", f"{text} -> {limit / 1000:g} kW")))
    if signal.name == "LOAD_CONTROL" and policy.load_control is not None:
        rule = policy.load_control
        if kind == "x-loadcontrolcapacity":
            share = min(max(value, 0.0), 1.0)
            return _limit_ask(Limit(share=share), site, "load_control.capacity", who, what)
        if kind == "x-loadcontrolleveloffset":
            limit = rule.level_limit(value)
            if limit is None:
                return None
            return _limit_ask(limit, site, f"load_control.level_offset[{round(value)}]",
                              who, what)
        if kind == "x-loadcontrolpercentoffset":
            base, base_text = _baseline(baseline_w, capacity)
            limit = min(max(base * (1 + value / 100), 0.0), capacity)
            return Ask(limit, (who, what, Why(
                "rule", f"load_control.percent_offset: {base_text} {value:+g} %"
                        f" -> {limit / 1000:g} kW")))
        if kind == "x-loadcontrolsetpoint":
            watts = signal_watts(value, signal, rule.unit)
            if watts is None:
                return None
            limit = min(max(watts, 0.0), capacity)
            return Ask(limit, (who, Why("signal", f"LOAD_CONTROL setpoint {watts / 1000:g} kW"),
                               Why("rule", f"load_control.setpoint -> {limit / 1000:g} kW")))
    return None


def _baseline(baseline_w: float | None, capacity_w: float) -> tuple[float, str]:
    if baseline_w is None:
        return capacity_w, f"baseline unknown, site capacity {capacity_w / 1000:g} kW"
    return baseline_w, f"baseline {baseline_w / 1000:g} kW"


def event_ask(event: DrEvent, policy: Policy, site: Site, at: datetime,
              baselines: Mapping[str, float], needs: Sequence[Need] = (),
              price_floor: tuple[float, Why] | None = None) -> Ask | None:
    """The most restrictive limit an event's signals ask for at ``at``; None if none does.

    ``price_floor`` (the over-voltage rule's) is the least a price signal may ask for.
    """
    if event.status == EventStatus.CANCELLED:
        return None
    best: Ask | None = None
    for signal in event.signals:
        value = signal.value_at(at)
        if value is None:
            continue
        ask = signal_ask(event, signal, policy, site, value, baselines.get(event.event_id),
                         at, needs)
        if ask is not None and price_floor is not None and \
                signal.name == "ELECTRICITY_PRICE" and ask.limit_w < price_floor[0]:
            ask = Ask(price_floor[0], (*ask.chain, price_floor[1]))
        if ask is not None and (best is None or ask.limit_w < best.limit_w):
            best = ask
    return best


def last_ask(event: DrEvent, policy: Policy, site: Site, baselines: Mapping[str, float],
             price_floor: tuple[float, Why] | None = None) -> Ask | None:
    """What the event asked for in its last moment (where a recovery ramp starts)."""
    ends = [i.end for s in event.signals for i in s.intervals]
    if not ends:
        return None
    end = event.end or max(ends)
    last = max((i for s in event.signals for i in s.intervals if i.start < end),
               key=lambda i: i.start, default=None)
    if last is None:
        return None
    return event_ask(event, policy, site, last.start, baselines, price_floor=price_floor)
