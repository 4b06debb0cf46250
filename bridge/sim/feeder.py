"""A weak low-voltage feeder: the voltage at its end falls as the stations on it draw more.

``V = source_v - impedance_ohm * I`` per line, where ``I`` is the current all stations on
the feeder draw on that line. Shared by simulated stations (``station.feeder = feeder``)
and by ``drbridge simulate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

LINES = (1, 2, 3)


@dataclass
class Feeder:
    source_v: float = 230.0  # line-to-neutral at the transformer, unloaded
    impedance_ohm: float = 0.3  # per line, transformer to the stations
    # each station's current per line (L1, L2, L3) in A, asked whenever a voltage is read
    _loads: dict[str, Callable[[], tuple[float, float, float]]] = field(default_factory=dict)

    def attach(self, station_id: str, amps: Callable[[], tuple[float, float, float]]) -> None:
        self._loads[station_id] = amps

    def detach(self, station_id: str) -> None:
        self._loads.pop(station_id, None)

    def line_currents_a(self) -> tuple[float, float, float]:
        totals = [0.0, 0.0, 0.0]
        for amps in self._loads.values():
            for index, value in enumerate(amps()):
                totals[index] += value
        return (totals[0], totals[1], totals[2])

    def voltages_v(self) -> tuple[float, float, float]:
        """Line-to-neutral voltage at the stations, per line."""
        currents = self.line_currents_a()
        return (self.voltage_at(currents[0]), self.voltage_at(currents[1]),
                self.voltage_at(currents[2]))

    def voltage_at(self, amps: float) -> float:
        return max(self.source_v - self.impedance_ohm * amps, 0.0)
