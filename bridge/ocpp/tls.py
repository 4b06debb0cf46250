"""TLS for the station edge: the server context (profiles 2 and 3) and client certificate names."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

# OCPP's security specification asks a central system for TLS 1.2 or newer with (at least)
# these four suites; Python's default list leaves out the two with RSA key exchange, which
# some chargers' TLS stacks need. Forward-secret suites stay first. (TLS 1.3 suites are
# configured apart by OpenSSL and all stay enabled.)
CIPHERS = ":".join((
    "ECDHE+AESGCM", "ECDHE+CHACHA20", "DHE+AESGCM",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384",
    "!aNULL", "!eNULL",
))


def server_context(certificate: Path, private_key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A TLS server context; with ``client_ca`` every station must present a certificate it
    signed (security profile 3). Raises OSError or ssl.SSLError on unusable files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.load_cert_chain(certificate, private_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


def common_names(peer_certificate: dict[str, Any] | None) -> list[str]:
    """The subject commonName values of a certificate as ``SSLSocket.getpeercert()`` gives it."""
    if not peer_certificate:
        return []
    return [
        value
        for rdn in peer_certificate.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]


def client_context(ca_file: Path | None, certificate: Path | None,
                   private_key: Path | None) -> ssl.SSLContext:
    """A TLS client context towards an operator's CSMS (local controller): its certificate is
    checked against ``ca_file`` (else the system's CAs) and its host name; with
    ``certificate`` drbridge presents that client certificate (security profile 3). Raises
    OSError or ssl.SSLError on unusable files."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate is not None and private_key is not None:
        context.load_cert_chain(certificate, private_key)
    return context
