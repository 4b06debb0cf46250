"""Per-address limits of the station edge: failed logins and connection floods.

Pure bookkeeping: callers pass ``now`` (monotonic seconds) and act on the answer.
Memory is bounded: at most ``max_tracked`` addresses (or address and station pairs)
are remembered, the least recently seen are forgotten first. An attacker who cycles
through more addresses than that can win back a few tries, but cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from bridge.loopback import is_loopback_address

MAX_TRACKED = 10_000
K = TypeVar("K")
V = TypeVar("V")


class _Bounded(OrderedDict[K, V], Generic[K, V]):
    """A dict that forgets its least recently touched entries beyond ``cap``."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def touch(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


@dataclass
class _Failures:
    window_start: float
    count: int = 0
    blocked_until: float = 0.0


@dataclass(frozen=True)
class FailurePolicy:
    per_station: int = 5  # failures for one station id from one address
    per_address: int = 50  # failures for any station ids from one address
    window_s: float = 60.0
    block_s: float = 300.0


class FailureLimiter:
    """Refuses an address (for one station id, or for all) after repeated failed logins.

    Chargers often share one address (a site router, a cellular NAT), so a station with a
    wrong password locks out only its own id from that address; many ids failing from one
    address (guessing across stations) lock out the address. Requests refused while
    blocked do not count, so a misconfigured station retrying does not spread its block.
    """

    def __init__(self, policy: FailurePolicy, max_tracked: int = MAX_TRACKED) -> None:
        self.policy = policy
        self._entries: _Bounded[tuple[str, str | None], _Failures] = _Bounded(max_tracked)

    def __len__(self) -> int:
        return len(self._entries)

    def blocked_for(self, address: str, station_id: str, now: float) -> float:
        """Seconds this address must wait before trying this station again (0: it may try)."""
        wait = 0.0
        for key in ((address, station_id), (address, None)):
            entry = self._entries.get(key)
            if entry is not None:
                wait = max(wait, entry.blocked_until - now)
        return wait

    def failed(self, address: str, station_id: str, now: float) -> bool:
        """Count a failure; True when it starts a block."""
        started = False
        for key, limit in (((address, station_id), self.policy.per_station),
                           ((address, None), self.policy.per_address)):
            entry = self._entries.get(key)
            if entry is None or now - entry.window_start >= self.policy.window_s:
                entry = _Failures(window_start=now)
            entry.count += 1
            if entry.count >= limit and entry.blocked_until <= now:
                entry.blocked_until = now + self.policy.block_s
                entry.count = 0
                entry.window_start = now
                started = True
            self._entries.touch(key, entry)
        return started


class Admission(Enum):
    ADMITTED = "admitted"
    TOO_MANY_OPEN = "too many open connections from this address"
    TOO_FAST = "too many new connections per second from this address"


@dataclass(frozen=True)
class ConnectionPolicy:
    max_open: int = 1000  # per address; 0: no limit
    max_per_second: int = 100  # new connections per address and second; 0: no limit
    limit_loopback: bool = False  # loopback runs simulators and benchmarks


class ConnectionLimiter:
    """Caps open connections and the rate of new ones per remote address."""

    def __init__(self, policy: ConnectionPolicy, max_tracked: int = MAX_TRACKED) -> None:
        self.policy = policy
        self._open: dict[str, int] = {}
        # address -> (the whole second it counts, connections in that second)
        self._rate: _Bounded[str, tuple[int, int]] = _Bounded(max_tracked)

    def tracked(self) -> int:
        return len(self._open) + len(self._rate)

    def applies_to(self, address: str) -> bool:
        return self.policy.limit_loopback or not is_loopback_address(address)

    def admit(self, address: str, now: float) -> Admission:
        """Decide on a new connection; an admitted one must be released when it ends."""
        if not self.applies_to(address):
            return Admission.ADMITTED
        policy = self.policy
        if policy.max_open and self._open.get(address, 0) >= policy.max_open:
            return Admission.TOO_MANY_OPEN
        if policy.max_per_second:
            second = int(now)
            counted, count = self._rate.get(address, (second, 0))
            count = count + 1 if counted == second else 1
            self._rate.touch(address, (second, count))
            if count > policy.max_per_second:
                return Admission.TOO_FAST
        # Open connections are not bounded by max_tracked: each is a live socket, which the
        # operating system already bounds.
        self._open[address] = self._open.get(address, 0) + 1
        return Admission.ADMITTED

    def release(self, address: str) -> None:
        if not self.applies_to(address):
            return
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
