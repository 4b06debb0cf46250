"""What stations sent that drbridge read leniently or left out: counted for the operator's
metrics, and logged at WARNING once per station and kind, so a firmware that repeats its
quirk in every message says so once instead of flooding the log."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence

from bridge.ocpp.leniency import Repair

log = logging.getLogger(__name__)

# Keys already logged are few (stations × actions × kinds); past this many, an operator
# has seen enough of them and the memory stays bounded whatever stations send.
MAX_LOGGED = 10_000


class NearMisses:
    def __init__(self) -> None:
        # (action, kind) -> requests read after a repair of that kind
        self.repaired: Counter[tuple[str, str]] = Counter()
        # (measurand, why) -> meter samples left out of every aggregate
        self.ignored_samples: Counter[tuple[str, str]] = Counter()
        self._logged: set[tuple[str, ...]] = set()

    def request_repaired(self, station_id: str, action: str,
                         repairs: Sequence[Repair]) -> None:
        for kind in dict.fromkeys(r.kind for r in repairs):  # a request counts once per kind
            self.repaired[(action, kind)] += 1
            where = ", ".join(r.path for r in repairs if r.kind == kind)
            self._once((station_id, action, kind),
                       "%s: %s read after a repair (%s: %.200s); its next ones are counted in"
                       " drbridge_ocpp_lenient_total, not logged", station_id, action, kind,
                       where)

    def samples_ignored(self, station_id: str, ignored: Iterable[tuple[str, str]]) -> None:
        for measurand, why in ignored:
            self.ignored_samples[(measurand, why)] += 1
            self._once((station_id, measurand, why),
                       "%s: ignored a %s sample (%s); its next ones are counted in"
                       " drbridge_meter_samples_ignored_total, not logged", station_id,
                       measurand, why)

    def _once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        if key in self._logged or len(self._logged) >= MAX_LOGGED:
            return
        self._logged.add(key)
        log.warning(message, *args)
