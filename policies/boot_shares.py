"""Boot shares: what stations that join between two plans may draw until the next (pure).

The room under the site limit that the other stations leave (each at the most it may
draw) is split evenly among the stations joining, each given no more than it can draw;
a part below a station's minimum pauses it instead (0 W), since a trickle below the
minimum current pauses an EV anyway. The parts never add up to more than the room.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.fleet import Step, value_at


@dataclass(frozen=True, slots=True)
class Joiner:
    """A station joining: the most it can draw, and the least worth giving it (W)."""

    max_w: float
    min_w: float = 0.0


def split_room(room_w: float, joining: Mapping[str, Joiner],
               waiting: int = 0) -> dict[str, float]:
    """Each joining station's boot share of ``room_w``.

    ``waiting``: stations joining too but not ready for a limit yet; each keeps an even
    part of the room for a later split. Stations that can draw less than an even part
    leave the rest to the others (water-filling); a part below a station's minimum is
    0 W, and what it frees is not handed on: the sum stays at most ``room_w`` either way.
    """
    if not joining:
        return {}
    room = max(0.0, room_w)
    left = room
    count = len(joining) + max(0, waiting)
    shares: dict[str, float] = {}
    # the smallest maxima first: each takes at most an even part of what is left
    for station_id, joiner in sorted(joining.items(), key=lambda item: item[1].max_w):
        part = min(max(0.0, joiner.max_w), left / count)
        shares[station_id] = part
        left -= part
        count -= 1
    return {sid: (w if w >= joining[sid].min_w else 0.0) for sid, w in shares.items()}


def _limits_within(steps: Iterable[Step], now: datetime, horizon: timedelta) -> list[float]:
    """Every limit a schedule gives from ``now`` to ``now + horizon``."""
    steps = tuple(steps)
    end = now + horizon
    limits = [s.limit_w for s in steps if now < s.start <= end]
    current = value_at(steps, now)
    if current is not None:
        limits.append(current.limit_w)
    return limits


def lowest_within(steps: Iterable[Step], now: datetime, horizon: timedelta) -> float | None:
    """The lowest limit a schedule gives from ``now`` to ``now + horizon`` (None: none)."""
    return min(_limits_within(steps, now, horizon), default=None)


def highest_within(steps: Iterable[Step] | None, now: datetime, horizon: timedelta) -> float:
    """The highest limit a schedule gives from ``now`` to ``now + horizon`` (0: none)."""
    if not steps:
        return 0.0
    return max(_limits_within(steps, now, horizon), default=0.0)
