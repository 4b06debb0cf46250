"""EVs plugged in whose session has not started yet, planned as sessions (pure: times in).

A station without a session gets nothing from the plan. An EV plugged in whose driver has
yet to present a tag, or whose StartTransaction is on its way, is about to start one: the
plan counts it as a session already, so its station has its share when the session starts
instead of nothing and a raise a moment later. Counted only where that share is sure to
bound what the station draws, and not for ever:

- the connector's status says an EV is there (:data:`PLUGGED_IN`), no transaction is open
  on it, and none ended since that status (a station may report a session's end before
  its connector's next status: the status then is of the session that ended);
- it has said so for :data:`HOLD` (a connector flapping between Preparing and Available
  would otherwise change every station's share at each flap), and for no more than
  :data:`LONGEST` (a driver who never presents a tag, a tag the operator refuses, a status
  that went stale: the share goes back to the others);
- its station has shown one connector only (connector 0 is the station itself): on a
  station with several, the limit of a connector without a session is 0 W until its
  session starts (see the dispatcher's connector profiles), so a share would only be
  taken from the others; and a station that applies its cap to each connector could draw
  it on each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Connector statuses that say an EV is plugged in: in OCPP 1.6 before its session starts,
# while it charges or is paused; in 2.0.1 the connector is Occupied.
PLUGGED_IN = frozenset({"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Occupied"})
HOLD = timedelta(seconds=2)
LONGEST = timedelta(minutes=3)

@dataclass(slots=True)
class _Connector:
    status: str = ""
    since: datetime | None = None  # when it last began to wait (None: not waiting)
    tx_open: bool = False  # as the caller knows it (its open transactions survive reboots)
    ended: bool = False  # a transaction ended since its last status outside PLUGGED_IN


class PluggedConnectors:
    """Each connector's status and transaction, as far as they tell whether an EV waits."""

    def __init__(self) -> None:
        # by station, then connector: a station's boot forgets its own without a scan of
        # every station's (thousands boot at once in a storm)
        self._stations: dict[str, dict[int, _Connector]] = {}
        self._highest: dict[str, int] = {}  # the highest connector id each station showed

    def _of(self, station_id: str, connector_id: int) -> _Connector:
        if connector_id > self._highest.get(station_id, 0):
            self._highest[station_id] = connector_id
        connectors = self._stations.setdefault(station_id, {})
        found = connectors.get(connector_id)
        if found is None:
            found = connectors[connector_id] = _Connector()
        return found

    def _update(self, connector: _Connector, at: datetime) -> bool:
        """Whether it began to wait just now."""
        waiting = connector.status in PLUGGED_IN and not connector.tx_open \
            and not connector.ended
        if not waiting:
            connector.since = None
            return False
        if connector.since is None:
            connector.since = at
            return True
        return False

    def status(self, station_id: str, connector_id: int, status: str, at: datetime,
               tx_open: bool) -> bool:
        """A StatusNotification (``tx_open``: a transaction is open on the connector);
        whether its EV began to wait just now."""
        if connector_id <= 0:
            self._highest.setdefault(station_id, 0)
            return False  # the station itself
        connector = self._of(station_id, connector_id)
        connector.status = status
        connector.tx_open = tx_open
        if status not in PLUGGED_IN:
            connector.ended = False
        return self._update(connector, at)

    def transaction(self, station_id: str, connector_id: int, open_: bool,
                    at: datetime) -> None:
        """A transaction started (``open_``) or ended on the connector."""
        connector = self._of(station_id, connector_id)
        connector.tx_open = open_
        if not open_:
            connector.ended = True
        self._update(connector, at)

    def forget(self, station_id: str) -> list[int]:
        """It rebooted or was forgotten: its connectors report afresh. Those that were
        waiting."""
        connectors = self._stations.pop(station_id, {})
        self._highest.pop(station_id, None)
        return [cid for cid, connector in connectors.items() if connector.since is not None]

    def waiting_since(self, station_id: str, connector_id: int) -> datetime | None:
        connector = self._stations.get(station_id, {}).get(connector_id)
        return connector.since if connector is not None else None

    def counted(self, now: datetime) -> list[tuple[str, int, datetime]]:
        """(station, connector, since when) of each EV the plan counts as a session now."""
        found = []
        for station_id, connectors in self._stations.items():
            if self._highest.get(station_id, 0) > 1:
                continue
            for connector_id, connector in connectors.items():
                since = connector.since
                if since is not None and since + HOLD <= now < since + LONGEST:
                    found.append((station_id, connector_id, since))
        return found
