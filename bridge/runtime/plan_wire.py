"""What crosses between the bridge and its planning process, and how (pure, no I/O).

A plan's inputs for 10,000 stations pickle to about 2.5 MB, and most of it is the same
objects every time: each station's details, each session, the policy. Pickling them again
for every plan would cost the event loop about a tenth of a second. :class:`Sender` sends
an object of a kind it is told to keep (immutable ones: see
:data:`bridge.runtime.plan_process.KEPT_KINDS`) once; after that, a message names it by a
number the other side looks up in its :class:`Receiver`.

Both sides keep exactly the objects the last message used, so they agree without saying
which to drop: an object no longer in the inputs (a session that ended) is forgotten by
both after the next message. The numbers are ``id()`` of the sender's object, which the
sender keeps alive for as long as the number may be used.

A message is two pickles: the objects sent for the first time, in full, then the message
with every kept object as a reference (``persistent_id``). On the socket, each message
goes in a frame: its length, then its bytes. The bridge sends a :class:`PlanRequest`; the
process answers with a plain pickle of the plan (new objects every time).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from bridge.runtime.plan_inputs import PlanInputs
from policies.fleet import Plan

PROTOCOL = 5
_HEAD = struct.Struct("!QQ")  # the lengths of the two pickles
FRAME_LENGTH = struct.Struct("!Q")  # a frame's length, before its bytes
READY = b"ready"  # the process's first frame, once it can take requests


def frame(data: bytes) -> bytes:
    return FRAME_LENGTH.pack(len(data)) + data


class UnknownLastPlan(Exception):
    """A request names a last plan the process never made: the two sides disagree."""


@dataclass(frozen=True)
class PlanRequest:
    """A plan's inputs as sent: where the plan they follow (``previous``, and the state in
    ``state``) is the one the process made last, it is named rather than sent."""

    inputs: PlanInputs
    previous_is_last: bool = False
    state_is_last: bool = False

    def resolved(self, last: Plan | None) -> PlanInputs:
        """The inputs, with the plan the process made last put back where named."""
        if not (self.previous_is_last or self.state_is_last):
            return self.inputs
        if last is None:
            raise UnknownLastPlan("the request names a last plan this process never made")
        return dataclasses.replace(
            self.inputs,
            previous=last if self.previous_is_last else self.inputs.previous,
            state=last.state if self.state_is_last else self.inputs.state)


def request_for(inputs: PlanInputs, last: Plan | None) -> PlanRequest:
    """What to send for these inputs to a process whose last plan is ``last``."""
    if last is None:
        return PlanRequest(inputs)
    previous_is_last = inputs.previous is last
    state_is_last = inputs.state is not None and inputs.state is last.state
    if not (previous_is_last or state_is_last):
        return PlanRequest(inputs)
    return PlanRequest(
        dataclasses.replace(inputs, previous=None if previous_is_last else inputs.previous,
                            state=None if state_is_last else inputs.state),
        previous_is_last, state_is_last)


class Sender:
    """One direction's sending side: kept objects go once, then by number."""

    def __init__(self, kept_kinds: Collection[type]) -> None:
        self._kinds = frozenset(kept_kinds)
        self._held: dict[int, Any] = {}  # what the receiver holds: number -> our object

    def encode(self, message: object) -> bytes:
        """The message as bytes for :meth:`Receiver.decode`. The receiver must decode
        every message encoded, in order (or both sides :meth:`forget`)."""
        kinds = self._kinds
        held = self._held
        first: dict[int, Any] = {}  # sent in full this time
        used: dict[int, Any] = {}  # referenced by this message, what both hold after it

        class _Pickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> int | None:  # noqa: PLR6301 (pickle's hook)
                if type(obj) not in kinds:
                    return None
                number = id(obj)
                if number not in held:
                    first[number] = obj
                used[number] = obj
                return number

        body = io.BytesIO()
        _Pickler(body, protocol=PROTOCOL).dump(message)
        # the objects sent in full are pickled as such: a kept object inside one is sent
        # inside it (kept kinds hold few others; the sizes that matter are flat)
        fresh = pickle.dumps(first, protocol=PROTOCOL)
        self._held = used
        return _HEAD.pack(len(fresh), body.tell()) + fresh + body.getbuffer()

    def forget(self) -> None:
        """The receiver holds nothing (it was started again): send every object in full."""
        self._held = {}


class Receiver:
    """One direction's receiving side."""

    def __init__(self) -> None:
        self._held: dict[int, Any] = {}

    def decode(self, data: bytes | memoryview) -> Any:
        view = memoryview(data)
        fresh_len, body_len = _HEAD.unpack_from(view)
        start = _HEAD.size
        if len(view) != start + fresh_len + body_len:
            raise ValueError(f"a message of {len(view)} bytes, its head says "
                             f"{start + fresh_len + body_len}")
        known = self._held
        known.update(pickle.loads(view[start:start + fresh_len]))
        used: dict[int, Any] = {}

        class _Unpickler(pickle.Unpickler):
            def persistent_load(self, pid: Any) -> Any:  # noqa: PLR6301 (pickle's hook)
                try:
                    obj = used[pid] = known[pid]
                except KeyError:
                    raise pickle.UnpicklingError(f"object {pid} was never sent") from None
                return obj

        message = _Unpickler(io.BytesIO(view[start + fresh_len:])).load()
        self._held = used
        return message

    def forget(self) -> None:
        self._held = {}
