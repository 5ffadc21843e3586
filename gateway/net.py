"""Who is on the other end of a request: one answer for rate limits, audit and logs.

The client address is what uvicorn puts in the ASGI scope. uvicorn rewrites it (and the
scheme) from ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only when the TCP peer is one of the
proxies given with ``serve --forwarded-allow-ips`` (config ``forwardedAllowIps``), through its own
``proxy_headers`` / ``forwarded_allow_ips`` options. By default no proxy is trusted, so these
headers are ignored and the address is the TCP peer's: a client cannot choose the address it is
rate-limited or audited under by sending a header.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional, Sequence, Union

from starlette.requests import HTTPConnection


def client_address(request: HTTPConnection) -> Optional[str]:
    """The client's IP address as this gateway trusts it, or None when the server does not know it
    (e.g. a Unix socket, or an in-process test client without one).

    Call this (never read ``X-Forwarded-For`` yourself) wherever a client address matters: per-address
    rate limits, the audit trail's ``source``, logs. Behind a trusted proxy it is the address that proxy
    reports for its client (the right-most untrusted entry of ``X-Forwarded-For``, as uvicorn resolves
    it); otherwise the TCP peer.
    """
    client = request.client
    if client is None or not client.host:
        return None
    return client.host


def parse_forwarded_allow_ips(value: Union[None, str, Sequence[str]]) -> List[str]:
    """The trusted proxy list, checked: IP addresses or networks (CIDR), comma-separated or a list.

    uvicorn silently treats anything that is not an IP or network as a literal that never matches,
    so a typo would quietly turn the proxy's headers off (or a hostname would seem to work and not);
    this refuses it instead. ``*`` (trust everyone) is refused: any client could then choose its own
    address; give the proxies' network (e.g. ``10.0.0.0/8``) instead. Empty means trust none.
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    result: List[str] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        if item == "*":
            raise ValueError(
                "forwarded-allow-ips: '*' would let any client set its own address through X-Forwarded-For; "
                "list the proxies' addresses or network (e.g. 10.0.0.0/8)"
            )
        try:
            if "/" in item:
                ipaddress.ip_network(item)  # strict, as uvicorn parses it: 10.0.0.1/8 is refused
            else:
                ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(
                "forwarded-allow-ips: %r is not an IP address or network (hostnames are not resolved; a network "
                "has no host bits set, e.g. 10.0.0.0/8)" % item[:80]
            ) from None
        result.append(item)
    return result
