"""Whether a station draws what it accepted (pure).

A station may accept a profile and go on drawing what its EV asks for. Its meter
gives it away: a draw above the limit it acknowledged, beyond a tolerance, for
longer than a grace time (a station needs a few seconds to ramp down, and meter
values lag). Such a station is flagged and from then on counted at the highest
draw measured since, until it follows its limit for a whole grace time (it was
slow rather than deaf, or its EV stopped) or reboots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ComplianceRule:
    tolerance_w: float  # measurement noise and rounding a station may exceed its limit by
    grace: timedelta  # how long a station may stay above its limit after a change
    # Limits in amps are converted at the nominal voltage; the grid may run ~10 % above it.
    tolerance_ratio: float = 0.1

    def exceeds(self, measured_w: float, allowed_w: float) -> bool:
        return measured_w > allowed_w * (1 + self.tolerance_ratio) + self.tolerance_w


@dataclass
class Compliance:
    over_since: datetime | None = None
    within_since: datetime | None = None  # flagged, but following its limit since
    flagged: bool = False
    peak_w: float = 0.0  # highest draw measured since flagged
    detail: str = ""

    def observe(self, rule: ComplianceRule, at: datetime, measured_w: float,
                allowed_w: float | None) -> bool:
        """One measurement of the station's draw; True when what the planner must count changed.

        ``allowed_w`` is the highest limit the station acknowledged over the last grace
        time, or None while no limit is settled (nothing acknowledged yet, a profile in
        flight, a change younger than the grace time).
        """
        if self.flagged:
            if allowed_w is None or rule.exceeds(measured_w, allowed_w):
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
        if allowed_w is None or not rule.exceeds(measured_w, allowed_w):
            self.over_since = None
            return False
        if self.over_since is None:
            self.over_since = at
            return False
        if at - self.over_since < rule.grace:
            return False
        self.flagged, self.peak_w = True, measured_w
        self.detail = (f"draws {measured_w:.0f} W, above the {allowed_w:.0f} W it accepted, "
                       f"for {(at - self.over_since).total_seconds():.0f} s")
        return True

    def flag(self, detail: str, peak_w: float) -> None:
        """Flagged on other evidence (its composite schedule ignores our limit)."""
        self.flagged, self.detail, self.peak_w = True, detail, max(self.peak_w, peak_w)
