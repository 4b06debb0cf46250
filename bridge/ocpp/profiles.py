"""A station's limit schedule -> OCPP 1.6 charging profiles (pure).

The one place that knows the 1.6 ChargingProfile layout. Limits are always
rounded *down* (0.1 A or 1 W) so that what the station applies never exceeds
what the plan allowed; a decrease starts at least a second before its planned
time and an increase on the second after, for the same reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.wire import format_time
from policies.fleet import StationInfo, Step, value_at

# Fixed ids per purpose and connector, so a new profile replaces ours and clearing by id
# touches only ours.
STATION_MAX_PROFILE_ID = 9001
TX_DEFAULT_PROFILE_ID = 9100  # + connector id
TX_PROFILE_ID = 9200  # + connector id
STATION_MAX, TX_DEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"
# Above a station's own level-0 defaults; stations that take only 0 get 0.
PREFERRED_STACK_LEVEL = 1
# A start slightly in the past keeps a station with a lagging clock from ignoring the profile.
START_LEAD = timedelta(seconds=5)
# Stations apply a period at whole seconds of its offset: a lower limit takes effect this
# much before its time, so that it holds from its very first moment.
DECREASE_LEAD = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class BuiltProfile:
    """One limit profile in domain terms; :attr:`payload` is its OCPP 1.6 form."""

    purpose: str  # STATION_MAX, TX_DEFAULT or TX
    connector_id: int  # 0: the whole station
    transaction_id: int | None  # TX only
    profile_id: int
    stack_level: int
    unit: str  # "A" or "W"
    number_phases: int
    start: datetime
    periods: tuple[tuple[int, float], ...]  # (seconds from start, limit in unit)
    applied: tuple[Step, ...]  # what the station will apply, in W, at absolute times
    # the payload's JSON text, made on first use: a DR wave sends one profile to thousands
    # of stations and stores it for each (see _RecentProfiles)
    _payload_json: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def payload_json(self) -> str:
        """:attr:`payload` as JSON text, encoded once."""
        text = self._payload_json
        if text is None:
            text = json.dumps(self.payload, separators=(",", ":"))
            object.__setattr__(self, "_payload_json", text)  # a cache, not a change
        return text

    @property
    def payload(self) -> dict:
        """cs_charging_profiles as on the 1.6 wire (camelCase)."""
        payload: dict = {
            "chargingProfileId": self.profile_id,
            "stackLevel": self.stack_level,
            "chargingProfilePurpose": self.purpose,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "startSchedule": format_time(self.start),
                "chargingRateUnit": self.unit,
                "chargingSchedulePeriod": [
                    {"startPeriod": second, "limit": limit, "numberPhases": self.number_phases}
                    for second, limit in self.periods
                ],
            },
        }
        if self.transaction_id is not None:
            payload["transactionId"] = self.transaction_id
        return payload


def _floor(value: float, step: float) -> float:
    return math.floor(value / step + 1e-9) * step


def to_unit(watts: float, unit: str, station: StationInfo, min_current_a: float) -> float:
    """Watts -> the profile's unit, rounded down; below the minimum current means pause.

    Amps are per phase at the station's full phase count: the worst case, since an EV on
    fewer phases draws less power for the same current.
    """
    amps = watts / (station.voltage_v * station.phases)
    if amps < min_current_a - 1e-9:
        return 0.0
    if unit == "A":
        return round(_floor(amps, 0.1), 1)
    return float(math.floor(watts + 1e-9))


def from_unit(limit: float, unit: str, station: StationInfo) -> float:
    return limit * station.voltage_v * station.phases if unit == "A" else limit


def _fit_periods(periods: list[tuple[int, float]], max_periods: int) -> list[tuple[int, float]]:
    """Merge neighbours (keeping the lower limit) until the station can hold them all."""
    periods = list(periods)
    while len(periods) > max_periods:
        gaps = [abs(periods[i][1] - periods[i + 1][1]) for i in range(len(periods) - 1)]
        i = gaps.index(min(gaps))
        periods[i : i + 2] = [(periods[i][0], min(periods[i][1], periods[i + 1][1]))]
    return periods


class _RecentProfiles:
    """Profiles built lately, by what they are built from.

    A plan gives most stations the same schedule (the same step objects): in a DR event
    for 10,000 stations, two schedules. The wave that follows builds each station's
    profile within a few seconds, and each was built the same from the same schedule for
    another station: about 55 us of the event loop per station. Kept only for one start
    second (a profile's start is in it), and at most :data:`MAX` of them; each with its
    steps, so that their ids, which key it, stay theirs.
    """

    MAX = 1024

    def __init__(self) -> None:
        self._start: datetime | None = None
        self._kept: dict[tuple[object, ...], tuple[tuple[Step, ...], BuiltProfile]] = {}

    def get(self, start: datetime, key: tuple[object, ...]) -> BuiltProfile | None:
        if start != self._start:
            self._start = start
            self._kept.clear()
            return None
        found = self._kept.get(key)
        return found[1] if found is not None else None

    def keep(self, key: tuple[object, ...], steps: tuple[Step, ...],
             built: BuiltProfile) -> None:
        if len(self._kept) >= self.MAX:
            self._kept.clear()
        self._kept[key] = (steps, built)


_recent = _RecentProfiles()


def build_profile(
    steps: Sequence[Step],
    station: StationInfo,
    caps: Capabilities,
    now: datetime,
    min_current_a: float,
    purpose: str = STATION_MAX,
    connector_id: int = 0,
    transaction_id: int | None = None,
    stack_level: int = PREFERRED_STACK_LEVEL,
    profile_id: int | None = None,
) -> BuiltProfile:
    """A profile that holds the whole schedule at absolute times.

    ``profile_id``: by default the fixed id of its purpose and connector.
    """
    start = now.astimezone(UTC).replace(microsecond=0) - START_LEAD
    steps = tuple(steps)
    # everything the profile is made from: of the station, its voltage and phases only
    key = (tuple(map(id, steps)), station.voltage_v, station.phases, caps.preferred_unit,
           caps.max_periods, caps.max_stack_level, min_current_a, purpose, connector_id,
           transaction_id, stack_level, profile_id)
    built = _recent.get(start, key)
    if built is None:
        built = _build(steps, station, caps, start, min_current_a, purpose, connector_id,
                       transaction_id, stack_level, profile_id)
        _recent.keep(key, steps, built)
    return built


def _build(steps: tuple[Step, ...], station: StationInfo, caps: Capabilities, start: datetime,
           min_current_a: float, purpose: str, connector_id: int, transaction_id: int | None,
           stack_level: int, profile_id: int | None) -> BuiltProfile:
    unit = caps.preferred_unit
    # Steps already superseded at the schedule's start are of no use to the station.
    current = value_at(steps, start)
    kept = [s for s in steps if s.start > start or s is current] or list(steps[:1])
    periods: list[tuple[int, float]] = []
    previous: float | None = None
    for step in kept:
        limit = to_unit(step.limit_w, unit, station, min_current_a)
        offset = (step.start - start).total_seconds()
        if previous is None:
            second = 0
        elif limit < previous:
            # early, even on whole seconds
            second = math.ceil(offset) - int(DECREASE_LEAD.total_seconds())
        else:
            second = math.ceil(offset)
        second = max(second, 0)
        if periods and second <= periods[-1][0]:
            # two steps in one second: the later wins, but never above the earlier
            periods[-1] = (periods[-1][0], min(periods[-1][1], limit))
        elif previous is None or limit != previous:
            periods.append((second, limit))
        previous = periods[-1][1]
    periods = _fit_periods(periods, caps.max_periods)
    applied = tuple(
        Step(start + timedelta(seconds=second), from_unit(limit, unit, station),
             _reason_at(kept, start + timedelta(seconds=second)))
        for second, limit in periods
    )
    if profile_id is None:
        profile_id = {STATION_MAX: STATION_MAX_PROFILE_ID, TX_DEFAULT: TX_DEFAULT_PROFILE_ID,
                      TX: TX_PROFILE_ID}[purpose] + connector_id
    return BuiltProfile(
        purpose=purpose, connector_id=connector_id, transaction_id=transaction_id,
        profile_id=profile_id, stack_level=max(0, min(stack_level, caps.max_stack_level)),
        unit=unit, number_phases=station.phases, start=start, periods=tuple(periods),
        applied=applied,
    )


def station_max_profile(
    steps: Sequence[Step],
    station: StationInfo,
    caps: Capabilities,
    now: datetime,
    min_current_a: float,
    stack_level: int = PREFERRED_STACK_LEVEL,
) -> BuiltProfile:
    """The station-wide cap: a ChargePointMaxProfile on connector 0."""
    return build_profile(steps, station, caps, now, min_current_a, stack_level=stack_level)


def split_watts(total_w: float, count: int, min_w: float) -> list[float]:
    """A station's share split between its ``count`` sessions, never summing above it.

    Equal parts while each gets at least ``min_w``; otherwise the first sessions get
    equal parts of at least ``min_w`` and the rest pause (a trickle below the minimum
    current pauses an EV anyway).
    """
    if count <= 0:
        return []
    if total_w / count >= min_w or min_w <= 0:
        return [total_w / count] * count
    fit = min(int(total_w // min_w), count)
    return [total_w / fit if i < fit else 0.0 for i in range(count)] if fit else [0.0] * count


def connector_profiles(
    steps: Sequence[Step],
    sessions: Mapping[int, int],
    connectors: int,
    station: StationInfo,
    caps: Capabilities,
    now: datetime,
    min_current_a: float,
    stack_level: int = PREFERRED_STACK_LEVEL,
    one_place_each: bool = False,
) -> list[BuiltProfile]:
    """Per-connector limits that sum to no more than ``steps``.

    Every connector gets a TxDefaultProfile of 0 W, so an EV that starts there waits
    for its share instead of drawing beside the others (also once the session it has
    now ends: a TxProfile goes with its transaction). A connector with a session also
    gets a TxProfile for its transaction with its part of the station's share.

    ``one_place_each``, for a station with too few profile places for both on every
    connector: a session's TxProfile takes its connector's default's id, and so its
    place (OCPP replaces a profile that has the same id); idle connectors keep the
    default. When the session ends, its connector is without a default until the next
    plan sends it again.
    """
    active = sorted(sessions)
    min_w = station.watts(min_current_a)
    parts: dict[int, list[Step]] = {c: [] for c in active}
    for step in steps:
        for connector_id, watts in zip(active, split_watts(step.limit_w, len(active), min_w),
                                       strict=True):
            parts[connector_id].append(Step(step.start, watts, step.reason))
    built = []
    idle = (Step(now, 0.0, "no session on this connector"),)
    for connector_id in range(1, max(connectors, *active, 1) + 1):
        if connector_id not in parts or not one_place_each:
            built.append(build_profile(idle, station, caps, now, min_current_a, TX_DEFAULT,
                                       connector_id, None, stack_level))
        if connector_id in parts:
            built.append(build_profile(
                parts[connector_id], station, caps, now, min_current_a, TX, connector_id,
                sessions[connector_id], stack_level,
                TX_DEFAULT_PROFILE_ID + connector_id if one_place_each else None))
    return built


def is_ours(profile_id: int) -> bool:
    """Whether a profile id is one drbridge gives its profiles (anything else is another
    party's: the station's vendor, an installer, a local load manager, another CSMS)."""
    return profile_id == STATION_MAX_PROFILE_ID or \
        TX_DEFAULT_PROFILE_ID <= profile_id < TX_PROFILE_ID + 100


def free_level(preferred: int, taken: Collection[int], top: int) -> int | None:
    """A stack level for one of our profiles that no profile of another party with the same
    purpose on the same connector uses: ``preferred`` when free, else the nearest free one
    above it (up to ``top``), else the nearest free one below; None when every level is
    taken.

    Sending ours at a taken level would replace the other's profile in OCPP 1.6, and OCPP
    2.0.1 forbids it (K01.FR.06: no two profiles with the same stack level, purpose and
    EVSE).
    """
    preferred = max(0, min(preferred, top))
    for level in [*range(preferred, top + 1), *range(preferred - 1, -1, -1)]:
        if level not in taken:
            return level
    return None


def _reason_at(steps: Sequence[Step], at: datetime) -> str:
    step = value_at(steps, at) or (steps[0] if steps else None)
    return step.reason if step else ""


def same_schedule(a: Sequence[Step], b: Sequence[Step], now: datetime) -> bool:
    """Whether two applied schedules give the same limits from ``now`` on (within 1 W)."""
    if a is b:  # a plan gives one tuple to every station with the same share
        return value_at(a, now) is not None  # as the comparison below would find
    times = {now} | {s.start for s in (*a, *b) if s.start > now}
    for at in times:
        x, y = value_at(a, at), value_at(b, at)
        if x is None or y is None or abs(x.limit_w - y.limit_w) > 1.0:
            return False
    return True


def is_raise(new: Sequence[Step], old: Sequence[Step] | None, now: datetime) -> bool:
    """Whether ``new`` allows more than ``old`` at any time from ``now`` on."""
    if old is None:
        return True
    if new is old:
        return False
    times = {now} | {s.start for s in (*new, *old) if s.start > now}
    for at in times:
        x, y = value_at(new, at), value_at(old, at)
        if x is not None and (y is None or x.limit_w > y.limit_w + 1.0):
            return True
    return False
