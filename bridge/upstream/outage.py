"""The outage queue: transaction messages kept while the operator's CSMS is unreachable.

While a station's upstream link is down, drbridge answers the station itself (see
``bridge.upstream.offline``); every transaction-related message is first written here,
committed, and only then answered, so a message the station was told is delivered is never
lost. When the link returns, :func:`replay` sends each station's messages upstream in the
order they arrived, one at a time, and 1.6 transaction ids are mapped: a transaction
started offline got a *local* id from drbridge (from :data:`LOCAL_TX_BASE` up, far above
the ids CSMSs hand out); the replayed StartTransaction gets the operator's id, and every
later message about that transaction, queued or live, is rewritten to it (and the
operator's calls about it, RemoteStopTransaction or a TxProfile, back to the local id the
station knows).

Delivery state of each message: ``queued`` -> ``sent`` -> ``acked`` (or ``refused``: the
operator answered with a CALLERROR, again and again). ``sent`` is committed *before* the
frame goes out and ``acked`` (with the id mapping of a StartTransaction) in one
transaction with the answer. After a kill at any point:

- a message that was queued and not yet sent is sent once: the common case (a kill during
  the outage itself) replays every message exactly once;
- a message marked ``sent`` whose answer was not recorded may or may not have reached the
  operator. OCPP has no idempotency key, so drbridge cannot ask. It sends it again
  (at-least-once) and counts the attempt: stations themselves resend transaction messages
  until answered, so a CSMS is built to meet a repeat (2.0.1 TransactionEvent carries a
  seqNo for exactly that), while a missing StartTransaction would leave its
  StopTransaction without a transaction to bill. A repeat is possible only for the one
  message in flight on that station's link when the process died.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.sqlite_db import sqlite_utils

log = logging.getLogger(__name__)

QUEUE = "upstream_queue"
TRANSACTIONS = "upstream_transactions"
# Local 1.6 transaction ids: int32 like a station's, and far from a CSMS's own counter.
LOCAL_TX_BASE = 2_100_000_000
MAX_ATTEMPTS = 3  # CALLERRORs for one message before it is set aside as refused
QUEUED, SENT, ACKED, REFUSED = "queued", "sent", "acked", "refused"
# Messages that refer to a 1.6 transaction by its id.
_TX_ACTIONS_16 = frozenset({"StopTransaction", "MeterValues"})
# Synchronous commits for messages that open or close a session: they are few, and a power
# cut must not lose them (WAL with synchronous=NORMAL survives a killed process only).
_DURABLE = frozenset({"StartTransaction", "StopTransaction", "TransactionEvent"})


class UpstreamRefused(Exception):
    """The operator answered a replayed message with a CALLERROR."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


@dataclass(frozen=True)
class Queued:
    seq: int
    local_tx: int | None  # the transaction id to give the station (1.6 StartTransaction)


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    station_id: str
    version: str
    action: str
    payload: dict[str, Any]  # as upstream must see it: 1.6 transaction ids mapped
    local_tx: int | None
    attempts: int  # times sent before
    refusals: int  # CALLERRORs the operator answered it with
    unanswered: bool  # sent before without an answer recorded: the operator may have it
    # about a transaction started offline whose StartTransaction the operator refused for
    # good: there is no id of the operator's to send it with
    orphaned: bool = False


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class OutageQueue:
    """The queue and the 1.6 transaction id map, in two tables of the bridge's database."""

    def __init__(self, db: sqlite_utils.Database, local_tx_base: int = LOCAL_TX_BASE) -> None:
        self.db = db
        self.local_tx_base = local_tx_base
        db[QUEUE].create(
            {"seq": int, "station_id": str, "version": str, "action": str, "payload": str,
             "local_tx": int, "received_at": str, "state": str, "attempts": int,
             "refusals": int, "sent_at": str, "acked_at": str, "answer": str},
            pk="seq", if_not_exists=True, not_null={"station_id", "action", "payload", "state"},
            defaults={"attempts": 0, "refusals": 0},
        )
        db[QUEUE].create_index(["station_id", "state", "seq"], if_not_exists=True)
        db[TRANSACTIONS].create(
            {"station_id": str, "local_tx": int, "upstream_tx": int, "started_seq": int},
            pk=("station_id", "local_tx"), if_not_exists=True,
        )
        db[TRANSACTIONS].create_index(["station_id", "upstream_tx"], if_not_exists=True)

    @contextmanager
    def _commit(self, durable: bool) -> Iterator[None]:
        """One transaction; fsynced before it returns when ``durable``."""
        previous = self.db.execute("PRAGMA synchronous").fetchone()[0]
        if durable:
            self.db.execute("PRAGMA synchronous=FULL")
        try:
            with self.db.conn:
                yield
        finally:
            if durable:
                self.db.execute(f"PRAGMA synchronous={int(previous)}")

    # ---- while the link is down --------------------------------------------------------------
    def enqueue(self, station_id: str, version: str, action: str, payload: Mapping[str, Any],
                now: datetime) -> Queued:
        """Keep a message the station sent; committed when this returns, so answer after.

        A 1.6 StartTransaction is given a local transaction id here, in the same commit."""
        local_tx = None
        with self._commit(durable=action in _DURABLE):
            if version == "1.6" and action == "StartTransaction":
                last = self.db.execute(f"SELECT max(local_tx) FROM {TRANSACTIONS}").fetchone()[0]
                local_tx = max(int(last or 0) + 1, self.local_tx_base)
            cursor = self.db.conn.execute(
                f"INSERT INTO {QUEUE} (station_id, version, action, payload, local_tx,"
                " received_at, state, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                [station_id, version, action, json.dumps(dict(payload), separators=(",", ":")),
                 local_tx, _iso(now), QUEUED])
            seq = int(cursor.lastrowid or 0)
            if local_tx is not None:
                self.db.conn.execute(
                    f"INSERT INTO {TRANSACTIONS} (station_id, local_tx, started_seq)"
                    " VALUES (?, ?, ?)", [station_id, local_tx, seq])
        return Queued(seq, local_tx)

    def refused_start(self, station_id: str) -> int:
        """A local id for a start the operator refused live without naming a transaction
        (1.6 requires an id in every StartTransaction answer): the station gets it, and
        what it sends about it is answered by drbridge and not forwarded. Kept as a
        transaction with no queued start (``started_seq`` NULL) and no operator id."""
        with self._commit(durable=True):
            last = self.db.execute(f"SELECT max(local_tx) FROM {TRANSACTIONS}").fetchone()[0]
            local_tx = max(int(last or 0) + 1, self.local_tx_base)
            self.db.conn.execute(
                f"INSERT INTO {TRANSACTIONS} (station_id, local_tx, started_seq)"
                " VALUES (?, ?, NULL)", [station_id, local_tx])
        return local_tx

    def refused(self, station_id: str, transaction_id: int) -> bool:
        """Whether ``transaction_id`` is one :meth:`refused_start` gave the station."""
        return self.db.execute(
            f"SELECT 1 FROM {TRANSACTIONS} WHERE station_id = ? AND local_tx = ?"
            " AND started_seq IS NULL AND upstream_tx IS NULL",
            [station_id, transaction_id]).fetchone() is not None

    def length(self, station_id: str) -> int:
        """Messages of the station not yet delivered (what the operator's view shows)."""
        return int(self.db.execute(
            f"SELECT count(*) FROM {QUEUE} WHERE station_id = ? AND state IN (?, ?)",
            [station_id, QUEUED, SENT]).fetchone()[0])

    def lengths(self) -> dict[str, int]:
        rows = self.db.execute(
            f"SELECT station_id, count(*) FROM {QUEUE} WHERE state IN (?, ?) GROUP BY station_id",
            [QUEUED, SENT]).fetchall()
        return {station_id: int(count) for station_id, count in rows}

    # ---- transaction ids -----------------------------------------------------------------
    def upstream_tx(self, station_id: str, transaction_id: int) -> int | None:
        """The operator's id for a transaction the station knows by ``transaction_id``:
        the mapped id of a local one, the id itself otherwise; None for a local id whose
        StartTransaction the operator has not answered yet (the message must wait)."""
        row = self.db.execute(
            f"SELECT upstream_tx FROM {TRANSACTIONS} WHERE station_id = ? AND local_tx = ?",
            [station_id, transaction_id]).fetchone()
        if row is None:
            return transaction_id
        return None if row[0] is None else int(row[0])

    def station_tx(self, station_id: str, transaction_id: int) -> int:
        """The id the station knows for a transaction the operator calls ``transaction_id``."""
        row = self.db.execute(
            f"SELECT local_tx FROM {TRANSACTIONS} WHERE station_id = ? AND upstream_tx = ?",
            [station_id, transaction_id]).fetchone()
        return transaction_id if row is None else int(row[0])

    # ---- replay ------------------------------------------------------------------------------
    def next(self, station_id: str) -> QueuedMessage | None:
        """The station's oldest message not yet delivered, as upstream must see it."""
        row = self.db.execute(
            f"SELECT seq, version, action, payload, local_tx, attempts, refusals, state"
            f" FROM {QUEUE}"
            " WHERE station_id = ? AND state IN (?, ?) ORDER BY seq LIMIT 1",
            [station_id, QUEUED, SENT]).fetchone()
        if row is None:
            return None
        seq, version, action, text, local_tx, attempts, refusals, state = row
        payload = json.loads(text)
        orphaned = False
        if version == "1.6" and action in _TX_ACTIONS_16 and "transactionId" in payload:
            # in order, the StartTransaction went before: mapped, or set aside for good
            mapped = self.upstream_tx(station_id, int(payload["transactionId"]))
            orphaned = mapped is None
            payload["transactionId"] = payload["transactionId"] if mapped is None else mapped
        return QueuedMessage(seq, station_id, version, action, payload, local_tx, int(attempts),
                             int(refusals), state == SENT, orphaned)

    def mark_sent(self, seq: int, now: datetime) -> None:
        """Before the frame goes out: from here on, the operator may have it."""
        with self._commit(durable=False):
            self.db.conn.execute(
                f"UPDATE {QUEUE} SET state = ?, attempts = attempts + 1, sent_at = ?"
                " WHERE seq = ?", [SENT, _iso(now), seq])

    def mark_acked(self, message: QueuedMessage, answer: Mapping[str, Any],
                   now: datetime) -> None:
        """The operator answered; a StartTransaction's answer maps its transaction id."""
        with self._commit(durable=False):
            self.db.conn.execute(
                f"UPDATE {QUEUE} SET state = ?, acked_at = ?, answer = ? WHERE seq = ?",
                [ACKED, _iso(now), json.dumps(dict(answer), separators=(",", ":")),
                 message.seq])
            upstream_tx = answer.get("transactionId")
            if message.local_tx is not None and isinstance(upstream_tx, int):
                self.db.conn.execute(
                    f"UPDATE {TRANSACTIONS} SET upstream_tx = ? WHERE station_id = ?"
                    " AND local_tx = ?", [upstream_tx, message.station_id, message.local_tx])

    def mark_refusal(self, seq: int) -> None:
        """The operator answered with a CALLERROR: it has the message and does not want it
        (this time); queued again, to be tried again."""
        with self._commit(durable=False):
            self.db.conn.execute(
                f"UPDATE {QUEUE} SET state = ?, refusals = refusals + 1 WHERE seq = ?",
                [QUEUED, seq])

    def mark_refused(self, seq: int, why: str, now: datetime) -> None:
        """Set aside for good (kept for the operator to see)."""
        with self._commit(durable=False):
            self.db.conn.execute(
                f"UPDATE {QUEUE} SET state = ?, acked_at = ?, answer = ? WHERE seq = ?",
                [REFUSED, _iso(now), json.dumps({"refused": why}), seq])

    def row(self, seq: int) -> dict[str, Any] | None:
        rows = list(self.db[QUEUE].rows_where("seq = ?", [seq]))
        return rows[0] if rows else None

    def forget_delivered(self, before: datetime) -> int:
        """Drop delivered and refused messages received before ``before``; how many."""
        with self._commit(durable=False):
            cursor = self.db.conn.execute(
                f"DELETE FROM {QUEUE} WHERE state IN (?, ?) AND received_at < ?",
                [ACKED, REFUSED, _iso(before)])
        return cursor.rowcount


Send = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any]]]


@dataclass
class ReplayResult:
    delivered: int = 0
    resent: int = 0  # of those, sent again after an unanswered attempt (may be duplicates)
    refused: int = 0
    done: bool = False  # the station's queue is empty
    answers: list[tuple[QueuedMessage, Mapping[str, Any]]] | None = None


async def replay(queue: OutageQueue, station_id: str, send: Send,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 max_attempts: int = MAX_ATTEMPTS) -> ReplayResult:
    """Send the station's queued messages upstream in order, one at a time.

    ``send(action, payload)`` makes one CALL on the station's upstream link and returns
    its CALLRESULT payload; it raises :class:`UpstreamRefused` on a CALLERROR and anything
    else when the link fails (then replay stops, and the message goes again next time).
    A message refused ``max_attempts`` times is set aside (state ``refused``, logged) so
    that one bad message cannot hold up the rest. The answers are handed back: a replayed
    StartTransaction or TransactionEvent may now refuse the id the cache let through.
    """
    result = ReplayResult(answers=[])
    while (message := queue.next(station_id)) is not None:
        if message.orphaned:
            log.error("%s: %s #%d set aside: its transaction's StartTransaction was refused",
                      station_id, message.action, message.seq)
            queue.mark_refused(message.seq, "its StartTransaction has no id from the operator",
                               now())
            result.refused += 1
            continue
        queue.mark_sent(message.seq, now())
        if message.unanswered:
            log.warning("%s: %s #%d goes upstream again: its answer was not recorded, the"
                        " operator may see it twice", station_id, message.action, message.seq)
        try:
            answer = await send(message.action, message.payload)
        except UpstreamRefused as refusal:
            if message.refusals + 1 < max_attempts:
                queue.mark_refusal(message.seq)
                log.warning("%s: the operator refused %s #%d (%s); will try again",
                            station_id, message.action, message.seq, refusal)
                return result
            log.error("%s: the operator refused %s #%d %d times (%s); set aside",
                      station_id, message.action, message.seq, max_attempts, refusal)
            queue.mark_refused(message.seq, str(refusal), now())
            result.refused += 1
            continue
        queue.mark_acked(message, answer, now())
        result.delivered += 1
        result.resent += message.unanswered
        assert result.answers is not None
        result.answers.append((message, answer))
    result.done = True
    return result
