"""The client's address behind a reverse proxy: ``X-Forwarded-For`` is believed
only from a configured proxy (``trusted_proxies``), and then its rightmost entry
that is not itself a trusted proxy is the client (entries further left were
written by the client and prove nothing)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; ValueError naming a bad one."""
    out = []
    for e in entries:
        try:
            out.append(ipaddress.ip_network(e.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {e[:64]!r} is not an IP address or network") from None
    return tuple(out)


def _trusted(addr: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def forwarded_for(peer: Any, headers: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The client's address, or None to use the peer's own."""
    if not (isinstance(peer, tuple) and peer and _trusted(str(peer[0]), trusted)):
        return None
    hops = [h.strip() for value in headers for h in value.split(",")][-32:]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None  # garbage from the proxy's side of the chain: believe nothing
        if not _trusted(hop, trusted):
            return hop
    return None
