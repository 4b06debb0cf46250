"""Message ids on a websocket leg that two senders share (pure).

In local-controller mode the station's websocket carries CALLs from the operator's CSMS
(forwarded) and from drbridge itself; the upstream websocket carries the station's CALLs
(forwarded) and, after an outage, drbridge's replays. OCPP-J pairs an answer with its
CALL by the message id alone, and a CSMS may choose ids any way it likes (UUIDs,
counters, the same id again and again). So on each such leg drbridge issues every id
itself: a forwarded CALL goes out under a fresh id and its answer comes back under the
id its sender chose; drbridge's own CALLs take ids from the same counter. Ids on the
leg can then never collide, whatever the other side does, and an answer whose id is not
pending (one of ours that timed out, a stray) is never forwarded.

Prefixes ("f" forwarded, "d" drbridge's own) are for the log only: the map decides.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# A leg is used one CALL at a time (OCPP-J); a few more may wait while a call times out.
MAX_PENDING = 64
MAX_ID_LENGTH = 36  # OCPP-J's limit on a message id


@dataclass(frozen=True)
class Forwarded:
    """An answer to a forwarded CALL: send it on under the sender's own id."""

    origin_id: str
    tag: Any  # what the caller attached (e.g. the action, for reading the answer)


@dataclass(frozen=True)
class Own:
    """An answer to one of drbridge's own CALLs: never forwarded."""

    tag: Any


@dataclass(frozen=True)
class Unknown:
    """No CALL is pending under this id (timed out, evicted, or never ours): drop it."""


Resolved = Forwarded | Own | Unknown


class LegIds:
    """Issues the message ids of one direction of one websocket leg and maps answers back."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._counter = 0
        self._max_pending = max_pending
        self._pending: OrderedDict[str, Forwarded | Own] = OrderedDict()
        self.evicted = 0  # pending entries dropped to stay bounded (their answers: Unknown)

    def __len__(self) -> int:
        return len(self._pending)

    def forward(self, origin_id: str, tag: Any = None) -> str:
        """The id a CALL forwarded from the other leg goes out under."""
        return self._issue("f", Forwarded(origin_id, tag))

    def own(self, tag: Any = None) -> str:
        """The id of one of drbridge's own CALLs on this leg."""
        return self._issue("d", Own(tag))

    def resolve(self, wire_id: Any) -> Resolved:
        """What an answer (CALLRESULT or CALLERROR) with this id is; forgets the CALL."""
        entry = self._pending.pop(wire_id, None) if isinstance(wire_id, str) else None
        return Unknown() if entry is None else entry

    def forget(self, wire_id: str) -> None:
        """A CALL that timed out: its late answer will be Unknown."""
        self._pending.pop(wire_id, None)

    def drop_pending(self) -> list[Forwarded | Own]:
        """Every CALL still pending, forgotten (the leg closed: no answer will come)."""
        entries = list(self._pending.values())
        self._pending.clear()
        return entries

    def _issue(self, prefix: str, entry: Forwarded | Own) -> str:
        self._counter += 1
        wire_id = f"{prefix}{self._counter}"
        self._pending[wire_id] = entry
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
            self.evicted += 1
        return wire_id


_CALL_HEAD = re.compile(r'\s*\[\s*2\s*,\s*"')
_REPLY_HEAD = re.compile(r'\s*\[\s*([34])\s*,\s*"')
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once


def call_with_id(raw: str, origin_id: str, message_id: str) -> str | None:
    """A CALL as its sender encoded it, under another message id; None when the id cannot
    be swapped in the text (escaped characters in it): then re-encode with :func:`with_id`.
    Forwarding a station's meter values this way spares encoding them again."""
    head = _CALL_HEAD.match(raw)
    if head is None:
        return None
    end = head.end() + len(origin_id)
    if raw[head.end():end] != origin_id or raw[end:end + 1] != '"':
        return None
    return f'[2,"{message_id}' + raw[end:]


def reply_with_id(raw: str, wire_id: str, origin_id: str) -> str | None:
    """A CALLRESULT or CALLERROR as its sender encoded it (``raw``, already read as JSON),
    under ``origin_id`` in place of ``wire_id``; None when the id is not written plainly
    in the text: then re-encode with :func:`with_id`. The operator's answers to forwarded
    meter values go back to the station this way, without being encoded again."""
    head = _REPLY_HEAD.match(raw)
    if head is None:
        return None
    end = head.end() + len(wire_id)
    if raw[head.end():end] != wire_id or raw[end:end + 1] != '"':
        return None
    return f"[{head.group(1)},{_ENCODER.encode(origin_id)}{raw[end + 1:]}"


def with_id(frame: list[Any], message_id: str) -> str:
    """A CALL, CALLRESULT or CALLERROR frame re-encoded under another message id; the rest
    of the frame (action, payload, error) unchanged."""
    return _ENCODER.encode([frame[0], message_id, *frame[2:]])
