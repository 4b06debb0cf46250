"""Security profiles 1-3 and the edge's abuse limits, with real stations over real TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import SiteHarness, wait_until
from pki import Authority, Pki
from test_ocpp_edge import exchange
from websockets.typing import Subprotocol

from bridge.passwords import hash_password
from bridge.sim.station import SimulatedStation, StationSpec

OCPP16 = [Subprotocol("ocpp1.6")]
PASSWORDS = {"CP-1": "correct horse battery staple", "CP-2": "Tr0ub4dor&3-station-two"}
WRONG = "not-the-password-at-all"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


# Cheap KDF parameters keep the tests fast; the format and code path are the real ones.
HASHES = {station: hash_password(pw.encode(), log2_n=10) for station, pw in PASSWORDS.items()}


def configure(site: SiteHarness, security: str, stations: str | None = None) -> None:
    """Write the site config with an ``ocpp.security`` section and listed stations."""
    if stations is None:
        stations = "".join(f"    - id: {station}\n      password_hash: {digest}\n"
                           for station, digest in HASHES.items())
    site.write_config()
    text = site.config_path.read_text().replace(
        "  meter_interval_s: 1\n",
        "  meter_interval_s: 1\n" + ("  stations:\n" + stations if stations else "")
        + "  security:\n"
        + "".join(f"    {line}\n" for line in security.strip().splitlines()),
    )
    site.config_path.write_text(text)


def with_workers(site: SiteHarness, count: int) -> None:
    """Add ``ocpp.workers`` to the site config written (0: leave it as it is)."""
    if count:
        text = site.config_path.read_text()
        site.config_path.write_text(text.replace(
            "  meter_interval_s: 1\n", f"  meter_interval_s: 1\n  workers: {count}\n", 1))


def tls_keys(pki: Pki, client_ca: bool = False) -> str:
    keys = f"tls_certificate: {pki.server_cert}\ntls_private_key: {pki.server_key}\n"
    return keys + (f"tls_client_ca: {pki.ca_file}\n" if client_ca else "")


def basic(user: str, password: str | bytes) -> dict[str, str]:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def wss(site: SiteHarness) -> str:
    return f"wss://127.0.0.1:{site.ocpp_port}"


def start_station(site: SiteHarness, station_id: str, url: str, **options: Any) -> SimulatedStation:
    station = SimulatedStation(StationSpec(station_id), url)
    station.connect_options = options
    site.stations.append(station)
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


async def refused_status(url: str, **options: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, subprotocols=OCPP16, open_timeout=5, **options):
            pass
    return refused.value.response.status_code


async def heartbeat_works(url: str, **options: Any) -> bool:
    async with websockets.connect(url, subprotocols=OCPP16, open_timeout=5, **options) as ws:
        reply = await exchange(ws, json.dumps([2, "hb", "Heartbeat", {}]))
        return reply[0] == 3 and reply[1] == "hb"


# ---- profile 1: Basic auth --------------------------------------------------------------------
async def test_profile_1_admits_the_right_password_only_and_never_logs_it(
        site: SiteHarness, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)  # every logger, websockets' header dump included
    caplog.set_level(logging.DEBUG, logger="websockets")  # (`drbridge` quiets it)
    configure(site, "profile: 1")
    await site.start_bridge()
    station = start_station(site, "CP-1", site.url,
                            additional_headers=basic("CP-1", PASSWORDS["CP-1"]))
    await wait_until(lambda: station.booted, what="CP-1 booted with its password")

    url = f"{site.url}/CP-1"
    assert await refused_status(url, additional_headers=basic("CP-1", WRONG)) == 401
    no_credentials = await refused_status(url)
    assert no_credentials == 401
    # another station's valid credentials do not open this station's connection
    assert await refused_status(url, additional_headers=basic("CP-2", PASSWORDS["CP-2"])) == 401
    assert await refused_status(f"{site.url}/CP-9",
                                additional_headers=basic("CP-9", WRONG)) == 404
    assert await heartbeat_works(f"{site.url}/CP-2",
                                 additional_headers=basic("CP-2", PASSWORDS["CP-2"]))

    # what the bridge logged (the stations' own websockets client logs its headers)
    log = "\n".join(caplog.handler.format(r) for r in caplog.records
                    if not r.name.startswith("websockets.client"))
    assert "station 'CP-1' from 127.0.0.1 refused: wrong password" in log
    assert "station 'CP-9' from 127.0.0.1 refused: unknown station" in log
    assert "[redacted]" in log  # websockets did dump the headers, without the credentials
    secrets = [*PASSWORDS.values(), WRONG]
    secrets += [basic(user, pw)["Authorization"].split()[1]
                for user in ("CP-1", "CP-2", "CP-9") for pw in secrets]
    for secret in secrets:
        assert secret not in log


async def test_a_challenge_names_basic_auth(site: SiteHarness):
    configure(site, "profile: 1")
    await site.start_bridge()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{site.url}/CP-1", subprotocols=OCPP16)
    assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_binary_authorization_key(site: SiteHarness):
    """OCPP 1.6 AuthorizationKeys may be raw bytes (set as hex with ChangeConfiguration)."""
    key = bytes.fromhex("0001020304050607FFFFFFFFFFFFFFFFFFFFFFFF")
    stations = f"    - id: AL1000\n      password_hash: {hash_password(key, log2_n=10)}\n"
    configure(site, "profile: 1", stations)
    await site.start_bridge()
    assert await heartbeat_works(f"{site.url}/AL1000", additional_headers=basic("AL1000", key))
    assert await refused_status(f"{site.url}/AL1000",
                                additional_headers=basic("AL1000", key.hex())) == 401


async def test_repeated_failures_are_refused_for_a_while(site: SiteHarness):
    configure(site, "profile: 1\nmax_auth_failures: 3\nauth_block_s: 600")
    await site.start_bridge()
    url = f"{site.url}/CP-1"
    for _ in range(3):
        assert await refused_status(url, additional_headers=basic("CP-1", WRONG)) == 401
    with pytest.raises(websockets.InvalidStatus) as blocked:
        await websockets.connect(url, subprotocols=OCPP16,
                                 additional_headers=basic("CP-1", PASSWORDS["CP-1"]))
    assert blocked.value.response.status_code == 429
    assert 0 < int(blocked.value.response.headers["Retry-After"]) <= 600
    # a neighbour behind the same address (a site router) is not locked out
    assert await heartbeat_works(f"{site.url}/CP-2",
                                 additional_headers=basic("CP-2", PASSWORDS["CP-2"]))


# ---- profile 2: TLS and Basic auth ------------------------------------------------------------
# workers 2: TLS ends in the edge workers, which relay the certificate to the bridge
@pytest.mark.parametrize("workers", [0, 2])
async def test_profile_2_tls_with_basic_auth(site: SiteHarness, pki: Pki, workers: int):
    configure(site, "profile: 2\n" + tls_keys(pki))
    with_workers(site, workers)
    await site.start_bridge()
    station = start_station(site, "CP-1", wss(site), ssl=pki.client_context(),
                            additional_headers=basic("CP-1", PASSWORDS["CP-1"]))
    await wait_until(lambda: station.booted, what="CP-1 booted over TLS")
    await wait_until(lambda: station.installed_profiles != {}, what="a profile over TLS")

    assert await refused_status(f"{wss(site)}/CP-2", ssl=pki.client_context(),
                                additional_headers=basic("CP-2", WRONG)) == 401
    # plain websockets on the TLS port get nowhere
    with pytest.raises((websockets.InvalidMessage, websockets.InvalidHandshake, OSError)):
        await websockets.connect(f"{site.url}/CP-2", subprotocols=OCPP16, open_timeout=5,
                                 additional_headers=basic("CP-2", PASSWORDS["CP-2"]))
    # a station that does not trust the certificate refuses the bridge
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(f"{wss(site)}/CP-2", subprotocols=OCPP16, open_timeout=5,
                                 ssl=ssl.create_default_context(),
                                 additional_headers=basic("CP-2", PASSWORDS["CP-2"]))


async def test_tls_offers_the_rsa_key_exchange_suites_ocpp_names(site: SiteHarness, pki: Pki):
    configure(site, "profile: 2\n" + tls_keys(pki))
    await site.start_bridge()
    for suite in ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"):
        context = pki.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(suite)
        assert await heartbeat_works(f"{wss(site)}/CP-1", ssl=context,
                                     additional_headers=basic("CP-1", PASSWORDS["CP-1"]))
    old = pki.client_context()
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        await websockets.connect(f"{wss(site)}/CP-1", subprotocols=OCPP16, ssl=old,
                                 open_timeout=5)


# ---- profile 3: client certificates -----------------------------------------------------------
def _profile_3_stations() -> str:
    return "    - id: CP-1\n    - id: CP-2\n"


@pytest.mark.parametrize("workers", [0, 2])
async def test_profile_3_client_certificate_must_name_the_station(site: SiteHarness, pki: Pki,
                                                                  workers: int):
    configure(site, "profile: 3\n" + tls_keys(pki, client_ca=True), _profile_3_stations())
    with_workers(site, workers)
    bridge = await site.start_bridge()
    station = start_station(site, "CP-1", wss(site), ssl=pki.client_context("CP-1"))
    await wait_until(lambda: station.booted, what="CP-1 booted with its certificate")

    # CP-1's certificate does not open CP-2
    assert await refused_status(f"{wss(site)}/CP-2", ssl=pki.client_context("CP-1")) == 403
    assert await heartbeat_works(f"{wss(site)}/CP-2", ssl=pki.client_context("CP-2"))
    # a listed id is still needed, certificate or not
    assert await refused_status(f"{wss(site)}/CP-7", ssl=pki.client_context("CP-7")) == 404
    # no certificate, or one from another CA: the TLS handshake fails
    rogue = Authority.create("rogue CA")
    for context in (pki.client_context(), pki.client_context("CP-2", authority=rogue)):
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidMessage,
                            websockets.ConnectionClosed)):
            async with websockets.connect(f"{wss(site)}/CP-2", subprotocols=OCPP16,
                                          ssl=context, open_timeout=5) as ws:
                await exchange(ws, json.dumps([2, "hb", "Heartbeat", {}]))
    assert station.connected and "CP-1" in bridge.ocpp.links


async def test_malformed_frames_get_a_callerror_over_tls_too(site: SiteHarness, pki: Pki):
    configure(site, "profile: 3\n" + tls_keys(pki, client_ca=True), _profile_3_stations())
    await site.start_bridge()
    async with websockets.connect(f"{wss(site)}/CP-1", subprotocols=OCPP16,
                                  ssl=pki.client_context("CP-1")) as ws:
        reply = await exchange(ws, "this is not json")
        assert reply[:3] == [4, "-1", "FormationViolation"]
        reply = await exchange(ws, json.dumps([2, "m1", "NoSuchAction", {}]))
        assert reply[0] == 4 and reply[1] == "m1"
        reply = await exchange(ws, json.dumps([2, "m2", "Heartbeat", {}]))
        assert reply[0] == 3 and reply[1] == "m2"


# ---- abuse limits -----------------------------------------------------------------------------
async def test_oversized_frames_close_the_connection_with_1009(site: SiteHarness):
    configure(site, "max_message_bytes: 2048", "    - id: CP-1\n")
    await site.start_bridge()
    url = f"{site.url}/CP-1"
    async with websockets.connect(url, subprotocols=OCPP16) as ws:
        big = json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 4096}])
        await ws.send(big)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            async with asyncio.timeout(10):
                while True:  # the bridge's own calls may come first
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # the station reconnects and carries on with messages of a sane size
    assert await heartbeat_works(url)


# workers 2: the bridge counts the sockets every worker accepts, before they are read
@pytest.mark.parametrize("workers", [0, 2])
async def test_a_connection_flood_from_one_address_is_capped(site: SiteHarness, workers: int):
    configure(site, "max_connections_per_address: 3\nlimit_loopback: true", "")
    with_workers(site, workers)
    bridge = await site.start_bridge()
    limiter = bridge.ocpp.connection_limiter
    held = [await websockets.connect(f"{site.url}/F{i}", subprotocols=OCPP16) for i in range(3)]
    try:
        with pytest.raises((websockets.InvalidMessage, websockets.InvalidHandshake, OSError)):
            await websockets.connect(f"{site.url}/F3", subprotocols=OCPP16, open_timeout=5)
        await held.pop().close()
        await wait_until(lambda: limiter._open.get("127.0.0.1") == 2, what="a slot released")
        held.append(await websockets.connect(f"{site.url}/F4", subprotocols=OCPP16))
    finally:
        for ws in held:
            await ws.close()
    await wait_until(lambda: not limiter._open.get("127.0.0.1"), what="every slot released")


async def test_loopback_is_not_limited_by_default(site: SiteHarness):
    configure(site, "max_connections_per_address: 2", "")
    await site.start_bridge()
    held = [await websockets.connect(f"{site.url}/L{i}", subprotocols=OCPP16) for i in range(5)]
    for ws in held:
        await ws.close()


def test_config_paths_are_relative_to_the_config(tmp_path: Path, pki: Pki):
    from bridge.config import load_config
    from bridge.ocpp.security import EdgeSecurity

    (tmp_path / "certs").mkdir()
    for source, name in ((pki.server_cert, "bridge.pem"), (pki.server_key, "bridge.key"),
                         (pki.ca_file, "ca.pem")):
        (tmp_path / "certs" / name).write_bytes(source.read_bytes())
    config = tmp_path / "site.yaml"
    config.write_text(
        "ven: {vtn_url: 'http://127.0.0.1:1/x', ven_name: v}\nsite: {capacity_kw: 10}\n"
        "ocpp:\n  stations: [{id: CP-1}]\n  security:\n    profile: 3\n"
        "    tls_certificate: certs/bridge.pem\n    tls_private_key: certs/bridge.key\n"
        "    tls_client_ca: certs/ca.pem\n")
    security = EdgeSecurity.from_config(load_config(config))
    assert security.scheme == "wss" and security.ssl_context is not None
    assert security.ssl_context.verify_mode is ssl.CERT_REQUIRED
