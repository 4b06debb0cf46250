"""The ven section of the config: TLS keys, targets, warnings; and a bridge over mutual TLS."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from certs import Pki
from conftest import SiteHarness, site_config, wait_until
from openleadr.utils import certificate_fingerprint_from_der

from bridge.cli import main as cli
from bridge.config import load_config
from bridge.sim.vtn import DemoVtn, VtnTls
from policies.validation import InvalidDocument


def write(tmp_path: Path, ven_extra: str, url: str = "https://127.0.0.1:1/x") -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(site_config(url, 9999, ven_extra=ven_extra))
    return path


def problems(path: Path) -> str:
    with pytest.raises(InvalidDocument) as caught:
        load_config(path)
    return str(caught.value)


def test_tls_keys_are_checked_with_file_and_line(tmp_path: Path):
    text = problems(write(tmp_path, "tls:\n  cert: missing.pem\n  key: missing.key\n"))
    assert "site.yaml:5: ven.tls.cert: no such file 'missing.pem'" in text
    assert "ven.tls.key: no such file" in text
    assert "cert and key go together" in problems(write(tmp_path, "tls:\n  cert: a.pem\n"))
    assert "vtn_signing_fingerprint" in problems(write(
        tmp_path, "tls:\n  cert: a.pem\n  key: a.key\n  xml_signatures: true\n"))
    assert "not https://" in problems(write(tmp_path, "tls:\n  check_hostname: true\n",
                                            url="http://127.0.0.1:1/x"))
    assert "PASS_FOR_TEST_ONLY is not set" in problems(write(
        tmp_path, "tls:\n  key_passphrase_env: PASS_FOR_TEST_ONLY\n"))


def test_targets_and_tls_paths_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pki = Pki(tmp_path)
    client = pki.issue("ven.test")
    monkeypatch.setenv("VEN_KEY_PASS", "secret")
    config = load_config(write(tmp_path, textwrap.dedent(f"""\
        resources:
          bay-north: [CP1, CP2]
        groups:
          vans: [CP2, CP3]
        party_id: party-7
        tls:
          cert: {Path(client.cert).name}
          key: {Path(client.key).name}
          key_passphrase_env: VEN_KEY_PASS
          ca_file: {Path(pki.ca_file).name}
          vtn_fingerprint: "AA:BB:CC:DD:EE:FF:00:11:22:33"
          xml_signatures: true
        """)))
    assert config.target_stations(["bay-north"], ["vans"]) == {"CP1", "CP2", "CP3"}
    tls = config.tls
    assert tls is not None and tls.cert == client.cert and tls.passphrase == "secret"
    assert tls.ca_file == pki.ca_file and tls.xml_signatures
    assert config.warnings() == []  # loopback


def test_pins_are_read_in_any_form_and_held_in_one(tmp_path: Path):
    digest = ("7e:f7:28:23:e8:ce:f4:aa:6b:e8:9e:98:50:c6:bd:72:"
              "9e:78:73:51:5c:b7:3b:28:7f:ae:46:d2:53:66:ef:ae")
    config = load_config(write(tmp_path, textwrap.dedent(f"""\
        tls:
          vtn_fingerprint: "{digest}"
          vtn_signing_fingerprint: "3b287fae46d25366efae"
        """)))
    assert config.tls is not None
    assert config.tls.vtn_fingerprint == digest.replace(":", "").upper()
    assert config.tls.vtn_signing_fingerprint == "3B287FAE46D25366EFAE"
    for pin in ("AA:BB:CC", "not a fingerprint", digest + ":00"):
        text = problems(write(tmp_path, f'tls:\n  vtn_signing_fingerprint: "{pin}"\n'))
        assert "site.yaml:5: ven.tls.vtn_signing_fingerprint:" in text, text
        assert "is not a certificate fingerprint" in text and "64 hex digits" in text


def test_check_warns_about_a_remote_vtn_without_tls(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    path = write(tmp_path, "", url="http://vtn.utility.example/OpenADR2/Simple/2.0b")
    assert cli(["check", "--config", str(path)]) == 0
    assert "WARNING" in capsys.readouterr().out


async def test_bridge_over_mutual_tls_with_signatures(tmp_path: Path):
    pki = Pki(tmp_path)
    server = pki.issue("vtn.test", server=True)
    client = pki.issue("ven.test")
    vtn = DemoVtn(tls=VtnTls(server.cert, server.key, pki.ca_file, sign=True))
    await vtn.start()
    site = SiteHarness(tmp_path, vtn)
    try:
        pin = certificate_fingerprint_from_der(server.der)
        bridge = await site.start_bridge(ven_extra=textwrap.dedent(f"""\
            tls:
              cert: {client.cert}
              key: {client.key}
              ca_file: {pki.ca_file}
              vtn_fingerprint: "{pin}"
              xml_signatures: true
            """))
        await wait_until(lambda: vtn.ven_id("test-site") is not None, what="registration")
        ven_id = vtn.ven_id("test-site")
        assert ven_id is not None
        event_id = vtn.add_simple_event(ven_id, datetime.now(UTC) + timedelta(minutes=5),
                                        [(timedelta(minutes=1), 1)])
        await wait_until(lambda: event_id in bridge.dr.events, what="the event over TLS")
        await wait_until(lambda: (ven_id, event_id, "optIn") in vtn.received.opts,
                         what="the signed answer")
    finally:
        await site.close()
        await vtn.stop()
