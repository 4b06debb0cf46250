"""The dashboard's access rules over real HTTP(S): login for the read API and /metrics, the
metrics token, TLS, Secure cookies and the login throttle behind a trusted proxy."""

from __future__ import annotations

import base64
import ssl
import textwrap
from pathlib import Path

import aiohttp
import pytest
from conftest import SiteHarness, wait_until
from pki import Pki

from bridge.cli import main
from bridge.config import load_config
from bridge.passwords import hash_password
from policies.validation import InvalidDocument

PASSWORD = "correct horse battery"
# Cheap KDF parameters keep the tests fast; the format and code path are the real ones.
PASSWORD_HASH = hash_password(PASSWORD.encode(), log2_n=10)
METRICS_TOKEN = "5E2B0C9A7F31D4468E0B2A9C3D7E1F0A22B4C6D8"
METRICS_HASH = hash_password(METRICS_TOKEN.encode(), log2_n=10)
READ_PATHS = ("/api/site", "/api/events", "/api/stations", "/api/load?hours=1", "/metrics")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


async def start(site: SiteHarness, web: str) -> str:
    """Start the bridge with these ``web:`` keys (port 0 and the password are added)."""
    site.write_config()
    keys = f"port: 0\npassword_hash: '{PASSWORD_HASH}'\n" + textwrap.dedent(web)
    text = site.config_path.read_text().replace(
        "web:\n  port: 0\n", "web:\n" + textwrap.indent(keys, "  "))
    site.config_path.write_text(text)
    bridge = await site.start_bridge()
    await wait_until(lambda: bridge.web is not None and bridge.web.ready.is_set(),
                     what="the web server")
    assert bridge.web is not None
    scheme = "https" if "tls_certificate" in web else "http"
    return f"{scheme}://127.0.0.1:{bridge.web.port}"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status(http: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    async with http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


async def login(http: aiohttp.ClientSession, url: str, password: str = PASSWORD,
                headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    async with http.post(f"{url}/api/login", json={"password": password},
                         headers=headers or {}) as response:
        await response.read()
        return response


async def test_read_api_and_metrics_need_a_login_when_required(site: SiteHarness):
    url = await start(site, f"require_login: true\nmetrics_token_hash: '{METRICS_HASH}'\n")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for path in READ_PATHS:
            assert await status(http, url + path) == 401, path
        async with http.get(f"{url}/metrics") as response:
            assert "Bearer" in response.headers["WWW-Authenticate"]
        # the page and what it needs to offer a login stay open
        assert await status(http, f"{url}/") == 200
        async with http.get(f"{url}/api/session") as response:
            assert await response.json() == {"logged_in": False, "login_enabled": True,
                                             "login_required": True}
        # a scraper: the token as Bearer, or as the password of Basic auth (any user name)
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with http.get(f"{url}/metrics", headers=bearer) as response:
            assert response.status == 200
            assert "drbridge_site_capacity_watts" in await response.text()
        assert await status(http, f"{url}/metrics", headers=basic("prometheus", METRICS_TOKEN)) \
            == 200
        assert await status(http, f"{url}/metrics", headers={"Authorization": "Bearer nope"}) \
            == 401
        # the token opens /metrics only, and the operator password is no metrics token
        assert await status(http, f"{url}/api/site", headers=bearer) == 401
        assert await status(http, f"{url}/metrics", headers=basic("x", PASSWORD)) == 401
        # the operator's login opens everything
        assert (await login(http, url)).status == 200
        for path in READ_PATHS:
            assert await status(http, url + path) == 200, path


async def test_wrong_metrics_tokens_are_throttled(site: SiteHarness):
    url = await start(site, f"require_login: true\nmetrics_token_hash: '{METRICS_HASH}'\n")
    wrong = {"Authorization": "Bearer guess"}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            assert await status(http, f"{url}/metrics", headers=wrong) == 401
        assert await status(http, f"{url}/metrics", headers=wrong) == 429
        # the right token from the same address waits too
        assert await status(http, f"{url}/metrics",
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) == 429


async def test_login_and_checks_build_no_site_snapshot(site: SiteHarness):
    """Answering who is logged in must not assemble the whole site's state."""
    url = await start(site, "")
    bridge = site.bridge
    assert bridge is not None
    built = []
    original = bridge.view.snapshot

    def counting_snapshot():  # type: ignore[no-untyped-def]
        built.append(1)
        return original()

    bridge.view.snapshot = counting_snapshot  # type: ignore[method-assign]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        assert await status(http, f"{url}/api/session") == 200
        async with http.put(f"{url}/api/stations/CP1/hold", json={"mode": "pause"}) as response:
            assert response.status == 401
        assert (await login(http, url, "wrong")).status == 401
        assert (await login(http, url)).status == 200
        assert await status(http, f"{url}/api/session") == 200
    assert built == []


async def test_dashboard_over_tls_sets_secure_cookies(site: SiteHarness, pki: Pki):
    url = await start(site, f"tls_certificate: {pki.server_cert}\n"
                            f"tls_private_key: {pki.server_key}\n")
    assert url.startswith("https://")
    assert site.bridge is not None and site.bridge.web is not None
    assert site.bridge.web.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        assert await status(http, f"{url}/api/site") == 200  # loopback: no login needed
        response = await login(http, url)
        assert response.status == 200
        assert response.cookies["drbridge_session"]["secure"]
        assert response.cookies["drbridge_session"]["httponly"]
    # plain HTTP on the TLS port gets no answer
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await status(http, url.replace("https://", "http://") + "/api/site")


async def test_secure_cookie_when_a_trusted_proxy_says_https(site: SiteHarness):
    url = await start(site, "trusted_proxies: [127.0.0.1]\n")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        response = await login(http, url, headers={"X-Forwarded-Proto": "https"})
        assert response.status == 200
        assert response.cookies["drbridge_session"]["secure"]
        plain = await login(http, url)
        assert plain.status == 200
        assert not plain.cookies["drbridge_session"]["secure"]


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(site: SiteHarness):
    url = await start(site, "trusted_proxies: [10.9.9.9]\n")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        response = await login(http, url, headers={"X-Forwarded-Proto": "https"})
        assert response.status == 200
        assert not response.cookies["drbridge_session"]["secure"]


async def test_throttle_counts_the_forwarded_client_behind_a_trusted_proxy(site: SiteHarness):
    url = await start(site, "trusted_proxies: [127.0.0.1]\n")
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            assert (await login(http, url, "wrong", guesser)).status == 401
        assert (await login(http, url, "wrong", guesser)).status == 429
        # another client behind the same proxy is not held up by the guesser
        operator = {"X-Forwarded-For": "203.0.113.8"}
        assert (await login(http, url, PASSWORD, operator)).status == 200
        # a client that claims to come through another proxy is still the guesser
        spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        assert (await login(http, url, PASSWORD, spoofed)).status == 429


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(site: SiteHarness):
    url = await start(site, "")
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            headers = {"X-Forwarded-For": f"203.0.113.{n}"}
            assert (await login(http, url, "wrong", headers)).status == 401
        # a sixth address named in the header does not help: the peer is the client
        assert (await login(http, url, PASSWORD, {"X-Forwarded-For": "203.0.113.99"})).status \
            == 429


# ---- configuration ------------------------------------------------------------------------------
def config_file(tmp_path: Path, web: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent("""\
        ven:
          vtn_url: http://127.0.0.1:8080/OpenADR2/Simple/2.0b
          ven_name: site
        site:
          capacity_kw: 22
        web:
        """) + textwrap.indent(textwrap.dedent(web), "  "))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidDocument) as invalid:
        load_config(path)
    return str(invalid.value).splitlines()


@pytest.mark.parametrize(("host", "required"), [
    ("127.0.0.1", False), ("localhost", False), ("::1", False),
    ("0.0.0.0", True), ("::", True), ("192.168.1.20", True), ("gateway.local", True),
])
def test_login_is_required_by_default_beyond_loopback(tmp_path: Path, host: str,
                                                      required: bool):
    config = load_config(config_file(tmp_path, f"host: '{host}'\n"
                                               f"password_hash: '{PASSWORD_HASH}'\n"))
    assert config.model.web.login_required is required
    explicit = load_config(config_file(tmp_path, f"host: '{host}'\nrequire_login: false\n"))
    assert explicit.model.web.login_required is False
    # behind a proxy every client comes from the proxy's address, often loopback
    proxied = load_config(config_file(tmp_path, f"host: '{host}'\ntrusted_proxies: ['::1']\n"
                                                f"password_hash: '{PASSWORD_HASH}'\n"))
    assert proxied.model.web.login_required is True


def test_a_default_login_without_a_password_warns_and_an_explicit_one_is_an_error(
        tmp_path: Path):
    # the bridge still starts (a site must not lose its DR limits over its dashboard) ...
    path = config_file(tmp_path, "host: 0.0.0.0\n")
    [caution] = load_config(path).site_warnings()
    assert caution.startswith(f"{path}:6: web.password_hash: missing: the dashboard listens on"
                              " 0.0.0.0")
    assert "drbridge hash-password" in caution and "web.require_login: false" in caution
    assert "answer 401" in caution
    # ... but a login asked for explicitly cannot work without a password
    path = config_file(tmp_path, "require_login: true\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:7: web.require_login: a login needs web.password_hash")


def test_web_keys_are_checked_with_file_line_and_key(tmp_path: Path, pki: Pki):
    path = config_file(tmp_path, """\
        tls_certificate: certs/dashboard.pem
        trusted_proxies: [10.0.0.5, 10.1.0.0/16, proxy.example]
        metrics_token_hash: hunter2
        """)
    found = problems(path)
    assert f"{path}:8: web.trusted_proxies[2]: 'proxy.example' is not an IP " \
           "address or network (such as 10.0.0.5 or 10.0.0.0/24)" in found
    assert any(p.startswith(f"{path}:9: web.metrics_token_hash: ") and
               "drbridge hash-password" in p for p in found)
    path = config_file(tmp_path, "tls_certificate: certs/dashboard.pem\n")
    found = problems(path)
    assert f"{path}:6: web.tls_private_key: required with web.tls_certificate: give both " \
           "the certificate chain and its key (PEM), or neither" in found
    assert f"{path}:7: web.tls_certificate: no such file: {tmp_path / 'certs/dashboard.pem'}" \
        in found
    _, other_key = pki.client_files("someone")
    path = config_file(tmp_path, f"tls_certificate: {pki.server_cert}\n"
                                 f"tls_private_key: {other_key}\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:7: web.tls_certificate: cannot use this certificate")


def check_output(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["check", "--config", str(path)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]


def test_check_warns_of_a_dashboard_open_to_the_network(tmp_path: Path, pki: Pki,
                                                        capsys: pytest.CaptureFixture[str]):
    path = config_file(tmp_path, "host: 0.0.0.0\nrequire_login: false\n")
    [warning] = check_output(path, capsys)
    assert f"{path}:8: web.require_login: the dashboard listens on 0.0.0.0:8088 over plain " \
           "HTTP and its API and /metrics need no login" in warning
    # with a login but over plain HTTP: the password crosses the network in cleartext
    path = config_file(tmp_path, f"host: 0.0.0.0\npassword_hash: '{PASSWORD_HASH}'\n")
    [warning] = check_output(path, capsys)
    assert f"{path}:7: web.host: the dashboard listens on 0.0.0.0:8088 over plain HTTP: " \
           "the operator password and session cookie cross the network in cleartext" in warning
    # TLS, or a TLS proxy in front, or loopback only: nothing to warn of
    for web in (f"host: 0.0.0.0\npassword_hash: '{PASSWORD_HASH}'\n"
                f"tls_certificate: {pki.server_cert}\ntls_private_key: {pki.server_key}\n",
                f"host: 0.0.0.0\npassword_hash: '{PASSWORD_HASH}'\n"
                "trusted_proxies: [10.0.0.5]\n",
                "host: 127.0.0.1\nrequire_login: false\n"):
        assert check_output(config_file(tmp_path, web), capsys) == []
