"""Keys, CSRs and certificate helpers for tests.

Real keys and real PKCS#10 requests made with ``cryptography``: the engine must be tested on
exactly what an ``openssl req`` user would send, including the awkward cases (weak keys,
odd curves, tampered signatures, SANs and extensions that must not be copied).
"""

from __future__ import annotations

import base64
import functools
import warnings
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

KEY_KINDS = ("rsa1024", "rsa2048", "rsa3072", "p256", "p384", "p521", "secp256k1", "ed25519", "ed448")


def make_key(kind: str = "p256"):
    """A fresh private key of ``kind`` (one of KEY_KINDS)."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    curves = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1, "secp256k1": ec.SECP256K1}
    if kind in curves:
        return ec.generate_private_key(curves[kind]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError("unknown key kind %r (known: %s)" % (kind, ", ".join(KEY_KINDS)))


@functools.cache
def shared_key(kind: str = "p256", slot: int = 0):
    """A key made once per (kind, slot) per process: RSA generation is slow and most tests
    only need *a* key of a kind, or several distinct ones (slots)."""
    return make_key(kind)


def _signing_hash(key):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _subject_attributes(cn, o, ou) -> list:
    attributes = []
    if o is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o, _validate=False))
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou, _validate=False))
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False))
    return attributes


def make_csr(
    key=None,
    cn: str | None = None,
    o: str | None = None,
    ou: str | None = None,
    sans: Sequence[str] = (),
    extensions: Iterable[x509.ExtensionType] = (),
) -> str:
    """A signed PEM CSR. ``sans`` entries that parse as IP addresses become IP SANs, the
    rest DNS names. ``extensions`` are added non-critical, as a CSR may carry anything.
    Subject values are not length-checked here (a redeemer's CSR need not respect RFC 5280)."""
    import ipaddress

    key = key if key is not None else shared_key("p256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the over-long values are the point of some tests
        attributes = _subject_attributes(cn, o, ou)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if sans:
        names = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    csr = builder.sign(key, _signing_hash(key))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def tamper_signature(csr_pem: str) -> str:
    """The same CSR with one bit of its signature flipped: still parses, no longer verifies."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode("ascii")).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature BIT STRING is the last element of the outer SEQUENCE
    body = base64.encodebytes(bytes(der)).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE REQUEST-----\n%s\n-----END CERTIFICATE REQUEST-----\n" % "\n".join(lines)


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def public_key_der(key_or_public) -> bytes:
    """SubjectPublicKeyInfo DER of a private or public key, to compare keys."""
    public = key_or_public.public_key() if hasattr(key_or_public, "private_bytes") else key_or_public
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def subject_values(cert: x509.Certificate) -> dict:
    """{'CN': [...], 'O': [...], 'OU': [...]}: every value, so a duplicated attribute shows."""
    result = {}
    for label, oid in (("CN", NameOID.COMMON_NAME), ("O", NameOID.ORGANIZATION_NAME), ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME)):
        result[label] = [a.value for a in cert.subject.get_attributes_for_oid(oid)]
    return result
