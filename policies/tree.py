"""The site as a tree (connection -> circuits -> stations) and sharing a limit within it.

Every node may limit the current on each line (L1, L2, L3) and/or its power. A
three-phase station draws a third of its power on each line; a single-phase one
draws all of it on the line it is wired to. Sharing is progressive filling: every
session's share rises together (scaled by its weight) until a node's limit, the
site limit or the session's maximum stops it; the others keep rising. So no node
is ever over its limit, and headroom is only left where a limit binds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from policies.fleet import PHASES, Site

SITE_NODE = "site"
_EPS_W = 1e-6
# how far below the highest level that fits a settled level may be, relative to it
_SETTLE_RELATIVE = 1e-12
_ADMIT_EPS = 1e-9  # float noise allowed when admitting a minimum; never used to raise a share


class TreeError(ValueError):
    """A site description that is not a tree (unknown parent, a cycle)."""


def circuit_paths(site: Site) -> dict[str | None, tuple[str, ...]]:
    """Each circuit's path from the site's connection down (``None``: the connection itself)."""
    parents = {c.circuit_id: c.parent for c in site.circuits}
    paths: dict[str | None, tuple[str, ...]] = {None: (SITE_NODE,)}
    for circuit_id in parents:
        chain: list[str] = []
        at: str | None = circuit_id
        while at is not None:
            if at in chain:
                raise TreeError(f"circuit {circuit_id}: its parents form a cycle")
            if at not in parents:
                raise TreeError(f"circuit {chain[-1]}: unknown parent circuit {at!r}")
            chain.append(at)
            at = parents[at]
        paths[circuit_id] = (SITE_NODE, *reversed(chain))
    return paths


@dataclass(frozen=True)
class Load:
    """A session's station as the allocator sees it."""

    key: Hashable
    circuit: str | None
    amps_per_w: tuple[float, float, float]
    min_w: float
    max_w: float
    weight: float = 1.0


@dataclass(frozen=True)
class FixedLoad:
    """Power the allocator cannot steer (a station it cannot reach), counted where it is."""

    circuit: str | None
    amps_per_w: tuple[float, float, float]
    watts: float


@dataclass(frozen=True)
class Share:
    watts: float
    reason: str
    # paused, but holding its minimum (``keep_alive``): not charging for turns and resumes
    held: bool = False


@dataclass
class _Constraint:
    name: str
    cap: float  # after what fixed loads take
    coef: dict[Hashable, float] = field(default_factory=dict)

    def used(self, watts: Mapping[Hashable, float]) -> float:
        return sum(c * watts.get(k, 0.0) for k, c in self.coef.items())


def _constraints(site: Site, limit_w: float, loads: Sequence[Load],
                 fixed: Sequence[FixedLoad]) -> list[_Constraint]:
    paths = circuit_paths(site)
    circuits = {c.circuit_id: c for c in site.circuits}
    rated: list[tuple[str, str | None, float | None, float | None]] = [
        ("site", None, site.max_current_a, None)
    ]
    rated += [(f"circuit {c.circuit_id}", c.circuit_id, c.max_current_a, c.max_power_w)
              for c in circuits.values()]
    limit = _Constraint("the site limit", limit_w - sum(f.watts for f in fixed))
    for load in loads:
        limit.coef[load.key] = 1.0
    result = [limit]

    def under(node: str, circuit: str | None) -> bool:
        return node in paths[circuit]

    for name, node_id, amps, watts in rated:
        node = SITE_NODE if node_id is None else node_id
        if watts is not None:
            cap = watts - sum(f.watts for f in fixed if under(node, f.circuit))
            result.append(_Constraint(f"{name} power limit ({watts / 1000:g} kW)", cap, {
                load.key: 1.0 for load in loads if under(node, load.circuit)}))
        if amps is not None:
            for index, line in enumerate(PHASES):
                cap = amps - sum(f.watts * f.amps_per_w[index] for f in fixed
                                 if under(node, f.circuit))
                result.append(_Constraint(f"{name} L{line} current limit ({amps:g} A)", cap, {
                    load.key: load.amps_per_w[index] for load in loads
                    if under(node, load.circuit) and load.amps_per_w[index] > 0}))
    return result


def allocate_tree(limit_w: float, loads: Sequence[Load], site: Site,
                  fixed: Sequence[FixedLoad] = (), label: str = "fair share",
                  keep_paused: Mapping[Hashable, str] | None = None,
                  keep_alive: Collection[Hashable] = ()) -> dict[Hashable, Share]:
    """Share ``limit_w`` among ``loads``, admitted in the given order, within every node.

    A session is admitted while its minimum still fits everywhere on its path; the rest
    are paused (0 W), and so are those in ``keep_paused`` (key -> why). One of those in
    ``keep_alive`` then holds its minimum (in the same order) where the room left after
    every admitted load's minimum still takes it everywhere on its path. Then progressive
    filling of the admitted loads, above their minimum, in what remains.
    """
    keep_paused = keep_paused or {}
    constraints = _constraints(site, max(limit_w, 0.0), loads, fixed)
    shares: dict[Hashable, Share] = {}
    watts: dict[Hashable, float] = {}
    admitted: list[Load] = []
    paused: list[tuple[Load, str]] = []
    # many sessions get the same share for the same reason: one (immutable) Share each
    made: dict[tuple[float, str, bool], Share] = {}
    floors = {load.key: min(load.min_w, load.max_w) for load in loads}
    everyone = not keep_paused and all(load.max_w > 0 for load in loads) and \
        _all_fit(constraints, floors)
    for load, blocked in ((load, None) for load in loads) if everyone else \
            _admit(loads, constraints, keep_paused):
        if load.key in keep_paused:
            paused.append((load, f"paused: {keep_paused[load.key]}"))
        elif blocked is None:
            admitted.append(load)
            watts[load.key] = floors[load.key]
        else:
            paused.append((load, f"paused: {blocked} cannot give it the minimum current"))
    # (one paused because its minimum did not fit finds no room after the others' either:
    # admission already took every minimum that fitted)
    alive = _keep_alive([load for load, _ in paused
                         if load.key in keep_alive and load.key in keep_paused],
                        constraints, watts)
    for load, why in paused:
        if load.key in alive:
            watts[load.key] = alive[load.key]
            shares[load.key] = _share(made, alive[load.key],
                                      f"{why}; holds the minimum current", held=True)
        else:
            shares[load.key] = _share(made, 0.0, why)
    if not admitted:
        return shares
    reasons = _fill(admitted, constraints, watts, floors)
    text = f"{label}, {len(admitted)} of {len(loads)} charging"
    texts = {why: f"{text}, held by {why}" if why else text for why in set(reasons.values())}
    for load in admitted:
        shares[load.key] = _share(made, watts[load.key], texts[reasons[load.key]])
    return shares


def _share(made: dict[tuple[float, str, bool], Share], watts: float, reason: str,
           held: bool = False) -> Share:
    share = made.get((watts, reason, held))
    if share is None:
        share = made[(watts, reason, held)] = Share(watts, reason, held)
    return share


def _keep_alive(candidates: Sequence[Load], constraints: Sequence[_Constraint],
                watts: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """The paused loads that hold their minimum (key -> watts), in order, in the room
    every limit on their path has left after ``watts`` (the admitted loads' minimums)."""
    if not candidates:
        return {}
    used = [c.used(watts) for c in constraints]
    alive: dict[Hashable, float] = {}
    for load in candidates:
        floor = min(load.min_w, load.max_w)
        if floor <= 0:
            continue
        path = [(i, co) for i, c in enumerate(constraints)
                if (co := c.coef.get(load.key)) is not None]
        if all(used[i] + co * floor <= constraints[i].cap + _ADMIT_EPS for i, co in path):
            for i, co in path:
                used[i] += co * floor
            alive[load.key] = floor
    return alive


def count_fitting(limit_w: float, loads: Sequence[Load], site: Site,
                  fixed: Sequence[FixedLoad] = ()) -> int:
    """How many ``loads`` :func:`allocate_tree` would admit if each asked its minimum only."""
    constraints = _constraints(site, max(limit_w, 0.0), loads, fixed)
    if all(load.min_w > 0 for load in loads) and \
            _all_fit(constraints, {load.key: load.min_w for load in loads}):
        return len(loads)
    return sum(1 for _, blocked in _admit(loads, constraints, {}, at_minimum=True)
               if blocked is None)


def _all_fit(constraints: Sequence[_Constraint], floors: Mapping[Hashable, float]) -> bool:
    """Whether :func:`_admit` would admit every load at ``floors`` (key -> watts).

    Each limit's sum is added up in the order loads are admitted (a limit's factors are
    kept in that order), so it is the very sum the last admission checks; the sums
    before it are no larger.
    """
    for c in constraints:
        total = 0.0
        for key, co in c.coef.items():
            total = total + co * floors[key]
        if total > c.cap + _ADMIT_EPS:
            return False
    return True


def _admit(loads: Sequence[Load], constraints: Sequence[_Constraint],
           keep_paused: Mapping[Hashable, str],
           at_minimum: bool = False) -> Iterator[tuple[Load, str | None]]:
    """Each load in order with what keeps it from its minimum (None: admitted at it).

    A load in ``keep_paused`` is skipped (its blocker is its own reason, not checked here).
    ``at_minimum``: as if each load's maximum were its minimum.
    """
    used = [0.0] * len(constraints)  # kept as sessions are admitted: one pass, not N^2
    for load in loads:
        key = load.key
        if key in keep_paused:
            yield load, keep_paused[key]
            continue
        highest = load.min_w if at_minimum else load.max_w
        floor = min(load.min_w, highest)
        path: list[tuple[int, float]] = []
        blocked: _Constraint | None = None
        for i, c in enumerate(constraints):
            co = c.coef.get(key)
            if co is None:
                continue
            if used[i] + co * floor > c.cap + _ADMIT_EPS:
                blocked = c
                break
            path.append((i, co))
        if blocked is None and highest > 0:
            for i, co in path:
                used[i] += co * floor
            yield load, None
        else:
            yield load, blocked.name if blocked else "its maximum"


def _fill(admitted: Sequence[Load], constraints: list[_Constraint],
          watts: dict[Hashable, float], floor: Mapping[Hashable, float]) -> dict[Hashable, str]:
    """Raise every admitted share together until each is held by something; in place.
    ``floor``: each load's share before it rises (its minimum, at most its maximum)."""
    active = {load.key: load for load in admitted}
    held_by: dict[Hashable, str] = {}

    level = 0.0
    for _ in range(len(admitted) + len(constraints) + 1):
        if not active:
            break
        # per constraint: what the held shares take, and the rising ones with their factor
        rising = [
            (c, c.cap - sum(co * watts[k] for k, co in c.coef.items()
                            if k not in active and k in watts),
             [(co, active[k]) for k, co in c.coef.items() if k in active])
            for c in constraints
        ]
        rising = [item for item in rising if item[2]]
        # each member's factor and bounds, so a trial level costs no call per member
        packed = [(room, [(co, load.weight, floor[load.key], load.max_w)
                          for co, load in members]) for _, room, members in rising]

        def fits(candidate: float, packed: list = packed) -> bool:
            return all(sum([co * min(max(candidate * weight, low), high)
                            for co, weight, low, high in members]) <= room
                       for room, members in packed)

        high = max(load.max_w / load.weight for load in active.values())
        exact = min([high, *(_highest_level(members, room, floor) for _, room, members in rising)])
        if fits(exact):
            level = max(level, exact)
        else:  # float rounding put the exact level a hair too high: settle by bisection
            level = _settle(fits, level, exact)
        frozen: set[Hashable] = set()
        for key, load in active.items():
            share = watts[key] = min(max(level * load.weight, floor[key]), load.max_w)
            if share >= load.max_w - _EPS_W:
                frozen.add(key)
                held_by[key] = "its maximum"
        # a limit with no room left holds everything still rising beneath it
        nudge = level + max(level * 1e-6, 1e-3)
        for constraint in constraints:
            room = constraint.cap - constraint.used(watts)
            if room > 1e-6 * max(constraint.cap, 1.0):
                continue
            for key in constraint.coef:
                if key in active and key not in frozen:
                    load = active[key]
                    # its share a hair above the level: it would rise, were it not held
                    if min(max(nudge * load.weight, floor[key]), load.max_w) > watts[key]:
                        frozen.add(key)
                        held_by[key] = constraint.name
        if not frozen:  # numerical corner: stop rather than loop
            for key in active:
                held_by[key] = "the site limit"
            break
        for key in frozen:
            active.pop(key)
    return held_by


def _settle(fits: Callable[[float], bool], low: float, top: float) -> float:
    """A float in [low, top) that ``fits`` (``low`` if none), ``top`` not fitting: the
    highest, or below it by at most :data:`_SETTLE_RELATIVE` of ``top``.

    Bisection; as the answer lies a few floats below ``top``, it first brackets it there
    in steps growing from one float, then halves the bracket until it is that narrow.
    (Halving down to adjacent floats took 16 trials of about 2 ms each in a 10,000-station
    plan, against 4 now, for shares that differ in their thirteenth digit.)
    """
    if not low < top:  # the level already passed: halve 64 times, as ever
        for _ in range(64):
            mid = (low + top) / 2
            if fits(mid):
                low = mid
            else:
                top = mid
        return low
    gap = math.ulp(top)
    while True:
        probe = top - gap
        if probe <= low:
            break
        if fits(probe):
            low = probe
            break
        top, gap = probe, gap * 16
    close_enough = _SETTLE_RELATIVE * abs(top)
    while top - low > close_enough:  # a float range halves to adjacent floats in ~2100 steps
        mid = (low + top) / 2
        if mid == low or mid == top:
            return low
        if fits(mid):
            low = mid
        else:
            top = mid
    return low


def _highest_level(members: Sequence[tuple[float, Load]], room: float,
                   floor: Mapping[Hashable, float]) -> float:
    """The highest level t with sum(coef * clamp(weight * t, floor, max)) <= room.

    The sum is piecewise linear in t: each share is flat at its floor until
    ``floor / weight``, rises with slope ``coef * weight`` until ``max / weight``,
    then is flat again. Sweep the breakpoints in order.
    """
    total = 0.0  # the flat part of the sum
    changes: list[tuple[float, float, float]] = []  # (t, change of slope, change of flat part)
    for coef, load in members:
        low, high = floor[load.key], load.max_w
        total += coef * low
        if high > low:
            changes.append((low / load.weight, coef * load.weight, -coef * low))
            changes.append((high / load.weight, -coef * load.weight, coef * high))
    if total > room:
        return 0.0
    changes.sort(key=lambda change: change[0])
    slope = 0.0
    for at, d_slope, d_total in changes:
        if slope > 0 and total + slope * at > room:
            return (room - total) / slope
        slope += d_slope
        total += d_total
    return (room - total) / slope if slope > 1e-15 else float("inf")


@dataclass(frozen=True)
class Overload:
    node: str
    used: float
    cap: float


def overloads(site: Site, limit_w: float, loads: Sequence[Load], watts: Mapping[Hashable, float],
              fixed: Sequence[FixedLoad] = (), slack: float = 1e-3) -> list[Overload]:
    """Every node (and the site limit) that ``watts`` would overload: the check tests use."""
    return [Overload(c.name, c.used(watts), c.cap)
            for c in _constraints(site, limit_w, loads, fixed)
            if c.used(watts) > c.cap + slack]


def blocking(site: Site, limit_w: float, loads: Sequence[Load], watts: Mapping[Hashable, float],
             load: Load, fixed: Sequence[FixedLoad] = ()) -> str | None:
    """The limit on ``load``'s path with no room for its minimum, as admission judges it."""
    for c in _constraints(site, limit_w, loads, fixed):
        if load.key in c.coef and \
                c.used(watts) + c.coef[load.key] * min(load.min_w, load.max_w) > c.cap + _ADMIT_EPS:
            return c.name
    return None
