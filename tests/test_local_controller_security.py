"""Local-controller mode: the upstream link's credentials and TLS, and its configuration."""

from __future__ import annotations

import base64
import logging
import textwrap
from pathlib import Path

import pytest
from conftest import SiteHarness, wait_steered, wait_until
from pki import Pki
from test_process import check

from bridge.config import load_config
from bridge.ocpp.tls import server_context
from bridge.sim.csms import UpstreamCsms
from bridge.upstream.address import station_url
from policies.validation import InvalidDocument


async def test_tls_to_the_operator_with_client_certificates_and_the_stations_credentials(
        tmp_path: Path, site: SiteHarness, caplog: pytest.LogCaptureFixture):
    """wss:// to the operator, its certificate checked against ca_file; a client
    certificate for every station (security profile 3 upstream), one station with its own;
    the stations' Basic credentials passed on (profiles 1 and 2)."""
    pki = Pki.create(tmp_path / "pki")
    gateway = pki.client_files("gateway")
    own = pki.client_files("CP2")
    csms = UpstreamCsms(passwords={"CP1": "pw-1", "CP2": "pw-2"},
                        ssl_context=server_context(pki.server_cert, pki.server_key, pki.ca_file))
    await csms.start()
    caplog.set_level(logging.DEBUG, logger="websockets")
    caplog.set_level(logging.DEBUG, logger="test.station")
    tokens = []
    try:
        bridge = await site.start_bridge(ocpp_extra=textwrap.dedent(f"""\
            stations:
              - id: CP1
              - id: CP2
                upstream_client_certificate: {own[0]}
                upstream_client_private_key: {own[1]}
            upstream:
              url: wss://127.0.0.1:{csms.port}
              ca_file: {pki.ca_file}
              client_certificate: {gateway[0]}
              client_private_key: {gateway[1]}
              reconnect_min_s: 0.2
              reconnect_max_s: 0.5
            """))
        assert bridge.upstream is not None
        for station_id, password in (("CP1", "pw-1"), ("CP2", "pw-2")):
            station = site.add_station(station_id, plugged_in=False)
            token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
            tokens.append(token)
            station.connect_options = {"additional_headers": {"Authorization": f"Basic {token}"},
                                       "logger": logging.getLogger("test.station")}
        await wait_steered(bridge, "CP1", "CP2")
        await csms.wait_for("BootNotification", station_id="CP1")
        await csms.wait_for("BootNotification", station_id="CP2")
        assert csms.client_certificates == {"CP1": ["gateway"], "CP2": ["CP2"]}
        assert csms.refused_logins == 0
        await wait_until(lambda: bridge.upstream is not None and
                         bridge.upstream.link_states() == {"up": 2}, what="both links up")
        # the credentials pass through drbridge, which never logs them, not even at debug
        # level (the simulated stations and CSMS do: test.station, websockets.server)
        ours = [r.getMessage() for r in caplog.records
                if r.name not in ("test.station", "websockets.server")]
        assert any("> Authorization: [redacted]" in line for line in ours)
        assert not any(token in line for token in tokens for line in ours)
    finally:
        await csms.stop()


def config_problems(tmp_path: Path, upstream: str, stations: str = "") -> str:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent("""\
        ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', ven_name: site-a}
        site: {capacity_kw: 66}
        ocpp:
        """) + textwrap.indent(textwrap.dedent(stations + upstream), "  "))
    with pytest.raises(InvalidDocument) as refused:
        load_config(path)
    return str(refused.value)


def test_upstream_configuration_errors_name_the_key_and_the_fix(tmp_path: Path):
    pki = Pki.create(tmp_path / "pki")
    cert, key = pki.client_files("gateway")
    assert "site.yaml:4: ocpp.upstream.url: must start with ws:// or wss://" in \
        config_problems(tmp_path, "upstream: {url: 'https://csms.example/ocpp'}\n")
    assert "ocpp.upstream.offline_authorization" in config_problems(
        tmp_path, "upstream: {url: 'ws://csms', offline_authorization: maybe}\n")
    assert "client_certificate and client_private_key go together" in config_problems(
        tmp_path, f"upstream: {{url: 'wss://csms', client_certificate: {cert}}}\n")
    assert "a client certificate needs TLS: make ocpp.upstream.url wss://" in config_problems(
        tmp_path, f"upstream: {{url: 'ws://csms', client_certificate: {cert}, "
                  f"client_private_key: {key}}}\n")
    assert "ocpp.upstream.ca_file: no such file" in config_problems(
        tmp_path, "upstream: {url: 'wss://csms', ca_file: nowhere.pem}\n")
    assert "ocpp.upstream.url: name {station_id} once at most" in config_problems(
        tmp_path, "upstream: {url: 'ws://csms/{station_id}/{station_id}'}\n")
    assert "ocpp.upstream.reconect_max_s: unknown key" in config_problems(
        tmp_path, "upstream: {url: 'ws://csms', reconect_max_s: 5}\n")
    text = config_problems(tmp_path, "", stations=textwrap.dedent(f"""\
        stations:
          - id: CP1
            upstream_client_certificate: {cert}
            upstream_client_private_key: {key}
        """))
    assert "ocpp.stations[0].upstream_client_certificate: only used in local-controller " \
        "mode: add ocpp.upstream, or remove this key" in text
    assert "cannot use this certificate with its private key" in config_problems(
        tmp_path, f"upstream: {{url: 'wss://csms', client_certificate: {cert}, "
                  f"client_private_key: {pki.server_key}}}\n")


def test_a_config_without_upstream_runs_as_a_central_system(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', "
                    "ven_name: site-a}\nsite: {capacity_kw: 66}\n")
    assert load_config(path).model.ocpp.upstream is None
    path.write_text(path.read_text() + "ocpp:\n  upstream:\n    url: ws://csms.example/ocpp/\n")
    upstream = load_config(path).model.ocpp.upstream
    assert upstream is not None and upstream.url == "ws://csms.example/ocpp"
    assert upstream.offline_authorization == "cache"
    assert station_url(upstream.url, "CP 1") == "ws://csms.example/ocpp/CP 1"
    # a CSMS that routes on a path going on after the id: the url says where the id goes
    path.write_text(path.read_text().replace("ws://csms.example/ocpp/",
                                             "ws://csms.example/ws/ocpp/{station_id}/"))
    upstream = load_config(path).model.ocpp.upstream
    assert upstream is not None
    assert station_url(upstream.url, "CP1") == "ws://csms.example/ws/ocpp/CP1/"


def test_check_names_the_operators_csms(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', "
                    "ven_name: site-a}\nsite: {capacity_kw: 66}\nocpp:\n  upstream:\n"
                    "    url: wss://csms.operator.example/ocpp\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "upstream   local controller: forwards to wss://csms.operator.example/ocpp/" \
        "<station id>; offline authorization cache" in result.stdout
