# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client side of renewal with the current certificate: the JWT and the CSR.

Shared by ``frontdoor-gateway renew`` and the Ansible ``client_certificate`` module, which both
run where the private key is. They send these to the gateway themselves (the CLI with requests,
the module with ``ansible.module_utils.urls``): nothing here talks HTTP.

The JWT is made by jwcrypto (a JOSE library: a JWS is never assembled by hand here). It has to be
made where the current private key is, so on a managed host jwcrypto is a requirement of renewal
(only of renewal: enrolment with a token needs cryptography alone). Signing on the controller
instead would mean moving the host's private key to the controller, which the whole design
(the key never leaves its owner) rules out. jwcrypto is pure Python on top of cryptography,
which hosts already need.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Optional, Sequence, Tuple

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover
    x509 = hashes = serialization = ec = ed25519 = rsa = None
    HAS_CRYPTOGRAPHY = False
try:
    from jwcrypto import jwk, jwt

    HAS_JWCRYPTO = True
except ImportError:  # pragma: no cover
    jwk = jwt = None
    HAS_JWCRYPTO = False

from .errors import FrontdoorError

#: lifetime of the JWTs made here: well inside the gateway's 5 minutes, leaving room for clock skew
TOKEN_LIFETIME = 120
RENEW_PATH = "/frontdoor/%s/client-certificates/renew"


def renewal_path(frontdoor_id: str) -> str:
    """The endpoint's path: the JWT's ``aud`` and the URL's path (below the gateway's base URL)."""
    return RENEW_PATH % frontdoor_id


def alg_for(key) -> str:
    """The JWS algorithm for a private key: the one the gateway accepts for its type."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "ES256", "secp384r1": "ES384"}
        if key.curve.name not in algs:
            raise FrontdoorError("invalid_request", "EC curve %s cannot sign a renewal JWT (P-256 or P-384)." % key.curve.name)
        return algs[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise FrontdoorError("invalid_request", "A %s key cannot sign a renewal JWT." % type(key).__name__)


def _x5c(certificates: Sequence[object]) -> list:
    """x5c entries: standard base64 (not base64url) of each certificate's DER, leaf first (RFC 7515 4.1.6)."""
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in certificates]


def make_renewal_token(
    certificates: Sequence[object], key, frontdoor_id: str, now: Optional[float] = None,
    lifetime: int = TOKEN_LIFETIME, jti: Optional[str] = None,
) -> str:
    """A compact JWS signed by ``key`` (the current certificate's private key) with the current
    certificate (and optionally its chain) in ``x5c``: what ``POST .../renew`` takes as a Bearer."""
    if not HAS_JWCRYPTO:
        raise FrontdoorError(
            "not_supported", "Renewal needs the Python library jwcrypto where the key is (pip install jwcrypto)."
        )
    now = int(time.time() if now is None else now)
    alg = alg_for(key)
    header = {"alg": alg, "typ": "JWT", "x5c": _x5c(certificates)}
    claims = {
        "aud": renewal_path(frontdoor_id), "iat": now, "nbf": now, "exp": now + int(lifetime),
        "jti": jti or uuid.uuid4().hex,
    }
    token = jwt.JWT(header=header, claims=claims)
    token.make_signed_token(jwk.JWK.from_pyca(key))
    return token.serialize()


def new_key_like(key):
    """A fresh private key of the same type and size as ``key`` (key rotation keeps the key type)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(type(key.curve)())
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    raise FrontdoorError("invalid_request", "Cannot make a new key like a %s." % type(key).__name__)


def make_csr(certificate, key) -> str:
    """A PEM CSR for ``key`` with the current certificate's subject (the gateway keeps the subject and
    SANs of the current certificate whatever the CSR says; the CSR proves possession of the key)."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(certificate.subject).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def renewal_request(
    cert_pem: bytes, key_pem: bytes, frontdoor_id: str, new_key: bool = False, key_password: Optional[bytes] = None,
) -> Tuple[str, str, object]:
    """(Authorization header value, JSON body, the key the new certificate will have) for a renewal of
    the certificate(s) in ``cert_pem`` (leaf first) held with ``key_pem``."""
    certificates = x509.load_pem_x509_certificates(cert_pem)
    key = serialization.load_pem_private_key(key_pem, key_password)
    leaf = certificates[0]
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise FrontdoorError("invalid_request", "The private key does not belong to the certificate.")
    token = make_renewal_token(certificates, key, frontdoor_id)
    target_key = new_key_like(key) if new_key else key
    body = json.dumps({"type": "CSR", "value": make_csr(leaf, target_key)})
    return "Bearer " + token, body, target_key


def key_pem(key) -> bytes:
    """PKCS#8 PEM, unencrypted (written 0600 by the caller)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
