"""Sharing one power limit among sessions on a flat site (pure).

A convenience over :func:`policies.tree.allocate_tree` for a site with no circuits
and no per-line rating: only the limit itself, the floors and the maxima count.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from policies.fleet import Site
from policies.tree import Load, Share, allocate_tree

__all__ = ["Demand", "Share", "allocate_fair"]


@dataclass(frozen=True)
class Demand:
    key: Hashable
    min_w: float  # the least a session can charge with (minimum current); below it, pause
    max_w: float  # the most it may get (station hardware)


def allocate_fair(limit_w: float, demands: Sequence[Demand]) -> dict[Hashable, Share]:
    """Equal split with a minimum floor, in the given order of precedence.

    Sessions are admitted in order while their minimum still fits; the rest are
    paused (0 W), so a small limit charges a few EVs instead of none. The limit
    left after the minimums is spread equally (water-filling), never above a
    session's maximum. The sum never exceeds ``limit_w``.
    """
    limit_w = max(limit_w, 0.0)
    loads = [Load(d.key, None, (0.0, 0.0, 0.0), d.min_w, d.max_w) for d in demands]
    return allocate_tree(limit_w, loads, Site(capacity_w=limit_w))
