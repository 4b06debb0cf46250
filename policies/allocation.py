"""Sharing one power limit among charging sessions (pure)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    key: Hashable
    min_w: float  # the least a session can charge with (minimum current); below it, pause
    max_w: float  # the most it may get (station hardware)


@dataclass(frozen=True)
class Share:
    watts: float
    reason: str


def _water_level(limit_w: float, demands: Sequence[Demand]) -> float:
    """The level L with sum(clamp(L, min, max)) == limit_w (every min already fits)."""
    low, high = 0.0, max(d.max_w for d in demands)
    for _ in range(60):  # bisection to far below a watt
        mid = (low + high) / 2
        if sum(min(max(mid, d.min_w), d.max_w) for d in demands) > limit_w:
            high = mid
        else:
            low = mid
    return low


def allocate_fair(limit_w: float, demands: Sequence[Demand]) -> dict[Hashable, Share]:
    """Equal split with a minimum floor, in the given order of precedence.

    Sessions are admitted in order while their minimum still fits; the rest
    are paused (0 W), so a small limit charges a few EVs instead of none. The
    limit left after the minimums is spread equally (water-filling), never
    above a session's maximum. The sum never exceeds ``limit_w``.
    """
    limit_w = max(limit_w, 0.0)
    admitted: list[Demand] = []
    used = 0.0
    shares: dict[Hashable, Share] = {}
    for demand in demands:
        floor = min(demand.min_w, demand.max_w)
        if used + floor <= limit_w and demand.max_w > 0:
            admitted.append(demand)
            used += floor
        else:
            shares[demand.key] = Share(0.0, "paused: the limit cannot give it the minimum current")
    if not admitted:
        return shares
    if sum(d.max_w for d in admitted) <= limit_w:
        for demand in admitted:
            shares[demand.key] = Share(demand.max_w, "station maximum (limit not binding)")
        return shares
    level = _water_level(limit_w, admitted)
    total = len(demands)
    for demand in admitted:
        watts = min(max(level, demand.min_w), demand.max_w)
        note = f"fair share, {len(admitted)} of {total} charging"
        shares[demand.key] = Share(watts, note)
    return shares
