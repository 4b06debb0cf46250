"""How the dashboard is reached: its TLS context, and who the client is and whether it used
HTTPS when a reverse proxy stands in between.

Proxy headers are believed only from the configured trusted proxies: any client can send
``X-Forwarded-For``, and believing it would let one guesser pose as many addresses (or as
another operator's) to the login throttle. Pure: no I/O beyond reading the TLS files.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def tls_context(certificate: Path, private_key: Path) -> ssl.SSLContext:
    """A TLS server context for the dashboard (TLS 1.2 or newer, Python's default suites).
    Raises OSError or ssl.SSLError on unusable files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key)
    return context


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """From ``web.trusted_proxies`` (addresses or networks; the config checked them)."""
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the
        nearest address in ``X-Forwarded-For`` (read from the right, as each proxy appends
        the address it heard from) that is not a trusted proxy itself."""
        peer_address = _address(peer or "")
        if not self.trusts(peer_address):
            return str(peer_address) if peer_address is not None else (peer or "?")
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        client = peer_address
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break  # garbage or an obfuscated hop: the last one we could read stands
            client = address
            if not self.trusts(address):
                break
        return str(client)

    def https(self, peer: str | None, forwarded_proto: Iterable[str]) -> bool:
        """Whether a trusted proxy says the client spoke HTTPS (``X-Forwarded-Proto``).

        Any ``https`` among the values counts: it can only make the session cookie
        ``Secure``, which a client that lies about it harms itself with."""
        if not self.trusts(_address(peer or "")):
            return False
        return any(value.strip().lower() == "https"
                   for header in forwarded_proto for value in header.split(","))
