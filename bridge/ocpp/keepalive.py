"""Keepalive pings on every station's websocket, from one task for all of them.

A station whose network went away without closing its TCP connection is noticed only by
what it fails to answer: each connection is pinged about once per interval, and one whose
pong has not come within the timeout is closed (1011, as websockets' own keepalive does),
so that the station is counted as offline and its link is freed.

websockets' own keepalive runs one task per connection, asleep between pings: with ten
thousand stations, ten thousand tasks, each with its frames, its timer and its future,
for one ping a minute. Here one task wakes each tick and pings the share of the
connections whose turn it is, so pings are spread evenly over the interval instead of
coming in waves.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger(__name__)

INTERVAL_S = 60.0  # each connection is pinged about this often
TIMEOUT_S = 60.0  # and closed when its pong has not come this long after
TICK_S = 1.0
KEEPALIVE_TIMEOUT = 1011  # websockets' own keepalive closes with this code too

Waiting = tuple[str, Connection, "asyncio.Future[Any]"]  # a station's ping without pong


class Keepalive:
    """Pings the connections ``connections()`` gives, by station id (read once per round),
    in turn."""

    def __init__(self, connections: Callable[[], Collection[tuple[str, Connection]]],
                 interval_s: float = INTERVAL_S, timeout_s: float = TIMEOUT_S,
                 tick_s: float = TICK_S) -> None:
        self._connections = connections
        self._interval_s, self._timeout_s, self._tick_s = interval_s, timeout_s, tick_s
        # pings whose pong has not come yet, by tick: (deadline, [(id, connection, pong)])
        self._waiting: deque[tuple[float, list[Waiting]]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self.timed_out = 0  # connections closed for want of a pong

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        turn: list[tuple[str, Connection]] = []  # the connections still to ping this round
        per_tick, next_round = 0, loop.time() + self._interval_s
        while True:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            self._expire(now)
            if not turn and now >= next_round:  # one round per interval, however few to ping
                turn = list(self._connections())
                per_tick = math.ceil(len(turn) * self._tick_s / self._interval_s)
                next_round = now + self._interval_s
            batch = []
            for _ in range(min(per_tick, len(turn))):
                station_id, connection = turn.pop()
                pong = await self._ping(connection)
                if pong is not None:
                    batch.append((station_id, connection, pong))
            if batch:
                self._waiting.append((now + self._timeout_s, batch))

    async def _ping(self, connection: Connection) -> asyncio.Future[Any] | None:
        # A peer that does not read (writing is paused) is left alone: a ping would wait for
        # it, as websockets' own would; its last ping still times out.
        if connection.protocol.state is not State.OPEN or getattr(connection, "paused", False):
            return None
        try:
            return await connection.ping()  # type: ignore[return-value]
        except ConnectionClosed:
            return None
        except Exception:  # one connection's trouble must not end the pings of all
            log.exception("keepalive ping failed")
            return None

    def _expire(self, now: float) -> None:
        """Forget the pongs that came; close the connections whose pong is overdue."""
        waiting = self._waiting
        for i, (deadline, batch) in enumerate(waiting):
            if any(pong.done() for _, _, pong in batch):
                waiting[i] = (deadline, [w for w in batch if not w[2].done()])
        while waiting and (waiting[0][0] <= now or not waiting[0][1]):
            _, batch = waiting.popleft()
            for station_id, connection, pong in batch:
                pong.cancel()  # nobody waits for it any more
                if connection.protocol.state is State.OPEN:
                    self._time_out(station_id, connection)

    def _time_out(self, station_id: str, connection: Connection) -> None:
        self.timed_out += 1
        log.info("station %s: no pong in %.0f s; closing its connection", station_id,
                 self._timeout_s)
        task = asyncio.create_task(connection.close(KEEPALIVE_TIMEOUT, "keepalive ping timeout"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
