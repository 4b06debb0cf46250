"""Local-controller mode, site-wide: what every station's forwarding link shares.

With ``ocpp.upstream`` in the configuration, each station's link forwards to the operator's
CSMS (:mod:`bridge.ocpp.upstream_link`); this holds what outlives one link or spans them:
the outage queue and the authorization cache (in the bridge's database), the operator's
profiles on each station (:class:`~bridge.upstream.composition.UpstreamProfiles`, kept in
the database too), the links themselves (for the operator's view), the forwarding
statistics for ``/metrics``, and the two hooks the rest of drbridge asks in this mode:

- the dispatcher's: drbridge's profiles go at the station's top stack level and hold the
  lower of drbridge's limit and the operator's (:meth:`LocalController.stack_level`,
  :meth:`LocalController.limited`);
- the planner's: the operator's own limit of a station now is a ceiling for it, so the
  capacity it blocks goes to the others (:meth:`LocalController.with_ceilings`).
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.link import StationListener
from bridge.ocpp.profiles import (
    STATION_MAX_PROFILE_ID,
    TX_DEFAULT_PROFILE_ID,
    TX_PROFILE_ID,
    BuiltProfile,
    build_profile,
)
from bridge.ocpp.tls import client_context
from bridge.sqlite_db import sqlite_utils
from bridge.upstream.authcache import AuthCache, OfflinePolicy
from bridge.upstream.composition import (
    STATION_MAX,
    TX,
    TX_DEFAULT,
    V16,
    Needs,
    Reserved,
    UpstreamProfile,
    UpstreamProfiles,
    lower_envelope,
)
from bridge.upstream.outage import OutageQueue, Queued
from policies.fleet import StationInfo, Step, value_at

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.ocpp.upstream_link import Forwarding, ForwardingLink16, ForwardingLink201

log = logging.getLogger(__name__)

PROFILES_TABLE = "upstream_profiles"
# every id drbridge gives its own profiles (see bridge.ocpp.profiles)
DRBRIDGE_PROFILE_IDS = frozenset({STATION_MAX_PROFILE_ID,
                                  *range(TX_DEFAULT_PROFILE_ID, TX_PROFILE_ID + 100)})
# All three, always: a place drbridge may take later must not hold the operator's profile.
RESERVED_PURPOSES = frozenset({STATION_MAX, TX_DEFAULT, TX})
# Buckets of the time a forwarded message spends in drbridge (seconds).
ADDED_BUCKETS_S = (0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   1.0)
CEILING_HORIZON = timedelta(seconds=1)
KEEP_DELIVERED = timedelta(days=7)  # delivered messages stay this long, for the record


@dataclass
class ForwardStats:
    """What ``/metrics`` shows of the forwarding."""

    # time a station's message spent in drbridge on its way up and its answer's way back
    added_buckets: list[int] = field(default_factory=lambda: [0] * len(ADDED_BUCKETS_S))
    added_count: int = 0
    added_sum_s: float = 0.0
    # (direction, how) -> messages: to_operator / to_station; forwarded / answered_locally
    # / queued / replayed
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)

    def forwarded(self, added_s: float) -> None:
        self.messages["to_operator", "forwarded"] += 1
        self.added_count += 1
        self.added_sum_s += added_s
        index = bisect_left(ADDED_BUCKETS_S, added_s)  # the first bound not below it
        if index < len(ADDED_BUCKETS_S):
            self.added_buckets[index] += 1


class LocalController:
    """Local-controller mode for the whole site (one per running bridge)."""

    def __init__(self, config: Config, db: sqlite_utils.Database,
                 clock: Callable[[], datetime],
                 caps_of: Callable[[str], Capabilities | None],
                 paused: Callable[[str], bool],
                 on_limits_changed: Callable[[str], None],
                 call_timeout_s: float) -> None:
        section = config.model.ocpp.upstream
        assert section is not None
        self.section = section
        self.config = config
        self.url = section.url
        self.call_timeout_s = section.call_timeout_s
        self.reconnect_s = (section.reconnect_min_s, section.reconnect_max_s)
        self.policy = OfflinePolicy(section.offline_authorization)
        self.needs = Needs(meter_interval_s=config.model.ocpp.meter_interval_s)
        self.station_call_timeout_s = call_timeout_s
        # what the forwarding links hand what they read to (the station events); set once
        # they exist, before any station connects
        self.listener: StationListener | None = None
        self.now = clock
        self._caps_of = caps_of
        self._paused = paused
        self._on_limits_changed = on_limits_changed
        self.db = db
        self.queue = OutageQueue(db)
        self.cache = AuthCache(db)
        table = db.table(PROFILES_TABLE)
        table.create({"station_id": str, "version": str, "profiles": str}, pk="station_id",
                     if_not_exists=True)
        self._profiles: dict[str, UpstreamProfiles] = {}
        for row in table.rows:
            profiles = UpstreamProfiles(row["version"], self._reserved(0))
            profiles.load(json.loads(row["profiles"]))
            self._profiles[row["station_id"]] = profiles
        now = clock()
        self.cache.prune(now)
        self.queue.forget_delivered(now - KEEP_DELIVERED)
        self._backlog: dict[str, int] = self.queue.lengths()
        self.links: dict[str, Forwarding] = {}
        self.stats = ForwardStats()
        self._ssl: dict[str, ssl.SSLContext | None] = {}
        if self._backlog:
            log.info("upstream: %d messages of %d stations wait to be sent to the operator",
                     sum(self._backlog.values()), len(self._backlog))

    # ---- links -------------------------------------------------------------------------------
    def make_link(self, station_id: str, connection: Any,
                  subprotocol: str) -> ForwardingLink16 | ForwardingLink201 | None:
        """The forwarding link for a station that just connected; None for an OCPP version
        this mode does not forward (the station is then served as a central system would)."""
        from bridge.ocpp.upstream_link import FORWARDING_LINKS

        link_class = FORWARDING_LINKS.get(subprotocol)
        if link_class is None:
            log.warning("%s: %s is not forwarded to the operator (local-controller mode takes "
                        "ocpp1.6 and ocpp2.0.1); served by drbridge alone", station_id,
                        subprotocol)
            return None
        assert self.listener is not None, "the runtime gives the controller its listener"
        request = getattr(connection, "request", None)
        authorization = request.headers.get("Authorization") if request is not None else None
        return link_class(station_id, connection, self.listener, self.station_call_timeout_s,
                          self, authorization, subprotocol)

    @staticmethod
    def preferred(subprotocols: Iterable[str]) -> list[str]:
        """The subprotocols to offer stations, those forwarded first: a station that offers
        2.1 and 2.0.1 speaks 2.0.1 with drbridge, so that it can be forwarded."""
        from bridge.ocpp.upstream_link import FORWARDING_LINKS

        offered = list(subprotocols)
        return [p for p in offered if p in FORWARDING_LINKS] + \
            [p for p in offered if p not in FORWARDING_LINKS]

    def attach(self, forwarding: Forwarding) -> None:
        self.links[forwarding.id] = forwarding

    def detach(self, forwarding: Forwarding) -> None:
        if self.links.get(forwarding.id) is forwarding:
            del self.links[forwarding.id]

    def ssl_for(self, station_id: str) -> ssl.SSLContext | None:
        """The TLS context of a station's upstream link (wss://): its own client certificate,
        else the site's, else none."""
        if not self.url.startswith("wss://"):
            return None
        if station_id not in self._ssl:
            section = self.section
            listed = {s.id: s for s in self.config.model.ocpp.stations}.get(station_id)
            certificate, key = section.client_certificate, section.client_private_key
            if listed is not None and listed.upstream_client_certificate:
                certificate = listed.upstream_client_certificate
                key = listed.upstream_client_private_key
            resolve = self.config.resolve
            self._ssl[station_id] = client_context(
                resolve(section.ca_file) if section.ca_file else None,
                resolve(certificate) if certificate else None,
                resolve(key) if key else None)
        return self._ssl[station_id]

    # ---- the operator's profiles -------------------------------------------------------------
    def _reserved(self, level: int) -> Reserved:
        return Reserved(level, DRBRIDGE_PROFILE_IDS, RESERVED_PURPOSES)

    def top_level(self, station_id: str) -> int | None:
        """The station's top stack level, where drbridge's profiles sit; None while its
        capabilities are not known."""
        caps = self._caps_of(station_id)
        return caps.max_stack_level if caps is not None and caps.known else None

    def profiles_of(self, station_id: str, version: str, level: int) -> UpstreamProfiles:
        profiles = self._profiles.get(station_id)
        if profiles is None or profiles.version != version:
            profiles = self._profiles[station_id] = UpstreamProfiles(version, self._reserved(level))
        profiles.reserved = self._reserved(level)
        return profiles

    def profiles_changed(self, station_id: str) -> None:
        """The station holds other profiles of the operator's now: kept, and drbridge's own
        profiles and the plan follow."""
        profiles = self._profiles.get(station_id)
        if profiles is None:
            return
        with self.db.conn:
            self.db.conn.execute(
                f"INSERT INTO {PROFILES_TABLE} (station_id, version, profiles) VALUES (?, ?, ?)"
                " ON CONFLICT(station_id) DO UPDATE SET version = excluded.version,"
                " profiles = excluded.profiles",
                [station_id, profiles.version, json.dumps(profiles.to_json())])
        self._on_limits_changed(station_id)

    def transaction_ended(self, station_id: str, transaction_id: Any, connector_id: int | None,
                          ) -> None:
        """A station's transaction ended: the operator's TxProfiles for it went with it
        (OCPP 1.6 §3.13.1, 2.0.1 K01.FR.16), and one carried by a remote start on the
        connector (installed for the transaction that came)."""
        profiles = self._profiles.get(station_id)
        if profiles is None:
            return
        gone = [p.upstream_id for p in profiles.profiles.values() if p.purpose == TX and (
            p.transaction_id == transaction_id
            or (p.transaction_id is None and connector_id in (None, p.connector)))]
        if gone:
            profiles.forgotten(gone)
            self.profiles_changed(station_id)

    def paused(self, station_id: str) -> bool:
        return self._paused(station_id)

    # ---- the dispatcher's hooks --------------------------------------------------------------
    def stack_level(self, station_id: str, caps: Capabilities) -> int:
        """drbridge's profiles lead their purposes: the station's top stack level."""
        return caps.max_stack_level

    def limited(self, station_id: str, profile: BuiltProfile, info: StationInfo,
                caps: Capabilities, now: datetime, min_current_a: float) -> BuiltProfile:
        """One of drbridge's profiles holding the lower of its limit and the operator's for
        its purpose and connector, at every moment: the station applies only the top level
        within a purpose, so the lower of both must be in it."""
        profiles = self._profiles.get(station_id)
        if profiles is None or not profiles.profiles:
            return profile
        transaction = self._station_tx(station_id, profiles.version, profile.transaction_id)
        theirs = profiles.limit_steps(profile.purpose, profile.connector_id, info, now,
                                      transaction_id=transaction)
        if not theirs:
            return profile
        merged = lower_envelope(profile.applied, theirs)  # where theirs is inf, ours counts
        if [(s.start, s.limit_w) for s in merged] == \
                [(s.start, s.limit_w) for s in profile.applied]:
            return profile
        return build_profile(merged, info, caps, now, min_current_a, profile.purpose,
                             profile.connector_id, profile.transaction_id, profile.stack_level,
                             profile.profile_id)

    def _station_tx(self, station_id: str, version: str, bridge_tx: int | None) -> Any:
        if bridge_tx is None or self.listener is None:
            return None
        named = self.listener.station_transaction(station_id, bridge_tx)
        if named is not None and version == V16:
            try:
                return int(named)
            except ValueError:
                return named
        return named

    # ---- the planner's hook ------------------------------------------------------------------
    def operator_limit(self, station_id: str, info: StationInfo,
                       sessions: Mapping[int, int], now: datetime) -> Step | None:
        """What the operator's profiles alone let the station draw now (W), and whose limit
        it is; None when they set none. ``sessions``: connector -> drbridge's transaction."""
        profiles = self._profiles.get(station_id)
        if profiles is None or not profiles.profiles:
            return None
        found = [value_at(profiles.limit_steps(STATION_MAX, 0, info, now, CEILING_HORIZON), now)]
        if sessions:
            parts = [value_at(profiles.limit_steps(
                TX, connector, info, now, CEILING_HORIZON,
                transaction_id=self._station_tx(station_id, profiles.version, tx)), now)
                for connector, tx in sessions.items()]
            if all(p is not None and not math.isinf(p.limit_w) for p in parts):
                total = sum(p.limit_w for p in parts if p is not None)
                found.append(Step(now, total, "; ".join(p.reason for p in parts if p)))
        limits = [s for s in found if s is not None and not math.isinf(s.limit_w)]
        return min(limits, key=lambda s: s.limit_w) if limits else None

    def with_ceilings(self, stations: Mapping[str, StationInfo],
                      sessions: Mapping[str, Mapping[int, int]],
                      now: datetime) -> dict[str, StationInfo]:
        """The stations as the planner counts them: none above what the operator lets it
        draw now (the capacity a lower limit of the operator's blocks goes to the others)."""
        result = dict(stations)
        for station_id, info in stations.items():
            limit = self.operator_limit(station_id, info, sessions.get(station_id, {}), now)
            if limit is not None and limit.limit_w < info.max_w:
                result[station_id] = replace(info, max_power_w=max(limit.limit_w, 0.0))
        return result

    # ---- the outage queue --------------------------------------------------------------------
    def backlog(self, station_id: str) -> int:
        """The station's messages not yet delivered to the operator (kept in memory: asked
        for every transaction message)."""
        return self._backlog.get(station_id, 0)

    def enqueue(self, station_id: str, version: str, action: str, payload: Mapping[str, Any],
                now: datetime, maybe_delivered: bool = False) -> Queued:
        """Keep a message for the operator; committed when this returns. ``maybe_delivered``:
        it went out and its answer did not come, so the operator may have it already."""
        queued = self.queue.enqueue(station_id, version, action, payload, now)
        if maybe_delivered:
            self.queue.mark_sent(queued.seq, now)
        self._backlog[station_id] = self._backlog.get(station_id, 0) + 1
        self.stats.messages["to_operator", "queued"] += 1
        return queued

    def refresh_backlog(self, station_id: str) -> None:
        length = self.queue.length(station_id)
        if length:
            self._backlog[station_id] = length
        else:
            self._backlog.pop(station_id, None)

    def queue_length(self) -> int:
        return sum(self._backlog.values())

    # ---- the operator's view -----------------------------------------------------------------
    def link_states(self) -> Counter[str]:
        return Counter(forwarding.upstream_state for forwarding in self.links.values())

    def link_state(self, station_id: str) -> str:
        """connecting, up, replaying, down; closed while the station is not connected."""
        forwarding = self.links.get(station_id)
        return forwarding.upstream_state if forwarding is not None else "closed"

    def operator_profiles(self, station_id: str) -> list[UpstreamProfile]:
        """The operator's profiles the station holds (as far as drbridge saw them go)."""
        profiles = self._profiles.get(station_id)
        return list(profiles.profiles.values()) if profiles is not None else []

