"""TLS 1.2 mutual authentication, VTN pinning and XML signatures against a real openleadr VTN,
with certificates made for the test."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from certs import Issued, Pki
from conftest import wait_until
from oadr_payloads import NAMESPACES, Event, Signal, distribute_event
from openleadr.messaging import create_message
from openleadr.utils import certificate_fingerprint_from_der
from test_ven_client import Listener, settings

from bridge.sim.vtn import DemoVtn, VtnTls
from ven.oadr20b.client import TlsSettings, Ven, VenSettings, transport_warnings
from ven.oadr20b.messages import RefusedMessage, parse_untrusted, read_message
from ven.oadr20b.signatures import signed_payload


@dataclasses.dataclass
class Setup:
    pki: Pki
    vtn: DemoVtn
    server_der: bytes
    client_cert: str
    client_key: str
    server: Issued  # the VTN's certificate, which also signs its messages

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
    yield Setup(pki, vtn, server.der, client.cert, client.key, server)
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
                lambda: "refused a message from the VTN: signature: the signing certificate "
                        "does not match the pin" in caplog.text,
                what="the signature refusal logged")
        await asyncio.sleep(1.5)  # several attempts
        assert listener.registrations == []
        if problem != "wrong signing pin":  # refused before a byte reached the VTN
            assert secure.vtn.received.registrations == []
    finally:
        await stop(ven, task)


def _pin_forms(der: bytes) -> dict[str, str]:
    digest = hashlib.sha256(der).hexdigest()
    pairs = [digest[i:i + 2] for i in range(0, 64, 2)]
    return {"full, lower case, colons": ":".join(pairs),
            "full, upper case, bare": digest.upper(),
            "short, lower case, bare": digest[-20:],
            "short, as openleadr prints it": ":".join(pairs[-10:]).upper()}


@pytest.mark.parametrize(("tls_form", "signing_form"), [
    ("full, lower case, colons", None),
    ("full, upper case, bare", None),
    ("short, lower case, bare", None),
    ("short, as openleadr prints it", "full, lower case, colons"),
])
async def test_a_pin_in_any_form_checks_tls_and_signatures_alike(
        secure: Setup, tls_form: str, signing_form: str | None):
    """The certificate's SHA-256 or OpenADR's short form, in any case, with or without colons:
    what passes the TLS pin passes the signature check too."""
    forms = _pin_forms(secure.server_der)
    tls = secure.tls(vtn_fingerprint=forms[tls_form],
                     vtn_signing_fingerprint=forms[signing_form] if signing_form else None)
    ven, listener, task = await run_ven(secure, tls)
    try:
        await wait_until(lambda: listener.registrations != [], what="registration")
        ven_id = listener.registrations[0].ven_id
        start = datetime.now(UTC) + timedelta(minutes=5)
        event_id = secure.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=1), 2)])
        await wait_until(lambda: (ven_id, event_id, "optIn") in secure.vtn.received.opts,
                         what="the signed event answered")
    finally:
        await stop(ven, task)


DSIG = "http://www.w3.org/2000/09/xmldsig#"
OADR = "http://openadr.org/oadr-2.0b/2012/07"


def _element(text: str, tag: str) -> tuple[int, int]:
    """Where the one element ``tag`` (prefixed, as written) starts and ends in ``text``."""
    start = text.index(f"<{tag}")
    return start, text.index(f"</{tag}>") + len(f"</{tag}>")


def signature_wrapped(signed: str, forged: bytes) -> bytes:
    """XML signature wrapping: the signed oadrSignedObject moved into a ds:Object of the
    signature (the only place the 2.0b schema lets it go), and the forged message's unsigned
    oadrSignedObject put where a reader looks for the message.

    The signature stays valid. Inclusive c14n, which openleadr signs with, renders the
    namespaces in scope; so the ds:Signature is rewritten in the default namespace, its
    ds: children declare their prefix themselves and drop the default, and the moved
    element drops it too: SignedInfo and the moved element canonicalise as signed.
    """
    sig_start, sig_end = _element(signed, "ds:Signature")
    obj_start, obj_end = _element(signed, "oadr:oadrSignedObject")
    inner = signed[sig_start:sig_end]
    inner = inner[inner.index(">") + 1:-len("</ds:Signature>")]
    for tag in ("SignedInfo", "SignatureValue", "KeyInfo", "Object"):
        inner = inner.replace(f"<ds:{tag}", f'<ds:{tag} xmlns:ds="{DSIG}" xmlns=""', 1)
    moved = signed[obj_start:obj_end].replace(
        "<oadr:oadrSignedObject", '<oadr:oadrSignedObject xmlns=""', 1)
    forged_text = forged.decode()
    f_start, f_end = _element(forged_text, "oadr:oadrSignedObject")
    unsigned = forged_text[f_start:f_end].replace(
        "<oadr:oadrSignedObject", f"<oadr:oadrSignedObject {NAMESPACES}", 1)
    return (signed[:sig_start]
            + f'<Signature xmlns="{DSIG}" xmlns:oadr="{OADR}">{inner}'
            + f"<Object>{moved}</Object></Signature>"
            + unsigned + signed[obj_end:]).encode()


async def test_a_wrapped_signature_is_refused(secure: Setup, caplog: pytest.LogCaptureFixture):
    """A valid signature by the VTN over one message, with an unsigned one put where the
    reader looks: the VEN reads only what the signature covers, and refuses the rest."""
    ven, listener, task = await run_ven(secure, secure.tls())
    try:
        await wait_until(lambda: listener.registrations != [], what="registration")
        ven_id = listener.registrations[0].ven_id
        start = datetime.now(UTC) + timedelta(minutes=5)
        forged = distribute_event(
            [Event("forged", start, [Signal("SIMPLE", "level", [(timedelta(minutes=1), 3)])])],
            request_id="forged-1")
        genuine = create_message(  # signed by the VTN's own key, moments before the poll
            "oadrResponse", cert=secure.server.pem, key=Path(secure.server.key).read_bytes(),
            response={"response_code": 200, "response_description": "OK", "request_id": None},
            ven_id=ven_id)
        secure.vtn.send_raw(signature_wrapped(genuine, forged))
        await wait_until(lambda: not secure.vtn.raw_replies, what="the wrapped poll reply")
        # a genuine event after it: once it is in, the wrapped reply has been dealt with
        event_id = secure.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=1), 2)])
        await wait_until(lambda: (ven_id, event_id, "optIn") in secure.vtn.received.opts,
                         what="the genuine event answered")
        assert [e.event_id for e in listener.events] == [event_id]
        assert "signature wrapping" in caplog.text
    finally:
        await stop(ven, task)


def test_signed_payload_hands_on_what_is_signed_and_nothing_else(tmp_path: Path):
    """ven.oadr20b.signatures directly: the signed message comes back alone, in a fresh payload;
    anything that is not exactly what the pinned certificate signed is refused."""
    pki = Pki(tmp_path)
    vtn = pki.issue("vtn.test", server=True)
    pin = _pin_forms(vtn.der)["full, lower case, colons"]
    signed = create_message(
        "oadrResponse", cert=vtn.pem, key=Path(vtn.key).read_bytes(), ven_id="ven-1",
        response={"response_code": 200, "response_description": "OK", "request_id": "R-7"})

    result = signed_payload(parse_untrusted(signed.encode()), pin)
    assert b"Signature" not in result.payload
    assert read_message(result.payload) == ("oadrResponse", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": "R-7"},
        "ven_id": "ven-1"})
    assert result.replay_protect.tag.endswith("}ReplayProtect")

    def refusal(text: str, pin: str = pin) -> str:
        with pytest.raises(RefusedMessage) as refused:
            signed_payload(parse_untrusted(text.encode()), pin)
        assert refused.value.stage == "signature"
        return refused.value.reason

    assert "does not verify" in refusal(signed.replace(">R-7<", ">R-8<"))
    assert "does not match the pin" in refusal(signed, pin="00" * 32)
    unsigned = re.sub(r"<ds:Signature.*</ds:Signature>", "", signed, flags=re.S)
    assert "not signed" in refusal(unsigned)
    start, end = _element(signed, "oadr:oadrSignedObject")
    copy = signed[start:end].replace(">R-7<", ">R-8<")
    doubled = signed[:end] + copy + signed[end:]  # two objects under the same Id
    assert "exactly one oadrSignedObject" in refusal(doubled)


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
