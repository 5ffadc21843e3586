"""The client certificate a TLS-terminating proxy verified, for renewal behind nginx or Envoy doing mTLS.

The ASGI servers do not hand the client's TLS certificate to the application, but a proxy that terminates mTLS
can pass the certificate it verified in a header: nginx ``proxy_set_header X-SSL-Client-Cert
$ssl_client_escaped_cert;``, Envoy ``X-Forwarded-Client-Cert`` (``forward_client_cert_details``). Anyone can send
such a header, so it is believed only when the request comes from one of the configured proxies' own addresses
(config ``clientCertificateHeader.proxies``), as the gateway sees them: the TCP peer, unless uvicorn resolved
``X-Forwarded-For`` for a proxy trusted with ``forwardedAllowIps``, which is why the two lists may not overlap.
A header from any other address is refused when it is the request's only credential, and ignored next to a JWT.
The engine (renewal.py) then treats the certificate as the JWT's x5c leaf: same chain, record, revocation and
expiry checks, with the handshake as the proof of possession.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Dict, Optional

from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.renewal import certificate_from_proxy_header
from starlette.requests import Request

from .net import client_address

log = logging.getLogger("frontdoor.gateway")


class ProxyClientCertificate:
    def __init__(self, settings: Dict[str, Any]):
        self.header = settings["header"]
        self.format = settings["format"]
        self.proxies = [ipaddress.ip_network(p) for p in settings["proxies"]]

    def _from_proxy(self, request: Request) -> bool:
        address = client_address(request)
        try:
            ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            return False
        return ip is not None and any(ip.version == n.version and ip in n for n in self.proxies)

    def certificate(self, request: Request, authorization: Optional[str]):
        """The verified client certificate from the proxy's header, or None (no header, or a JWT is sent)."""
        value = request.headers.get(self.header)
        if value is None or (authorization and authorization.strip()):
            return None
        if not self._from_proxy(request):
            log.warning("client certificate header %s from %s, which is not a configured proxy: refused",
                        self.header, client_address(request))
            raise FrontdoorError(
                "invalid_renewal_token",
                "A client certificate header came from an address that is not one of the configured proxies "
                "(clientCertificateHeader.proxies); send a renewal JWT instead.",
                details={"reason": "proxy_untrusted"},
            )
        return certificate_from_proxy_header(value, self.format)
