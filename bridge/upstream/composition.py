"""How the operator's charging profiles and drbridge's compose on one station (pure).

What a station computes (OCPP 1.6 §3.13, 2.0.1 K01/K08): within each purpose, on each
connector (EVSE), the *leading* profile is the one of the highest stack level that is valid
and has a period at that moment; across purposes the lowest limit wins: the station-wide
``ChargePointMaxProfile`` (2.0.1 ``ChargingStationMaxProfile``) caps the connector's
``TxProfile``, or, without one, its ``TxDefaultProfile`` (or the station-wide default).
A new profile with the id of an installed one replaces it; one with the same purpose and
stack level (and connector, and transaction for a TxProfile) replaces it in 1.6 and is
rejected in 2.0.1 (K01.FR.05/06).

So stacking alone cannot give "the lower of the operator's limit and the DR limit" within
one purpose: whichever sits higher wins. The rule drbridge follows:

1. drbridge's profiles sit at the station's top stack level ``R`` (``Reserved``), with its
   own ids; each one holds the *lower* of drbridge's limit and the operator's leading
   limit for that purpose and connector (:meth:`UpstreamProfiles.limit_steps`,
   :func:`lower_envelope`). Its profiles therefore lead their purposes and the station
   computes ``min(DR, operator)`` everywhere, whatever level the operator uses.
2. The operator's profiles are forwarded and really installed (the station's answer goes
   back unchanged), so GetCompositeSchedule answers are the station's own, true, and at
   most what the operator allows. Two rewrites keep them off drbridge's places: an id
   that is one of drbridge's goes to the station under an alias, and the stack level
   ``R``, in a purpose drbridge uses, goes to ``R - 1``. Where that would land on another
   of the operator's profiles (or ``R`` is 0), the profile is refused, as is a level above
   ``R`` (as the station itself would): a ``Rejected`` is the truth, nothing was installed.
3. ClearChargingProfile: by id, the alias is used, and one of drbridge's ids is answered
   ``Unknown`` (the operator has no such profile). By criteria that could reach a profile
   of drbridge's (or one moved to ``R - 1``), the clear is split into clears that cannot:
   one per lower stack level, and by id for a moved profile of the operator's.
4. Configuration that would undo the cap (1.6 ChangeConfiguration, 2.0.1 SetVariables):
   read-only smart-charging keys are refused as the specification says; disabling smart
   charging is refused; sampling is widened to what drbridge needs (see
   :func:`guard_configuration`, :func:`guard_variables`).

Everything returns what to do and a ``note`` saying what was changed and why, to log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from policies.fleet import StationInfo, Step, value_at

V16, V201 = "1.6", "2.0.1"
STATION_MAX, TX_DEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"
_PURPOSE_NAMES = {"ChargingStationMaxProfile": STATION_MAX}  # 2.0.1 -> the 1.6 name
# Where the operator's profiles that carry one of drbridge's ids are installed instead.
ALIAS_BASE = 1_900_000_000
_CLEARABLE = frozenset({STATION_MAX, TX_DEFAULT, TX})  # what a CSMS may clear
_RECURRENCE = {"Daily": timedelta(days=1), "Weekly": timedelta(weeks=1)}
# 1.6 keys the specification makes read-only; a station that let them change would move
# drbridge's reserved stack level or its units from under it.
READ_ONLY_SMART_CHARGING_16 = frozenset({
    "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled",
    "ConnectorSwitch3to1PhaseSupported",
})
READ_ONLY_SMART_CHARGING_201 = frozenset({"ProfileStackLevel", "PeriodsPerSchedule", "Entries",
                                          "RateUnit", "Phases3to1"})

Payload = dict[str, Any]


@dataclass(frozen=True)
class Reserved:
    """What drbridge holds on one station."""

    stack_level: int  # R: the station's top stack level, where drbridge's profiles sit
    profile_ids: frozenset[int]  # drbridge's own profile ids
    purposes: frozenset[str]  # the purposes drbridge uses there (1.6 names)


@dataclass(frozen=True)
class Forward:
    """Send ``request`` to the station (perhaps rewritten); its answer goes upstream."""

    request: Payload
    note: str = ""  # what was changed and why; empty: forwarded unchanged
    remember: UpstreamProfile | None = None  # record once the station accepts
    forget: tuple[int, ...] = ()  # upstream ids no longer on the station after it


@dataclass(frozen=True)
class AnswerLocally:
    """Not forwarded: this is the answer upstream gets."""

    answer: Payload
    note: str


@dataclass(frozen=True)
class Split:
    """Several requests to the station in place of one; :func:`combined_clear_answer`
    makes upstream's answer from theirs."""

    requests: tuple[Payload, ...]
    note: str
    forget: tuple[int, ...] = ()


@dataclass(frozen=True)
class UpstreamProfile:
    """One of the operator's profiles as installed on the station."""

    upstream_id: int
    station_id: int  # its id on the station (an alias when it was one of drbridge's)
    purpose: str  # 1.6 name
    connector: int  # connector (1.6) or EVSE (2.0.1); 0: the whole station
    transaction_id: int | str | None
    upstream_level: int
    station_level: int
    profile: Payload  # as the operator sent it (wire form of its version)
    received_at: datetime


def _purpose(name: Any) -> str:
    return _PURPOSE_NAMES.get(str(name), str(name))


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class UpstreamProfiles:
    """The operator's profiles on one station, and the rules above. ``version``: "1.6" or
    "2.0.1", the wire form of the requests it reads and writes."""

    def __init__(self, version: str, reserved: Reserved) -> None:
        self.version = version
        self.reserved = reserved
        self.profiles: dict[int, UpstreamProfile] = {}  # by upstream id

    # ---- wire forms ----------------------------------------------------------------------
    def _unpack_set(self, request: Mapping[str, Any]) -> tuple[int, Payload]:
        if self.version == V16:
            return int(request["connectorId"]), dict(request["csChargingProfiles"])
        return int(request["evseId"]), dict(request["chargingProfile"])

    def _pack_set(self, request: Mapping[str, Any], profile: Payload) -> Payload:
        key = "csChargingProfiles" if self.version == V16 else "chargingProfile"
        return {**request, key: profile}

    def _id_key(self) -> str:
        return "chargingProfileId" if self.version == V16 else "id"

    def _wire_purpose(self, purpose: str) -> str:
        return "ChargingStationMaxProfile" if self.version == V201 and purpose == STATION_MAX \
            else purpose

    # ---- SetChargingProfile --------------------------------------------------------------
    def on_set(self, request: Mapping[str, Any], now: datetime) -> Forward | AnswerLocally:
        """An operator's SetChargingProfile: forward it (perhaps rewritten) or refuse it."""
        connector, profile = self._unpack_set(request)
        placed = self._place(profile, connector, now)
        if isinstance(placed, AnswerLocally):
            return placed
        upstream, notes = placed
        rewritten = {**profile, self._id_key(): upstream.station_id,
                     "stackLevel": upstream.station_level}
        forget = tuple(p.upstream_id for p in self._replaced_by(upstream))
        return Forward(self._pack_set(request, rewritten) if notes else dict(request),
                       "; ".join(notes), upstream, forget)

    def _place(self, profile: Payload, connector: int,
               now: datetime) -> tuple[UpstreamProfile, list[str]] | AnswerLocally:
        """Where an operator's profile goes on the station, or why it cannot go."""
        upstream_id = int(profile[self._id_key()])
        level = int(profile["stackLevel"])
        purpose = _purpose(profile["chargingProfilePurpose"])
        reserved = self.reserved
        notes: list[str] = []
        station_id = upstream_id
        known = self.profiles.get(upstream_id)
        aliases = {p.station_id for p in self.profiles.values() if p.upstream_id != upstream_id}
        if upstream_id in reserved.profile_ids or upstream_id in aliases:
            station_id = known.station_id if known is not None else self._alias(upstream_id)
            whose = "drbridge's" if upstream_id in reserved.profile_ids else "in use"
            notes.append(f"profile id {upstream_id} is {whose}: installed as {station_id}")
        station_level = level
        if purpose in reserved.purposes and level > reserved.stack_level:
            # what a compliant station answers; one that took it would rank it above ours
            return AnswerLocally({"status": "Rejected"},
                                 f"{purpose} at stack level {level}: above the station's top"
                                 f" level {reserved.stack_level}")
        if purpose in reserved.purposes and level == reserved.stack_level:
            if reserved.stack_level == 0:
                return AnswerLocally({"status": "Rejected"},
                                     f"{purpose} at stack level {level}: the station has one"
                                     " level only, and it holds the site's limit")
            station_level = reserved.stack_level - 1
            notes.append(f"stack level {level} is the site limit's: installed at "
                         f"{station_level}")
        candidate = UpstreamProfile(upstream_id, station_id, purpose, connector,
                                    profile.get("transactionId"), level, station_level,
                                    profile, now)
        for other in self.profiles.values():
            if other.upstream_id == upstream_id or not _same_place(other, candidate):
                continue
            if other.upstream_level != level:  # two of the operator's levels on one place
                return AnswerLocally(
                    {"status": "Rejected"},
                    f"{purpose} at stack level {level}: level {station_level} below the site"
                    f" limit's already holds the operator's profile {other.upstream_id}")
        return candidate, notes

    def _alias(self, upstream_id: int) -> int:
        taken = {p.station_id for p in self.profiles.values()} | set(self.profiles)
        alias = ALIAS_BASE + upstream_id
        while alias in taken or alias in self.reserved.profile_ids:
            alias += 1
        return alias

    def _replaced_by(self, new: UpstreamProfile) -> list[UpstreamProfile]:
        """The operator's profiles the station drops when ``new`` is installed."""
        return [p for p in self.profiles.values()
                if p.upstream_id == new.upstream_id
                or (self.version == V16 and _same_place(p, new))]

    def accepted(self, profile: UpstreamProfile) -> None:
        """The station accepted a forwarded profile: it now holds it."""
        for old in self._replaced_by(profile):
            del self.profiles[old.upstream_id]
        self.profiles[profile.upstream_id] = profile

    def forgotten(self, upstream_ids: Iterable[int]) -> None:
        """The station no longer holds these (after a clear)."""
        for upstream_id in upstream_ids:
            self.profiles.pop(upstream_id, None)

    # ---- ClearChargingProfile -------------------------------------------------------------
    def on_clear(self, request: Mapping[str, Any]) -> Forward | AnswerLocally | Split:
        """An operator's ClearChargingProfile: never reaches a profile of drbridge's."""
        if self.version == V16:
            profile_id = request.get("id")
            criteria = {"connector": request.get("connectorId"),
                        "purpose": request.get("chargingProfilePurpose"),
                        "level": request.get("stackLevel")}
        else:
            profile_id = request.get("chargingProfileId")
            given = request.get("chargingProfileCriteria") or {}
            criteria = {"connector": given.get("evseId"),
                        "purpose": given.get("chargingProfilePurpose"),
                        "level": given.get("stackLevel")}
        if profile_id is not None:
            return self._clear_by_id(request, int(profile_id))
        return self._clear_by_criteria(request, criteria)

    def _clear_request(self, station_id: int | None, connector: Any = None, purpose: Any = None,
                       level: Any = None) -> Payload:
        if self.version == V16:
            fields = {"id": station_id, "connectorId": connector,
                      "chargingProfilePurpose": purpose, "stackLevel": level}
            return {k: v for k, v in fields.items() if v is not None}
        criteria = {k: v for k, v in {"evseId": connector, "chargingProfilePurpose": purpose,
                                      "stackLevel": level}.items() if v is not None}
        request: Payload = {}
        if station_id is not None:
            request["chargingProfileId"] = station_id
        if criteria:
            request["chargingProfileCriteria"] = criteria
        return request

    def _clear_by_id(self, request: Mapping[str, Any], profile_id: int) -> Forward | AnswerLocally:
        known = self.profiles.get(profile_id)
        if known is not None and known.station_id != profile_id:
            return Forward(self._clear_request(known.station_id), f"profile {profile_id} is "
                           f"installed as {known.station_id}", forget=(profile_id,))
        if profile_id in self.reserved.profile_ids and known is None:
            return AnswerLocally({"status": "Unknown"},
                                 f"profile {profile_id} is the site limit's, not the operator's:"
                                 " left in place")
        return Forward(dict(request), forget=(profile_id,))

    def _clear_by_criteria(self, request: Mapping[str, Any],
                           criteria: Mapping[str, Any]) -> Forward | Split:
        connector, purpose, level = criteria["connector"], criteria["purpose"], criteria["level"]
        reserved = self.reserved
        matching = [p for p in self.profiles.values() if _matches(p, connector, purpose, level)]
        forget = tuple(p.upstream_id for p in matching)
        moved = [p for p in self.profiles.values() if p.station_level != p.upstream_level]
        reaches_ours = (level is None or int(level) == reserved.stack_level) and any(
            (purpose is None or _purpose(purpose) == ours)
            and (connector is None or ours != STATION_MAX or int(connector) == 0)
            for ours in reserved.purposes)
        reaches_moved = any(
            _matches(replace(p, upstream_level=p.station_level), connector, purpose, level)
            != _matches(p, connector, purpose, level) for p in moved)
        if not reaches_ours and not reaches_moved:
            return Forward(dict(request), forget=forget)
        requests: list[Payload] = []
        moved_levels = {p.station_level for p in moved
                        if _matches(replace(p, upstream_level=p.station_level), connector,
                                    purpose, None)}
        levels = range(reserved.stack_level) if level is None else \
            [int(level)] if int(level) < reserved.stack_level else []
        for each in levels:
            if each not in moved_levels:
                requests.append(self._clear_request(None, connector, purpose, each))
        for profile in matching:
            if profile.station_level in moved_levels or profile.station_level not in levels:
                requests.append(self._clear_request(profile.station_id))
        if level is None or int(level) == reserved.stack_level:
            # the top level, in the purposes drbridge does not use there
            for other in _CLEARABLE - reserved.purposes:
                if purpose is None or _purpose(purpose) == other:
                    requests.append(self._clear_request(
                        None, connector, self._wire_purpose(other), reserved.stack_level))
        return Split(tuple(requests), "the clear could reach the site limit's profiles: split"
                     f" into {len(requests)} that cannot", forget)

    # ---- the operator's limits, for the merge -----------------------------------------------
    def limit_steps(self, purpose: str, connector: int, station: StationInfo, now: datetime,
                    horizon: timedelta = timedelta(hours=24),
                    transaction_id: int | str | None = None,
                    transaction_start: datetime | None = None) -> tuple[Step, ...]:
        """What the operator's profiles alone allow (W) in the place of one of drbridge's
        profiles, from ``now`` over ``horizon``; empty when they set no limit there.

        For ``STATION_MAX``: the operator's leading station-wide profile. For ``TX`` and
        ``TX_DEFAULT`` on a connector: its TxProfile for the transaction (any, when
        ``transaction_id`` is None), else its default on the connector, else on the station.
        """
        if purpose == STATION_MAX:
            places = [[(STATION_MAX, 0)]]
        elif purpose == TX:
            places = [[(TX, connector)], [(TX_DEFAULT, connector)], [(TX_DEFAULT, 0)]]
        else:
            places = [[(TX_DEFAULT, connector)], [(TX_DEFAULT, 0)]]
        candidates = [p for p in self.profiles.values()
                      if any((p.purpose, p.connector) in group for group in places)
                      and (p.purpose != TX or transaction_id is None
                           or p.transaction_id in (None, transaction_id))]
        end = now + horizon
        edges = {now} | {e for p in candidates
                         for e in _edges(p, now, end, transaction_start) if now <= e < end}
        steps: list[Step] = []
        for at in sorted(edges):
            found: tuple[float, UpstreamProfile] | None = None
            for group in places:
                found = _leading([p for p in candidates if (p.purpose, p.connector) in group],
                                 at, station, transaction_start)
                if found is not None:
                    break
            limit = math.inf if found is None else found[0]
            reason = "no limit of the operator's" if found is None else \
                f"the operator's {found[1].purpose} {found[1].upstream_id}"
            if not steps or steps[-1].limit_w != limit:
                steps.append(Step(at, limit, reason))
        return () if all(math.isinf(s.limit_w) for s in steps) else tuple(steps)

    # ---- persistence -------------------------------------------------------------------------
    def to_json(self) -> list[Payload]:
        return [{"upstream_id": p.upstream_id, "station_id": p.station_id,
                 "purpose": p.purpose, "connector": p.connector,
                 "transaction_id": p.transaction_id, "upstream_level": p.upstream_level,
                 "station_level": p.station_level, "profile": p.profile,
                 "received_at": p.received_at.isoformat()} for p in self.profiles.values()]

    def load(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            received = _time(row["received_at"]) or datetime.now(UTC)
            profile = UpstreamProfile(
                int(row["upstream_id"]), int(row["station_id"]), str(row["purpose"]),
                int(row["connector"]), row["transaction_id"], int(row["upstream_level"]),
                int(row["station_level"]), dict(row["profile"]), received)
            self.profiles[profile.upstream_id] = profile

    # ---- 2.0.1 reports -----------------------------------------------------------------------
    def report_to_upstream(self, report: Mapping[str, Any]) -> Payload:
        """A 2.0.1 ReportChargingProfiles as the operator must read it: its own profiles
        under its own ids and stack levels (drbridge's are left as they are: the station
        holds them)."""
        by_station_id = {p.station_id: p for p in self.profiles.values()}
        profiles = []
        for profile in report.get("chargingProfile") or []:
            known = by_station_id.get(profile.get("id"))
            if known is not None and (known.station_id != known.upstream_id
                                      or known.station_level != known.upstream_level):
                profile = {**profile, "id": known.upstream_id, "stackLevel": known.upstream_level}
            profiles.append(profile)
        return {**report, "chargingProfile": profiles}


def _same_place(a: UpstreamProfile, b: UpstreamProfile) -> bool:
    """Whether the station keeps one profile only for both (same purpose, level, place)."""
    return (a.purpose, a.connector, a.station_level) == (b.purpose, b.connector,
                                                         b.station_level) \
        and (a.purpose != TX or a.transaction_id == b.transaction_id)


def _matches(profile: UpstreamProfile, connector: Any, purpose: Any, level: Any) -> bool:
    """Whether a clear by these criteria reaches the profile (as the operator sees it)."""
    return (connector is None or int(connector) == profile.connector) \
        and (purpose is None or _purpose(purpose) == profile.purpose) \
        and (level is None or int(level) == profile.upstream_level)


def _schedules(profile: Payload) -> list[Payload]:
    schedule = profile.get("chargingSchedule")
    return [s for s in (schedule if isinstance(schedule, list) else [schedule])
            if isinstance(s, dict)]


def _start(profile: UpstreamProfile, schedule: Payload, at: datetime,
           transaction_start: datetime | None) -> datetime | None:
    """Where a schedule's periods count from, for the moment ``at``; None: not known."""
    kind = profile.profile.get("chargingProfileKind")
    if kind == "Relative":
        return transaction_start
    start = _time(schedule.get("startSchedule")) or profile.received_at
    step = _RECURRENCE.get(str(profile.profile.get("recurrencyKind")))
    if kind == "Recurring" and step is not None:
        start += step * math.floor((at - start) / step)
    return start


def _to_watts(limit: float, unit: Any, number_phases: Any, station: StationInfo) -> float:
    # Amps per phase at the station's full phase count, as drbridge's own profiles are
    # computed: the same amps come back when drbridge sends the merge in A.
    if str(unit).upper() == "A":
        return limit * station.voltage_v * station.phases
    return limit


def _limit_at(profile: UpstreamProfile, at: datetime, station: StationInfo,
              transaction_start: datetime | None) -> float | None:
    """What one of the operator's profiles sets at ``at`` (W); None when it sets nothing.
    A schedule whose start is unknown counts at its lowest limit (never above the
    operator's intent); of several schedules (2.0.1), the lowest counts."""
    body = profile.profile
    valid_from, valid_to = _time(body.get("validFrom")), _time(body.get("validTo"))
    if (valid_from is not None and at < valid_from) or (valid_to is not None and at >= valid_to):
        return None
    limits = []
    for schedule in _schedules(body):
        periods = sorted((p for p in schedule.get("chargingSchedulePeriod") or []
                          if isinstance(p, dict)), key=lambda p: p.get("startPeriod", 0))
        unit = schedule.get("chargingRateUnit")
        start = _start(profile, schedule, at, transaction_start)
        if start is None:
            limits += [_to_watts(float(p["limit"]), unit, p.get("numberPhases"), station)
                       for p in periods]
            continue
        elapsed = (at - start).total_seconds()
        duration = schedule.get("duration")
        if elapsed < 0 or (duration is not None and elapsed >= float(duration)):
            continue
        current = None
        for period in periods:
            if float(period.get("startPeriod", 0)) > elapsed:
                break
            current = period
        if current is not None:
            limits.append(_to_watts(float(current["limit"]), unit, current.get("numberPhases"),
                                    station))
    return min(limits) if limits else None


def _leading(profiles: Sequence[UpstreamProfile], at: datetime, station: StationInfo,
             transaction_start: datetime | None) -> tuple[float, UpstreamProfile] | None:
    """The limit of the highest stack level that sets one at ``at`` (as the operator set
    its levels: what the station would do without drbridge)."""
    for profile in sorted(profiles, key=lambda p: -p.upstream_level):
        limit = _limit_at(profile, at, station, transaction_start)
        if limit is not None:
            return limit, profile
    return None


def _edges(profile: UpstreamProfile, begin: datetime, end: datetime,
           transaction_start: datetime | None) -> set[datetime]:
    """Moments in [begin, end) where the profile may change what it sets."""
    body = profile.profile
    edges = {t for t in (_time(body.get("validFrom")), _time(body.get("validTo"))) if t}
    step = _RECURRENCE.get(str(body.get("recurrencyKind")))
    for schedule in _schedules(body):
        offsets = [float(p.get("startPeriod", 0))
                   for p in schedule.get("chargingSchedulePeriod") or [] if isinstance(p, dict)]
        if schedule.get("duration") is not None:
            offsets.append(float(schedule["duration"]))
        start = _start(profile, schedule, begin, transaction_start)
        if start is None:
            continue
        while start < end:
            edges.update(start + timedelta(seconds=math.ceil(o)) for o in offsets)
            if body.get("chargingProfileKind") != "Recurring" or step is None:
                break
            start += step
    return edges


def lower_envelope(*series: Sequence[Step]) -> tuple[Step, ...]:
    """The lowest of several limit series at every moment (a series counts from its first
    step on); what drbridge sends in place of its own series when the operator limits too."""
    times = sorted({step.start for steps in series for step in steps})
    result: list[Step] = []
    for at in times:
        current = [s for s in (value_at(steps, at) for steps in series) if s is not None]
        lowest = min(current, key=lambda s: s.limit_w)
        if not result or result[-1].limit_w != lowest.limit_w:
            result.append(Step(at, lowest.limit_w, lowest.reason, lowest.chain))
    return tuple(result)


def combined_clear_answer(answers: Iterable[Mapping[str, Any]]) -> Payload:
    """Upstream's answer to a split clear: Accepted when any part cleared something."""
    accepted = any(str(a.get("status", "")).lower() == "accepted" for a in answers)
    return {"status": "Accepted" if accepted else "Unknown"}


# ---- remote start ----------------------------------------------------------------------------
def remote_start(profiles: UpstreamProfiles, request: Mapping[str, Any], now: datetime,
                 paused: bool) -> Forward | AnswerLocally:
    """An operator's RemoteStartTransaction (2.0.1 RequestStartTransaction): forwarded.

    The EV starts under the station-wide profile of drbridge's, so a paused station stays
    at the site's limit. A TxProfile it carries is placed like any of the operator's
    profiles (it applies to the transaction to come on that connector)."""
    connector = request.get("connectorId" if profiles.version == V16 else "evseId") or 0
    note = "the station is paused by the site's limit: the EV starts at that limit" \
        if paused else ""
    carried = request.get("chargingProfile")
    if not isinstance(carried, dict):
        return Forward(dict(request), note)
    placed = profiles._place(carried, int(connector), now)
    if isinstance(placed, AnswerLocally):
        return AnswerLocally({"status": "Rejected"}, f"its {placed.note}")
    upstream, notes = placed
    rewritten = {**carried, profiles._id_key(): upstream.station_id,
                 "stackLevel": upstream.station_level}
    return Forward({**request, "chargingProfile": rewritten} if notes else dict(request),
                   "; ".join(n for n in (note, *notes) if n), upstream)


# ---- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Needs:
    """What drbridge needs of a station's sampling to see its load."""

    meter_interval_s: int  # at most this many seconds between meter values (0: no need)
    measurands: tuple[str, ...] = ("Energy.Active.Import.Register", "Power.Active.Import")


def _widened_interval(value: str, needs: Needs) -> str | None:
    """The interval to set instead, when the operator's is longer than drbridge needs."""
    try:
        seconds = int(value)
    except ValueError:
        return None  # not a number: the station's own answer says so
    if needs.meter_interval_s and (seconds == 0 or seconds > needs.meter_interval_s):
        return str(needs.meter_interval_s)
    return None


def _widened_measurands(value: str, needs: Needs) -> str | None:
    asked = [m.strip() for m in value.split(",") if m.strip()]
    missing = [m for m in needs.measurands if m not in asked]
    return ",".join([*asked, *missing]) if missing else None


def guard_configuration(request: Mapping[str, Any], needs: Needs) -> Forward | AnswerLocally:
    """An operator's 1.6 ChangeConfiguration."""
    key, value = str(request.get("key")), str(request.get("value"))
    if key in READ_ONLY_SMART_CHARGING_16:
        return AnswerLocally({"status": "Rejected"},
                             f"{key} is read-only (OCPP 1.6) and holds the site limit's place")
    widened = None
    if key == "MeterValueSampleInterval":
        widened = _widened_interval(value, needs)
    elif key == "MeterValuesSampledData":
        widened = _widened_measurands(value, needs)
    if widened is None:
        return Forward(dict(request))
    return Forward({**request, "value": widened},
                   f"{key} {value!r} set as {widened!r}: the site's limit needs it")


@dataclass(frozen=True)
class VariablesPlan:
    """An operator's 2.0.1 SetVariables: some items forwarded (``request``, or None when
    none is), others answered here; :meth:`answer` puts upstream's answer back together
    in the order it asked."""

    request: Payload | None
    local: Mapping[int, Payload]  # item index -> its SetVariableResult
    forwarded: tuple[int, ...]  # item indexes, in the order of request's items
    note: str = ""

    def answer(self, station_answer: Mapping[str, Any] | None) -> Payload:
        results = list((station_answer or {}).get("setVariableResult") or [])
        by_index = dict(zip(self.forwarded, results, strict=False))
        total = len(self.local) + len(self.forwarded)
        return {"setVariableResult": [self.local.get(i) or by_index.get(i) for i in range(total)]}


def guard_variables(request: Mapping[str, Any], needs: Needs) -> VariablesPlan:
    items = list(request.get("setVariableData") or [])
    local: dict[int, Payload] = {}
    forwarded: list[Payload] = []
    indexes: list[int] = []
    notes: list[str] = []
    for index, item in enumerate(items):
        component = str((item.get("component") or {}).get("name"))
        variable = str((item.get("variable") or {}).get("name"))
        value = str(item.get("attributeValue"))
        refused = None
        if component == "SmartChargingCtrlr" and variable in READ_ONLY_SMART_CHARGING_201:
            refused = "read-only, and holds the site limit's place"
        elif component == "SmartChargingCtrlr" and variable in ("Enabled", "Available") \
                and value.strip().lower() in ("false", "0"):
            refused = "smart charging holds the site's limit"
        if refused is not None:
            local[index] = {"attributeStatus": "Rejected", "component": item.get("component"),
                            "variable": item.get("variable")}
            notes.append(f"{component}.{variable}: {refused}")
            continue
        widened = None
        if component == "SampledDataCtrlr" and variable == "TxUpdatedInterval":
            widened = _widened_interval(value, needs)
        elif component == "SampledDataCtrlr" and variable == "TxUpdatedMeasurands":
            widened = _widened_measurands(value, needs)
        if widened is not None:
            notes.append(f"{component}.{variable} {value!r} set as {widened!r}: the site's"
                         " limit needs it")
            item = {**item, "attributeValue": widened}
        forwarded.append(item)
        indexes.append(index)
    forward_request = {**request, "setVariableData": forwarded} if forwarded else None
    return VariablesPlan(forward_request, local, tuple(indexes), "; ".join(notes))
