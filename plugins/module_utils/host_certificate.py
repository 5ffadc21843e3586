# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host decides about its key and certificate, without Ansible and without the network.

``client_certificate`` (on the host) and ``enroll`` (through it) ask three questions on every run, and
a fleet asks them on every host: is the key what the options ask for (``regenerate``), is the
certificate on disk ours and good for long enough (key, issuer, validity), and if not, can the current
certificate renew it (no token) or does it take a token. The answers come from the files alone, so a run
with nothing to do never reaches the gateway (check mode included).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import List, Optional

# Guarded: ansible-test's import sanity test loads module_utils without third-party packages; the
# modules report a missing cryptography with missing_required_lib.
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = InvalidSignature = hashes = serialization = ec = ed25519 = rsa = NameOID = None

UTC = _dt.timezone.utc

REGENERATE_CHOICES = ("never", "fail", "partial_idempotence", "full_idempotence", "always")
#: refusals of a renewal after which only a new token helps (the current certificate cannot renew)
#: (renewal_too_early is not one: the certificate is still good, and is kept)
RENEWAL_REFUSALS = frozenset((
    "certificate_revoked", "certificate_expired", "certificate_untrusted", "certificate_unknown",
    "certificate_already_renewed", "renewal_disabled", "not_found", "not_supported", "method_not_allowed",
))
NOT_YET_VALID_SLACK = _dt.timedelta(minutes=5)


def key_description(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "an RSA %d key" % key.key_size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "an EC %s key" % key.curve.name
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    return "a %s" % type(key).__name__


def key_matches_options(key, key_type: str, size: int, curve: str) -> bool:
    """Whether ``key`` is the type (and RSA size, or EC curve) the options ask for."""
    if key_type == "rsa":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == size
    if key_type == "ec":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve
    return False


def generate_key(key_type: str, size: int, curve: str):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    return ec.generate_private_key(ec.SECP384R1() if curve == "secp384r1" else ec.SECP256R1())


def private_key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_csr(key, common_name: Optional[str], organization: Optional[str], organizational_unit: Optional[str]) -> str:
    """A CSR for ``key``; the subject matters only where the token leaves a field open."""
    attributes = []
    for oid, value in ((NameOID.COMMON_NAME, common_name), (NameOID.ORGANIZATION_NAME, organization),
                       (NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit)):
        if value:
            attributes.append(x509.NameAttribute(oid, value))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_chain(data: bytes) -> List[x509.Certificate]:
    """The certificates of a PEM bundle; none if it holds none or garbage."""
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []


def issued_by(cert, chain: List[x509.Certificate]) -> bool:
    """Whether ``cert`` is signed by the first certificate of ``chain`` (the frontdoor's issuing CA).

    A signature check, not a name comparison: a certificate from another CA that happens to use the
    same DN is not ours."""
    if cert is None or not chain:
        return False
    try:
        cert.verify_directly_issued_by(chain[0])
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def first_attribute(name, oid) -> Optional[str]:
    attrs = name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else None


def lifetime_days(cert) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400.0


@dataclasses.dataclass
class Verdict:
    """What the files say. ``reason`` is a sentence for messages; ``good`` means nothing to do."""

    good: bool
    renewable: bool  # the current certificate (with the current key) may renew itself
    reason: str


def judge(cert, key_public, chain: Optional[List[x509.Certificate]], remaining_days: int,
          now: Optional[_dt.datetime] = None) -> Verdict:
    """Is the certificate at hand good for this key, from this CA, for more than ``remaining_days``?

    ``chain`` None means the frontdoor's CA is not known here (no chain file): the issuer is then not
    held against the certificate, and the caller fetches the chain to decide."""
    now = now or _dt.datetime.now(UTC)
    if cert is None:
        return Verdict(False, False, "there is no certificate yet")
    if key_public is None or public_key_der(cert.public_key()) != public_key_der(key_public):
        return Verdict(False, False, "the certificate there is for another key")
    if chain is not None and not issued_by(cert, chain):
        return Verdict(False, False, "the certificate there was not issued by this frontdoor's CA")
    if cert.not_valid_after_utc <= now:
        return Verdict(False, False, "the certificate there expired at %s" % cert.not_valid_after_utc.isoformat())
    if cert.not_valid_before_utc > now + NOT_YET_VALID_SLACK:
        return Verdict(False, False, "the certificate there is not valid before %s"
                       % cert.not_valid_before_utc.isoformat())
    if cert.not_valid_after_utc <= now + _dt.timedelta(days=remaining_days):
        return Verdict(False, True, "the certificate there expires within %d days (at %s)"
                       % (remaining_days, cert.not_valid_after_utc.isoformat()))
    return Verdict(True, True, "the certificate there is valid until %s" % cert.not_valid_after_utc.isoformat())
