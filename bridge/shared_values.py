"""One object for each value that many stations hold alike (pure).

Thousands of stations of a few models answer alike: their capabilities, the measurands
their meters sample. Each keeping an equal copy of its own costs memory per station for
nothing; a :class:`SharedValues` hands out the first instance of each value it saw
instead. It is bounded: past its limit, a new value stays its own object (equal, only not
shared), so a fleet of odd answers cannot grow it without end.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class SharedValues(Generic[T]):
    __slots__ = ("_kept", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: dict[T, T] = {}

    def __call__(self, value: T) -> T:
        """The instance equal to ``value`` handed out before, else ``value`` itself."""
        found = self._kept.get(value)
        if found is not None:
            return found
        if len(self._kept) < self.limit:
            self._kept[value] = value
        return value

    def __len__(self) -> int:
        return len(self._kept)
