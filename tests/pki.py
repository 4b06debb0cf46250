"""A throwaway certificate authority for TLS tests: a CA, the bridge's server certificate and
station client certificates, written as PEM files."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "drbridge tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_key(key: Key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    def issue(self, common_name: str, key: Key, server: bool) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        return builder.sign(self.key, hashes.SHA256())


@dataclass
class Pki:
    folder: Path
    ca: Authority
    ca_file: Path
    server_cert: Path
    server_key: Path
    _clients: dict[tuple[str, str], tuple[Path, Path]] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        ca = Authority.create("drbridge test CA")
        # RSA, so that the RSA key exchange suites OCPP names can be negotiated too
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server_cert = ca.issue("localhost", server_key, server=True)
        return cls(
            folder, ca, _write_cert(ca.cert, folder / "ca.pem"),
            _write_cert(server_cert, folder / "bridge.pem"),
            _write_key(server_key, folder / "bridge.key"),
        )

    def client_files(self, common_name: str,
                     authority: Authority | None = None) -> tuple[Path, Path]:
        """Certificate and key of a station, signed by our CA unless another is given."""
        authority = authority or self.ca
        cached = self._clients.get((authority.name, common_name))
        if cached is None:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = authority.issue(common_name, key, server=False)
            stem = f"{authority.name.replace(' ', '-')}-{common_name}"
            cached = (_write_cert(cert, self.folder / f"{stem}.pem"),
                      _write_key(key, self.folder / f"{stem}.key"))
            self._clients[(authority.name, common_name)] = cached
        return cached

    def client_context(self, common_name: str | None = None,
                       authority: Authority | None = None) -> ssl.SSLContext:
        """What a station uses: trusts our CA; presents a certificate when given a name."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if common_name is not None:
            cert, key = self.client_files(common_name, authority)
            context.load_cert_chain(cert, key)
        return context
