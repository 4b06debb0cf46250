"""Volt-watt: the measured voltage at the chargers -> the share of power they may draw (pure).

A weak feeder sags as EVs charge. The rule maps the voltage (per unit of the site's
nominal voltage, the worst phase) onto a piecewise-linear curve of shares, pauses charging
beyond the pause thresholds, and keeps every restriction it set until the voltage has
recovered by the hysteresis band and the hold time has passed. Tightening is immediate.

Stale or missing readings never lift a restriction: the last one is held until fresh
readings arrive (or, only when ``release_after_s`` is configured, until the readings have
been missing that long).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.model import VoltageRule

SITE_KEY = "*site*"  # the key of the site-wide restriction in the state
MIN_STEP = 0.01  # a step that swings is never halved below this
_EPS = 1e-9
PHASE_NAMES = ("L1", "L2", "L3")


@dataclass(frozen=True)
class VoltageReading:
    """Line-to-neutral voltages a station last reported (L1, L2, L3; None: not reported).

    ``sources`` says, per phase, where its value came from (``meter value 12:00:03``,
    ``station's monitor event 12:00:03.4``), for the reason chain; empty: not said.
    """

    at: datetime
    phases_v: tuple[float | None, ...]
    sources: tuple[str | None, ...] = ()

    def source_of(self, index: int) -> str | None:
        return self.sources[index] if index < len(self.sources) else None


@dataclass(frozen=True)
class VoltHold:
    """The restriction in force for a station (or the site), carried from plan to plan."""

    share: float  # of the allowed power; 0: paused; 1: no restriction
    since: datetime  # when ``share`` last changed
    reason: str
    step: float | None = None  # the most it may ease at once, once halved (None: ease_step)
    eased_from: float | None = None  # the share before its last easing; None once tightened


def curve_share(rule: VoltageRule, pu: float, min_share: float) -> float:
    """The share the curve and the pause thresholds give at ``pu``.

    ``min`` on the curve stands for ``min_share`` (the minimum current); a share between
    0 and the minimum is raised to the minimum, since a session cannot charge below it.
    """
    if rule.pause_below is not None and pu < rule.pause_below:
        return 0.0
    if rule.pause_above is not None and pu > rule.pause_above:
        return 0.0
    points = [(at, min_share if value == "min" else float(value))
              for at, value in sorted(rule.curve.items())]
    if pu <= points[0][0]:
        share = points[0][1]
    elif pu >= points[-1][0]:
        share = points[-1][1]
    else:
        share = points[-1][1]
        for (low, low_share), (high, high_share) in zip(points, points[1:], strict=False):
            if low <= pu <= high:
                share = low_share + (high_share - low_share) * (pu - low) / (high - low)
                break
    if share <= _EPS:
        return 0.0
    return min(1.0, max(share, min_share))


# (phase name, pu, where the value came from), as the rule reads a reading
PhasePu = tuple[str, float, str | None]


def _phase_pus(rule: VoltageRule, reading: VoltageReading, nominal_v: float) -> list[PhasePu]:
    pus = [(PHASE_NAMES[i] if i < 3 else f"L{i + 1}", volts / nominal_v, reading.source_of(i))
           for i, volts in enumerate(reading.phases_v) if volts is not None and volts > 0]
    if rule.phases == "mean" and pus:
        sources = [source for _, _, source in pus if source]
        return [("mean", sum(pu for _, pu, _ in pus) / len(pus),
                 " and ".join(dict.fromkeys(sources)) or None)]
    return pus


def _worst(rule: VoltageRule, pus: Sequence[PhasePu], min_share: float,
           band: float) -> tuple[float, str, float, str | None]:
    """The lowest share over the phases and the band ``pu ± band``: (share, phase, pu,
    source)."""
    best: tuple[float, str, float, str | None] | None = None
    for name, pu, source in pus:
        share = min(curve_share(rule, pu + offset, min_share) for offset in (0.0, -band, band))
        if best is None or share < best[0]:
            best = (share, name, pu, source)
    assert best is not None
    return best


def respond(rule: VoltageRule, reading: VoltageReading | None, nominal_v: float,
            min_share: float, previous: VoltHold | None, now: datetime,
            may_ease: bool = True) -> VoltHold | None:
    """The restriction after a reading (None: no restriction and nothing to hold).

    ``may_ease`` False lets the restriction tighten but not ease (a site reading that
    lacks some station's fresh voltage).
    """
    stale_after = timedelta(seconds=rule.stale_after_s)
    pus = _phase_pus(rule, reading, nominal_v) if reading is not None else []
    if reading is None or now - reading.at > stale_after or not pus:
        if previous is None:
            return None
        release = rule.release_after_s
        last_known = reading.at if reading is not None else previous.since
        if release is not None and now - last_known > timedelta(seconds=release):
            return None
        if previous.share >= 1.0 - _EPS:
            return previous
        seen = f"since {reading.at:%H:%M:%S}" if reading is not None else "missing"
        text = previous.reason.split(" [", 1)[0]
        return dataclasses.replace(previous, reason=f"{text} [held: voltage reading {seen}]")
    tight, phase, pu, source = _worst(rule, pus, min_share, 0.0)
    current = previous.share if previous is not None else 1.0
    hold = timedelta(seconds=rule.hold_s)
    step = previous.step if previous is not None else None
    if tight < current - _EPS:
        if previous is not None and previous.eased_from is not None and \
                now - previous.since <= 2 * hold:
            # the voltage undid that easing: it was too large a step for this feeder
            step = _halved(step if step is not None else rule.ease_step,
                           current - previous.eased_from)
        return VoltHold(tight, now, _describe(tight, phase, pu, source), step)
    eased, phase_e, pu_e, source_e = _worst(rule, pus, min_share, rule.hysteresis)
    held_long_enough = previous is None or now - previous.since >= hold
    if eased > current + _EPS and may_ease and held_long_enough:
        limit = step if step is not None else rule.ease_step
        if limit is not None:
            eased = min(eased, max(current + limit, min_share))
        return VoltHold(eased, now, _describe(eased, phase_e, pu_e, source_e,
                                              stepped=eased < 1.0),
                        step, eased_from=current)
    if previous is None:
        return VoltHold(1.0, now, _describe(1.0, phase, pu, source))
    if current >= 1.0 - _EPS:
        # unrestricted for a while: the next episode starts from the rule's own step
        settled = now - previous.since > 2 * hold
        return dataclasses.replace(previous, reason=_describe(current, phase, pu, source),
                                   step=None if settled else previous.step)
    why = "until it recovers by the hysteresis band" if eased <= current + _EPS or \
        not may_ease else \
        f"hold time until {previous.since + hold:%H:%M:%S}"
    text = previous.reason.split(" [", 1)[0].replace(" (easing)", "")
    return dataclasses.replace(previous, reason=f"{text} [kept {why}; now {pu:.3f} pu {phase}]")


def _halved(step: float | None, moved: float) -> float:
    """The next step after one of ``moved`` that the voltage undid (``step``: the most a
    step may be; None: no limit)."""
    return max(min(step if step is not None else moved, moved) / 2, MIN_STEP)


def _describe(share: float, phase: str, pu: float, source: str | None = None,
              stepped: bool = False) -> str:
    where = f"voltage {pu:.3f} pu on {phase}" + (f" ({source})" if source else "")
    if share <= 0:
        return f"{where}: charging paused"
    easing = " (easing)" if stepped else ""
    return f"{where}: {share:.0%} of allowed power{easing}"


def site_reading(readings: Mapping[str, VoltageReading], now: datetime,
                 stale_after: timedelta) -> tuple[VoltageReading | None, bool]:
    """The site's worst voltage per phase over the stations' fresh readings.

    Returns the combined reading (None when no station has a fresh one) and whether every
    station's reading was fresh: with one missing, the site restriction may tighten but
    not ease (that station may be the one at the end of the weak feeder). Each phase's
    source names the station whose reading it is.
    """
    fresh = {sid: r for sid, r in readings.items() if now - r.at <= stale_after}
    complete = len(fresh) == len(readings)
    if not fresh:
        return None, complete
    width = max(len(r.phases_v) for r in fresh.values())
    phases: list[float | None] = []
    sources: list[str | None] = []
    for index in range(width):
        values = [(volts, sid, r.source_of(index)) for sid, r in fresh.items()
                  if index < len(r.phases_v) and (volts := r.phases_v[index]) is not None]
        if not values:
            phases.append(None)
            sources.append(None)
            continue
        volts, sid, source = min(values, key=lambda item: item[0])
        phases.append(volts)
        sources.append(f"{sid}, {source}" if source else sid)
    return VoltageReading(min(r.at for r in fresh.values()), tuple(phases),
                          tuple(sources)), complete


def site_mean(readings: Mapping[str, VoltageReading], now: datetime,
              stale_after: timedelta) -> list[tuple[str, float, float]]:
    """Per phase over the stations' fresh readings: (phase, minimum V, mean V)."""
    fresh = [r for r in readings.values() if now - r.at <= stale_after]
    result = []
    for index, name in enumerate(PHASE_NAMES):
        values = [r.phases_v[index] for r in fresh
                  if index < len(r.phases_v) and r.phases_v[index] is not None]
        if values:
            result.append((name, min(values), sum(values) / len(values)))  # type: ignore[arg-type]
    return result


# -- over-voltage: absorb the surplus ----------------------------------------------------------

def absorb_share(rule: VoltageRule, pu: float) -> float:
    """The floor the over-voltage rule gives at ``pu`` (0 below ``start``, 1 from ``full``)."""
    over = rule.over_voltage
    if over is None or pu <= over.start:
        return 0.0
    return min(1.0, (pu - over.start) / (over.full - over.start))


@dataclass(frozen=True)
class Floor:
    """The over-voltage floor in force: the share of the site's capacity that price
    signals may not hold back, carried from plan to plan."""

    share: float
    since: datetime  # when ``share`` last changed
    reason: str
    step: float | None = None  # the most it may fall at once, once halved (None: ease_step)
    fell_from: float = 0.0  # the share before its last fall; 0 once it has risen since


def absorb(rule: VoltageRule, readings: Mapping[str, VoltageReading], nominal_v: float,
           previous: Floor | None, now: datetime) -> Floor | None:
    """The over-voltage floor after these readings (None: no floor).

    The floor follows the highest phase of any station with a fresh reading. It rises at
    once; it falls only once the rule, read ``hysteresis`` pu above the measured voltage,
    allows it, ``hold_s`` after its last change and by at most a step: absorbing lowers
    the very voltage that started it. A fall that the voltage undoes (the floor rises
    again within two hold times) was too large for this feeder, so the step halves each
    time: the floor settles instead of swinging. A floor raises limits, so without fresh
    readings there is none.
    """
    if rule.over_voltage is None:
        return None
    stale_after = timedelta(seconds=rule.stale_after_s)
    highest: tuple[float, str] | None = None
    for reading in readings.values():
        if now - reading.at > stale_after:
            continue
        for phase, pu, _ in _phase_pus(rule, reading, nominal_v):
            if highest is None or pu > highest[0]:
                highest = (pu, phase)
    if highest is None:
        return None
    pu, phase = highest
    hold = timedelta(seconds=rule.hold_s)
    current = previous.share if previous is not None else 0.0
    step = previous.step if previous is not None else None
    target = absorb_share(rule, pu)
    if target > current + _EPS:
        if previous is not None and previous.fell_from > current + _EPS and \
                now - previous.since <= 2 * hold:
            step = _halved(step if step is not None else rule.ease_step,
                           previous.fell_from - current)
        return Floor(target, now, _describe_absorb(target, phase, pu, easing=False), step)
    lower = absorb_share(rule, pu + rule.hysteresis)
    if lower < current - _EPS and (previous is None or now - previous.since >= hold):
        limit = step if step is not None else rule.ease_step
        if limit is not None:
            lower = max(lower, current - limit)
        # at 0 it is kept a while yet, to tell whether the voltage undoes that fall too
        return Floor(max(lower, 0.0), now, _describe_absorb(lower, phase, pu, easing=True),
                     step, fell_from=current)
    if previous is None or (previous.share <= _EPS and now - previous.since > 2 * hold):
        return None
    text = previous.reason.split(" [", 1)[0]
    return dataclasses.replace(previous, reason=f"{text} [kept; now {pu:.3f} pu {phase}]")


def _describe_absorb(share: float, phase: str, pu: float, easing: bool) -> str:
    if share <= _EPS:
        return f"over-voltage over (now {pu:.3f} pu on {phase})"
    floor = f"price signals may not hold back the first {share:.0%} of site capacity"
    if easing:
        return f"over-voltage easing (now {pu:.3f} pu on {phase}): {floor}"
    return f"over-voltage {pu:.3f} pu on {phase}: {floor}"
