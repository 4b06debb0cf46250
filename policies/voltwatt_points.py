"""The volt-watt rule as points, for a station that applies it by itself (pure).

A charger can watch its own voltage against thresholds (OCPP 2.0.1 variable monitors) or
follow a volt-watt curve of its own (OCPP 2.1 DER control). Both need the rule in plain
points rather than as :func:`policies.voltwatt.curve_share`:

- :func:`thresholds`: the voltages at which the rule's answer changes (the curve's points,
  the pause thresholds, the over-voltage rule's ends) and steps within each sloped stretch,
  so a station reports a sag as soon as it matters, not at the next meter sample;
- :func:`response_points`: the curve with the minimum resolved and the pause thresholds made
  into steps, piecewise linear and flat beyond its ends, equal to ``curve_share`` wherever
  it is defined (see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from policies.model import VoltageRule

# Width (pu) of the step a pause threshold becomes in a piecewise-linear curve: 0.01 % of
# the nominal voltage, 23 mV at 230 V, well below what a meter resolves.
STEP_PU = 0.0001
# Thresholds within a sloped stretch lie at least this far apart (pu), so that a voltage
# wandering within the rule's hysteresis band does not set them off one after another.
MIN_STEP_PU = 0.005
MAX_THRESHOLDS = 12  # per voltage; stations hold few monitors
_EPS = 1e-9


@dataclass(frozen=True)
class Threshold:
    """A voltage at which the rule's response changes.

    ``side`` says where the trouble lies: ``below`` (a sag: watch for the voltage falling
    under it) or ``above`` (a rise). Crossing back is news too: the station reports the
    return to normal.
    """

    pu: float
    side: Literal["below", "above"]
    why: str  # which part of the rule it comes from, for the operator


def _points(rule: VoltageRule, min_share: float) -> list[tuple[float, float]]:
    """The curve's own points, ``min`` resolved, not yet clamped (as ``curve_share`` reads
    them: it interpolates first and clamps the result)."""
    return [(float(at), min_share if value == "min" else float(value))
            for at, value in sorted(rule.curve.items())]


def _clamp(share: float, min_share: float) -> float:
    """What ``curve_share`` makes of an interpolated share: 0, or the minimum to 1."""
    return 0.0 if share <= _EPS else min(1.0, max(share, min_share))


def thresholds(rule: VoltageRule, step_pu: float | None = None,
               limit: int = MAX_THRESHOLDS) -> list[Threshold]:
    """The voltages (pu) worth a station's report, lowest first.

    Every point of the curve, the pause thresholds and the over-voltage rule's ``start`` and
    ``full``; within each stretch where the share changes, steps of ``step_pu`` (default:
    the rule's hysteresis, at least 0.005 pu) so the bridge hears how deep a sag goes. When
    that makes more than ``limit``, the steps widen until it fits; the rule's own points are
    always kept.
    """
    fixed: dict[float, Threshold] = {}

    def keep(pu: float, why: str) -> None:
        pu = round(pu, 4)
        side: Literal["below", "above"] = "below" if pu < 1.0 else "above"
        fixed.setdefault(pu, Threshold(pu, side, why))

    for at, _ in _points(rule, 0.0):
        keep(at, f"curve point {at:g} pu")
    if rule.pause_below is not None:
        keep(rule.pause_below, "pause_below")
    if rule.pause_above is not None:
        keep(rule.pause_above, "pause_above")
    if rule.over_voltage is not None:
        keep(rule.over_voltage.start, "over_voltage.start")
        keep(rule.over_voltage.full, "over_voltage.full")
    stretches = _sloped_stretches(rule)
    step = step_pu if step_pu is not None else max(rule.hysteresis, MIN_STEP_PU)
    while True:
        steps = {round(low + step * k, 4): why
                 for low, high, why in stretches
                 for k in range(1, int((high - low) / step + _EPS) + 1)
                 if low + step * k < high - _EPS}
        extra = {pu: why for pu, why in steps.items() if pu not in fixed}
        if len(fixed) + len(extra) <= limit or not extra:
            break
        step *= 1.5
    result = dict(fixed)
    for pu, why in extra.items():
        result[pu] = Threshold(pu, "below" if pu < 1.0 else "above", why)
    return [result[pu] for pu in sorted(result)]


def _sloped_stretches(rule: VoltageRule) -> list[tuple[float, float, str]]:
    """(low pu, high pu, what) where the share (or the over-voltage floor) changes."""
    stretches = []
    points = _points(rule, 1e-6)  # a minimum below any share: neighbours differ as written
    for (low, low_share), (high, high_share) in zip(points, points[1:], strict=False):
        if abs(low_share - high_share) > _EPS:
            stretches.append((low, high, f"curve {low:g}-{high:g} pu"))
    if rule.over_voltage is not None:
        stretches.append((rule.over_voltage.start, rule.over_voltage.full,
                          "over_voltage start-full"))
    return stretches


def response_points(rule: VoltageRule, min_share: float) -> list[tuple[float, float]]:
    """The restriction as (pu, share) points, linear between them and flat beyond.

    Equal to ``curve_share(rule, pu, min_share)`` at every voltage except within
    :data:`STEP_PU` below ``pause_below``, above ``pause_above`` and beside a point of the
    curve at 0, where these steps become narrow slopes. A stretch running from 0 to a
    share keeps the minimum as ``curve_share`` does (a session cannot charge below it): a
    step up to the minimum, flat, then the slope. The over-voltage rule raises price limits and
    restricts nothing, so it has no place here.
    """
    points = _points(rule, min_share)
    exact: list[tuple[float, float]] = [(points[0][0], _clamp(points[0][1], min_share))]
    for (low, low_share), (high, high_share) in zip(points, points[1:], strict=False):
        exact += _segment(low, low_share, high, high_share, min_share)
    if rule.pause_below is not None:
        at_pause = interpolate(exact, rule.pause_below)
        exact = [(rule.pause_below - STEP_PU, 0.0), (rule.pause_below, at_pause),
                 *((pu, share) for pu, share in exact if pu > rule.pause_below + _EPS)]
    if rule.pause_above is not None:
        at_pause = interpolate(exact, rule.pause_above)
        exact = [*((pu, share) for pu, share in exact if pu < rule.pause_above - _EPS),
                 (rule.pause_above, at_pause), (rule.pause_above + STEP_PU, 0.0)]
    return _without_redundant(exact)


def _segment(low: float, low_share: float, high: float, high_share: float,
             min_share: float) -> list[tuple[float, float]]:
    """The points after ``low`` that the clamped line from ``low`` to ``high`` needs."""

    def crossing() -> float:  # where the line reaches the minimum
        return low + (high - low) * (min_share - low_share) / (high_share - low_share)

    between = min(low_share, high_share) + _EPS < min_share < max(low_share, high_share) - _EPS
    extra: list[tuple[float, float]] = []
    if low_share <= _EPS < high_share:  # from 0: the minimum at once, then the slope
        extra.append((low + STEP_PU, min_share))
        if between:
            extra.append((crossing(), min_share))
    elif high_share <= _EPS < low_share:
        if between:
            extra.append((crossing(), min_share))
        extra.append((high - STEP_PU, min_share))
    elif between and low_share > _EPS and high_share > _EPS:
        extra.append((crossing(), min_share))
    return [*extra, (high, _clamp(high_share, min_share))]


def interpolate(points: list[tuple[float, float]], pu: float) -> float:
    """The share a station following ``points`` takes at ``pu`` (linear, flat beyond)."""
    if pu <= points[0][0]:
        return points[0][1]
    for (low, low_share), (high, high_share) in zip(points, points[1:], strict=False):
        if low <= pu <= high:
            if high - low <= _EPS:
                return high_share
            return low_share + (high_share - low_share) * (pu - low) / (high - low)
    return points[-1][1]


def _without_redundant(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drops points that lie on the straight line between their neighbours (fewer to send)."""
    kept: list[tuple[float, float]] = []
    for point in points:
        if kept and point[0] <= kept[-1][0] + _EPS:
            continue  # a step narrower than the stretch it falls in: the stretch wins
        while len(kept) >= 2:
            (x0, y0), (x1, y1) = kept[-2], kept[-1]
            x2, y2 = point
            on_line = abs((y1 - y0) * (x2 - x0) - (y2 - y0) * (x1 - x0)) <= 1e-9
            if not on_line:
                break
            kept.pop()
        kept.append(point)
    return kept
