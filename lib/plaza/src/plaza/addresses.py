"""Which network addresses are on the public internet: what Plaza may fetch from a URL that
came from outside (a worker's photo, a Bluesky author's did:web document), so that such a URL
never reaches the metadata service, an internal admin page or the city's own network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# The well-known NAT64 prefix (RFC 6052): the IPv4 address it carries is the one reached.
NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local,
    reserved, multicast, unspecified, shared (100.64/10) or site-local, nor an IPv6 address
    that carries such an IPv4 address (IPv4-mapped, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and not is_public(address.sixtofour):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def first_not_public(addresses: Iterable[str]) -> str | None:
    """The first of a host's resolved addresses that is not public (not an address at all
    counts as not public), or None when every one is: a host is fetched from only then."""
    for address in addresses:
        try:
            public = is_public(ipaddress.ip_address(address))
        except ValueError:
            public = False
        if not public:
            return address
    return None


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them (an IP literal: itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
