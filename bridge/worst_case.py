"""What a station the bridge cannot steer may draw, from what it tells (pure).

A station without smart charging, or one refusing our profiles, draws what its EV asks,
up to its hardware. Where the configuration says what that hardware is, that is what it
is counted at. Where it does not, the bridge starts from the worst case
(``ocpp.default_max_current_a`` on every phase of the site) and narrows it only on the
station's own word:

- its meter names a current on one line only, reading after reading: it is wired
  single-phase, on that line (a three-phase meter names all three lines, an idle one
  at 0 A, so a single-phase EV on a three-phase station does not mislead it);
- a configuration key of its own states its maximum current (read, never written), or
  with OCPP 2.0.1 its device model its maximum power;
- once a session has drawn for a while, the highest draw measured in it plus a margin:
  the EV sets the pace, and it is known by then. A new session starts from the
  hardware again.

Whatever the evidence, a station is never counted below what it was last measured
drawing, nor below its peak of the session; a draw above what the evidence allows
discards the evidence about its lines.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from policies.fleet import StationInfo

SINGLE_LINE_READINGS = 3  # readings naming one line only before the station counts as single-phase
DRAWING_W = 100.0  # above this, its EV draws (not just the station's own consumption)
# The measured peak of a session counts with this margin: EVs vary their current a little
# (balancing, a battery warming up); a larger rise is seen at the next reading.
PEAK_MARGIN_RATIO = 0.25
PEAK_MARGIN_A = 2.0  # per phase, at least


@dataclass(frozen=True, slots=True)
class Declared:
    """Which of a station's hardware limits the configuration states (the others are
    defaults: ``site.phases``, ``ocpp.default_max_current_a``)."""

    phases: bool = True
    max_current: bool = True


@dataclass(frozen=True, slots=True)
class Rated:
    """A maximum a station states of itself: a current per phase, or a power."""

    source: str  # where it says so: a configuration key, a device model variable
    amps: float | None = None  # per phase
    watts: float | None = None


@dataclass(slots=True)
class Told:
    """What a station has told of its hardware and of its EV's draw."""

    lines: frozenset[int] = frozenset()  # every line (1..3) its meter named a current on
    single_line_readings: int = 0  # readings that named exactly one line
    rated: Rated | None = None
    session: frozenset[int] = frozenset()  # the transactions the peak belongs to
    peak_w: float = 0.0  # the highest draw of the session
    drawing_since: datetime | None = None  # its first draw in the session
    latest_w: float = 0.0

    def observe(self, at: datetime, measured_w: float, lines: frozenset[int]) -> None:
        """A reading of the station's total draw, and the lines its meter named."""
        self.latest_w = measured_w
        if measured_w > self.peak_w:  # (not max(): called for every meter value)
            self.peak_w = measured_w
        if measured_w > DRAWING_W and self.drawing_since is None:
            self.drawing_since = at
        if lines:
            if not lines <= self.lines:  # mostly the lines it named before: kept as they are
                self.lines = lines if not self.lines else self.lines | lines
            if len(lines) == 1:
                self.single_line_readings += 1

    def sessions(self, running: frozenset[int]) -> bool:
        """The station's transactions now: a new one brings a new EV, whose draw is unknown.
        True when what was learned of the last one is forgotten."""
        learned = self.peak_w > 0 or self.drawing_since is not None
        if running - self.session or (self.session and not running):
            self.peak_w, self.drawing_since = 0.0, None
        else:
            learned = False
        self.session = running
        return learned

    @property
    def single_line(self) -> int | None:
        """The line a single-phase station is on, once its meter said so often enough."""
        if len(self.lines) == 1 and self.single_line_readings >= SINGLE_LINE_READINGS:
            return next(iter(self.lines))
        return None


@dataclass(frozen=True, slots=True)
class Count:
    """What the planner counts a station at, the station's shape (lines), and why."""

    watts: float
    info: StationInfo
    reason: str


def hardware(info: StationInfo, declared: Declared, told: Told) -> tuple[StationInfo, str]:
    """The station's hardware as configured, narrowed by what it told where the
    configuration is silent; and how it was found out."""
    amps, phases, line, power = info.max_current_a, info.phases, info.phase, info.max_power_w
    rated = None if declared.max_current else told.rated
    if declared.max_current:
        amps_why = "max_current_a"
    elif rated is not None and rated.amps is not None:
        amps, amps_why = rated.amps, f"its configuration key {rated.source}"
    else:
        amps_why = "ocpp.default_max_current_a: not declared"
    power_why = ""
    if rated is not None and rated.watts is not None and power is None:
        power = rated.watts
        power_why = f", at most {power / 1000:g} kW ({rated.source})"
    single = told.single_line
    if declared.phases:
        phases_why = f"{phases} phase{'s' if phases > 1 else ''}"
    elif single is not None:
        phases, line = 1, single
        phases_why = f"1 phase, L{single} (its meter reports current on L{single} only)"
    else:
        phases_why = f"{phases} phase{'s' if phases > 1 else ''} (the site's: not declared)"
    shaped = replace(info, phases=phases, phase=line, max_current_a=amps, max_power_w=power)
    return shaped, f"{amps:g} A ({amps_why}) on {phases_why}{power_why}"


def count(info: StationInfo, declared: Declared, told: Told, now: datetime,
          peak_after: timedelta) -> Count:
    """What a station the bridge cannot steer may draw."""
    shaped, why = hardware(info, declared, told)
    watts = shaped.max_w
    reason = f"{watts / 1000:.1f} kW: {why}"
    drawn = now - told.drawing_since if told.drawing_since is not None else None
    if drawn is not None and drawn >= peak_after and told.peak_w > 0:
        learned = max(told.peak_w * (1 + PEAK_MARGIN_RATIO),
                      told.peak_w + shaped.watts(PEAK_MARGIN_A))
        if learned < watts:
            watts = learned
            reason = (f"{watts / 1000:.1f} kW: its peak of {told.peak_w / 1000:.1f} kW in "
                      f"{drawn.total_seconds() / 60:.0f} min of this session, plus "
                      f"{PEAK_MARGIN_RATIO:.0%} (at most {why})")
    measured = max(told.peak_w, told.latest_w)
    if measured > shaped.max_w:
        # it draws more than what it told allows: its lines are not what they seemed
        shaped = replace(shaped, phases=info.phases, phase=info.phase)
        watts = max(measured, shaped.max_w)
        reason = f"{watts / 1000:.1f} kW: measured drawing {measured / 1000:.1f} kW, " \
                 f"more than {why}"
    elif measured > watts:
        watts = measured
        reason = f"{watts / 1000:.1f} kW: measured drawing that much"
    return Count(watts, shaped, reason)
