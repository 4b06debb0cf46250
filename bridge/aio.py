"""Small asyncio helpers the runtime shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout: float = 5.0) -> None:
    """Cancel tasks and wait until they have ended, without ever hanging a shutdown.

    Cancellation is repeated: on Python 3.11 ``asyncio.wait_for`` (which the
    ``ocpp`` library awaits on every call) can swallow a cancellation that
    arrives as its inner future completes.
    """
    loop = asyncio.get_running_loop()
    pending = {t for t in tasks if not t.done()}
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for task in pending:
        log.warning("task %s did not stop within %.0f s", task.get_name(), timeout)


class Wake:
    """A flag a task waits on, as :class:`asyncio.Event`, that also tells ``on_set`` each
    time it is set (so that the task that serves it can be started on demand).

    Kept per station: slotted, and its waiters' futures exist only while someone waits
    (``asyncio.Event`` holds a deque from its start). A future of the caller's may wait on
    several flags at once (:meth:`notify`), without a task per flag.
    """

    __slots__ = ("_set", "_waiters", "on_set")

    def __init__(self, on_set: Callable[[], object] | None = None) -> None:
        self._set = False
        # a dict, not a list: thousands may wait on one flag, each leaving on its own
        self._waiters: dict[asyncio.Future[None], None] | None = None
        self.on_set = on_set

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)
        if self.on_set is not None:
            self.on_set()

    def clear(self) -> None:
        self._set = False

    def notify(self, waiter: asyncio.Future[None]) -> None:
        """Complete ``waiter`` when the flag is set (at once if it is); see :meth:`forget`."""
        if self._set:
            if not waiter.done():
                waiter.set_result(None)
            return
        if self._waiters is None:
            self._waiters = {}
        self._waiters[waiter] = None

    def forget(self, waiter: asyncio.Future[None]) -> None:
        """``waiter`` no longer waits for the flag."""
        if self._waiters is not None:
            self._waiters.pop(waiter, None)
            if not self._waiters:
                self._waiters = None

    async def wait(self) -> None:
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.notify(waiter)
        try:
            await waiter
        finally:
            self.forget(waiter)


async def first_of(flags: Iterable[Wake], timeout: float) -> None:
    """Until one of ``flags`` is set, or ``timeout`` seconds have passed: one future and
    one timer (``asyncio.wait`` on each flag's ``wait()`` costs a task per flag, and
    thousands of stations' workers wait so after a wave)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    flags = tuple(flags)
    for flag in flags:
        flag.notify(ready)
    # a flag set already completed it: awaiting it then returns without yielding
    timer = None if ready.done() else loop.call_later(timeout, _complete, ready)
    try:
        await ready
    finally:
        if timer is not None:
            timer.cancel()
        for flag in flags:
            flag.forget(ready)


def _complete(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _EachTurn:
    """Runs :meth:`_next_turn` at the start of the next turn of the event loop, once however
    often it is asked for in this one (the subclass asks again while it has work)."""

    __slots__ = ("_turn_ends",)

    def __init__(self) -> None:
        self._turn_ends = False  # the callback that starts the next turn is scheduled

    def _end_turn_soon(self) -> None:
        if not self._turn_ends:
            self._turn_ends = True
            asyncio.get_running_loop().call_soon(self._run_next_turn)

    def _run_next_turn(self) -> None:
        self._turn_ends = False
        self._next_turn()

    def _next_turn(self) -> None:
        raise NotImplementedError


async def _wait_in_line(line: deque[asyncio.Future[None]]) -> None:
    """Wait until the future put at the end of ``line`` is done; a waiter cancelled while
    still in line leaves it."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    line.append(waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        with contextlib.suppress(ValueError):  # still waiting (not let through)
            line.remove(waiter)
        raise


class TurnGate(_EachTurn):
    """Lets at most ``per_turn`` tasks through per turn of the event loop; the others wait,
    first come first served, for a later turn.

    The loop polls its sockets once per turn and then runs every callback that was ready
    before the poll. Thousands of tasks that come due at once (every station's follow-up
    calls after a plan's wave) would all run in one turn, and a reply to a station's request
    that arrived meanwhile waits for the last of them. Through the gate they run a few
    dozen a turn, with the sockets polled between. A task that finds room passes without
    yielding.
    """

    __slots__ = ("per_turn", "_used", "_waiting")

    def __init__(self, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        super().__init__()
        self.per_turn = per_turn
        self._used = 0  # passed in this turn
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(self) -> None:
        if self._used < self.per_turn and not self._waiting:
            self._used += 1
            self._end_turn_soon()
            return
        self._end_turn_soon()
        await _wait_in_line(self._waiting)

    def _next_turn(self) -> None:
        """Run as the next turn starts: the waiters let through now run in the turn after
        it, which polls the sockets first."""
        self._used = 0
        while self._waiting and self._used < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._used += 1
        if self._used or self._waiting:
            self._end_turn_soon()


class WaveTurns(_EachTurn):
    """Paces a wave of per-station work over turns of the event loop: at most ``per_turn``
    stations take a step in one turn, and the wave's sends go before the answers' upkeep.

    A plan that gives every station a new limit wakes thousands of workers at once. Started
    together, their sends run in one turn (about a second at 10,000 stations), and a
    station's MeterValues read meanwhile waits for the end of it. A :class:`TurnGate` alone
    spreads the sends, but the answers that come back between them are then booked first,
    on the same core, and the last station's limit goes out later by the cost of all of
    them. Here a worker is started through :meth:`start`, and one that has sent its last
    call waits in :meth:`after_send` until every worker of the wave has been started; then
    they go on, ``per_turn`` a turn as well. Waiting before the answer is taken up, not
    after (see :meth:`~bridge.ocpp.link.ChargerLink.set_profile`), an answer read between
    two turns wakes nothing until then. The sockets are polled between turns, so
    routine reports are answered in between (see
    :meth:`~bridge.ocpp.station_socket.StationSocket.answer_at_once`).

    Work that finds room in this turn and nothing queued before it passes at once, so a
    lone station's wake is not delayed by a turn.
    """

    __slots__ = ("per_turn", "_room", "_starts", "_sent")

    def __init__(self, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        super().__init__()
        self.per_turn = per_turn
        self._room = per_turn  # steps this turn may still take
        self._starts: deque[Callable[[], object]] = deque()
        self._sent: deque[asyncio.Future[None]] = deque()

    @property
    def going_out(self) -> bool:
        """Whether workers of a wave are still waiting to be started."""
        return bool(self._starts)

    @property
    def waiting(self) -> int:
        return len(self._starts) + len(self._sent)

    def start(self, begin: Callable[[], object], at_once: bool = False) -> None:
        """Call ``begin`` (which starts a worker) now if this turn has room, else in a
        later turn, first come first served. ``at_once``: now in any case (it still takes
        its room in the turn), for work that must not wait behind a wave."""
        if at_once or (self._room > 0 and not self._starts):
            self._room -= 1
            begin()
            # after it: the next turn starts the next few once these took their first step
            # (and asked for their records' commit, which then holds these alone)
            self._end_turn_soon()
            return
        self._starts.append(begin)
        self._end_turn_soon()

    async def after_send(self) -> None:
        """Return at once, unless a wave is going out or others wait here before us: then
        wait until every worker of it is started and our turn comes."""
        if not self._starts and not self._sent:
            return
        self._end_turn_soon()
        await _wait_in_line(self._sent)

    def _next_turn(self) -> None:
        """Run as the next turn starts: what it lets through runs in the turn after it,
        which polls the sockets first."""
        self._room = self.per_turn
        starts, sent = self._starts, self._sent
        while starts and self._room > 0:
            self._room -= 1
            try:
                starts.popleft()()
            except Exception:  # one station's start must not stop the wave
                log.exception("starting a worker failed")
        while sent and not starts and self._room > 0:
            waiter = sent.popleft()
            if not waiter.done():
                self._room -= 1
                waiter.set_result(None)
        if self._room < self.per_turn or starts or sent:
            self._end_turn_soon()


class TurnBatch(Generic[K, V]):
    """Writes that many tasks ask for in the same turn of the event loop, made together in
    one call at the start of the next turn; each task's :meth:`add` returns once that call
    has returned (or raises what it raised).

    A plan's wave wakes thousands of stations' workers at once, and each has a record to
    commit before it goes on: a commit each held the loop for a large part of a second.
    Keyed: a second value for a key in the same turn replaces the first.
    """

    __slots__ = ("_write", "_pending", "_waiters")

    def __init__(self, write: Callable[[Iterable[tuple[K, V]]], object]) -> None:
        self._write = write
        self._pending: dict[K, V] = {}
        # a future per waiting task, not one they share: a task cancelled (its station
        # gone) cancels its own only (cheaper than shielding a shared one for each)
        self._waiters: list[asyncio.Future[None]] | None = None

    async def add(self, key: K, value: V) -> None:
        self._pending[key] = value
        loop = asyncio.get_running_loop()
        if self._waiters is None:
            self._waiters = []
            loop.call_soon(self._flush)
        written: asyncio.Future[None] = loop.create_future()
        self._waiters.append(written)
        await written

    def _flush(self) -> None:
        waiters, self._waiters = self._waiters or [], None
        pending, self._pending = self._pending, {}
        try:
            self._write(pending.items())
        except Exception as error:  # each waiting task fails as its own write would have
            for written in waiters:
                if not written.done():
                    written.set_exception(error)
        else:
            for written in waiters:
                if not written.done():
                    written.set_result(None)
