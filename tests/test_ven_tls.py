"""TLS 1.2 mutual authentication, VTN pinning and XML signatures against a real openleadr VTN,
with certificates made for the test."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from certs import Pki
from conftest import wait_until
from oadr_payloads import Event, Signal, distribute_event
from openleadr.utils import certificate_fingerprint_from_der
from test_ven_client import Listener, settings

from bridge.sim.vtn import DemoVtn, VtnTls
from ven.client import TlsSettings, Ven, VenSettings, transport_warnings


@dataclasses.dataclass
class Setup:
    pki: Pki
    vtn: DemoVtn
    server_der: bytes
    client_cert: str
    client_key: str

    def tls(self, **changes: object) -> TlsSettings:
        base = TlsSettings(cert=self.client_cert, key=self.client_key, ca_file=self.pki.ca_file,
                           vtn_fingerprint=certificate_fingerprint_from_der(self.server_der),
                           xml_signatures=True)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def settings(self, tls: TlsSettings | None) -> VenSettings:
        return dataclasses.replace(settings(self.vtn.url), tls=tls)


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Setup]:
    pki = Pki(tmp_path)
    server = pki.issue("vtn.test", server=True)
    client = pki.issue("ven.test")
    vtn = DemoVtn(tls=VtnTls(server.cert, server.key, pki.ca_file, sign=True))
    await vtn.start()
    yield Setup(pki, vtn, server.der, client.cert, client.key)
    await vtn.stop()


async def run_ven(setup: Setup, tls: TlsSettings | None) -> tuple[Ven, Listener,
                                                                    asyncio.Task[None]]:
    listener = Listener()
    ven = Ven(setup.settings(tls), listener)
    return ven, listener, asyncio.create_task(ven.run())


async def stop(ven: Ven, task: asyncio.Task[None]) -> None:
    await ven.stop()
    await asyncio.wait_for(task, 5)


async def test_mutual_tls_with_pinning_and_signatures_carries_events(secure: Setup):
    ven, listener, task = await run_ven(secure, secure.tls())
    try:
        await wait_until(lambda: listener.registrations != [], what="registration over TLS")
        assert secure.vtn.url.startswith("https://")
        ven_id = listener.registrations[0].ven_id
        start = datetime.now(UTC) + timedelta(minutes=5)
        event_id = secure.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=1), 2)])
        # the VTN signs the event; the VEN checks the signature, signs its answer, and the
        # VTN checks that against the client certificate it saw at registration
        await wait_until(lambda: (ven_id, event_id, "optIn") in secure.vtn.received.opts,
                         what="the signed answer")
        assert [e.event_id for e in listener.events] == [event_id]
    finally:
        await stop(ven, task)


async def test_unsigned_payloads_are_refused_when_signatures_are_on(
        secure: Setup, caplog: pytest.LogCaptureFixture):
    ven, listener, task = await run_ven(secure, secure.tls())
    try:
        await wait_until(lambda: listener.registrations != [], what="registration")
        start = datetime.now(UTC) + timedelta(minutes=5)
        secure.vtn.send_raw(distribute_event(
            [Event("forged", start, [Signal("SIMPLE", "level", [(timedelta(minutes=1), 3)])])]))
        await wait_until(lambda: not secure.vtn.raw_replies, what="the forged poll reply")
        await wait_until(lambda: "refused a message from the VTN" in caplog.text,
                         what="the refusal")
        assert listener.events == []
    finally:
        await stop(ven, task)


@pytest.mark.parametrize("problem", ["wrong pin", "wrong signing pin", "no client certificate",
                                     "unknown CA"])
async def test_the_ven_does_not_talk_to_a_vtn_it_cannot_authenticate(
        secure: Setup, tmp_path: Path, problem: str, caplog: pytest.LogCaptureFixture):
    if problem == "wrong pin":
        tls = secure.tls(vtn_fingerprint="00:11:22:33:44:55:66:77:88:99")
    elif problem == "wrong signing pin":  # TLS is fine; the VTN's signatures are not its own
        tls = secure.tls(vtn_signing_fingerprint="00:11:22:33:44:55:66:77:88:99")
    elif problem == "no client certificate":
        tls = secure.tls(cert=None, key=None, xml_signatures=False)
    else:
        (tmp_path / "other").mkdir()
        other = Pki(tmp_path / "other", name="other-ca")
        tls = secure.tls(ca_file=other.ca_file)
    ven, listener, task = await run_ven(secure, tls)
    try:
        if problem == "wrong pin":
            await wait_until(lambda: "does not match ven.tls.vtn_fingerprint" in caplog.text,
                             what="the pin mismatch logged")
        if problem == "wrong signing pin":
            await wait_until(
                lambda: "refused a message from the VTN: FingerprintMismatch" in caplog.text,
                what="the signature refusal logged")
        await asyncio.sleep(1.5)  # several attempts
        assert listener.registrations == []
        if problem != "wrong signing pin":  # refused before a byte reached the VTN
            assert secure.vtn.received.registrations == []
    finally:
        await stop(ven, task)


def test_a_remote_vtn_without_tls_is_flagged():
    assert transport_warnings("http://127.0.0.1:8080/OpenADR2/Simple/2.0b", None) == []
    assert transport_warnings("http://localhost/x", None) == []
    [plain] = transport_warnings("http://vtn.utility.example/OpenADR2/Simple/2.0b", None)
    assert "WITHOUT TLS" in plain
    assert len(transport_warnings("https://vtn.utility.example/x", None)) == 2
    full = TlsSettings(cert="c.pem", key="k.pem", ca_file="ca.pem")
    assert transport_warnings("https://vtn.utility.example/x", full) == []


def test_the_ven_warns_loudly_at_start(caplog: pytest.LogCaptureFixture):
    Ven(settings("http://192.0.2.10:8080/OpenADR2/Simple/2.0b"), Listener())
    assert "INSECURE" in caplog.text and "WITHOUT TLS" in caplog.text


async def test_the_ven_speaks_the_rsa_suite_openadr_names(tmp_path: Path):
    """A VTN with an RSA certificate that offers only TLS_RSA_WITH_AES_128_CBC_SHA256, one
    of the two TLS 1.2 suites OpenADR 2.0b names (Python's default list leaves it out)."""
    from pki import Pki as RsaPki

    pki = RsaPki.create(tmp_path / "rsa")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA256")
    context.load_cert_chain(pki.server_cert, pki.server_key)
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        tls = TlsSettings(ca_file=str(pki.ca_file))
        ven = Ven(dataclasses.replace(settings(f"https://localhost:{port}/OpenADR2/Simple/2.0b"),
                                      tls=tls), Listener())
        await ven._client._perform_request("EiRegisterParty", "<oadrPayload/>")
        assert requests and requests[0].startswith(b"POST /OpenADR2/Simple/2.0b/EiRegisterParty")
        await ven.stop()
    finally:
        server.close()
        await server.wait_closed()
