"""The planning process itself: started by the bridge (:mod:`bridge.runtime.plan_process`),
never by hand.

It reads plan requests from the socket it is given, makes each plan and answers with it,
one at a time, and exits when the bridge closes its end (or dies). It holds what the
bridge sent it by reference (:mod:`bridge.runtime.plan_wire`) and the plan it made last,
which the next request may name.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import signal
import socket
import sys
import traceback
from typing import BinaryIO

from bridge.gc_tuning import tune_for_many_connections
from bridge.heap import give_back, map_large_blocks_apart
from bridge.plan_json import EncodedPlan
from bridge.runtime.plan_wire import (
    FRAME_LENGTH,
    PROTOCOL,
    READY,
    PlanRequest,
    Receiver,
    UnknownLastPlan,
    frame,
)
from policies.fleet import Plan

log = logging.getLogger(__name__)
Reply = tuple[Plan | None, EncodedPlan | None, str | None]  # the plan, or the traceback


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(FRAME_LENGTH.size)
    if len(head) < FRAME_LENGTH.size:
        return None  # the bridge closed its end
    (length,) = FRAME_LENGTH.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None


def serve(connection: socket.socket) -> None:
    """Answer plan requests until the other end closes. A request that cannot be read, or
    that names a plan this process never made, ends it: the bridge starts another."""
    receiver = Receiver()
    last: Plan | None = None
    with connection, connection.makefile("rb") as stream:
        connection.sendall(frame(READY))
        while (data := _read_frame(stream)) is not None:
            answer, last = _answer(receiver.decode(data), last)
            connection.sendall(answer)
            # until the next request only the last plan and the objects sent by reference
            # stay (the request's inputs, with the plan before the last, went with _answer)
            del data, answer
            give_back()  # what making the plan freed (bridge.heap), before the next one


def _answer(request: PlanRequest, last: Plan | None) -> tuple[bytes, Plan | None]:
    """The framed answer to one request, and the plan the next may name."""
    inputs = request.resolved(last)  # (a plan never made: UnknownLastPlan ends the process)
    try:
        plan, encoded = inputs.plan()
    except Exception:  # the policy's bug: the bridge logs it, this process goes on
        reply: Reply = (None, None, traceback.format_exc())
        return frame(pickle.dumps(reply, protocol=PROTOCOL)), last
    reply = (plan, encoded, None)
    return frame(pickle.dumps(reply, protocol=PROTOCOL)), plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="drbridge's planning process (started by"
                                     " the bridge; not to be run by hand)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s planning process: %(message)s")
    # the bridge stops it (by closing the socket); a Ctrl-C is the bridge's to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a plan for a large fleet allocates objects by the hundred thousand, most of them
    # freed by reference counting: the collector need not walk them all every 700
    tune_for_many_connections()
    map_large_blocks_apart()
    try:
        serve(socket.socket(fileno=args.fd))
    except BrokenPipeError:
        log.debug("the bridge closed the socket while a plan was made")
    except (ConnectionError, pickle.UnpicklingError, EOFError, UnknownLastPlan) as error:
        log.error("stopped: %s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
