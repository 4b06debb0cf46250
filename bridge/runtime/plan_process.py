"""Planning in a process of its own: the plan's CPU off the OCPP edge's interpreter.

A plan for 10,000 stations is about half a second of pure-Python CPU. In a thread of the
bridge's own process it competes with the event loop for the interpreter, and loses: the
loop gives the interpreter up at every call into the system (every frame it sends or
reads) and takes it straight back before the waiting thread wakes, which then waits again
(CPython's lock hands over fairly only when a holder keeps it a whole switch interval).
With 10,000 stations connected, such a plan took 8 to 13 s of wall time in the
benchmark, and a DR event reached the last station after as long. In a process, the plan
runs on another core as fast as it would alone; the loop pays for sending its inputs and
reading the plan back (:mod:`bridge.runtime.plan_wire`: each station's details, sessions
and the policy go once, not with every plan).

:class:`PlanningProcess` is the bridge's side of the process (:mod:`bridge.runtime.plan_child`):
it starts the process when asked (the planner asks once the fleet is large enough to gain
from it) and sends it one plan at a time. If the process fails or cannot start, the
planner plans in its thread meanwhile, and the process is started again after a wait
that doubles with each failure in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
import time
from pathlib import Path

from bridge.plan_json import EncodedPlan
from bridge.runtime.plan_inputs import PlanInputs
from bridge.runtime.plan_wire import FRAME_LENGTH, READY, Sender, frame, request_for
from policies.events import DrEvent
from policies.fleet import Plan, Session, Site, StationInfo
from policies.model import Policy

log = logging.getLogger(__name__)

# Immutable objects that stay the same from one plan to the next: sent once, then named.
KEPT_KINDS = (StationInfo, Session, Site, Policy, DrEvent)
PYTHON = sys.executable  # the process runs the bridge's own interpreter
START_TIMEOUT_S = 30.0
# A plan that takes longer than this (20 times a 10,000-station plan) is taken for a
# process that hangs: it is stopped, and the plan made in the thread.
PLAN_TIMEOUT_S = 10.0
RESTART_AFTER_S = 1.0  # doubled after each failure in a row, up to RESTART_MAX_S
RESTART_MAX_S = 60.0
# After this many failures in a row, one error says the process keeps failing; the
# attempts go on, logged at debug level only.
LOUD_FAILURES = 3
CLOSE_TIMEOUT_S = 5.0
# A frame's bytes move in one go once its first bytes are there (see _Channel); the
# process is then writing or reading it, so this is only reached if it stops mid-frame.
TRANSFER_TIMEOUT_S = 5.0
_CODE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder the bridge package is in


class PlanningProcessLost(Exception):
    """The process failed, or could not be asked; the plan is to be made another way."""


class PlanFailed(Exception):
    """Planning itself raised, in the process (the traceback is the message)."""


class PlanningProcess:
    """The planning process as the bridge uses it: :meth:`start_soon`, then :meth:`plan`
    once :attr:`ready`. One plan at a time (the planner's own lock sees to it)."""

    def __init__(self, log_level: str = "INFO") -> None:
        self._log_level = log_level
        self._process: asyncio.subprocess.Process | None = None
        self._channel: _Channel | None = None
        self._sender = Sender(KEPT_KINDS)
        self._last: Plan | None = None  # the plan the process made last (and holds)
        self._starting: asyncio.Task[None] | None = None
        self._not_before = 0.0  # monotonic: no start before this, after a failure
        self._failed_in_a_row = 0  # failures since the last plan made there
        self._closed = False
        self.starts = 0  # processes started
        self.failures = 0  # processes that failed or could not start
        self.requests = 0  # plans asked of it
        self.plans = 0  # plans made there

    @property
    def started(self) -> bool:
        """Whether a process was started and not found ended since: plans go to it."""
        return self._channel is not None

    @property
    def ready(self) -> bool:
        """Whether the process runs and takes plans (as far as the bridge knows: one that
        died meanwhile is found out by the next plan)."""
        return self._channel is not None and self._process is not None \
            and self._process.returncode is None

    def start_soon(self) -> None:
        """Start the process in the background, unless it runs, starts, or failed a
        moment ago."""
        if self._closed or self.started \
                or (self._starting is not None and not self._starting.done()) \
                or time.monotonic() < self._not_before:
            return
        self._starting = asyncio.create_task(self._start(), name="planning-process-start")

    async def _start(self) -> None:
        process: asyncio.subprocess.Process | None = None
        ours: socket.socket | None = None
        try:
            ours, theirs = socket.socketpair()
            argv = [PYTHON, "-m", "bridge.runtime.plan_child",
                    "--fd", str(theirs.fileno()), "--log-level", self._log_level]
            # the same code as the bridge's, wherever it was imported from
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, (_CODE_ROOT, os.environ.get("PYTHONPATH")))))
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                    start_new_session=True, env=env)
            finally:
                theirs.close()  # the process has its own copy
            channel = _Channel(ours)
            async with asyncio.timeout(START_TIMEOUT_S):
                hello = await channel.receive()
            if hello != READY:
                raise PlanningProcessLost(f"it said {hello[:20]!r} instead of being ready")
        except BaseException as error:
            if ours is not None:
                ours.close()
            if process is not None:
                await _stop(process)
            if isinstance(error, Exception):
                self._failed(f"the planning process did not start ({_said(error)})")
                return
            raise
        self._process, self._channel = process, channel
        self._sender.forget()
        self._last = None
        self.starts += 1
        log.info("planning in a process of its own (pid %d)", process.pid)

    def _failed(self, why: str) -> None:
        self.failures += 1
        self._failed_in_a_row += 1
        wait = min(RESTART_AFTER_S * 2 ** (self._failed_in_a_row - 1), RESTART_MAX_S)
        self._not_before = time.monotonic() + wait
        if self._failed_in_a_row < LOUD_FAILURES:
            log.warning("%s; planning in the bridge's thread, the process started again in"
                        " %.0f s", why, wait)
        elif self._failed_in_a_row == LOUD_FAILURES:
            log.error("%s; the planning process failed %d times in a row: plans are made in"
                      " the bridge's thread (slower for a large fleet), and it is tried"
                      " again every %.0f s at most (logged at debug level)",
                      why, self._failed_in_a_row, RESTART_MAX_S)
        else:
            log.debug("%s; the process started again in %.0f s", why, wait)

    async def plan(self, inputs: PlanInputs) -> tuple[Plan, EncodedPlan | None]:
        """The plan from these inputs, made in the process. Raises PlanningProcessLost
        when the process cannot make it (the process is then stopped, to be started
        again), and PlanFailed when planning itself raised."""
        # the inputs were taken in this turn of the loop; encoding them (about 30 ms at
        # 10,000 stations) waits for the next, so that the two do not add up to one stall
        await asyncio.sleep(0)
        channel = self._channel
        if channel is None or not self.ready:
            if channel is not None:
                await self._lost("the planning process ended")
            raise PlanningProcessLost("the planning process is not running")
        try:
            channel.send(self._sender.encode(request_for(inputs, self._last)))
            self.requests += 1
            async with asyncio.timeout(PLAN_TIMEOUT_S):
                answer = await channel.receive()
            plan, encoded, failure = pickle.loads(answer)
        except asyncio.CancelledError:
            # the bridge stops, or the plan was given up on, with the answer on its way: the
            # next request would read this one's answer, so this process is done with; not
            # a failure of it, so it may start again at once
            await asyncio.shield(self._lost(None))
            raise
        except Exception as error:  # its end closed, a timeout, a broken answer, ...
            await self._lost(f"the planning process failed ({_said(error)})")
            raise PlanningProcessLost(_said(error)) from error
        if failure is not None:
            # the process keeps the inputs it was sent, and the plan it made last
            raise PlanFailed(failure)
        self._last = plan
        self.plans += 1
        self._failed_in_a_row = 0
        return plan, encoded

    async def _lost(self, why: str | None) -> None:
        """Stop the process; ``why`` it failed (None: it did not)."""
        process, channel = self._process, self._channel
        self._process = self._channel = None
        self._last = None
        if channel is not None:
            channel.close()
        if process is not None:
            await _stop(process)
        if why is not None and not self._closed:
            self._failed(why)

    async def close(self) -> None:
        """Stop the process (closing the socket ends it; killed after a while if not)."""
        self._closed = True
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            # waited for without taking its outcome, so that a cancellation of this
            # caller still reaches it
            await asyncio.wait([starting])
        process, channel = self._process, self._channel
        self._process = self._channel = None
        if channel is not None:
            channel.close()
        if process is not None:
            await _stop(process, gently=True)


def _said(error: BaseException) -> str:
    return str(error) or type(error).__name__


class _Channel:
    """Frames to and from the process over its socket.

    A frame moves in one go: sent whole at once (the process, one plan at a time, is
    waiting for it), and read whole once its first bytes are there (the process writes its
    answer at once). Through the event loop a 12 MB answer (a DR event's plan for 10,000
    stations, with its encoding for the store) would take a turn of the loop per 256 kB;
    while the loop sends a wave of profiles, a turn takes tens of milliseconds.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    def send(self, data: bytes) -> None:
        sock = self._sock
        sock.settimeout(TRANSFER_TIMEOUT_S)
        try:
            sock.sendall(frame(data))
        finally:
            sock.setblocking(False)

    async def receive(self) -> bytearray:
        """The next frame (EOFError: the process closed its end)."""
        head = bytearray(FRAME_LENGTH.size)
        got = await asyncio.get_running_loop().sock_recv_into(self._sock, head)
        if got == 0:
            raise EOFError("the planning process closed its socket")
        sock = self._sock
        sock.settimeout(TRANSFER_TIMEOUT_S)
        try:
            _read_into(sock, memoryview(head)[got:])
            (length,) = FRAME_LENGTH.unpack(head)
            body = bytearray(length)
            _read_into(sock, memoryview(body))
        finally:
            sock.setblocking(False)
        return body

    def close(self) -> None:
        self._sock.close()


def _read_into(sock: socket.socket, view: memoryview) -> None:
    while view:
        got = sock.recv_into(view)
        if got == 0:
            raise EOFError("the planning process closed its socket mid-frame")
        view = view[got:]


async def _stop(process: asyncio.subprocess.Process, gently: bool = False) -> None:
    """Wait for the process to end (gently: give it a moment after its socket closed);
    kill it if it does not."""
    if process.returncode is None and not gently:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
