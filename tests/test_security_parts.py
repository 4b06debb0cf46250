"""The pure parts of the station edge's security: password hashes, Basic credentials, the
per-address limits, log redaction; and the configuration checks and CLI around them."""

from __future__ import annotations

import base64
import io
import logging
import textwrap
from pathlib import Path

import pytest
from pki import Pki

from bridge.cli import main
from bridge.config import load_config
from bridge.loopback import is_loopback_address, is_loopback_host
from bridge.ocpp.auth import parse_basic
from bridge.ocpp.limits import (
    Admission,
    ConnectionLimiter,
    ConnectionPolicy,
    FailureLimiter,
    FailurePolicy,
)
from bridge.ocpp.security import RedactCredentials
from bridge.passwords import NotAPasswordHash, hash_password, parse_hash, verify_password
from policies.validation import InvalidDocument
from ven.shared import is_loopback_url


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


# ---- passwords ---------------------------------------------------------------------------------
def test_a_hash_admits_its_password_only():
    encoded = hash_password(b"station secret", log2_n=10)
    assert verify_password(b"station secret", encoded)
    assert not verify_password(b"station secreT", encoded)
    assert not verify_password(b"", encoded)
    assert b"station secret".hex() not in encoded and "station" not in encoded


def test_hashes_are_salted_and_carry_their_cost():
    first, second = (hash_password(b"same", log2_n=11) for _ in range(2))
    assert first != second
    parsed = parse_hash(first)
    assert (parsed.log2_n, parsed.r, parsed.p) == (11, 8, 1)
    assert len(parsed.salt) == 16 and len(parsed.key) == 32


@pytest.mark.parametrize("text", [
    "", "plain-text-password", "pbkdf2$1$2$3$aaaa$bbbb", "scrypt$14$8$1$!!!$bbbb",
    "scrypt$40$8$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",  # n = 2**40: a memory bomb
    "scrypt$14$8$1$c2E$a2V5a2V5a2V5a2V5a2V5a2V5",  # salt too short
])
def test_what_is_not_a_hash_is_refused(text: str):
    with pytest.raises(NotAPasswordHash):
        parse_hash(text)


# ---- Basic credentials -------------------------------------------------------------------------
def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_credentials_keep_binary_passwords():
    key = bytes.fromhex("0001020304050607FFFFFFFFFFFFFFFFFFFFFFFF")
    assert parse_basic(_basic(b"AL1000:" + key)) == ("AL1000", key)
    assert parse_basic(_basic(b"CP-1:pass:with:colons")) == ("CP-1", b"pass:with:colons")
    assert parse_basic("basic " + base64.b64encode(b"CP-1:x").decode()) == ("CP-1", b"x")


@pytest.mark.parametrize("header", [
    "Bearer abc", "Basic", "Basic !!!not-base64", _basic(b"no colon"), _basic(b"\xff\xfe:x"),
])
def test_malformed_basic_credentials(header: str):
    assert parse_basic(header) is None


# ---- failed logins -----------------------------------------------------------------------------
def test_failures_block_one_station_id_from_one_address():
    limiter = FailureLimiter(FailurePolicy(per_station=3, per_address=50, window_s=60,
                                           block_s=300))
    assert not limiter.failed("10.0.0.5", "CP-1", now=0)
    assert not limiter.failed("10.0.0.5", "CP-1", now=1)
    assert limiter.failed("10.0.0.5", "CP-1", now=2)  # the third starts a block
    assert limiter.blocked_for("10.0.0.5", "CP-1", now=3) == pytest.approx(299)
    assert limiter.blocked_for("10.0.0.5", "CP-2", now=3) == 0  # its neighbour may go on
    assert limiter.blocked_for("10.0.0.6", "CP-1", now=3) == 0  # another address too
    assert limiter.blocked_for("10.0.0.5", "CP-1", now=302) == 0  # and the block ends


def test_failures_outside_the_window_are_forgotten():
    limiter = FailureLimiter(FailurePolicy(per_station=3, window_s=60, block_s=300))
    for now in (0, 50, 100, 150, 200):
        assert not limiter.failed("10.0.0.5", "CP-1", now=now)
    assert limiter.blocked_for("10.0.0.5", "CP-1", now=201) == 0


def test_guessing_across_station_ids_blocks_the_address():
    limiter = FailureLimiter(FailurePolicy(per_station=5, per_address=4, block_s=300))
    for index in range(3):
        limiter.failed("10.0.0.5", f"CP-{index}", now=index)
    assert limiter.blocked_for("10.0.0.5", "CP-9", now=3) == 0
    assert limiter.failed("10.0.0.5", "CP-3", now=3)
    assert limiter.blocked_for("10.0.0.5", "CP-9", now=4) > 0


def test_failure_memory_is_bounded():
    limiter = FailureLimiter(FailurePolicy(), max_tracked=100)
    for index in range(10_000):
        limiter.failed(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}", "CP-1", 0)
    assert len(limiter) == 100


# ---- connection floods -------------------------------------------------------------------------
def test_open_connections_are_capped_per_address():
    limiter = ConnectionLimiter(ConnectionPolicy(max_open=2, max_per_second=0))
    assert limiter.admit("192.0.2.1", 0) is Admission.ADMITTED
    assert limiter.admit("192.0.2.1", 0) is Admission.ADMITTED
    assert limiter.admit("192.0.2.1", 0) is Admission.TOO_MANY_OPEN
    assert limiter.admit("192.0.2.2", 0) is Admission.ADMITTED
    limiter.release("192.0.2.1")
    assert limiter.admit("192.0.2.1", 0) is Admission.ADMITTED


def test_new_connections_per_second_are_capped_per_address():
    limiter = ConnectionLimiter(ConnectionPolicy(max_open=0, max_per_second=3))
    assert [limiter.admit("192.0.2.1", 10.1 + i / 10) for i in range(4)] == [
        Admission.ADMITTED, Admission.ADMITTED, Admission.ADMITTED, Admission.TOO_FAST]
    assert limiter.admit("192.0.2.9", 10.9) is Admission.ADMITTED
    assert limiter.admit("192.0.2.1", 11.0) is Admission.ADMITTED  # a new second


def test_each_loopback_check_answers_its_own_question():
    # a peer's address: IP literals only, IPv4-mapped ones too
    assert is_loopback_address("::ffff:127.0.0.1") and is_loopback_address("127.3.4.5")
    assert not is_loopback_address("localhost") and not is_loopback_address("192.0.2.1")
    # a listening host: a name or an address
    assert is_loopback_host("LOCALHOST") and is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("bridge.example")
    # a VTN's URL
    assert is_loopback_url("http://localhost:8080/OpenADR2") and is_loopback_url("https://[::1]/x")
    assert not is_loopback_url("https://vtn.utility.example/OpenADR2")


def test_loopback_is_exempt_unless_asked():
    exempt = ConnectionLimiter(ConnectionPolicy(max_open=1, max_per_second=1))
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "127.3.4.5"):
        assert is_loopback_address(address)
        assert all(exempt.admit(address, 0) is Admission.ADMITTED for _ in range(100))
    assert exempt.tracked() == 0
    limited = ConnectionLimiter(ConnectionPolicy(max_open=1, max_per_second=0,
                                                 limit_loopback=True))
    assert limited.admit("127.0.0.1", 0) is Admission.ADMITTED
    assert limited.admit("127.0.0.1", 0) is Admission.TOO_MANY_OPEN


def test_connection_memory_is_bounded():
    limiter = ConnectionLimiter(ConnectionPolicy(max_open=5, max_per_second=5), max_tracked=50)
    for index in range(5000):
        address = f"198.51.{index // 256 % 256}.{index % 256}"
        limiter.admit(address, 0)
        limiter.release(address)
    assert limiter.tracked() <= 50


# ---- logs --------------------------------------------------------------------------------------
def test_credentials_in_handshake_logs_are_redacted():
    record = logging.LogRecord("websockets.server.ocpp", logging.DEBUG, __file__, 1, "< %s: %s",
                               ("Authorization", "Basic Q1AtMTpzZWNyZXQ="), None)
    assert RedactCredentials().filter(record)
    assert "Q1AtMTpzZWNyZXQ" not in record.getMessage()
    other = logging.LogRecord("websockets.server.ocpp", logging.DEBUG, __file__, 1, "< %s: %s",
                              ("Host", "example"), None)
    RedactCredentials().filter(other)
    assert other.getMessage() == "< Host: example"


# ---- configuration -----------------------------------------------------------------------------
HEAD = """\
ven:
  vtn_url: http://127.0.0.1:8080/OpenADR2/Simple/2.0b
  ven_name: site
site:
  capacity_kw: 22
"""


def _config(tmp_path: Path, ocpp: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "ocpp:\n" + textwrap.indent(textwrap.dedent(ocpp), "  "))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidDocument) as invalid:
        load_config(path)
    return str(invalid.value).splitlines()


def test_missing_certificate_files_fail_check_with_file_line_and_key(tmp_path: Path, capsys):
    path = _config(tmp_path, """\
        stations:
          - id: CP-1
        security:
          profile: 3
          tls_certificate: certs/bridge.pem
          tls_private_key: certs/bridge.key
          tls_client_ca: certs/ca.pem
        """)
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert f"{path}:11: ocpp.security.tls_certificate: no such file: " \
           f"{tmp_path / 'certs' / 'bridge.pem'}" in err
    assert f"{path}:12: ocpp.security.tls_private_key: no such file" in err
    assert f"{path}:13: ocpp.security.tls_client_ca: no such file" in err


def test_a_key_that_does_not_fit_the_certificate(tmp_path: Path, pki: Pki):
    _, other_key = pki.client_files("CP-1")
    path = _config(tmp_path, f"""\
        stations: [{{id: CP-1, password_hash: {hash_password(b"x", log2_n=10)}}}]
        security:
          profile: 2
          tls_certificate: {pki.server_cert}
          tls_private_key: {other_key}
        """)
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:10: ocpp.security.tls_certificate: cannot use")


def test_each_profile_says_what_it_lacks(tmp_path: Path):
    path = _config(tmp_path, """\
        stations:
          - id: CP-1
            password_hash: scrypt$14$8$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5
          - id: CP-2
        security:
          profile: 2
        """)
    problems = _problems(path)
    assert f"{path}:10: ocpp.stations[1].password_hash: required by security profile 2 " \
           "(station 'CP-2'); make one with `drbridge hash-password`" in problems
    # a missing key is reported on the line of its section
    assert f"{path}:11: ocpp.security.tls_certificate: required by security profile 2: " \
        "the bridge's certificate chain, a PEM file" in problems
    assert any(".tls_private_key: required by security profile 2" in p for p in problems)


def test_passwords_without_a_profile_that_asks_for_them_are_an_error(tmp_path: Path):
    path = _config(tmp_path, """\
        stations:
          - id: CP-1
            password_hash: scrypt$14$8$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5
        """)
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:9: ocpp.stations[0].password_hash: security profile 0")


def test_profile_1_needs_listed_stations_and_valid_hashes(tmp_path: Path):
    assert "needs the stations listed" in _problems(_config(tmp_path, """\
        security: {profile: 1}
        """))[0]
    [problem] = _problems(_config(tmp_path, """\
        stations:
          - {id: CP-1, password_hash: hunter2}
        security: {profile: 1}
        """))
    assert "ocpp.stations[0].password_hash" in problem and "drbridge hash-password" in problem


def test_tls_keys_on_a_plain_profile_are_an_error(tmp_path: Path):
    [problem] = _problems(_config(tmp_path, """\
        security:
          tls_certificate: bridge.pem
        """))
    assert "ocpp.security.tls_certificate: not used by security profile 0" in problem


# ---- hash-password -----------------------------------------------------------------------------
def _hash_from(output: str) -> str:
    [line] = [x for x in output.splitlines() if x.startswith("password_hash: ")]
    return line.removeprefix("password_hash: ")


def test_hash_password_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("station secret\n"))
    assert main(["hash-password"]) == 0
    out = capsys.readouterr().out
    assert "station secret" not in out
    assert verify_password(b"station secret", _hash_from(out))


def test_hash_password_hex_and_generate(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("0001FF\n"))
    assert main(["hash-password", "--hex"]) == 0
    assert verify_password(b"\x00\x01\xff", _hash_from(capsys.readouterr().out))
    assert main(["hash-password", "--generate"]) == 0
    out = capsys.readouterr().out
    password = out.splitlines()[0].rsplit(" ", 1)[1]
    assert len(password) == 40 and verify_password(password.encode(), _hash_from(out))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 2


# ---- the handshake decision --------------------------------------------------------------------
async def test_gatekeeper_runs_the_kdf_once_per_station(monkeypatch: pytest.MonkeyPatch):
    from http import HTTPStatus

    import bridge.ocpp.auth as auth

    kdf_runs: list[bytes] = []

    def counting_verify(password: bytes, encoded: str) -> bool:
        kdf_runs.append(password)
        return verify_password(password, encoded)

    monkeypatch.setattr(auth, "verify_password", counting_verify)
    now = [0.0]
    keeper = auth.Gatekeeper(
        1, {"CP-1", "CP-2"}.__contains__,
        {"CP-1": hash_password(b"one", log2_n=10), "CP-2": hash_password(b"two", log2_n=10)},
        FailureLimiter(FailurePolicy(per_station=2, block_s=30)), clock=lambda: now[0],
    )

    def check(station: str, raw: bytes | None):
        return keeper.check(station, "192.0.2.7", None if raw is None else _basic(raw), None)

    assert await check("CP-1", b"CP-1:one") is None
    assert await check("CP-1", b"CP-1:one") is None  # a reconnection: from the digest
    assert (await check("CP-1", b"CP-1:uno")).status is HTTPStatus.UNAUTHORIZED
    assert kdf_runs == [b"one"]  # the wrong guess was known wrong without the KDF
    assert (await check("CP-2", b"CP-1:one")).status is HTTPStatus.UNAUTHORIZED
    assert (await check("CP-2", b"CP-2:zwei")).status is HTTPStatus.UNAUTHORIZED
    blocked = await check("CP-2", b"CP-2:two")
    assert blocked.status is HTTPStatus.TOO_MANY_REQUESTS
    assert dict(blocked.headers)["Retry-After"] == "30"
    now[0] = 31
    assert await check("CP-2", b"CP-2:two") is None
    challenge = await check("CP-2", None)
    assert challenge.status is HTTPStatus.UNAUTHORIZED
    assert dict(challenge.headers)["WWW-Authenticate"].startswith("Basic realm=")
    assert (await check("CP-3", b"CP-3:x")).status is HTTPStatus.NOT_FOUND
