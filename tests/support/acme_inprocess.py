"""The ACME front's engine (``AcmeServer``) driven in process, with requests signed by josepy as a client would.

For tests that need to act between two steps of a request (a token deleted while an order is being made) or look
at the store after each one, on any backend: SQLite here, a real OpenBao in tests/vault.
"""

from __future__ import annotations

import json
from typing import Optional

import josepy
from acme import jws as acme_jws
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_csr
from frontdoor_pki.acme import protocol
from frontdoor_pki.acme.server import AcmeServer, Urls

BASE = "http://acme.test/acme/default"
KINDS = ("binding", "account", "key", "order")


class Client:
    """One ACME account key talking to ``AcmeServer`` for frontdoor ``default``."""

    def __init__(self, service):
        self.service = service
        self.server = AcmeServer(service)
        self.urls = Urls(BASE)
        self.key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.kid: Optional[str] = None

    def post(self, route: str, payload, arg: str = "", url: Optional[str] = None):
        url = url or {
            "new-account": self.urls.new_account, "new-order": self.urls.new_order,
            "finalize": self.urls.finalize(arg), "order": self.urls.order(arg), "key-change": self.urls.key_change,
        }[route]
        body = b"" if payload is None else json.dumps(payload).encode()
        nonce = josepy.decode_b64jose(self.server.new_nonce())
        jws = acme_jws.JWS.sign(body, key=self.key, alg=josepy.ES256, nonce=nonce, url=url, kid=self.kid)
        return self.server.post("default", self.urls, url, jws.json_dumps().encode(), route, arg, source="192.0.2.9")

    def register(self, token: dict):
        """``token``: {"id", "acmeEab"} as the create answer gives it."""
        directory = messages.Directory.from_json(self.server.directory("default", self.urls))
        eab = messages.ExternalAccountBinding.from_data(self.key.public_key(), token["acmeEab"]["keyId"],
                                                        token["acmeEab"]["hmacKey"], directory)
        reply = self.post("new-account", {"termsOfServiceAgreed": True, "externalAccountBinding": eab})
        self.kid = reply.location
        return reply

    def order(self, *names: str):
        return self.post("new-order", {"identifiers": [{"type": "dns", "value": n} for n in names]})

    def finalize(self, order_reply, csr_pem: str):
        order_id = order_reply.location.rsplit("/", 1)[1]
        der = load_pem_x509_csr(csr_pem.encode()).public_bytes(Encoding.DER)
        return self.post("finalize", {"csr": josepy.encode_b64jose(der)}, arg=order_id)


def new_token(service, common_name: str) -> dict:
    """A token with its EAB, as the create answer shows them."""
    record, _secret = service.create_token("default", name="acme-" + common_name.split(".")[0],
                                           common_name=common_name)
    return {"id": record.id, "acmeEab": protocol.eab_credentials(service.store.acme_server_key(), record)}


def issued_through_acme(service, name: str, seed: int = 60):
    """A token redeemed and renewed by its bound account: a binding, an account, its key, two orders."""
    from support.crypto import make_csr, shared_key

    token = new_token(service, name)
    client = Client(service)
    assert client.register(token).status == 201
    for index in (1, 2):
        order = client.order(name)
        done = client.finalize(order, make_csr(shared_key("p256", seed + index), cn=name, sans=[name]))
        assert done.body["status"] == "valid"
    return token, client


def documents(store, frontdoor: str = "default") -> dict:
    """kind -> sorted names of the ACME documents of the frontdoor (bindings, accounts, key index, orders)."""
    return {kind: store.acme_list(kind, frontdoor) for kind in KINDS}
