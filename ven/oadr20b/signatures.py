"""XML signatures on what the VTN sends (OpenADR 2.0b with ``xml_signatures``). Pure: no I/O,
no clock.

A VTN signs each ``oadrPayload`` with one ``ds:Signature`` beside the ``oadrSignedObject``:
one reference to that object (by its ``Id``) and one to the signature properties, which
hold the ``ReplayProtect`` timestamp and nonce. :func:`signed_payload` checks the signing
certificate against the pin and the signature with signxml, and hands back *only what was
signed*: a fresh ``oadrPayload`` around the signed bytes of the ``oadrSignedObject``, and
the signed ``ReplayProtect``. Whatever else the document carries is never read, and a
document whose readable ``oadrSignedObject`` is not the one the signature covers is
refused: that is how XML signature wrapping works (the signed element moved where the
reader does not look, an unsigned one put where it does).

Certificate pins are compared in one way for TLS and signatures: :func:`canonical_pin`
turns what an operator writes (the certificate's SHA-256, or OpenADR's short form of its
last ten bytes; any case, colons or not) into upper-case hex, and
:func:`fingerprint_matches` compares a certificate with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from ven.oadr20b.messages import OADR_NS, RefusedMessage

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
REPLAY_NS = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"

# The signature is a child of oadrPayload, and carries exactly the two references above.
_EXPECTED = SignatureConfiguration(location="./", expect_references=2)
_HEX = re.compile(r"[0-9A-F]+")


def canonical_pin(text: str) -> str:
    """A certificate pin as upper-case hex without separators: 64 digits (the SHA-256 of the
    certificate) or 20 (OpenADR's short form: its last ten bytes). Raises ValueError."""
    pin = re.sub(r"[\s:]", "", text).upper()
    if not _HEX.fullmatch(pin) or len(pin) not in (20, 64):
        raise ValueError(
            f"{text!r} is not a certificate fingerprint: give the certificate's SHA-256 (64 hex "
            "digits) or OpenADR's short form (its last 10 bytes, 20 hex digits), colons optional")
    return pin


def fingerprint_matches(der: bytes, pin: str) -> bool:
    """A certificate (DER) against a pin in any form :func:`canonical_pin` reads."""
    try:
        wanted = canonical_pin(pin)
    except ValueError:
        return False
    digest = hashlib.sha256(der).hexdigest().upper()
    return wanted == digest or (len(wanted) == 20 and digest.endswith(wanted))


@dataclass(frozen=True)
class Signed:
    """What a signature covers, and nothing else."""

    payload: bytes  # an oadrPayload holding the signed oadrSignedObject alone, for read_message
    replay_protect: etree._Element  # the signed dsp:ReplayProtect (timestamp, nonce)


def _refuse(reason: str) -> RefusedMessage:
    return RefusedMessage(f"signature: {reason}", stage="signature")


def _local_id(element: etree._Element) -> str | None:
    """The element's Id attribute, in whatever namespace (openleadr writes ``oadr:Id``), as
    signxml resolves references."""
    for name, value in element.attrib.items():
        if etree.QName(name).localname in ("Id", "ID"):
            return str(value)
    return None


def signed_payload(root: etree._Element, pin: str) -> Signed:
    """Verify the signature of an ``oadrPayload`` (as :func:`ven.oadr20b.messages.parse_untrusted`
    gives it) against the pinned certificate; return what it covers. Raises
    :class:`~ven.oadr20b.messages.RefusedMessage` (stage ``signature``) only."""
    if root.tag != f"{{{OADR_NS}}}oadrPayload":
        raise _refuse("not an oadrPayload")
    signatures = root.findall(f"{{{DS_NS}}}Signature")
    readable = root.findall(f"{{{OADR_NS}}}oadrSignedObject")
    if len(signatures) != 1:
        raise _refuse("the message is not signed" if not signatures
                      else "more than one signature")
    if len(readable) != 1:
        raise _refuse("the payload must hold exactly one oadrSignedObject")
    [signature], [message] = signatures, readable
    certificate = signature.findtext(f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/"
                                     f"{{{DS_NS}}}X509Certificate")
    if not certificate:
        raise _refuse("no X509Certificate in the signature's KeyInfo")
    try:
        der = base64.b64decode("".join(certificate.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise _refuse(f"unreadable X509Certificate: {error}") from error
    if not fingerprint_matches(der, pin):
        raise _refuse("the signing certificate does not match the pin "
                      f"(its SHA-256 is {hashlib.sha256(der).hexdigest().upper()})")
    pem = ("-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der).decode("ascii")
           + "-----END CERTIFICATE-----\n")
    try:
        results = XMLVerifier().verify(root, x509_cert=pem, expect_config=_EXPECTED)
    except Exception as error:  # signxml's own errors, and whatever its parts raise on odd input
        raise _refuse(f"does not verify: {type(error).__name__}: {error}") from error
    assert isinstance(results, list)  # two references expected, so signxml returns a list
    uris = [ref.get("URI") for ref in signature.iterfind(
        f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference")]
    message_id = _local_id(message)
    if message_id is None or f"#{message_id}" not in uris:
        raise _refuse("the signature does not cover the oadrSignedObject the message carries "
                      "(a signed element moved elsewhere: signature wrapping)")
    signed = results[uris.index(f"#{message_id}")].signed_xml
    if signed is None or signed.tag != f"{{{OADR_NS}}}oadrSignedObject":
        raise _refuse("the signed reference is not an oadrSignedObject")
    replay = [found for result in results if result.signed_xml is not None
              for found in result.signed_xml.iter(f"{{{REPLAY_NS}}}ReplayProtect")]
    if len(replay) != 1:
        raise _refuse("no signed ReplayProtect" if not replay else "more than one ReplayProtect")
    envelope = etree.Element(f"{{{OADR_NS}}}oadrPayload", nsmap={"oadr": OADR_NS})
    envelope.append(signed)
    return Signed(etree.tostring(envelope, encoding="UTF-8", xml_declaration=True), replay[0])
