"""Whether a station draws what it accepted (pure).

A station may accept a profile and go on drawing what its EV asks for. Its meter
gives it away, but only against what the station may really be applying: a station
needs a few seconds to ramp down after a lower limit, and a reading may have been
taken before the limit changed. So a reading is compared with the highest limit the
station may have held over the grace time before it (acknowledged, in flight or
unanswered, see :class:`Holdings`), not with the newest one; and in a fleet whose
limits change every few seconds it is still judged, since the comparison never
waits for the limits to settle.

A station is flagged when two readings in a row are above the limit it may hold, the
second also above the highest limit of the grace time before it (one reading never
flags: a glitch or a late sample cannot). From then on it is counted at the highest
draw measured since, until it follows its limit for a whole grace time (it was slow
rather than deaf, or its EV stopped) or reboots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

from policies.fleet import Step, value_at

# Two readings closer than this are one sample (a station with several connectors reports
# each at the same moment): the second of a row must come later.
SAME_SAMPLE = timedelta(seconds=0.5)


@dataclass(frozen=True)
class ComplianceRule:
    tolerance_w: float  # measurement noise and rounding a station may exceed its limit by
    # How long a station may go on drawing a limit it held before: one meter interval (a
    # sample taken before the change) and the EV's ramp (IEC 61851 gives it 5 s).
    grace: timedelta
    # Limits in amps are converted at the nominal voltage; the grid may run ~10 % above it.
    tolerance_ratio: float = 0.1

    def exceeds(self, measured_w: float, allowed_w: float) -> bool:
        return measured_w > allowed_w * (1 + self.tolerance_ratio) + self.tolerance_w


def _highest(steps: tuple[Step, ...], start: datetime, end: datetime) -> float:
    """The highest limit a schedule sets at any moment of [start, end]."""
    current = value_at(steps, start)
    # before its first step the profile already applied (schedules start early): its first
    best = current.limit_w if current is not None else steps[0].limit_w if steps else 0.0
    for step in steps:
        if start < step.start <= end:
            best = max(best, step.limit_w)
    return best


@dataclass(slots=True)
class Holdings:
    """What a station may have been applying lately: from each moment on, a schedule.

    None stands for anything up to its hardware: not confirmed since it (re)connected or
    rebooted, so its profiles may be gone. A schedule is the upper envelope of what it
    acknowledged and what was in flight or unanswered at the time.
    """

    entries: list[tuple[datetime, tuple[Step, ...] | None]] = field(default_factory=list)
    # whether the entries are in time order (they are unless the clock stepped back while
    # one of them was kept): highest() answers from the newest alone only then
    in_order: bool = True

    def note(self, at: datetime, held: tuple[Step, ...] | None, keep: timedelta) -> None:
        """From ``at`` on the station may hold ``held`` (and no longer what it held before);
        what it held more than ``keep`` ago is forgotten."""
        if self.entries:
            since, last = self.entries[-1]
            if last is held or (last is not None and held is not None and last == held):
                return
            if at < since:  # the clock stepped back
                self.in_order = False
        self.entries.append((at, held))
        # the entry in force at the oldest moment still asked about stays
        while len(self.entries) > 1 and self.entries[1][0] <= at - keep:
            del self.entries[0]
        if not self.in_order:
            self.in_order = all(a[0] <= b[0] for a, b in pairwise(self.entries))

    def highest(self, start: datetime, end: datetime) -> float | None:
        """The highest limit the station may have applied at any moment of [start, end];
        None when it may have applied none (nothing known, or not confirmed then)."""
        entries = self.entries
        if not entries or entries[0][0] > start:
            return None
        since, held = entries[-1]
        if since < start <= end and self.in_order:
            # the newest began before the window: it alone was in force (most readings)
            if held is None:
                return None
            limit = _highest(held, start, end)
            return limit if limit > 0.0 else 0.0
        best = 0.0
        last = len(entries) - 1
        for index, (since, held) in enumerate(entries):
            until = entries[index + 1][0] if index < last else end
            if until < start or since > end:
                continue
            if held is None:
                return None
            # (asked for every meter value: comparisons, not max() and min() calls)
            limit = _highest(held, since if since > start else start,
                             until if until < end else end)
            if limit > best:
                best = limit
        return best


@dataclass(slots=True)
class Compliance:
    over_since: datetime | None = None  # the first of the readings in a row above the limit
    within_since: datetime | None = None  # flagged, but following its limit since
    flagged: bool = False
    peak_w: float = 0.0  # highest draw measured since flagged
    detail: str = ""

    def observe(self, rule: ComplianceRule, at: datetime, measured_w: float,
                limit_w: float | None, window_w: float | None) -> bool:
        """One measurement of the station's draw; True when what the planner must count changed.

        ``limit_w`` is the highest limit the station may hold when the reading was taken,
        ``window_w`` the highest over the grace time before it; None where it may hold none
        (nothing acknowledged yet, not confirmed since it reconnected).
        """
        if self.flagged:
            if limit_w is None or rule.exceeds(measured_w, limit_w):
                self.within_since = None
            elif self.within_since is None:
                self.within_since = at
            elif at - self.within_since >= rule.grace:
                self.flagged, self.within_since, self.over_since = False, None, None
                self.detail = "follows its limit again"
                return True
            if measured_w > self.peak_w + rule.tolerance_w:
                self.peak_w = measured_w
                return True
            return False
        if limit_w is None or not rule.exceeds(measured_w, limit_w):
            self.over_since = None
            return False
        if self.over_since is None:
            self.over_since = at  # one reading above: perhaps a glitch; the next will tell
            return False
        if at - self.over_since < SAME_SAMPLE:
            return False
        if window_w is None or not rule.exceeds(measured_w, window_w):
            return False  # it may still be coming down from a higher limit
        self.flagged, self.peak_w = True, measured_w
        self.detail = (f"draws {measured_w:.0f} W, above the {window_w:.0f} W it may hold, "
                       f"for {(at - self.over_since).total_seconds():.0f} s")
        return True

    def flag(self, detail: str, peak_w: float) -> None:
        """Flagged on other evidence (its composite schedule ignores our limit)."""
        self.flagged, self.detail, self.peak_w = True, detail, max(self.peak_w, peak_w)


def taken_at(rule: ComplianceRule, now: datetime, stamped: datetime | None) -> datetime:
    """When a reading received ``now`` was taken: its time stamp, trusted up to a grace
    time back (a station's clock may be off; a reading older than that is still judged,
    against a window that reaches further back)."""
    if stamped is None or stamped >= now:
        return now
    earliest = now - rule.grace
    return stamped if stamped > earliest else earliest
