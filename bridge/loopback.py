"""Whether an address or a listening host reaches this machine only.

Two questions with two answers: an IP address as a peer presents it, and a host name or
address a server listens on. (A VTN's URL is asked about by :func:`ven.shared.is_loopback_url`:
the VEN imports nothing of the bridge.)
"""

from __future__ import annotations

import ipaddress


def is_loopback_address(address: str) -> bool:
    """An IP address (a peer's) on the loopback network, also as an IPv4-mapped IPv6 one;
    anything that is no IP address is not."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_host(host: str) -> bool:
    """Whether a listening address (a name or an IP address) reaches this machine only."""
    return host.lower() == "localhost" or is_loopback_address(host)
