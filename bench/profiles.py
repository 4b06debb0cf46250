"""What a simulated OCPP 1.6 station may draw under the charging profiles it holds (pure).

The load generator's stations and the benchmark's analysis share this model, so that
"the station held its limit" and "the station drew above its share" are judged by what
the station would do, not by what the central system believes it sent:

- a new profile replaces an installed one with the same ``chargingProfileId``, or with the
  same connector, purpose and ``stackLevel``; ClearChargingProfile removes by id or by
  connector, purpose and stack level (1.6, 5.5 and 5.16);
- within a purpose the profile of the highest stack level whose schedule is in force wins;
  a TxProfile (of the running transaction) beats the TxDefaultProfiles, a connector's
  TxDefaultProfile beats one on connector 0, and a ChargePointMaxProfile (connector 0)
  caps the result (1.6, 3.13);
- a limit in W is turned into A per phase at ``VOLTAGE_V`` and the period's
  ``numberPhases`` (default three), as the EV draws current.

Times are unix seconds (floats); a limit of None means no profile limits the connector.
The EV then draws what it can (``EV_MAX_A`` in the load generator).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

VOLTAGE_V = 230.0
PHASES = 3
RECURRENCE_S = {"Daily": 86400.0, "Weekly": 604800.0}
STATION_MAX, TX_DEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"
# Schedule edges looked for in one recurring profile between two times, at most.
MAX_EDGES = 10_000


def _time(text: Any) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


class Profile(NamedTuple):
    profile_id: int | None
    connector: int
    purpose: str
    stack_level: int
    transaction_id: int | None
    kind: str  # Absolute, Relative or Recurring
    start: float | None  # startSchedule
    received: float
    duration: float | None
    recurrence: float | None  # seconds, for Recurring
    valid_from: float | None
    valid_to: float | None
    periods: tuple[tuple[float, float], ...]  # (startPeriod s, limit A per phase), sorted

    def origin(self, tx_start: float | None) -> float:
        """When the schedule's second 0 is."""
        if self.kind == "Relative":
            return tx_start if tx_start is not None else self.received
        return self.start if self.start is not None else self.received

    def limit_a(self, now: float, tx_start: float | None) -> float | None:
        """The limit this profile sets at ``now``; None outside its schedule or validity."""
        if (self.valid_from is not None and now < self.valid_from) or \
                (self.valid_to is not None and now >= self.valid_to):
            return None
        elapsed = now - self.origin(tx_start)
        if self.recurrence:
            elapsed %= self.recurrence
        if elapsed < 0 or (self.duration is not None and elapsed >= self.duration):
            return None
        limit = None
        for start, value in self.periods:
            if start > elapsed:
                break
            limit = value
        return limit

    def edges(self, after: float, until: float, tx_start: float | None) -> list[float]:
        """Times in (after, until] at which this profile's limit may change."""
        origin = self.origin(tx_start)
        offsets = [start for start, _ in self.periods]
        if self.duration is not None:
            offsets.append(self.duration)
        cycle = self.recurrence
        found: list[float] = []
        base = origin
        if cycle:  # the cycle that holds ``after``
            base = origin + max((after - origin) // cycle, 0) * cycle
        while len(found) < MAX_EDGES:
            for offset in offsets:
                t = base + offset
                if after < t <= until:
                    found.append(t)
            if not cycle or base + cycle > until:
                break
            base += cycle
        for t in (self.valid_from, self.valid_to):
            if t is not None and after < t <= until:
                found.append(t)
        return found


def parse_profile(connector: int, profile: Mapping[str, Any], received: float) -> Profile:
    """A csChargingProfiles payload (1.6, camelCase) as installed at ``received``."""
    schedule = profile.get("chargingSchedule") or {}
    unit = schedule.get("chargingRateUnit", "A")
    periods = []
    for period in schedule.get("chargingSchedulePeriod") or []:
        limit = float(period["limit"])
        if unit == "W":
            limit /= VOLTAGE_V * int(period.get("numberPhases") or PHASES)
        periods.append((float(period["startPeriod"]), limit))
    kind = str(profile.get("chargingProfileKind", "Absolute"))
    duration = schedule.get("duration")
    transaction_id = profile.get("transactionId")
    return Profile(
        profile_id=profile.get("chargingProfileId"),
        connector=connector,
        purpose=str(profile.get("chargingProfilePurpose")),
        stack_level=int(profile.get("stackLevel") or 0),
        transaction_id=int(transaction_id) if transaction_id is not None else None,
        kind=kind,
        start=_time(schedule.get("startSchedule")),
        received=received,
        duration=float(duration) if duration is not None else None,
        recurrence=RECURRENCE_S.get(str(profile.get("recurrencyKind")))
        if kind == "Recurring" else None,
        valid_from=_time(profile.get("validFrom")),
        valid_to=_time(profile.get("validTo")),
        periods=tuple(sorted(periods)),
    )


class Transaction(NamedTuple):
    transaction_id: int
    connector: int
    started: float


class ProfileStack:
    """The profiles one station holds."""

    def __init__(self) -> None:
        self.installed: list[Profile] = []

    def install(self, profile: Profile) -> None:
        self.installed = [
            p for p in self.installed
            if not (p.profile_id == profile.profile_id
                    or (p.connector, p.purpose, p.stack_level)
                    == (profile.connector, profile.purpose, profile.stack_level))
        ]
        self.installed.append(profile)

    def clear(self, request: Mapping[str, Any]) -> int:
        """ClearChargingProfile: by id, else by every filter given; how many went."""
        before = len(self.installed)
        if request.get("id") is not None:
            self.installed = [p for p in self.installed if p.profile_id != request["id"]]
            return before - len(self.installed)
        connector = request.get("connectorId")
        purpose = request.get("chargingProfilePurpose")
        level = request.get("stackLevel")
        self.installed = [
            p for p in self.installed
            if not ((connector is None or p.connector == connector)
                    and (purpose is None or p.purpose == purpose)
                    and (level is None or p.stack_level == level))
        ]
        return before - len(self.installed)

    def _winner(self, candidates: Iterable[Profile], now: float,
                tx_start: float | None) -> float | None:
        best: tuple[int, float] | None = None
        for profile in candidates:
            limit = profile.limit_a(now, tx_start)
            if limit is not None and (best is None or profile.stack_level > best[0]):
                best = (profile.stack_level, limit)
        return best[1] if best is not None else None

    def limit_a(self, now: float, connector: int, tx: Transaction | None) -> float | None:
        """The composite limit on ``connector`` at ``now`` (A per phase; None: unlimited)."""
        installed = self.installed
        running = tx is not None and tx.connector == connector and tx.started <= now
        tx_start = tx.started if running and tx is not None else None
        limit = None
        if running:
            assert tx is not None
            limit = self._winner((p for p in installed if p.purpose == TX
                                  and p.connector == connector
                                  and p.transaction_id in (None, tx.transaction_id)),
                                 now, tx_start)
        if limit is None:
            limit = self._winner((p for p in installed if p.purpose == TX_DEFAULT
                                  and p.connector == connector), now, tx_start)
        if limit is None:
            limit = self._winner((p for p in installed if p.purpose == TX_DEFAULT
                                  and p.connector == 0), now, tx_start)
        cap = self._winner((p for p in installed if p.purpose == STATION_MAX), now, tx_start)
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit

    def edges(self, after: float, until: float, tx: Transaction | None) -> list[float]:
        """Times in (after, until] at which the composite may change (the transaction's
        start aside)."""
        tx_start = tx.started if tx is not None and tx.started <= after else None
        return sorted({t for p in self.installed for t in p.edges(after, until, tx_start)})


def composite_periods(stack: ProfileStack, start: float, duration: float, connector: int,
                      tx: Transaction | None, unlimited_a: float
                      ) -> list[tuple[int, float]]:
    """GetCompositeSchedule's periods: (whole seconds after ``start``, A per phase) for
    ``duration`` seconds; ``unlimited_a`` where no profile limits the connector."""
    times = [start, *(t for t in stack.edges(start, start + duration, tx) if t < start + duration)]
    if tx is not None and start < tx.started < start + duration:
        times.append(tx.started)
    periods: list[tuple[int, float]] = []
    for t in sorted(times):
        limit = stack.limit_a(t, connector, tx)
        value = round(unlimited_a if limit is None else limit, 1)
        offset = max(round(t - start), 0)
        if periods and periods[-1][0] == offset:
            periods[-1] = (offset, value)
        elif not periods or periods[-1][1] != value:
            periods.append((offset, value))
    return periods


def limit_timeline(operations: Sequence[Mapping[str, Any]], begin: float, end: float,
                   connector: int, tx: Transaction | None
                   ) -> list[tuple[float, float | None]]:
    """The connector's composite limit from ``begin`` to ``end``, as change points.

    ``operations``: what the station was told, in order: ``{"t", "op": "set",
    "connector", "profile"}`` or ``{"t", "op": "clear", "request"}`` (the load generator's
    record). Changes come from the operations, from schedule edges and from the start of
    the transaction.
    """
    stack = ProfileStack()
    points: list[tuple[float, float | None]] = []

    def add(t: float) -> None:
        value = stack.limit_a(t, connector, tx)
        if not points or points[-1][1] != value:
            points.append((t, value))

    ops = sorted(operations, key=lambda op: float(op["t"]))
    i = 0
    while i < len(ops) and float(ops[i]["t"]) <= begin:
        _apply(stack, ops[i])
        i += 1
    t = begin
    add(t)
    while t < end:
        next_op = float(ops[i]["t"]) if i < len(ops) else end
        next_tx = tx.started if tx is not None and tx.started > t else end
        horizon = min(next_op, next_tx, end)
        for edge in stack.edges(t, horizon, tx):
            if edge < horizon:
                add(edge)
        t = horizon
        while i < len(ops) and float(ops[i]["t"]) <= t:
            _apply(stack, ops[i])
            i += 1
        if t < end:
            add(t)
    return points


def _apply(stack: ProfileStack, op: Mapping[str, Any]) -> None:
    if op["op"] == "set":
        stack.install(parse_profile(int(op["connector"]), op["profile"], float(op["t"])))
    else:
        stack.clear(op["request"])


def value_at(points: Sequence[tuple[float, float | None]], t: float) -> float | None:
    """The value of a change-point series at ``t`` (None before its first point)."""
    value = None
    for at, v in points:
        if at > t:
            break
        value = v
    return value
