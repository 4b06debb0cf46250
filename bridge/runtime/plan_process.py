"""Planning in a process of its own: the plan's CPU off the OCPP edge's interpreter.

A plan for 10,000 stations is about half a second of pure-Python CPU. In a thread of the
bridge's own process it competes with the event loop for the interpreter, and loses: the
loop gives the interpreter up at every call into the system (every frame it sends or
reads) and takes it straight back before the waiting thread wakes, which then waits again
(CPython's lock hands over fairly only when a holder keeps it a whole switch interval).
With 10,000 stations connected, such a plan took 8 to 22 s of wall time in the
benchmark, and a DR event reached the last station after as long. In a process, the plan
runs on another core as fast as it would alone; the loop pays for sending its inputs and
reading the plan back (:mod:`bridge.runtime.plan_wire`: each station's details, sessions
and the policy go once, not with every plan).

:class:`PlanningProcess` is the bridge's side: it starts the process when asked (the
planner asks once the fleet is large enough to gain from it) and sends it one plan at a
time. If the process fails or cannot start, the planner plans in its thread meanwhile,
and the process is started again later. The process is this module run as a program; it
exits when the bridge closes its end of the socket, or dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bridge.gc_tuning import tune_for_many_connections
from bridge.plan_json import EncodedPlan
from bridge.runtime.plan_inputs import PlanInputs
from bridge.runtime.plan_wire import PROTOCOL, Receiver, Sender
from policies.events import DrEvent
from policies.fleet import Plan, Session, Site, StationInfo
from policies.model import Policy

log = logging.getLogger(__name__)

# Immutable objects that stay the same from one plan to the next: sent once, then named.
KEPT_KINDS = (StationInfo, Session, Site, Policy, DrEvent)
START_TIMEOUT_S = 30.0
# A plan that takes longer than this is taken for a process that hangs: it is stopped,
# and the plan made in the thread.
PLAN_TIMEOUT_S = 60.0
RESTART_AFTER_S = 1.0  # doubled after each failure, up to RESTART_MAX_S
RESTART_MAX_S = 60.0
CLOSE_TIMEOUT_S = 5.0
READ_LIMIT = 1 << 22  # the stream's buffer before it stops reading: a plan's size
_LENGTH = struct.Struct("!Q")
_READY = b"ready"
_CODE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder the bridge package is in


class PlanningProcessLost(Exception):
    """The process failed, or could not be asked; the plan is to be made another way."""


class PlanFailed(Exception):
    """Planning itself raised, in the process (the traceback is the message)."""


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
            raise PlanningProcessLost("the request names a last plan this process never made")
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


# the process -----------------------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None  # the bridge closed its end
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return body


def _frame(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def serve(connection: socket.socket) -> None:
    """Answer plan requests until the other end closes."""
    receiver = Receiver()
    last: Plan | None = None
    with connection, connection.makefile("rb") as stream:
        connection.sendall(_frame(_READY))
        while (data := _read_frame(stream)) is not None:
            request: PlanRequest = receiver.decode(data)  # a broken request ends the process
            try:
                plan, encoded = request.resolved(last).plan()
            except Exception:
                reply: tuple[Plan | None, EncodedPlan | None, str | None] = (
                    None, None, traceback.format_exc())
            else:
                reply = (plan, encoded, None)
                last = plan
            connection.sendall(_frame(pickle.dumps(reply, protocol=PROTOCOL)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="drbridge's planning process (started by"
                                     " the bridge; not to be run by hand)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s planner-process %(message)s")
    # the bridge stops it (by closing the socket); a Ctrl-C is the bridge's to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a plan for a large fleet allocates objects by the hundred thousand, most of them
    # freed by reference counting: the collector need not walk them all every 700
    tune_for_many_connections()
    try:
        serve(socket.socket(fileno=args.fd))
    except (ConnectionError, pickle.UnpicklingError, EOFError) as error:
        log.error("stopped: %s", error)
        sys.exit(1)


# the bridge's side -------------------------------------------------------------------------

class PlanningProcess:
    """The planning process as the bridge uses it: :meth:`start_soon`, then :meth:`plan`
    once :attr:`ready`. One plan at a time (the planner's own lock sees to it)."""

    def __init__(self, log_level: str = "INFO") -> None:
        self._log_level = log_level
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sender = Sender(KEPT_KINDS)
        self._last: Plan | None = None  # the plan the process made last (and holds)
        self._starting: asyncio.Task[None] | None = None
        self._not_before = 0.0  # monotonic: no start before this, after a failure
        self._restart_after = RESTART_AFTER_S
        self._closed = False
        self.starts = 0  # processes started
        self.failures = 0  # processes that failed or could not start
        self.plans = 0  # plans made there

    @property
    def ready(self) -> bool:
        return self._writer is not None

    def start_soon(self) -> None:
        """Start the process in the background, unless it runs, starts, or failed a
        moment ago."""
        if self._closed or self.ready or (self._starting and not self._starting.done()) \
                or time.monotonic() < self._not_before:
            return
        self._starting = asyncio.create_task(self._start(), name="planning-process-start")

    async def _start(self) -> None:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "bridge.runtime.plan_process",
                "--fd", str(theirs.fileno()), "--log-level", self._log_level]
        # the same code as the bridge's, wherever it was imported from
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, (_CODE_ROOT, os.environ.get("PYTHONPATH")))))
        process = None
        try:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                    start_new_session=True, env=env)
            finally:
                theirs.close()  # the process has its own copy
            reader, writer = await asyncio.open_connection(sock=ours, limit=READ_LIMIT)
            async with asyncio.timeout(START_TIMEOUT_S):
                hello = await _read(reader)
            if hello != _READY:
                raise PlanningProcessLost(f"it said {hello[:20]!r} instead of being ready")
        except (OSError, EOFError, TimeoutError, PlanningProcessLost,
                asyncio.IncompleteReadError) as error:
            ours.close()
            if process is not None:
                await _stop(process)
            self._failed(f"the planning process did not start ({error or type(error)})")
            return
        except BaseException:
            ours.close()
            if process is not None:
                await _stop(process)
            raise
        self._process, self._reader, self._writer = process, reader, writer
        self._sender.forget()
        self._last = None
        self._restart_after = RESTART_AFTER_S
        self.starts += 1
        log.info("planning in a process of its own (pid %d)", process.pid)

    def _failed(self, why: str) -> None:
        self.failures += 1
        log.warning("%s; planning in the bridge's thread, the process started again in"
                    " %.0f s", why, self._restart_after)
        self._not_before = time.monotonic() + self._restart_after
        self._restart_after = min(2 * self._restart_after, RESTART_MAX_S)

    async def plan(self, inputs: PlanInputs) -> tuple[Plan, EncodedPlan | None]:
        """The plan from these inputs, made in the process. Raises PlanningProcessLost
        when the process cannot make it (the process is then stopped, to be started
        again), and PlanFailed when planning itself raised."""
        # the inputs were taken in this turn of the loop; encoding them (about 30 ms at
        # 10,000 stations) waits for the next, so that the two do not add up to one stall
        await asyncio.sleep(0)
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise PlanningProcessLost("the planning process is not running")
        try:
            data = self._sender.encode(request_for(inputs, self._last))
            writer.write(_LENGTH.pack(len(data)))
            writer.write(data)
            async with asyncio.timeout(PLAN_TIMEOUT_S):
                await writer.drain()
                answer = await _read(reader)
            plan, encoded, failure = pickle.loads(answer)
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError,
                asyncio.IncompleteReadError) as error:
            await self._lost(f"the planning process failed ({error or type(error).__name__})")
            raise PlanningProcessLost(str(error)) from error
        except BaseException:
            # cancelled (the bridge stops, or the plan was given up on) with the answer on
            # its way: the next request would read this one's answer, so this process is
            # done with; not a failure of it, so it may start again at once
            await asyncio.shield(self._lost(None))
            raise
        if failure is not None:
            # the process keeps the inputs it was sent, and the plan it made last
            raise PlanFailed(failure)
        self._last = plan
        self.plans += 1
        return plan, encoded

    async def _lost(self, why: str | None) -> None:
        """Stop the process; ``why`` it failed (None: it did not)."""
        process, writer = self._process, self._writer
        self._process = self._reader = self._writer = None
        self._last = None
        if writer is not None:
            writer.close()
        if process is not None:
            await _stop(process)
        if why is not None and not self._closed:
            self._failed(why)

    async def close(self) -> None:
        """Stop the process (closing the socket ends it; stopped after a while if not)."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        process, writer = self._process, self._writer
        self._process = self._reader = self._writer = None
        if writer is not None:
            writer.close()
        if process is not None:
            await _stop(process, gently=True)


async def _read(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


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


if __name__ == "__main__":
    main()
