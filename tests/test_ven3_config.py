"""``ven.protocol`` and the OpenADR 3 keys in the site's configuration: what is refused,
what is warned of, with the file, the line, the key and the fix."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from certs import Pki
from conftest import site_config

from bridge.config import Config, load_config
from bridge.sim.vtn import free_port
from bridge.sim.vtn3 import Vtn3
from policies.validation import InvalidDocument

SECRET_ENV = "DRBRIDGE_TEST_OADR3_SECRET"
DRBRIDGE = [sys.executable, "-m", "bridge.cli"]
CREDENTIALS = f"""\
auth:
  client_id: site-a
  client_secret_env: {SECRET_ENV}
"""


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "secret-a")


def write(tmp_path: Path, ven_extra: str, url: str = "https://vtn.example/openadr3/3.1.0"
          ) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(site_config(url, 9999, ven_extra=textwrap.dedent(ven_extra)))
    return path


def load(tmp_path: Path, ven_extra: str, **kwargs: str) -> Config:
    return load_config(write(tmp_path, ven_extra, **kwargs))


def problems(tmp_path: Path, ven_extra: str, **kwargs: str) -> str:
    with pytest.raises(InvalidDocument) as caught:
        load(tmp_path, ven_extra, **kwargs)
    return str(caught.value).replace(f"{tmp_path}/", "")


def warnings(config: Config) -> list[str]:
    return [w.replace(f"{config.source.parent}/", "") for w in config.warnings()]


def test_keys_of_20b_are_refused_with_protocol_3(tmp_path: Path):
    text = problems(tmp_path, 'protocol: "3"\n' + CREDENTIALS + textwrap.dedent("""\
        party_id: party-7
        tls:
          ca_file: ca.pem
        """))
    lines = text.splitlines()
    assert lines[0].startswith("site.yaml:8: ven.party_id: an OpenADR 2.0b key, and "
                               'ven.protocol is "3"'), text
    assert lines[1].startswith("site.yaml:9: ven.tls: an OpenADR 2.0b key"), text
    assert 'Fix: remove it, or set ven.protocol: "2.0b"' in lines[1]
    assert len(lines) == 2


@pytest.mark.parametrize("key, value", [
    ("auth", "\n  bearer_token_env: TOKEN"), ("poll_interval_s", " 5"),
    ("openadr_version", ' "3.0.1"'), ("webhook", "\n  public_url: https://gw.example/n"),
])
def test_keys_of_3_are_refused_with_protocol_20b(tmp_path: Path, key: str, value: str):
    text = problems(tmp_path, f"{key}:{value}\n", url="https://vtn.example/OpenADR2/Simple/2.0b")
    assert text.startswith(f"site.yaml:4: ven.{key}: an OpenADR 3 key, and ven.protocol is "
                           '"2.0b". Fix: set ven.protocol: "3" to speak OpenADR 3, or remove '
                           "this key"), text


def test_a_secret_missing_from_the_environment_is_named(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(SECRET_ENV)
    text = problems(tmp_path, 'protocol: "3"\n' + CREDENTIALS)
    assert text == (f"site.yaml:7: ven.auth.client_secret_env: the environment variable "
                    f"{SECRET_ENV} is not set (or empty). Fix: export it where drbridge runs "
                    "(the secret itself never goes in the config)")
    text = problems(tmp_path, 'protocol: "3"\nauth:\n  bearer_token_env: NO_SUCH_TOKEN_VAR\n')
    assert "site.yaml:6: ven.auth.bearer_token_env: the environment variable " \
        "NO_SUCH_TOKEN_VAR is not set" in text


def test_an_unquoted_protocol_3_is_read_as_3(tmp_path: Path):
    assert load(tmp_path, "protocol: 3\n" + CREDENTIALS).openadr3
    assert not load(tmp_path, "", url="https://vtn.example/OpenADR2/Simple/2.0b").openadr3
    assert "protocol" in problems(tmp_path, "protocol: 3.1\n")


def test_webhook_tls_files_are_found_beside_the_config(tmp_path: Path):
    (tmp_path / "certs").mkdir()
    pki = Pki(tmp_path / "certs")
    gateway = pki.issue("gateway.site-a.example")
    hook = textwrap.dedent(f"""\
        webhook:
          host: 0.0.0.0
          public_url: https://gateway.site-a.example:8089/openadr3/notifications
          tls_cert: certs/{Path(gateway.cert).name}
          tls_key: certs/{Path(gateway.key).name}
        """)
    settings = load(tmp_path, 'protocol: "3"\n' + CREDENTIALS + hook).ven3_settings()
    assert settings.webhook is not None
    assert settings.webhook.tls_cert == str(tmp_path / "certs" / Path(gateway.cert).name)
    assert settings.webhook.tls_key == str(tmp_path / "certs" / Path(gateway.key).name)
    text = problems(tmp_path, 'protocol: "3"\n' + CREDENTIALS + hook.replace("certs/", "x/"))
    assert "site.yaml:11: ven.webhook.tls_cert: no such file: x/gateway" in text  # (full path)
    assert "site.yaml:12: ven.webhook.tls_key: no such file" in text
    swapped = hook.replace(f"tls_key: certs/{Path(gateway.key).name}",
                           f"tls_key: certs/{Path(gateway.cert).name}")
    assert "site.yaml:11: ven.webhook.tls_cert: cannot use this certificate" in problems(
        tmp_path, 'protocol: "3"\n' + CREDENTIALS + swapped)


def test_credentials_in_clear_or_none_are_warned_of(tmp_path: Path):
    config = load(tmp_path, 'protocol: "3"\n' + CREDENTIALS + textwrap.dedent("""\
          token_url: http://auth.utility.example/token
        webhook:
          host: 0.0.0.0
          public_url: http://gateway.site-a.example:8089/openadr3/notifications
        """), url="http://vtn.utility.example/openadr3/3.1.0")
    said = warnings(config)
    assert said[0].startswith("site.yaml:2: ven.vtn_url: the VTN http://vtn.utility."
                                  "example/openadr3/3.1.0 is not on this machine and is "
                                  "reached WITHOUT TLS: anyone on the path can read the "
                                  "access token"), said
    assert "Fix: use the VTN's https:// URL" in said[0]
    assert said[1].startswith("site.yaml:8: ven.auth.token_url: the token endpoint "
                                  "http://auth.utility.example/token is reached WITHOUT TLS: "
                                  "the client secret crosses the network in clear")
    assert said[2].startswith("site.yaml:11: ven.webhook.public_url: the VTN calls "
                                  "http://gateway.site-a.example:8089/openadr3/notifications "
                                  "WITHOUT TLS")
    assert len(said) == 3 and config.site_warnings() == config.warnings()  # `run` logs them
    anonymous = warnings(load(tmp_path, 'protocol: "3"\n'))
    assert anonymous[0].startswith("site.yaml:1: ven.auth: no credentials for the VTN")
    # not a word of 2.0b's mutual TLS
    assert not any("client certificate" in w for w in anonymous)


def test_https_or_loopback_is_not_warned_of(tmp_path: Path):
    assert load(tmp_path, 'protocol: "3"\n' + CREDENTIALS).warnings() == []
    assert load(tmp_path, 'protocol: "3"\n' + CREDENTIALS,
                url="http://127.0.0.1:8080/openadr3/3.1.0").warnings() == []


# drbridge check -------------------------------------------------------------------------------

async def check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``drbridge check`` in its own process, while this test's loop serves the VTN."""
    process = await asyncio.create_subprocess_exec(
        *DRBRIDGE, "check", "--config", str(config), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess([], process.returncode, out.decode(), err.decode())


async def test_check_asks_the_vtn_for_a_token_and_its_programs(tmp_path: Path):
    vtn3 = Vtn3(port=free_port())
    vtn3.add_program("grid-aware-charging")
    vtn3.add_program("dynamic-tariff")
    await vtn3.start()
    try:
        config = write(tmp_path, 'protocol: "3"\n' + CREDENTIALS, url=vtn3.url)
        result = await check(config)
        assert result.returncode == 0, result.stderr
        assert f"VTN        {vtn3.url} as test-site (OpenADR 3.1.0, OAuth2 client site-a;" \
            " polled every 10 s)" in result.stdout
        assert "programs   grid-aware-charging, dynamic-tariff" in result.stdout
        assert "WARNING" not in result.stdout
        assert len(vtn3.received.token_requests) == 1 and vtn3.vens == {}  # nothing created
        vtn3.clients["site-a"].secret = "changed"
        refused = await check(config)
        assert refused.returncode == 2, refused.stdout
        assert f"{config}:6: ven.auth.client_id: the VTN refused these credentials " \
            f"(token endpoint {vtn3.url}/auth/token answered HTTP 401" in refused.stderr
        assert f"${SECRET_ENV}" in refused.stderr and "secret-a" not in refused.stderr
        offline = await check(config, "--offline")
        assert offline.returncode == 0 and "not asked" in offline.stdout
    finally:
        await vtn3.stop()


async def test_check_warns_of_an_unreachable_vtn_and_passes(tmp_path: Path):
    config = write(tmp_path, 'protocol: "3"\n' + CREDENTIALS,
                   url=f"http://127.0.0.1:{free_port()}/openadr3/3.0.1")
    result = await check(config)
    assert result.returncode == 0, result.stderr
    assert "OpenADR 3.0.1" in result.stdout
    assert f"WARNING    {config}:2: ven.vtn_url: the VTN could not be reached (" \
        in result.stdout
    assert "`run` retries until it answers" in result.stdout
