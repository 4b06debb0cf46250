"""What one event's signals ask of the site at a moment, under a policy's rules (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from policies.fleet import Site, Why
from policies.model import Limit, Policy
from ven.events import DrEvent, EventSignal, EventStatus

# OpenADR siScaleCode -> factor
SCALES = {
    "p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "none": 1.0,
}
# itemUnits of power item bases; some VTNs put the prefix in the unit itself
POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6, "KW": 1e3, "w": 1.0, "kw": 1e3}


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
    scale = SCALES.get(signal.scale or "none")
    if scale is None:
        return None
    return value * POWER_UNITS[unit] * scale


def _limit_ask(limit: Limit, site: Site, rule: str, event: Why, signal: Why) -> Ask:
    watts = limit.watts_of(site.capacity_w)
    return Ask(watts, (event, signal, Why("rule", f"{rule} -> {limit.describe()}")))


def signal_ask(event: DrEvent, signal: EventSignal, policy: Policy, site: Site,
               value: float, baseline_w: float | None) -> Ask | None:
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
        if tier is None:
            return None
        what = Why("signal", f"ELECTRICITY_PRICE {value:g}")
        return _limit_ask(tier.limit, site, f"electricity_price tier above {tier.above:g}",
                          who, what)
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
              baselines: Mapping[str, float]) -> Ask | None:
    """The most restrictive limit an event's signals ask for at ``at``; None if none does."""
    if event.status == EventStatus.CANCELLED:
        return None
    best: Ask | None = None
    for signal in event.signals:
        value = signal.value_at(at)
        if value is None:
            continue
        ask = signal_ask(event, signal, policy, site, value, baselines.get(event.event_id))
        if ask is not None and (best is None or ask.limit_w < best.limit_w):
            best = ask
    return best


def last_ask(event: DrEvent, policy: Policy, site: Site,
             baselines: Mapping[str, float]) -> Ask | None:
    """What the event asked for in its last moment (where a recovery ramp starts)."""
    ends = [i.end for s in event.signals for i in s.intervals]
    if not ends:
        return None
    end = event.end or max(ends)
    last = max((i for s in event.signals for i in s.intervals if i.start < end),
               key=lambda i: i.start, default=None)
    if last is None:
        return None
    return event_ask(event, policy, site, last.start, baselines)
