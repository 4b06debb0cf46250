"""Everything that must survive a restart, in one SQLite file (through sqlite-utils).

Registration, events with their opt state, stations, transactions, every
profile sent and its result, what each station acknowledged, meter samples
and the site load. Writes are synchronous where the caller acknowledges
something (an event before oadrCreatedEvent, a transaction before
StartTransaction.conf, what a station accepted).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``, so a
commit survives the process being killed but not always a power cut; an
fsync per commit costs ~0.75 ms here, and a wave of profiles to thousands of
stations makes thousands of commits. Registration and DR events, which
arrive rarely and which the VTN will not send again, are written with a full
fsync. The profile log and meter samples are written in batches by
:meth:`Store.flush` and :meth:`Store.add_samples`.

Retention: the tables that only grow (the profile log, meter samples and grid readings,
the site load, plans, closed transactions) lose their rows older than the retention in
bounded batches (:meth:`Store.prune`, driven by :mod:`bridge.runtime.retention`), except
those something still reads: each station's newest profile of each answer (the schedule in
force when the kept log begins, for reports), the newest plan, open transactions. The
event records, operator opts and holds, and the OpenADR 3 reports outbox are written per
DR event or operator action, are read whole (reports, the VEN's known events, holds still
in force) and are not pruned. The counts of profiles sent by answer are cumulative since
the file was made: what a batch deletes is added to ``profiles_pruned`` in its commit.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from bridge.plan_json import (
    EncodedPlan,
    ScheduleText,
    decode_schedules,
    encode_plan,
    encode_plan_state,
    with_baselines,
)
from bridge.plan_json import iso as _iso
from bridge.retention import PROBE_SIDE, Pass, median_around, profiles_to_delete, young_from
from bridge.sqlite_db import sqlite_utils
from policies.events import DrEvent
from policies.fleet import PlanState, StationState, Step, Why
from policies.voltwatt import Floor, VoltHold
from ven.interface import Registration

SCHEMA_VERSION = 1
# indexes of files written before, which nothing reads (see Store._drop_unread_indexes)
UNREAD_INDEXES = ("idx_samples_station_id_at", "idx_grid_samples_station_id_at")

log = logging.getLogger(__name__)
STATION_COLUMNS = frozenset({"vendor", "model", "firmware", "capabilities", "last_boot",
                             "last_seen"})


def steps_from_json(text: str) -> tuple[Step, ...]:
    return steps_from_items(json.loads(text))


def steps_from_items(items: Iterable[list[Any]]) -> tuple[Step, ...]:
    return tuple(
        Step(datetime.fromisoformat(a), float(w), r,
             tuple(Why(kind, why) for kind, why in rest[0]) if rest else ())
        for a, w, r, *rest in items
    )


def _opt_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def plan_state_to_json(state: PlanState, baselines: Mapping[str, float]) -> str:
    return with_baselines(encode_plan_state(state), baselines)


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _hold_from_json(share: float, since: str, reason: str, step: float | None = None,
                    eased_from: float | None = None) -> VoltHold:
    return VoltHold(float(share), datetime.fromisoformat(since), str(reason),
                    _opt_float(step), _opt_float(eased_from))


def _floor_from_json(data: list[Any] | None) -> Floor | None:
    if data is None:
        return None
    share, since, reason, step, fell_from = data
    return Floor(float(share), datetime.fromisoformat(since), str(reason), _opt_float(step),
                 float(fell_from))


def _station_from_json(limit_w: float, on: bool, since: str, restore: str | None,
                       switched: bool, paused: float, resume_until: str | None = None,
                       hard_pause: bool = False, then: list[Any] | None = None,
                       ) -> StationState:
    # the last three: absent in states saved before they existed
    return StationState(float(limit_w), bool(on), datetime.fromisoformat(since),
                        _opt_time(restore), bool(switched), float(paused),
                        _opt_time(resume_until), bool(hard_pause),
                        None if then is None else _station_from_json(*then))


def plan_state_from_json(text: str) -> tuple[PlanState, dict[str, float]]:
    data = json.loads(text)
    ramp = data["ramp_from"]
    state = PlanState(
        at=datetime.fromisoformat(data["at"]),
        site_limit_w=float(data["site_limit_w"]),
        stations={sid: _station_from_json(*fields) for sid, fields in data["stations"].items()},
        ramp_from=None if ramp is None else (datetime.fromisoformat(ramp[0]), float(ramp[1])),
        rises=tuple(datetime.fromisoformat(at) for at in data["rises"]),
        restore_began=_opt_time(data["restore_began"]),
        voltage={key: _hold_from_json(*fields) for key, fields in data.get("voltage", {}).items()},
        absorb=_floor_from_json(data.get("absorb")),
    )
    return state, {k: float(v) for k, v in data["baselines"].items()}


@dataclass(frozen=True)
class StoredEvent:
    event: DrEvent
    opt: str
    opt_reason: str


@dataclass(frozen=True)
class OperatorOpt:
    """A site operator's opt: out of one event, or unavailable for a window (event_id None)."""

    opt_id: str
    event_id: str | None
    reason: str
    window_start: datetime | None
    window_end: datetime | None
    requested_at: datetime
    applied_at: datetime | None  # when the bridge acted on it (replanned)
    sent_at: datetime | None  # when the VTN acknowledged it
    cancelled_at: datetime | None
    cancel_sent_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OperatorOpt:
        def when(key: str) -> datetime | None:
            return datetime.fromisoformat(row[key]) if row[key] else None

        requested = when("requested_at")
        assert requested is not None
        return cls(row["opt_id"], row["event_id"], row["reason"], when("window_start"),
                   when("window_end"), requested, when("applied_at"), when("sent_at"),
                   when("cancelled_at"), when("cancel_sent_at"))


class MeterSample(NamedTuple):
    """One connector's reading as stored. (A named tuple: one is made for each meter value
    a station sends, in a third of a frozen dataclass's time.)"""

    station_id: str
    connector_id: int
    at: datetime
    power_w: float | None
    energy_wh: float | None
    # grid measurands where the station reports them: per line L1..L3, and the frequency
    voltages_v: tuple[float | None, ...] = ()
    currents_a: tuple[float | None, ...] = ()
    frequency_hz: float | None = None


# Which of a grid row's measurands it has: its three voltages, its three currents, its
# frequency (each group whole). None: any mix, every column bound (None where missing).
_GridShape = tuple[bool, bool, bool]
_GRID_GROUPS = (("v_l1", "v_l2", "v_l3"), ("i_l1", "i_l2", "i_l3"), ("frequency_hz",))


@cache
def _grid_insert(shape: _GridShape | None) -> str:
    """The INSERT of a grid row of this shape, naming only the columns it has values for
    (the others are NULL)."""
    present = (True, True, True) if shape is None else shape
    columns = ["station_id", "connector_id", "at",
               *(name for group, there in zip(_GRID_GROUPS, present, strict=True) if there
                 for name in group)]
    return (f"INSERT INTO grid_samples ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})")


def _three(values: tuple[float | None, ...]) -> tuple[float | None, ...]:
    """Per line L1..L3, missing lines None (a reading's tuples have three already)."""
    return values if len(values) == 3 else (*values, None, None, None)[:3]


@dataclass(frozen=True)
class _Aged:
    """How a growing table is pruned: ``at`` is the column whose age places a row before or
    after the cut-off (its order follows the rowid's, near enough); ``deletable`` the further
    condition a row older than the cut-off (``:cutoff``) must meet to go; ``batch`` how many
    rows a batch walks: a few milliseconds' work (measured with bench.retention_cost; a plan
    holds every station's schedule, ~0.65 MB at 1,000 stations, and goes alone)."""

    at: str
    deletable: str = "1"
    batch: int = 2000


_AGED_TABLES: Mapping[str, _Aged] = {
    # which profiles stay is decided by retention.profiles_to_delete, not in SQL
    "profiles": _Aged("sent_at", batch=300),
    "samples": _Aged("at"),
    "grid_samples": _Aged("at"),
    "site_load": _Aged("at"),
    # the newest plan stays whatever its age: the last one made
    "plans": _Aged("made_at", "rowid < (SELECT max(rowid) FROM plans)", batch=1),
    # a session goes once closed before the cut-off; the newest row stays so that the next
    # id is never one a station was given before
    "transactions": _Aged("started_at", "stopped_at IS NOT NULL AND stopped_at < :cutoff"
                          " AND rowid < (SELECT max(rowid) FROM transactions)"),
}


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(path)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._profile_log: list[dict[str, Any]] = []
        # profiles sent, by answer: counted once from the table, then kept up as they are
        # recorded (the table only grows; /metrics asks every scrape)
        self._profile_totals: Counter[str] | None = None
        self._station_updates: dict[str, dict[str, Any]] = {}
        self._installed_updates: dict[str, str] = {}
        # a wave stores one schedule for thousands of stations, three times each
        self._schedule_json = ScheduleText()
        self._create()

    @contextmanager
    def _durable(self) -> Iterator[None]:
        """Commits inside are fsynced before they return."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def flush(self) -> None:
        """Write what was queued (the profile log, station details, installed profile ids)
        in one transaction."""
        if not self._profile_log and not self._station_updates and not self._installed_updates:
            return
        rows, self._profile_log = self._profile_log, []
        updates, self._station_updates = self._station_updates, {}
        installed, self._installed_updates = self._installed_updates, {}
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO installed_profiles (station_id, ids) VALUES (?, ?) ON CONFLICT"
                "(station_id) DO UPDATE SET ids = excluded.ids", list(installed.items()))
            self.db.conn.executemany(
                "INSERT INTO profiles (station_id, sent_at, unit, payload, schedule, status,"
                " detail) VALUES (:station_id, :sent_at, :unit, :payload, :schedule, :status,"
                " :detail)", rows,
            )
            for station_id, fields in updates.items():
                self._upsert_station(station_id, fields)

    def _upsert_station(self, station_id: str, fields: Mapping[str, Any]) -> None:
        """One station's details, within the caller's transaction."""
        columns = ["station_id", *fields]
        changes = ", ".join(f"{c} = excluded.{c}" for c in fields)
        self.db.conn.execute(
            f"INSERT INTO stations ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT(station_id) DO UPDATE SET {changes}",
            [station_id, *fields.values()],
        )

    def close(self) -> None:
        self.flush()
        self.db.close()

    def _create(self) -> None:
        db = self.db
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        db["registration"].create(
            {"vtn_url": str, "ven_id": str, "registration_id": str, "updated_at": str},
            pk="vtn_url", if_not_exists=True,
        )
        db["events"].create(
            {"event_id": str, "modification_number": int, "status": str, "opt": str,
             "opt_reason": str, "received_at": str, "start": str, "end": str, "body": str},
            pk="event_id", if_not_exists=True,
        )
        db["stations"].create(
            {"station_id": str, "vendor": str, "model": str, "firmware": str,
             "capabilities": str, "last_boot": str, "last_seen": str},
            pk="station_id", if_not_exists=True,
        )
        # station_tx: the station's own id of the transaction (OCPP 2.0.1 names them itself)
        db["transactions"].create(
            {"id": int, "station_id": str, "connector_id": int, "id_tag": str,
             "meter_start": int, "started_at": str, "stopped_at": str, "meter_stop": int,
             "station_tx": str},
            pk="id", if_not_exists=True,
        )
        if "station_tx" not in db["transactions"].columns_dict:  # a database of an older run
            db["transactions"].add_column("station_tx", str)
        db["profiles"].create(
            {"id": int, "station_id": str, "sent_at": str, "unit": str, "payload": str,
             "schedule": str, "status": str, "detail": str},
            pk="id", if_not_exists=True,
        )
        db["applied"].create(
            {"station_id": str, "schedule": str, "acked_at": str},
            pk="station_id", if_not_exists=True,
        )
        # a schedule sent to a station whose answer was not stored yet (the bridge may have
        # died meanwhile): the station may hold it rather than the one in `applied`
        db["sent"].create({"station_id": str, "schedule": str, "sent_at": str},
                          pk="station_id", if_not_exists=True)
        # ids of our profiles each station accepted and may still hold (cleared when unused)
        db["installed_profiles"].create({"station_id": str, "ids": str}, pk="station_id",
                                        if_not_exists=True)
        # drbridge's own voltage monitors on each station (the ids it gave them, JSON) and
        # the VoltWatt curve it pushed (JSON; null: none): a restarted bridge follows and
        # clears these, and nothing else
        db["voltage_controls"].create({"station_id": str, "monitors": str, "der_curve": str},
                                      pk="station_id", if_not_exists=True)
        db["compliance"].create(
            {"station_id": str, "status": str, "detail": str, "at": str},
            pk="station_id", if_not_exists=True,
        )
        # stations: each station's schedule as an index into schedules, the plan's distinct
        # schedules (see bridge.plan_json.encode_plan); a plan stored before schedules was
        # a column has each station's steps in stations itself
        db["plans"].create({"id": int, "made_at": str, "site": str, "stations": str,
                            "schedules": str}, pk="id", if_not_exists=True)
        if "schedules" not in db["plans"].columns_dict:  # a database of an older run
            db["plans"].add_column("schedules", str)
        # the allocation state the next plan starts from (turns, guard times, restores)
        db["plan_state"].create({"id": int, "state": str}, pk="id", if_not_exists=True)
        db["samples"].create(
            {"station_id": str, "connector_id": int, "at": str, "power_w": float,
             "energy_wh": float}, if_not_exists=True,
        )
        # voltage, current per line and frequency, beside the samples row of the same reading
        db["grid_samples"].create(
            {"station_id": str, "connector_id": int, "at": str, "v_l1": float, "v_l2": float,
             "v_l3": float, "i_l1": float, "i_l2": float, "i_l3": float, "frequency_hz": float},
            if_not_exists=True,
        )
        db["site_load"].create({"at": str, "load_w": float, "limit_w": float},
                               if_not_exists=True)
        db["operator_opts"].create(
            {"opt_id": str, "event_id": str, "reason": str, "window_start": str,
             "window_end": str, "requested_at": str, "applied_at": str, "sent_at": str,
             "cancelled_at": str, "cancel_sent_at": str},
            pk="opt_id", if_not_exists=True,
        )
        db["holds"].create({"station_id": str, "mode": str, "reason": str, "set_at": str},
                           pk="station_id", if_not_exists=True)
        # every change of a hold (mode null: lifted), for reports on past events
        db["hold_log"].create({"station_id": str, "mode": str, "reason": str, "at": str},
                              if_not_exists=True)
        db["random_offsets"].create({"event_id": str, "offset_s": float}, pk="event_id",
                                    if_not_exists=True)
        # profiles sent and since pruned, by answer: the counts stay cumulative
        db["profiles_pruned"].create({"status": str, "count": int}, pk="status",
                                     if_not_exists=True)
        db["site_load"].create_index(["at"], if_not_exists=True)
        self._drop_unread_indexes()

    def _drop_unread_indexes(self) -> None:
        """Meter samples and grid readings were indexed by station and time, and nothing
        reads them by station (reports read a time window, which that index cannot serve:
        EXPLAIN QUERY PLAN scans the table either way). The readings of a round, one per
        station, each land on their own page of such an index: at 1,000 stations it took
        nearly half the CPU of writing a round, and deleting readings by age took 17 times
        as long with it, most of it waiting for the WAL checkpoints of the pages it
        dirtied. Dropped once, in a file written before; this takes about a second per two
        million readings."""
        for index in UNREAD_INDEXES:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                               [index]).fetchone() is None:
                continue
            log.info("dropping the index %s, which nothing reads (once; about a second per "
                     "two million rows)", index)
            with self.db.conn:
                self.db.conn.execute(f"DROP INDEX {index}")

    # registration -----------------------------------------------------------------------
    def registration(self, vtn_url: str) -> Registration | None:
        rows = list(self.db["registration"].rows_where("vtn_url = ?", [vtn_url]))
        if not rows:
            return None
        return Registration(rows[0]["ven_id"], rows[0]["registration_id"])

    def save_registration(self, vtn_url: str, registration: Registration, now: datetime) -> None:
        with self._durable():
            self.db["registration"].upsert(
                {"vtn_url": vtn_url, "ven_id": registration.ven_id,
                 "registration_id": registration.registration_id, "updated_at": _iso(now)},
                pk="vtn_url",
            )

    def clear_registration(self, vtn_url: str) -> None:
        with self._durable():
            self._write("DELETE FROM registration WHERE vtn_url = ?", [vtn_url])

    # events -----------------------------------------------------------------------------
    def random_offset(self, event_id: str) -> timedelta | None:
        row = self.db.execute("SELECT offset_s FROM random_offsets WHERE event_id = ?",
                              [event_id]).fetchone()
        return timedelta(seconds=row[0]) if row else None

    def save_random_offset(self, event_id: str, offset: timedelta) -> None:
        with self._durable():
            self._write("INSERT OR REPLACE INTO random_offsets (event_id, offset_s) VALUES (?, ?)",
                        [event_id, offset.total_seconds()])

    def save_event(self, event: DrEvent, opt: str, opt_reason: str, now: datetime) -> None:
        end = event.end
        with self._durable():
            self.db["events"].upsert(
                {"event_id": event.event_id, "modification_number": event.modification_number,
                 "status": event.status.value, "opt": opt, "opt_reason": opt_reason,
                 "received_at": _iso(now), "start": _iso(event.start),
                 "end": _iso(end) if end else None, "body": event.model_dump_json()},
                pk="event_id",
            )

    def events(self) -> list[StoredEvent]:
        return [
            StoredEvent(DrEvent.model_validate_json(row["body"]), row["opt"], row["opt_reason"])
            for row in self.db["events"].rows_where(order_by="start")
        ]

    # operator opts ----------------------------------------------------------------------
    # Written by whoever takes the operator's decision (the running bridge, or the CLI in
    # another process); the running bridge applies what is not applied yet and sends what the
    # VTN has not acknowledged yet.
    def request_opt_out(self, event_id: str, reason: str, now: datetime) -> OperatorOpt:
        """Record the operator's opt-out of an event; asking twice keeps the first."""
        existing = self.operator_opt_out(event_id)
        if existing is not None:
            return existing
        return self._add_opt(event_id, reason, None, None, now)

    def request_unavailability(self, start: datetime, end: datetime, reason: str,
                               now: datetime) -> OperatorOpt:
        return self._add_opt(None, reason, start, end, now)

    def _add_opt(self, event_id: str | None, reason: str, start: datetime | None,
                 end: datetime | None, now: datetime) -> OperatorOpt:
        opt_id = f"drbridge-opt-{uuid.uuid4().hex[:16]}"
        with self._durable():
            self._write(
                "INSERT INTO operator_opts (opt_id, event_id, reason, window_start, window_end,"
                " requested_at) VALUES (?, ?, ?, ?, ?, ?)",
                [opt_id, event_id, reason, _iso(start) if start else None,
                 _iso(end) if end else None, _iso(now)],
            )
        opt = self.operator_opt(opt_id)
        assert opt is not None
        return opt

    def request_opt_cancel(self, opt_id: str, now: datetime) -> bool:
        """Withdraw an opt; False when there is no such opt or it was withdrawn already."""
        with self._durable():
            cursor = self._write(
                "UPDATE operator_opts SET cancelled_at = ? WHERE opt_id = ? AND cancelled_at IS"
                " NULL", [_iso(now), opt_id])
        return bool(cursor.rowcount)

    def operator_opt(self, opt_id: str) -> OperatorOpt | None:
        rows = list(self.db["operator_opts"].rows_where("opt_id = ?", [opt_id]))
        return OperatorOpt.from_row(rows[0]) if rows else None

    def operator_opt_out(self, event_id: str) -> OperatorOpt | None:
        """The operator's standing opt-out of this event, if any."""
        rows = list(self.db["operator_opts"].rows_where(
            "event_id = ? AND cancelled_at IS NULL", [event_id], order_by="requested_at"))
        return OperatorOpt.from_row(rows[0]) if rows else None

    def operator_opts(self, where: str = "1", params: Iterable[Any] = ()) -> list[OperatorOpt]:
        return [OperatorOpt.from_row(r) for r in
                self.db["operator_opts"].rows_where(where, list(params), order_by="requested_at")]

    def mark_opt(self, opt_id: str, column: str, now: datetime) -> None:
        if column not in ("applied_at", "sent_at", "cancel_sent_at"):
            raise ValueError(f"not an opt progress column: {column}")
        with self._durable():
            self._write(f"UPDATE operator_opts SET {column} = ? WHERE opt_id = ?",
                        [_iso(now), opt_id])

    # stations and transactions ----------------------------------------------------------
    def _write(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> Any:
        """One statement in its own transaction. The hot writes use plain SQL: sqlite-utils
        reads the table's schema again on every upsert, which cost a fifth of the bridge's
        CPU in a boot storm."""
        with self.db.conn:
            return self.db.conn.execute(sql, params)

    def save_station(self, station_id: str, fields: Mapping[str, Any]) -> None:
        """Queue a station's details (boot notification, capabilities) for the next flush.

        Nothing is acknowledged on the strength of them, and a commit per boot cost a tenth
        of the bridge's CPU in a connect storm; :meth:`flush` writes them within a second.
        """
        unknown = set(fields) - STATION_COLUMNS
        if unknown:
            raise ValueError(f"no such station columns: {sorted(unknown)}")
        self._station_updates.setdefault(station_id, {}).update(fields)

    def booted(self, station_id: str) -> bool:
        """Whether a BootNotification of the station is on record (queued or written)."""
        if "last_boot" in self._station_updates.get(station_id, {}):
            return True
        row = self.db.conn.execute(
            "SELECT 1 FROM stations WHERE station_id = ? AND last_boot IS NOT NULL",
            [station_id]).fetchone()
        return row is not None

    def station_capabilities(self) -> dict[str, str]:
        """Each station's stored capabilities (as Capabilities.to_json wrote them)."""
        rows = self.db.conn.execute(
            "SELECT station_id, capabilities FROM stations WHERE capabilities IS NOT NULL")
        return {station_id: text for station_id, text in rows}

    def save_compliance(self, station_id: str, status: str, detail: str, at: datetime) -> None:
        """Whether a station follows its profiles ("compliant" or "non-compliant") and why."""
        self._write(
            "INSERT INTO compliance (station_id, status, detail, at) VALUES (?, ?, ?, ?) ON"
            " CONFLICT(station_id) DO UPDATE SET status = excluded.status,"
            " detail = excluded.detail, at = excluded.at",
            [station_id, status, detail, _iso(at)],
        )

    def start_transaction(self, station_id: str, connector_id: int, id_tag: str,
                          meter_start: int, at: datetime, station_tx: str | None = None) -> int:
        # The station's queued details (its BootNotification) are committed with its first
        # transaction: a session on record then always has its station's boot on record, so
        # a restart after a crash never takes a real station for one that never booted.
        queued = self._station_updates.get(station_id)
        with self.db.conn:
            if queued:
                self._upsert_station(station_id, queued)
            cursor = self.db.conn.execute(
                "INSERT INTO transactions (station_id, connector_id, id_tag, meter_start,"
                " started_at, station_tx) VALUES (?, ?, ?, ?, ?, ?)",
                [station_id, connector_id, id_tag, meter_start, _iso(at), station_tx],
            )
        self._station_updates.pop(station_id, None)
        return int(cursor.lastrowid)

    def set_station_tx(self, transaction_id: int, station_tx: str) -> None:
        """The station's own id of a transaction recorded without one (before it was kept)."""
        self._write("UPDATE transactions SET station_tx = ? WHERE id = ?",
                    [station_tx, transaction_id])

    def stop_transaction(self, transaction_id: int, meter_stop: int | None,
                         at: datetime) -> None:
        """Close a transaction; without a meter reading it ends where it started."""
        self._write("UPDATE transactions SET meter_stop = COALESCE(?, meter_start),"
                    " stopped_at = ? WHERE id = ?", [meter_stop, _iso(at), transaction_id])

    def open_transactions(self) -> list[dict[str, Any]]:
        return list(self.db["transactions"].rows_where("stopped_at is null", order_by="id"))

    # profiles ---------------------------------------------------------------------------
    def record_profile(self, station_id: str, at: datetime, unit: str, payload_json: str,
                       steps: tuple[Step, ...], status: str, detail: str = "") -> None:
        """A profile sent (its OCPP 1.6 payload as JSON text) and the station's answer."""
        self._profile_log.append(
            {"station_id": station_id, "sent_at": _iso(at), "unit": unit,
             "payload": payload_json, "schedule": self._schedule_json(steps),
             "status": status, "detail": detail}
        )
        if self._profile_totals is not None:
            self._profile_totals[status] += 1

    def save_sent(self, station_id: str, steps: Iterable[Step], at: datetime) -> None:
        """A schedule about to go to a station, written before it goes: killed before its
        answer is stored, a restarted bridge knows the station may hold it."""
        self.save_sent_many([(station_id, tuple(steps), at)])

    def save_sent_many(self, sent: Iterable[tuple[str, Iterable[Step], datetime]]) -> None:
        """Several schedules about to go (see :meth:`save_sent`), in one commit: a plan's
        wave sends to thousands of stations at once, and a commit each held the event loop
        for about 0.1 ms apiece."""
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO sent (station_id, schedule, sent_at) VALUES (?, ?, ?) ON CONFLICT"
                "(station_id) DO UPDATE SET schedule = excluded.schedule,"
                " sent_at = excluded.sent_at",
                [(station_id, self._schedule_json(steps), _iso(at))
                 for station_id, steps, at in sent],
            )

    def save_applied(self, station_id: str, steps: Iterable[Step], at: datetime) -> None:
        """The schedule a station accepted; what was sent before it is answered."""
        self.save_applied_many([(station_id, steps, at)])

    def save_applied_many(self, applied: Iterable[tuple[str, Iterable[Step], datetime]]
                          ) -> None:
        """Several stations' accepted schedules (see :meth:`save_applied`), in one commit:
        the answers to a plan's wave come back by the hundred at a time."""
        rows = [(station_id, self._schedule_json(steps), _iso(at))
                for station_id, steps, at in applied]
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO applied (station_id, schedule, acked_at) VALUES (?, ?, ?) ON CONFLICT"
                "(station_id) DO UPDATE SET schedule = excluded.schedule,"
                " acked_at = excluded.acked_at", rows)
            self.db.conn.executemany("DELETE FROM sent WHERE station_id = ?",
                                     [(row[0],) for row in rows])

    def applied(self) -> dict[str, tuple[Step, ...]]:
        return {row["station_id"]: steps_from_json(row["schedule"])
                for row in self.db["applied"].rows}

    def sent(self) -> dict[str, tuple[Step, ...]]:
        """Schedules sent whose answer was never stored (see :meth:`save_sent`)."""
        return {row["station_id"]: steps_from_json(row["schedule"])
                for row in self.db["sent"].rows}

    def save_installed(self, station_id: str, profile_ids: Iterable[int]) -> None:
        """Queue the ids of our profiles a station holds for the next flush (within a
        second): they only let a restarted bridge clear what it no longer sends, and a
        commit per station would cost a connect storm dearly."""
        self._installed_updates[station_id] = json.dumps(sorted(profile_ids))

    def installed(self) -> dict[str, set[int]]:
        return {row["station_id"]: {int(i) for i in json.loads(row["ids"])}
                for row in self.db["installed_profiles"].rows}

    # voltage boundaries in the stations -------------------------------------------------
    def save_voltage_controls(self, station_id: str, monitors: str, der_curve: str | None
                              ) -> None:
        """What of ours a station holds (written before it counts: a restarted bridge must
        find every id it may have to clear)."""
        self._write(
            "INSERT INTO voltage_controls (station_id, monitors, der_curve) VALUES (?, ?, ?)"
            " ON CONFLICT(station_id) DO UPDATE SET monitors = excluded.monitors,"
            " der_curve = excluded.der_curve", [station_id, monitors, der_curve])

    def voltage_controls(self) -> dict[str, tuple[str, str | None]]:
        """Per station: (monitors, der_curve) as :meth:`save_voltage_controls` wrote them."""
        rows = self.db.conn.execute(
            "SELECT station_id, monitors, der_curve FROM voltage_controls")
        return {station_id: (monitors, der_curve) for station_id, monitors, der_curve in rows}

    # plans and telemetry ----------------------------------------------------------------
    def save_plan(self, made_at: datetime, site: Iterable[Step],
                  stations: Mapping[str, Iterable[Step]]) -> None:
        self.save_encoded_plan(encode_plan(made_at, site, stations))

    def save_encoded_plan(self, plan: EncodedPlan,
                          baselines: Mapping[str, float] | None = None) -> None:
        """The plan, and with ``baselines`` its state (when it has one), in one commit."""
        with self.db.conn:
            self.db.conn.execute(
                "INSERT INTO plans (made_at, site, stations, schedules) VALUES (?, ?, ?, ?)",
                [plan.made_at, plan.site, plan.stations, plan.schedules])
            if baselines is not None and plan.state is not None:
                self.db.conn.execute("INSERT OR REPLACE INTO plan_state (id, state) VALUES (1, ?)",
                                     [with_baselines(plan.state, baselines)])

    def last_plan(self) -> tuple[datetime, tuple[Step, ...], dict[str, tuple[Step, ...]]] | None:
        """The newest stored plan (made at, site steps, each station's steps), reasons included."""
        rows = list(self.db.query("SELECT * FROM plans ORDER BY id DESC LIMIT 1"))
        if not rows:
            return None
        row = rows[0]
        return (datetime.fromisoformat(row["made_at"]), steps_from_json(row["site"]),
                {k: steps_from_items(v)
                 for k, v in decode_schedules(row["stations"], row["schedules"]).items()})

    def save_plan_state(self, state: PlanState, baselines: Mapping[str, float]) -> None:
        self._write("INSERT OR REPLACE INTO plan_state (id, state) VALUES (1, ?)",
                    [plan_state_to_json(state, baselines)])

    def plan_state(self) -> tuple[PlanState | None, dict[str, float]]:
        """The last saved allocation state and event baselines (None, {} if none)."""
        rows = list(self.db.query("SELECT state FROM plan_state WHERE id = 1"))
        if not rows:
            return None, {}
        return plan_state_from_json(rows[0]["state"])

    def add_samples(self, samples: Iterable[MeterSample]) -> None:
        # at 10,000 stations this runs for some thousand samples a second: each time is
        # formatted once for both tables, and once for all the samples taken at that same
        # moment (stations sampling on the clock's minute send the same time stamp). A grid
        # row names only the columns it has values for, where its lines are all there or
        # all missing (see _GridShape): binding None costs Python's sqlite3 an adapter
        # lookup each, more than the rest of the row. (So a flush's grid rows go in by
        # shape: their rowids follow arrival within a shape, and the flush's span overall.)
        rows = []
        grid_rows: dict[_GridShape | None, list[tuple[Any, ...]]] = {}
        formatted: dict[datetime, str] = {}  # UTC times only: equal ones read the same
        for s in samples:
            at = formatted.get(s.at)
            if at is None:
                at = _iso(s.at)
                if s.at.tzinfo is UTC:
                    formatted[s.at] = at
            rows.append((s.station_id, s.connector_id, at, s.power_w, s.energy_wh))
            volts, amps, frequency = _three(s.voltages_v), _three(s.currents_a), s.frequency_hz
            volts_missing, amps_missing = volts.count(None), amps.count(None)
            if volts_missing + amps_missing == 6 and frequency is None:
                continue  # nothing of the grid in it
            shape: _GridShape | None = None
            if volts_missing in (0, 3) and amps_missing in (0, 3):
                shape = (volts_missing == 0, amps_missing == 0, frequency is not None)
                row = (s.station_id, s.connector_id, at) + (volts if shape[0] else ()) \
                    + (amps if shape[1] else ()) + ((frequency,) if shape[2] else ())
            else:
                row = (s.station_id, s.connector_id, at, *volts, *amps, frequency)
            same_shape = grid_rows.get(shape)
            if same_shape is None:
                same_shape = grid_rows[shape] = []
            same_shape.append(row)
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO samples (station_id, connector_id, at, power_w, energy_wh)"
                " VALUES (?, ?, ?, ?, ?)", rows)
            for shape, same_shape in grid_rows.items():
                self.db.conn.executemany(_grid_insert(shape), same_shape)

    def add_site_load(self, at: datetime, load_w: float, limit_w: float) -> None:
        self.db["site_load"].insert({"at": _iso(at), "load_w": load_w, "limit_w": limit_w})

    def site_load(self, since: datetime) -> list[tuple[datetime, float, float]]:
        return [
            (datetime.fromisoformat(r["at"]), r["load_w"], r["limit_w"])
            for r in self.db["site_load"].rows_where("at >= ?", [_iso(since)], order_by="at")
        ]

    def site_load_between(self, start: datetime, end: datetime
                          ) -> list[tuple[datetime, float, float]]:
        return [
            (datetime.fromisoformat(r["at"]), r["load_w"], r["limit_w"])
            for r in self.db["site_load"].rows_where("at >= ? and at < ?",
                                                     [_iso(start), _iso(end)], order_by="at")
        ]

    def samples_between(self, start: datetime, end: datetime) -> list[MeterSample]:
        return [
            MeterSample(r["station_id"], r["connector_id"], datetime.fromisoformat(r["at"]),
                        r["power_w"], r["energy_wh"])
            for r in self.db["samples"].rows_where("at >= ? and at < ?", [_iso(start), _iso(end)],
                                                   order_by="at")
        ]

    def grid_samples_between(self, start: datetime, end: datetime) -> list[MeterSample]:
        """The voltage, current and frequency readings in ``[start, end)``."""
        return [
            MeterSample(r["station_id"], r["connector_id"], datetime.fromisoformat(r["at"]),
                        None, None, (r["v_l1"], r["v_l2"], r["v_l3"]),
                        (r["i_l1"], r["i_l2"], r["i_l3"]), r["frequency_hz"])
            for r in self.db["grid_samples"].rows_where(
                "at >= ? and at < ?", [_iso(start), _iso(end)], order_by="at")
        ]

    # profiles sent, for the operator --------------------------------------------------------
    def profile_counts(self) -> dict[str, int]:
        """How many profiles were sent, by the station's answer (Accepted, Rejected, Failed),
        since the file was made: those retention deleted are counted too, so the counts
        never go down (they are Prometheus counters)."""
        if self._profile_totals is None:
            totals: Counter[str] = Counter({row[0]: int(row[1]) for row in self.db.execute(
                "SELECT status, count(*) FROM profiles GROUP BY status").fetchall()})
            totals.update({row[0]: int(row[1]) for row in self.db.execute(
                "SELECT status, count FROM profiles_pruned").fetchall()})
            totals.update(row["status"] for row in self._profile_log)  # not yet written
            self._profile_totals = totals
        return dict(self._profile_totals)

    def accepted_schedules(self, station_id: str, until: datetime
                           ) -> list[tuple[datetime, tuple[Step, ...]]]:
        """Every schedule the station accepted before ``until``, oldest first."""
        return [
            (datetime.fromisoformat(r["sent_at"]), steps_from_json(r["schedule"]))
            for r in self.db["profiles"].rows_where(
                "station_id = ? and status = 'Accepted' and sent_at < ?",
                [station_id, _iso(until)], order_by="id")
        ]

    # operator holds on stations ----------------------------------------------------------
    def holds(self) -> dict[str, tuple[str, str, datetime]]:
        """station id -> (mode, reason, since)."""
        return {r["station_id"]: (r["mode"], r["reason"], datetime.fromisoformat(r["set_at"]))
                for r in self.db["holds"].rows}

    def set_hold(self, station_id: str, mode: str, reason: str, at: datetime) -> None:
        with self._durable():
            self._write(
                "INSERT INTO holds (station_id, mode, reason, set_at) VALUES (?, ?, ?, ?) ON"
                " CONFLICT(station_id) DO UPDATE SET mode = excluded.mode,"
                " reason = excluded.reason, set_at = excluded.set_at",
                [station_id, mode, reason, _iso(at)],
            )
            self._write("INSERT INTO hold_log (station_id, mode, reason, at) VALUES (?, ?, ?, ?)",
                        [station_id, mode, reason, _iso(at)])

    def clear_hold(self, station_id: str, at: datetime) -> None:
        with self._durable():
            self._write("DELETE FROM holds WHERE station_id = ?", [station_id])
            self._write("INSERT INTO hold_log (station_id, mode, reason, at) VALUES (?, ?, ?, ?)",
                        [station_id, None, "", _iso(at)])

    def hold_log(self, until: datetime) -> list[tuple[str, str | None, datetime]]:
        """(station id, mode or None when lifted, when), oldest first."""
        return [(r["station_id"], r["mode"], datetime.fromisoformat(r["at"]))
                for r in self.db["hold_log"].rows_where("at < ?", [_iso(until)],
                                                        order_by="at, rowid")]

    # retention ------------------------------------------------------------------------------
    def prune(self, run: Pass) -> None:
        """One batch of a pruning pass (updated): of the next rows back towards the table's
        start, delete in one commit those older than the cut-off that nothing reads any more
        (see :data:`_AGED_TABLES`). A batch reads and deletes at most a few hundred rows by
        rowid, so that the event loop is never held for long however large the table;
        nothing but the rowid is needed to find them (EXPLAIN QUERY PLAN: a search of the
        table's own b-tree), so the tables written on the hot paths carry no index for it."""
        aged = _AGED_TABLES[run.table]
        cutoff = _iso(run.cutoff)
        if run.before is None:
            run.before = self._young_from(run.table, aged.at, cutoff)
        with self.db.conn:
            if run.table == "profiles":
                rows = self.db.conn.execute(
                    "SELECT id, station_id, status, sent_at FROM profiles WHERE id < ?"
                    " ORDER BY id DESC LIMIT ?", [run.before, aged.batch]).fetchall()
                gone = profiles_to_delete(rows, cutoff, run.newer)
                self.db.conn.executemany("DELETE FROM profiles WHERE id = ?",
                                         [(row_id,) for row_id, _ in gone])
                # counted as sent for good: the counts /metrics reads never go down
                self.db.conn.executemany(
                    "INSERT INTO profiles_pruned (status, count) VALUES (?, ?) ON CONFLICT"
                    "(status) DO UPDATE SET count = count + excluded.count",
                    sorted(Counter(status for _, status in gone).items()))
                walked, lowest, deleted = len(rows), rows[-1][0] if rows else 0, len(gone)
            else:
                walked, lowest = self.db.conn.execute(
                    f"SELECT count(*), min(rowid) FROM (SELECT rowid FROM {run.table}"
                    " WHERE rowid < ? ORDER BY rowid DESC LIMIT ?)",
                    [run.before, aged.batch]).fetchone()
                deleted = self.db.conn.execute(
                    f"DELETE FROM {run.table} WHERE rowid >= :lowest AND rowid < :before"
                    f" AND {aged.at} < :cutoff AND {aged.deletable}",
                    {"lowest": lowest or 0, "before": run.before, "cutoff": cutoff}).rowcount \
                    if walked else 0
            run.deleted += deleted
            run.before = lowest or 0
            run.done = walked < aged.batch
            if run.done and run.deleted:  # what is older may be gone: reports say so
                self.db.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = max(value, excluded.value)",
                    [f"pruned_before:{run.table}", cutoff])

    def pruned_before(self, table: str) -> datetime | None:
        """The latest cut-off retention deleted rows of the table before (None: never)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?",
                              [f"pruned_before:{table}"]).fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    def _young_from(self, table: str, at: str, cutoff: str) -> int:
        """The rowid from which the table's rows are younger than the cut-off (a binary
        search: :func:`~bridge.retention.young_from`)."""
        # apart: SQLite finds a lone min() or max() at the b-tree's edge, both together by a scan
        first = self.db.conn.execute(f"SELECT min(rowid) FROM {table}").fetchone()[0]
        if first is None:
            return 0
        last = self.db.conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]

        def probe(rowid: int) -> tuple[int, str] | None:
            after = self.db.conn.execute(
                f"SELECT rowid, {at} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT ?",
                [rowid, PROBE_SIDE + 1]).fetchall()
            if not after:
                return None
            before = self.db.conn.execute(
                f"SELECT {at} FROM {table} WHERE rowid < ? ORDER BY rowid DESC LIMIT ?",
                [rowid, PROBE_SIDE]).fetchall()
            # a row without a time is never deleted: taken for a young one
            return after[0][0], median_around([str(r[0] or "~") for r in before],
                                              [str(r[1] or "~") for r in after])

        return young_from(first, last, probe, cutoff)
