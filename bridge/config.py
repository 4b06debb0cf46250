"""The site configuration (YAML), validated before anything starts."""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bridge.loopback import is_loopback_host
from bridge.ocpp.tls import client_context, server_context
from bridge.passwords import NotAPasswordHash, parse_hash
from bridge.performance import BaselineSettings, baseline_reach
from bridge.retention import DEFAULT_DAYS, Retention
from bridge.upstream.address import STATION_ID_FIELD
from bridge.web.transport import tls_context
from bridge.worst_case import Declared
from policies.fleet import Circuit, Site, StationInfo
from policies.model import PRESETS, Policy, parse_policy, preset_text
from policies.validation import InvalidDocument, KeyPath, Problem, parse_yaml, validate_yaml
from ven.oadr3.settings import MissingSecret, Oadr3Keys, Ven3Settings
from ven.oadr20b.client import TlsSettings, transport_warnings
from ven.oadr20b.signatures import canonical_pin
from ven.shared import is_loopback_url


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSection(_Section):
    """HTTPS towards the VTN: OpenADR 2.0b asks for TLS 1.2 with client certificates."""

    cert: str | None = None  # the VEN's client certificate (PEM)
    key: str | None = None  # its private key (PEM)
    key_passphrase_env: str | None = None  # environment variable holding the key's passphrase
    ca_file: str | None = None  # CA bundle for the VTN's certificate (default: the system's)
    vtn_fingerprint: str | None = None  # pin: SHA-256 of the VTN's certificate, or the short form
    check_hostname: bool = True
    xml_signatures: bool = False  # sign every message; accept only VTN messages signed by
    vtn_signing_fingerprint: str | None = None  # this certificate (default: vtn_fingerprint)

    @field_validator("vtn_fingerprint", "vtn_signing_fingerprint")
    @classmethod
    def _pin(cls, value: str | None) -> str | None:
        # one form for every pin, however written (case, colons): TLS and signatures compare alike
        return None if value is None else canonical_pin(value)

    @model_validator(mode="after")
    def _consistent(self) -> TlsSection:
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together: give both or neither")
        if self.xml_signatures and not (self.cert and self.key):
            raise ValueError("xml_signatures needs cert and key to sign with")
        if self.xml_signatures and not (self.vtn_signing_fingerprint or self.vtn_fingerprint):
            raise ValueError("xml_signatures needs vtn_signing_fingerprint (or vtn_fingerprint)"
                             " to check the VTN's signatures against")
        return self


class VenSection(Oadr3Keys, _Section):
    """The VTN and how to speak to it. ``protocol`` picks the VEN: OpenADR 2.0b (the keys
    below, ``tls`` and ``party_id`` its own) or 3 (the keys of :class:`Oadr3Keys`: auth,
    poll_interval_s, openadr_version, webhook). The keys of the other protocol are refused
    (:func:`_protocol_problems`)."""

    vtn_url: str
    ven_name: str = Field(min_length=1)
    resource_id: str | None = None  # the site's name in reports; defaults to ven_name
    poll_retry_max_s: float = Field(default=60, gt=0)
    # eiTarget: resource ids and group ids the VTN may name, each mapped to the stations it
    # means; party_id names the whole site. Events naming none of these (nor the VEN, nor
    # resource_id) are not for this site: opted out of and not acted on.
    resources: dict[str, tuple[str, ...]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    party_id: str | None = None
    tls: TlsSection | None = None

    @model_validator(mode="after")
    def _tls_needs_https(self) -> VenSection:
        if self.tls is not None and not self.vtn_url.startswith("https://"):
            raise ValueError("ven.tls is given but vtn_url is not https://")
        return self

    @field_validator("vtn_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class ConnectorSection(_Section):
    id: int = Field(ge=1)
    max_current_a: float = Field(gt=0, le=500)  # per phase, where lower than the station's


class StationSection(_Section):
    id: str = Field(min_length=1)
    max_current_a: float | None = Field(default=None, gt=0, le=500)
    phases: Literal[1, 3] | None = None
    # OCPP security profiles 1 and 2; made by `drbridge hash-password`.
    password_hash: str | None = None

    @field_validator("password_hash")
    @classmethod
    def _a_hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_hash(value)
            except NotAPasswordHash as error:
                raise ValueError(f"{error}; make one with `drbridge hash-password`") from None
        return value
    circuit: str | None = None  # the site.circuits id feeding it; none: the connection itself
    phase: Literal["L1", "L2", "L3"] | None = None  # the line a single-phase station is on
    max_power_kw: float | None = Field(default=None, gt=0)
    connectors: tuple[ConnectorSection, ...] = ()
    # Local controller, security profile 3 towards the operator: this station's own client
    # certificate and key (PEM), in place of ocpp.upstream's.
    upstream_client_certificate: str | None = None
    upstream_client_private_key: str | None = None


class SecuritySection(_Section):
    # OCPP security profile: 0 none, 1 Basic auth, 2 TLS and Basic auth, 3 TLS client certificates
    profile: Literal[0, 1, 2, 3] = 0
    tls_certificate: str | None = None  # PEM, the bridge's certificate chain (profiles 2, 3)
    tls_private_key: str | None = None
    tls_client_ca: str | None = None  # PEM, the CA(s) that sign station certificates (profile 3)
    max_message_bytes: int = Field(default=131_072, ge=1024, le=16 * 2**20)
    max_auth_failures: int = Field(default=5, ge=1)  # per station id and address
    max_auth_failures_per_address: int = Field(default=50, ge=1)
    auth_failure_window_s: float = Field(default=60, gt=0)
    auth_block_s: float = Field(default=300, gt=0)
    max_connections_per_address: int = Field(default=1000, ge=0)  # 0: no limit
    max_new_connections_per_s: int = Field(default=100, ge=0)  # per address; 0: no limit
    # Loopback is where simulators and benchmarks connect from, thousands at once.
    limit_loopback: bool = False


class UpstreamSection(_Section):
    """Local-controller mode: the operator's CSMS behind drbridge (README "Local controller")."""

    # drbridge connects to <url>/<station id> (or to the url with {station_id} replaced, for
    # a CSMS whose path goes on after the id), with the station's subprotocol
    url: str
    # While the operator is unreachable: an id it answered before gets that answer (cache),
    # unknown ids are refused (cache, reject) or accepted (accept); reject refuses all.
    offline_authorization: Literal["cache", "accept", "reject"] = "cache"
    # How long the operator may take to answer a station's message before drbridge answers
    # in its place (and counts the link as down); also how long an Authorize waits for a
    # link that is not open yet.
    call_timeout_s: float = Field(default=5, gt=0)
    reconnect_min_s: float = Field(default=1, gt=0)  # first wait before connecting again
    reconnect_max_s: float = Field(default=60, gt=0)  # longest wait (doubling, jittered)
    ca_file: str | None = None  # wss://: the CA(s) the CSMS's certificate must chain to
    # Security profile 3 towards the operator: a client certificate and key (PEM) for every
    # station (a station's own upstream_client_* take precedence)
    client_certificate: str | None = None
    client_private_key: str | None = None

    @field_validator("url")
    @classmethod
    def _websocket(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        if value.count(STATION_ID_FIELD) > 1:
            raise ValueError(f"name {STATION_ID_FIELD} once at most")
        # with the placeholder the url is the CSMS's own path, trailing slash and all
        return value if STATION_ID_FIELD in value else value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamSection:
        if bool(self.client_certificate) != bool(self.client_private_key):
            raise ValueError("client_certificate and client_private_key go together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self


class OcppSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9000, ge=0, le=65535)
    # When empty, any station id is accepted; otherwise only these.
    stations: tuple[StationSection, ...] = ()
    call_timeout_s: float = Field(default=10, gt=0)
    retry_s: float = Field(default=5, gt=0)
    default_max_current_a: float = Field(default=32, gt=0, le=500)
    # Asked of every station at boot (MeterValueSampleInterval) unless it holds it already;
    # 0 keeps the station's own.
    # Many ship with 60 s or more, which leaves the measured load a minute behind.
    meter_interval_s: int = Field(default=10, ge=0, le=3600)
    security: SecuritySection = Field(default_factory=SecuritySection)
    # 0: the stations' websockets end in the bridge's own process. N: in N edge worker
    # processes on the same port, which relay every frame to the bridge: past one core for
    # the handshakes, TLS and framing of thousands of stations (see the README).
    workers: int = Field(default=0, ge=0, le=64)

    @field_validator("workers")
    @classmethod
    def _workers_on_posix(cls, value: int) -> int:
        if value and sys.platform == "win32":
            raise ValueError("edge workers need Linux or another POSIX system (they share"
                             " the bridge's sockets); set 0 on Windows")
        return value
    # A station measured above the limit it may hold (the highest over the grace time
    # before the reading: meter lag, the EV's ramp) by more than the tolerance, two readings
    # in a row, is flagged non-compliant and counted at its measured draw. Two meter
    # intervals of 10 s: flagged within about 20 s.
    compliance_tolerance_w: float = Field(default=500, ge=0)
    compliance_grace_s: float = Field(default=20, gt=0)
    # A station the bridge cannot steer is counted at its measured peak (plus a margin)
    # once its session has drawn this long, rather than at its hardware maximum.
    learn_peak_after_s: float = Field(default=600, gt=0)
    # Local controller: keep the site's own CSMS; drbridge forwards to it and adds DR limits.
    upstream: UpstreamSection | None = None


class CircuitSection(_Section):
    """A panel or feeder; circuits may nest."""

    id: str = Field(min_length=1)
    max_current_a: float | None = Field(default=None, gt=0)  # per phase
    max_power_kw: float | None = Field(default=None, gt=0)
    circuits: tuple[CircuitSection, ...] = ()


class SiteSection(_Section):
    capacity_kw: float = Field(gt=0)
    voltage_v: float = Field(default=230, gt=0, le=1000)
    phases: Literal[1, 3] = 3
    max_current_a: float | None = Field(default=None, gt=0)  # per phase at the connection
    circuits: tuple[CircuitSection, ...] = ()

    def flat_circuits(self) -> list[tuple[CircuitSection, str | None, KeyPath]]:
        """Every circuit with its parent's id and its key path in the file."""
        found: list[tuple[CircuitSection, str | None, KeyPath]] = []

        def walk(items: tuple[CircuitSection, ...], parent: str | None, path: KeyPath) -> None:
            for index, circuit in enumerate(items):
                here = (*path, "circuits", index)
                found.append((circuit, parent, here))
                walk(circuit.circuits, circuit.id, here)

        walk(self.circuits, None, ("site",))
        return found


class RetentionSection(_Section):
    """Days each growing table of the store is kept (null: for good); the defaults and why
    they are what they are: :mod:`bridge.retention`."""

    profiles_days: int | None = Field(default=DEFAULT_DAYS["profiles"], ge=1)
    samples_days: int | None = Field(default=DEFAULT_DAYS["samples"], ge=1)
    plans_days: int | None = Field(default=DEFAULT_DAYS["plans"], ge=1)
    site_load_days: int | None = Field(default=DEFAULT_DAYS["site_load"], ge=1)
    transactions_days: int | None = Field(default=DEFAULT_DAYS["transactions"], ge=1)

    def retention(self) -> Retention:
        def days(value: int | None) -> timedelta | None:
            return None if value is None else timedelta(days=value)

        return Retention(profiles=days(self.profiles_days), samples=days(self.samples_days),
                         plans=days(self.plans_days), site_load=days(self.site_load_days),
                         transactions=days(self.transactions_days))


class StorageSection(_Section):
    path: str = "var/drbridge.db"
    retention: RetentionSection = Field(default_factory=RetentionSection)


class TelemetrySection(_Section):
    interval_s: int = Field(default=60, ge=1, le=3600)
    # A station silent for longer no longer counts towards the measured site load.
    stale_after_s: float = Field(default=180, gt=0)
    # ask stations for voltage and current per phase and frequency; TELEMETRY_USAGE then
    # carries the site's lowest and mean voltage per phase
    voltage: bool = True


def _ip_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (such as 10.0.0.5 or "
                         "10.0.0.0/24)") from None
    return value


class WebSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)  # 0: any free port (tests)
    # `drbridge hash-password` prints one; without it the dashboard is read-only.
    password_hash: str | None = None
    session_ttl_s: float = Field(default=8 * 3600, gt=0)
    # Whether the read API and /metrics need a login too (None: unless on loopback only and
    # not served through a proxy).
    require_login: bool | None = None
    # For scrapers of /metrics: the token, as Bearer or as the Basic auth password.
    metrics_token_hash: str | None = None
    # HTTPS: the dashboard's certificate chain and its key (PEM)
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    # Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed.
    trusted_proxies: tuple[Annotated[str, AfterValidator(_ip_network)], ...] = ()

    @field_validator("password_hash", "metrics_token_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_hash(value)
            except NotAPasswordHash as error:
                raise ValueError(f"{error}; run `drbridge hash-password` again") from None
        return value

    @property
    def login_required(self) -> bool:
        if self.require_login is not None:
            return self.require_login
        # behind a proxy every client seems to come from the proxy's (often loopback) address
        return not is_loopback_host(self.host) or bool(self.trusted_proxies)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certificate else "http"


class ReportSection(_Section):
    # Baseline: the site's load over the event's window on this many previous comparable days
    baseline_days: int = Field(default=10, ge=1, le=90)
    # fewer days with data than this and the baseline is the load before the event
    baseline_min_days: int = Field(default=3, ge=1, le=90)
    comparable_days: Literal["same_day_type", "all"] = "same_day_type"
    pre_event_s: float = Field(default=3600, gt=0)  # window of the fallback baseline
    interval_s: int = Field(default=300, ge=1, le=3600)  # interval of the CSV and plot


class ConfigModel(_Section):
    ven: VenSection
    ocpp: OcppSection = Field(default_factory=OcppSection)
    site: SiteSection
    policy: str = "default"
    storage: StorageSection = Field(default_factory=StorageSection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    web: WebSection = Field(default_factory=WebSection)
    report: ReportSection = Field(default_factory=ReportSection)


@dataclass(frozen=True)
class Config:
    """A loaded configuration: the validated model, its policy, and resolved paths."""

    model: ConfigModel
    policy: Policy
    source: Path
    storage_path: Path
    # valid but unsafe settings, with their keys and lines (see :meth:`site_warnings`)
    cautions: tuple[Problem, ...] = ()
    lines: dict[KeyPath, int] = field(default_factory=dict, compare=False)  # key -> file line

    @property
    def site(self) -> Site:
        s = self.model.site
        circuits = tuple(
            Circuit(c.id, parent, c.max_current_a,
                    None if c.max_power_kw is None else c.max_power_kw * 1000)
            for c, parent, _ in s.flat_circuits()
        )
        return Site(capacity_w=s.capacity_kw * 1000, voltage_v=s.voltage_v, phases=s.phases,
                    max_current_a=s.max_current_a, circuits=circuits)

    @property
    def resource_id(self) -> str:
        return self.model.ven.resource_id or self.model.ven.ven_name

    @cached_property
    def _listed(self) -> dict[str, StationSection]:
        return {s.id: s for s in self.model.ocpp.stations}

    def station_info(self, station_id: str) -> StationInfo:
        # Called per message and per plan for every station: no work beyond a lookup.
        info = self._infos.get(station_id)
        if info is None:
            info = self._infos[station_id] = self._make_station_info(station_id)
        return info

    @cached_property
    def _infos(self) -> dict[str, StationInfo]:
        return {}

    def forget_station(self, station_id: str) -> None:
        """Drop a station's cached details (the bridge forgot an id that never booted)."""
        self._infos.pop(station_id, None)

    def _make_station_info(self, station_id: str) -> StationInfo:
        listed = self._listed.get(station_id)
        site = self.model.site
        return StationInfo(
            station_id=station_id,
            phases=(listed.phases if listed and listed.phases else site.phases),
            voltage_v=site.voltage_v,
            max_current_a=(
                listed.max_current_a
                if listed and listed.max_current_a
                else self.model.ocpp.default_max_current_a
            ),
            circuit=listed.circuit if listed else None,
            phase=int(listed.phase[1]) if listed and listed.phase else 1,
            max_power_w=listed.max_power_kw * 1000 if listed and listed.max_power_kw else None,
            connector_max_a=tuple((c.id, c.max_current_a) for c in listed.connectors)
            if listed else (),
        )

    def declared(self, station_id: str) -> Declared:
        """Which of the station's hardware limits the configuration states."""
        listed = self._listed.get(station_id)
        return Declared(phases=bool(listed and listed.phases) or self.model.site.phases == 1,
                        max_current=bool(listed and listed.max_current_a))

    def target_stations(self, resources: Iterable[str], groups: Iterable[str]) -> frozenset[str]:
        """The stations an event's matched resource ids and group ids stand for."""
        ven = self.model.ven
        stations: set[str] = set()
        for resource in resources:
            stations.update(ven.resources.get(resource, ()))
        for group in groups:
            stations.update(ven.groups.get(group, ()))
        return frozenset(stations)

    @cached_property
    def tls(self) -> TlsSettings | None:
        """ven.tls with paths resolved and the passphrase read from its variable."""
        tls = self.model.ven.tls
        if tls is None:
            return None
        base = self.source.resolve().parent

        def path(value: str | None) -> str | None:
            return None if value is None else str(base / value)

        passphrase = os.environ.get(tls.key_passphrase_env) if tls.key_passphrase_env else None
        return TlsSettings(
            cert=path(tls.cert), key=path(tls.key), passphrase=passphrase,
            ca_file=path(tls.ca_file), vtn_fingerprint=tls.vtn_fingerprint,
            check_hostname=tls.check_hostname, xml_signatures=tls.xml_signatures,
            vtn_signing_fingerprint=tls.vtn_signing_fingerprint,
        )

    @property
    def openadr3(self) -> bool:
        return self.model.ven.protocol == "3"

    def ven3_settings(self, environ: Mapping[str, str] | None = None) -> Ven3Settings:
        """The OpenADR 3 VEN's settings: secrets read from their variables (raises
        :class:`~ven.oadr3.settings.MissingSecret`), webhook TLS files resolved against the
        config file's folder, the site sampled for reports every telemetry interval (at
        most every 10 s)."""
        ven = self.model.ven
        settings = ven.settings(
            vtn_url=ven.vtn_url, ven_name=ven.ven_name, resource_id=self.resource_id,
            group_ids=ven.groups, resource_ids=ven.resources, retry_max_s=ven.poll_retry_max_s,
            voltage_phases=("L1", "L2", "L3") if self.model.telemetry.voltage else (),
            environ=environ)
        hook = ven.webhook
        if hook is not None and hook.tls_cert and hook.tls_key:
            hook = hook.model_copy(update={"tls_cert": str(self.resolve(hook.tls_cert)),
                                           "tls_key": str(self.resolve(hook.tls_key))})
        return replace(settings, webhook=hook, sample_interval=timedelta(
            seconds=min(self.model.telemetry.interval_s, SAMPLE_EVERY_S)))

    def warnings(self) -> list[str]:
        """What is valid but unsafe in this configuration."""
        # the 2.0b VEN's transport; OpenADR 3's is among the cautions
        transport = [] if self.openadr3 else transport_warnings(self.model.ven.vtn_url,
                                                                self.tls)
        return transport + self.site_warnings() + self._station_warnings()

    def site_warnings(self) -> list[str]:
        """What is unsafe on the site's side (stations, dashboard) and, with OpenADR 3, on
        the VTN's: file, line, key, fix."""
        return [caution.describe(str(self.source)) for caution in self.cautions]

    def _station_warnings(self) -> list[str]:
        """Listed stations whose hardware maximum is left to the default."""
        default = self.model.ocpp.default_max_current_a
        warnings = []
        for index, station in enumerate(self.model.ocpp.stations):
            if station.max_current_a:
                continue
            path: KeyPath = ("ocpp", "stations", index)
            line = self.lines.get(path)
            where = f"{self.source}:{line}: " if line else f"{self.source}: "
            warnings.append(
                f"{where}ocpp.stations[{index}] ({station.id}): no max_current_a; should it "
                f"not follow our profiles, it is counted at ocpp.default_max_current_a "
                f"({default:g} A per phase) until it tells its maximum: add its rating")
        return warnings

    def accepts_station(self, station_id: str) -> bool:
        return not self._listed or station_id in self._listed

    @property
    def retention(self) -> Retention:
        return self.model.storage.retention.retention()

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        return (self.source.resolve().parent / path).resolve()


def _load_policy(name: str, base: Path, source: str, lines: dict) -> Policy:
    if name in PRESETS:
        return parse_policy(preset_text(name), f"<preset {name}>")
    path = (base / name).resolve()
    if not path.is_file():
        raise InvalidDocument(source, [Problem(
            ("policy",), lines.get(("policy",)),
            f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a policy file",
        )])
    return parse_policy(path.read_text("utf-8"), str(path))


_TLS_KEYS = ("tls_certificate", "tls_private_key", "tls_client_ca")
_TLS_KEY_MEANING = {
    "tls_certificate": "the bridge's certificate chain, a PEM file",
    "tls_private_key": "the key of tls_certificate, an unencrypted PEM file",
    "tls_client_ca": "the CA certificate(s) that sign station certificates, a PEM file",
}


def _security_problems(ocpp: OcppSection, base: Path, lines: dict) -> list[Problem]:
    """What the chosen security profile needs and the config lacks (or has in vain)."""
    security = ocpp.security
    profile = security.profile

    def problem(path: tuple[str | int, ...], message: str) -> Problem:
        full = ("ocpp", *path)
        # the key's own line, or its nearest parent's when the key is missing
        line = next((lines[full[:cut]] for cut in range(len(full), 0, -1)
                     if full[:cut] in lines), None)
        return Problem(full, line, message)

    problems: list[Problem] = []
    if profile in (1, 2) and not ocpp.stations:
        problems.append(problem(("stations",), f"security profile {profile} needs the stations "
                                "listed, each with a password_hash"))
    for index, station in enumerate(ocpp.stations):
        if profile in (1, 2) and station.password_hash is None:
            problems.append(problem(("stations", index, "password_hash"),
                                    f"required by security profile {profile} (station "
                                    f"{station.id!r}); make one with `drbridge hash-password`"))
        elif profile not in (1, 2) and station.password_hash is not None:
            problems.append(problem(("stations", index, "password_hash"),
                                    f"security profile {profile} asks stations for no password;"
                                    " set ocpp.security.profile to 1 or 2, or remove this key"))
    needed = {2: _TLS_KEYS[:2], 3: _TLS_KEYS}.get(profile, ())
    paths: dict[str, Path] = {}
    for key in _TLS_KEYS:
        value = getattr(security, key)
        if key in needed and value is None:
            problems.append(problem(("security", key), f"required by security profile {profile}:"
                                    f" {_TLS_KEY_MEANING[key]}"))
        elif key not in needed and value is not None:
            problems.append(problem(("security", key), f"not used by security profile {profile}"
                                    " (TLS keys: profiles 2 and 3; the client CA: profile 3)"))
        elif value is not None:
            path = (base / value).resolve()
            if not path.is_file():
                problems.append(problem(("security", key), f"no such file: {path}"))
            else:
                paths[key] = path
    if not problems and needed:
        try:
            server_context(paths["tls_certificate"], paths["tls_private_key"], None)
        except (OSError, ssl.SSLError) as error:
            problems.append(problem(("security", "tls_certificate"),
                                    f"cannot use this certificate with tls_private_key: {error}"))
        if "tls_client_ca" in paths:
            try:
                ssl.create_default_context(cafile=paths["tls_client_ca"])
            except (OSError, ssl.SSLError) as error:
                problems.append(problem(("security", "tls_client_ca"),
                                        f"not a usable CA file (PEM): {error}"))
    return problems
def _upstream_problems(ocpp: OcppSection, base: Path, lines: dict) -> list[Problem]:
    """What local-controller mode (ocpp.upstream) needs and the config lacks."""
    problems: list[Problem] = []
    upstream = ocpp.upstream
    for index, station in enumerate(ocpp.stations):
        path: KeyPath = ("ocpp", "stations", index)
        given = (station.upstream_client_certificate, station.upstream_client_private_key)
        if any(given) and upstream is None:
            problems.append(_at(lines, (*path, "upstream_client_certificate"),
                                "only used in local-controller mode: add ocpp.upstream, or "
                                "remove this key"))
        elif any(given) and not all(given):
            problems.append(_at(lines, (*path, "upstream_client_certificate"),
                                "upstream_client_certificate and upstream_client_private_key "
                                "go together: give both or neither"))
    if upstream is None:
        return problems
    certificates = [(("ocpp", "upstream"), upstream.client_certificate,
                     upstream.client_private_key)]
    certificates += [(("ocpp", "stations", i), s.upstream_client_certificate,
                      s.upstream_client_private_key) for i, s in enumerate(ocpp.stations)]
    ca_file = None
    if upstream.ca_file is not None:
        ca_file = (base / upstream.ca_file).resolve()
        if not ca_file.is_file():
            problems.append(_at(lines, ("ocpp", "upstream", "ca_file"),
                                f"no such file: {ca_file}"))
            ca_file = None
    for path, certificate, key in certificates:
        if certificate is None or key is None:
            continue
        prefix = "" if path == ("ocpp", "upstream") else "upstream_"
        where: KeyPath = (*path, f"{prefix}client_certificate")
        if not upstream.url.startswith("wss://"):
            problems.append(_at(lines, where, "a client certificate needs TLS: make "
                                "ocpp.upstream.url wss://"))
            continue
        files = [(base / certificate).resolve(), (base / key).resolve()]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            problems.append(_at(lines, where, f"no such file: {', '.join(missing)}"))
            continue
        try:
            client_context(ca_file, *files)
        except (OSError, ssl.SSLError) as error:
            problems.append(_at(lines, where, f"cannot use this certificate with its private "
                                f"key: {error} (an unencrypted PEM key that matches it)"))
    return problems


def _at(lines: dict, path: KeyPath, message: str) -> Problem:
    """A problem at a key, on its own line or, for a key left out, its nearest parent's."""
    line = next((lines[path[:cut]] for cut in range(len(path), 0, -1) if path[:cut] in lines),
                None)
    return Problem(path, line, message)


def _web_problems(web: WebSection, base: Path, lines: dict) -> list[Problem]:
    """What the dashboard's settings cannot work with."""
    if not web.enabled:
        return []
    problems: list[Problem] = []
    if web.login_required and web.password_hash is None and web.require_login:
        problems.append(_at(lines, ("web", "require_login"),
                            "a login needs web.password_hash: add the line `drbridge "
                            "hash-password` prints, or set require_login: false"))
    given = {key: getattr(web, key) for key in ("tls_certificate", "tls_private_key")}
    paths: dict[str, Path] = {}
    for key, value in given.items():
        other = "tls_private_key" if key == "tls_certificate" else "tls_certificate"
        if value is None:
            if given[other] is not None:
                problems.append(_at(lines, ("web", key), f"required with web.{other}: give "
                                    "both the certificate chain and its key (PEM), or neither"))
            continue
        path = (base / value).resolve()
        if not path.is_file():
            problems.append(_at(lines, ("web", key), f"no such file: {path}"))
        else:
            paths[key] = path
    if len(paths) == 2:
        try:
            tls_context(paths["tls_certificate"], paths["tls_private_key"])
        except (OSError, ssl.SSLError) as error:
            problems.append(_at(lines, ("web", "tls_certificate"),
                                f"cannot use this certificate with web.tls_private_key: {error}"
                                " (an unencrypted PEM key that matches the certificate)"))
    return problems


def _cautions(model: ConfigModel, lines: dict) -> tuple[Problem, ...]:
    """Valid but unsafe: a station port or dashboard open to the network, an OpenADR 3 VTN
    reached without TLS."""
    cautions = _openadr3_cautions(model.ven, lines) if model.ven.protocol == "3" else []
    ocpp = model.ocpp
    if ocpp.security.profile == 0 and not ocpp.stations and not is_loopback_host(ocpp.host):
        cautions.append(_at(lines, ("ocpp", "stations"), (
            f"open admission: security profile 0, no stations listed, and stations are "
            f"accepted on {ocpp.host}:{ocpp.port}; any client that reaches it can connect "
            "under any id and start sessions that take the site's capacity from the real "
            "stations. Fix: list the stations under ocpp.stations, or use "
            "ocpp.security.profile 1-3")))
    web = model.web
    if web.enabled and web.login_required and web.password_hash is None:
        # Not an error: a bridge that refused to start over its dashboard would leave the
        # site without DR limits. The read API answers 401 until a password is set.
        why = "is served through web.trusted_proxies" if web.trusted_proxies \
            else f"listens on {web.host}, beyond this machine,"
        cautions.append(_at(lines, ("web", "password_hash"), (
            f"missing: the dashboard {why} so its API and /metrics need a login "
            "(web.require_login defaults to true there), and without a password nobody can "
            "log in: they answer 401. Fix: add the line `drbridge hash-password` prints, or "
            "set web.require_login: false to serve them to anyone who can reach it")))
    elif web.enabled and not is_loopback_host(web.host):
        plain = web.scheme == "http"
        if not web.login_required:
            cautions.append(_at(lines, ("web", "require_login"), (
                f"the dashboard listens on {web.host}:{web.port}"
                f"{' over plain HTTP' if plain else ''} and its API and /metrics need no "
                "login: anyone who can reach it reads the site. Fix: remove "
                "require_login: false (and set web.password_hash), or listen on 127.0.0.1")))
        elif plain and not web.trusted_proxies:
            cautions.append(_at(lines, ("web", "host"), (
                f"the dashboard listens on {web.host}:{web.port} over plain HTTP: the operator"
                " password and session cookie cross the network in cleartext. Fix: set "
                "web.tls_certificate and web.tls_private_key, or serve it through a TLS "
                "reverse proxy (web.trusted_proxies) and listen on 127.0.0.1")))
    return tuple(cautions)


# The OpenADR 3 VEN samples the site for its reports at the telemetry interval, at most
# this far apart (an event's report intervals may be short).
SAMPLE_EVERY_S = 10.0
_ONLY_20B = {
    "tls": "mutual TLS and XML signatures are OpenADR 2.0b's; the OpenADR 3 VEN proves "
           "who it is with ven.auth (OAuth2 or a bearer token) over https:// and checks the "
           "VTN's certificate against the system's CAs",
    "party_id": "OpenADR 3 events name the site by ven.ven_name, ven.resource_id, ven.groups "
                "and ven.resources, or by the targets the utility granted it",
}
_ONLY_3 = ("auth", "poll_interval_s", "openadr_version", "webhook")


def _protocol_problems(model: ConfigModel, base: Path, lines: dict) -> list[Problem]:
    """Keys of the other protocol than ``ven.protocol``, and the OpenADR 3 keys' secrets
    and files."""
    ven = model.ven
    given = ven.model_fields_set
    if ven.protocol != "3":
        return [_at(lines, ("ven", key), "an OpenADR 3 key, and ven.protocol is \"2.0b\"."
                    " Fix: set ven.protocol: \"3\" to speak OpenADR 3, or remove this key")
                for key in _ONLY_3 if key in given and getattr(ven, key) is not None]
    problems = [_at(lines, ("ven", key), f"an OpenADR 2.0b key, and ven.protocol is \"3\" "
                    f"({why}). Fix: remove it, or set ven.protocol: \"2.0b\"")
                for key, why in _ONLY_20B.items()
                if key in given and getattr(ven, key) is not None]
    try:
        ven.settings(vtn_url=ven.vtn_url, ven_name=ven.ven_name, resource_id=ven.ven_name)
    except MissingSecret as missing:
        problems.append(_at(lines, tuple(missing.key.split(".")),
                            f"the environment variable {missing.variable} is not set (or "
                            f"empty). Fix: export it where drbridge runs (the secret itself "
                            f"never goes in the config)"))
    hook = ven.webhook
    if hook is not None and hook.tls_cert and hook.tls_key:
        paths = {key: (base / getattr(hook, key)).resolve() for key in ("tls_cert", "tls_key")}
        missing_files = [key for key, path in paths.items() if not path.is_file()]
        for key in missing_files:
            problems.append(_at(lines, ("ven", "webhook", key), f"no such file: {paths[key]}"))
        if not missing_files:
            try:
                tls_context(paths["tls_cert"], paths["tls_key"])
            except (OSError, ssl.SSLError) as error:
                problems.append(_at(lines, ("ven", "webhook", "tls_cert"),
                                    f"cannot use this certificate with ven.webhook.tls_key: "
                                    f"{error} (an unencrypted PEM key that matches it)"))
    return sorted(problems, key=lambda problem: problem.line or 0)


def _openadr3_cautions(ven: VenSection, lines: dict) -> list[Problem]:
    """Valid but unsafe towards an OpenADR 3 VTN: credentials in clear, or none at all."""
    cautions = []
    clear = ("anyone on the path can read the access token (and the client secret) and "
             "read and forge DR events")
    if not ven.vtn_url.startswith("https://") and not is_loopback_url(ven.vtn_url):
        cautions.append(_at(lines, ("ven", "vtn_url"), (
            f"the VTN {ven.vtn_url} is not on this machine and is reached WITHOUT TLS: "
            f"{clear}. Fix: use the VTN's https:// URL")))
    token_url = ven.auth.token_url
    if token_url and not token_url.startswith("https://") and not is_loopback_url(token_url):
        cautions.append(_at(lines, ("ven", "auth", "token_url"), (
            f"the token endpoint {token_url} is reached WITHOUT TLS: the client secret "
            "crosses the network in clear. Fix: use its https:// URL")))
    hook = ven.webhook
    if hook is not None and not hook.public_url.startswith("https://") and \
            not is_loopback_url(hook.public_url):
        cautions.append(_at(lines, ("ven", "webhook", "public_url"), (
            f"the VTN calls {hook.public_url} WITHOUT TLS: the subscription's bearer token "
            "and the events cross the network in clear, and anyone on the path can send "
            "forged ones. Fix: set ven.webhook.tls_cert and tls_key and an https:// "
            "public_url, or leave out ven.webhook (the VEN polls)")))
    auth = ven.auth
    if not auth.client_id and not auth.bearer_token_env:
        cautions.append(_at(lines, ("ven", "auth"), (
            "no credentials for the VTN: only a VTN open to anyone will answer. Fix: set "
            "ven.auth.client_id and client_secret_env (OAuth2 client credentials), or "
            "bearer_token_env")))
    return cautions


def _check_tls_files(model: ConfigModel, base: Path, source: str, lines: dict) -> None:
    tls = model.ven.tls
    if tls is None:
        return
    problems = []
    for key in ("cert", "key", "ca_file"):
        value = getattr(tls, key)
        if value is not None and not (base / value).is_file():
            where = ("ven", "tls", key)
            problems.append(Problem(where, lines.get(where),
                                    f"no such file {value!r} (relative to the config's folder)"))
    if tls.key_passphrase_env and tls.key_passphrase_env not in os.environ:
        where = ("ven", "tls", "key_passphrase_env")
        problems.append(Problem(where, lines.get(where),
                                f"environment variable {tls.key_passphrase_env} is not set"))
    if problems:
        raise InvalidDocument(source, problems)


def _storage_problems(model: ConfigModel, lines: dict) -> list[Problem]:
    """A site-load history too short for the baseline the reports are set to compute."""
    kept = model.storage.retention.site_load_days
    report = model.report
    settings = BaselineSettings(days=report.baseline_days, min_days=report.baseline_min_days,
                                comparable=report.comparable_days,
                                pre_event=timedelta(seconds=report.pre_event_s))
    reach = baseline_reach(settings)
    if kept is None or timedelta(days=kept) > reach:
        return []
    needed = reach.days + 1
    kind = "days" if report.comparable_days == "all" else "weekdays or weekend days"
    return [_at(lines, ("storage", "retention", "site_load_days"), (
        f"{kept} days of site load cannot hold an event's baseline: report.baseline_days "
        f"asks for the {report.baseline_days} previous {kind}, which reach up to "
        f"{reach.days} days back, and every report would fall back to the load before the "
        f"event. Fix: set it to at least {needed} ({DEFAULT_DAYS['site_load']}, the "
        "default, keeps the past year's events reportable), or lower report.baseline_days"))]


def _tree_problems(model: ConfigModel, lines: dict[KeyPath, int]) -> list[Problem]:
    """What a valid schema can still get wrong about the site's tree."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for circuit, _, path in model.site.flat_circuits():
        if circuit.id in seen:
            problems.append(Problem((*path, "id"), lines.get((*path, "id")),
                                    f"circuit id {circuit.id!r} is used twice; give each its own"))
        seen.add(circuit.id)
    for index, station in enumerate(model.ocpp.stations):
        path: KeyPath = ("ocpp", "stations", index)
        if station.circuit is not None and station.circuit not in seen:
            known = ", ".join(sorted(seen)) or "none are defined under site.circuits"
            problems.append(Problem((*path, "circuit"), lines.get((*path, "circuit")),
                                    f"unknown circuit {station.circuit!r} (known: {known})"))
        phases = station.phases or model.site.phases
        if station.phase is not None and phases != 1:
            problems.append(Problem((*path, "phase"), lines.get((*path, "phase")),
                                    "only a single-phase station (phases: 1) sits on one line"))
    return problems


def load_config_text(text: str, source: Path) -> Config:
    model = validate_yaml(text, str(source), ConfigModel)
    _, lines = parse_yaml(text, str(source))
    problems = _tree_problems(model, lines)
    if problems:
        raise InvalidDocument(str(source), problems)
    base = source.resolve().parent
    problems = _security_problems(model.ocpp, base, lines) + _web_problems(model.web, base, lines) \
        + _upstream_problems(model.ocpp, base, lines) + _protocol_problems(model, base, lines) \
        + _storage_problems(model, lines)
    if problems:
        raise InvalidDocument(str(source), problems)
    policy = _load_policy(model.policy, base, str(source), lines)
    _check_tls_files(model, base, str(source), lines)
    storage = Path(model.storage.path)
    return Config(
        model=model,
        policy=policy,
        source=source,
        storage_path=storage if storage.is_absolute() else base / storage,
        cautions=_cautions(model, lines),
        lines=lines,
    )


def load_config(path: Path) -> Config:
    """Read and validate a config file and the policy it names; raises InvalidDocument."""
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise InvalidDocument(str(path), [Problem((), None, f"cannot read: {error.strerror}")]) \
            from None
    return load_config_text(text, path)
