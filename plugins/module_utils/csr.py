# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CSR parsing and the key policy, on cryptography's own parser and signature check.

Everything here runs before a token is touched, so a bad CSR can never use a
token up (step-ca's most common complaint). This is the one place where client bytes are
parsed: each of cryptography's errors is turned into invalid_csr with what to fix.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report a missing cryptography with missing_required_lib (HAS_CRYPTOGRAPHY) instead of a traceback.
try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = UnsupportedAlgorithm = serialization = ec = ed25519 = rsa = NameOID = None

from .errors import FrontdoorError
from .model import Subject
from .tokens import SUBJECT_FIELD_MAX

CSR_MAX_BYTES = 64 * 1024
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
KEY_POLICY = "RSA 2048-8192 bits, EC P-256 or P-384, or Ed25519"


def _invalid(message: str, reason: str) -> FrontdoorError:
    return FrontdoorError("invalid_csr", message, details={"reason": reason})


def load_csr(pem, csr_type="CSR") -> x509.CertificateSigningRequest:
    """Parse and verify a PEM CSR; raise invalid_csr saying exactly what is wrong."""
    return load_csr_and_key(pem, csr_type)[0]


def load_csr_and_key(pem, csr_type="CSR") -> Tuple[x509.CertificateSigningRequest, object]:
    """``load_csr`` plus the public key it checked, so that the caller hashes the key it vetted.

    Every failure is a FrontdoorError raised before any token is read, so a bad CSR never
    uses a token up."""
    _check_envelope(pem, csr_type)
    csr = _parse(pem)
    public_key = _public_key(csr)
    check_key_policy(public_key)
    _check_proof_of_possession(csr)
    return csr, public_key


def _check_envelope(pem, csr_type) -> None:
    """The cheap refusals, before cryptography sees any byte."""
    if csr_type != "CSR":
        raise FrontdoorError(
            "invalid_request", "type must be \"CSR\" (the only kind of request supported), got %r." % (csr_type,)
        )
    if not isinstance(pem, str) or not pem.strip():
        raise _invalid("value must hold a PEM certificate request ('-----BEGIN CERTIFICATE REQUEST-----').", "empty")
    if len(pem.encode("utf-8", "replace")) > CSR_MAX_BYTES:
        raise FrontdoorError("payload_too_large", "The CSR is larger than %d bytes." % CSR_MAX_BYTES)
    if "-----BEGIN CERTIFICATE REQUEST-----" not in pem and "-----BEGIN NEW CERTIFICATE REQUEST-----" not in pem:
        raise _invalid(
            "value is not a PEM certificate request: it must contain '-----BEGIN CERTIFICATE REQUEST-----'. "
            "Create one with: openssl req -new -key key.pem -subj '/CN=me' -out req.pem",
            "not_pem",
        )


def _parse(pem: str) -> x509.CertificateSigningRequest:
    # cryptography reports undecodable PEM, base64 or DER as ValueError; so is the UnicodeError
    # of a JSON string holding a lone surrogate, which cannot even be encoded to bytes.
    try:
        return x509.load_pem_x509_csr(pem.strip().encode("utf-8"))
    except ValueError:
        raise _invalid(
            "The PEM block could not be decoded as a PKCS#10 certificate request (truncated or corrupted?).",
            "undecodable",
        ) from None


def _public_key(csr: x509.CertificateSigningRequest):
    # The key is decoded lazily: an unknown algorithm OID is UnsupportedAlgorithm, a malformed
    # key (e.g. an EC point off its curve) is ValueError.
    try:
        return csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise _invalid("The CSR's public key could not be read or uses an unsupported algorithm.", "bad_key") from None


def _check_proof_of_possession(csr: x509.CertificateSigningRequest) -> None:
    """The requester holds the private key: the CSR is signed with it (cryptography checks that
    the signature algorithm fits the key; an algorithm it does not know is a refusal too)."""
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise _invalid(
            "The CSR's signature does not verify against its public key (proof of possession failed): "
            "sign the request with the private key it carries.",
            "bad_signature",
        )


def check_key_policy(public_key) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < RSA_MIN_BITS or public_key.key_size > RSA_MAX_BITS:
            raise _invalid(
                "RSA key of %d bits refused: allowed keys are %s." % (public_key.key_size, KEY_POLICY), "weak_key"
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in EC_CURVES:
            raise _invalid(
                "EC curve %s refused: allowed keys are %s." % (public_key.curve.name, KEY_POLICY), "unsupported_key"
            )
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise _invalid("%s keys are refused: allowed keys are %s." % (type(public_key).__name__, KEY_POLICY), "unsupported_key")


def public_key_der(public_key) -> bytes:
    """SubjectPublicKeyInfo DER: one canonical encoding of a key, so equal bytes mean the same key."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_sha256(public_key, der: Optional[bytes] = None) -> str:
    return hashlib.sha256(public_key_der(public_key) if der is None else der).hexdigest()


def csr_subject(csr: x509.CertificateSigningRequest) -> Subject:
    """The CN, O and OU the requester asked for (the first of each, as openssl reads them).

    cryptography decodes the subject when it is first read, so odd ASN.1 sent by a client
    (a BIT STRING or INTEGER value, bad UTF-8, an empty RDN, ...) surfaces here as ValueError or
    TypeError: that is the client's mistake, invalid_csr, never a server error."""
    try:
        subject = csr.subject
    except (ValueError, TypeError):
        raise _invalid(
            "The CSR's subject could not be decoded: use string values (UTF8String or PrintableString) "
            "for its attributes.",
            "bad_subject",
        ) from None
    return Subject(
        _first(subject, NameOID.COMMON_NAME),
        _first(subject, NameOID.ORGANIZATION_NAME),
        _first(subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


def _first(name: x509.Name, oid) -> Optional[str]:
    # always a str: cryptography refuses (TypeError above) non-string types for these attributes
    attributes = name.get_attributes_for_oid(oid)
    return attributes[0].value if attributes else None


def decide_subject(locked: Subject, from_csr: Subject) -> Subject:
    """Locked token fields win, always; fields the token leaves open come from the CSR."""
    result = Subject(
        locked.common_name if locked.common_name is not None else from_csr.common_name,
        locked.organization if locked.organization is not None else from_csr.organization,
        locked.organizational_unit if locked.organizational_unit is not None else from_csr.organizational_unit,
    )
    for field, value in zip(("commonName", "organization", "organizationalUnit"), result.as_tuple()):
        if value is not None and (len(value) > SUBJECT_FIELD_MAX or not value.strip() or not value.isprintable()):
            raise _invalid(
                "The CSR's %s is empty, longer than %d characters or not printable, and the token does not set it."
                % (field, SUBJECT_FIELD_MAX),
                "bad_subject",
            )
    if not result.common_name:
        raise _invalid(
            "The token leaves commonName open and the CSR has none: put a CN in the CSR's subject "
            "(openssl req -subj '/CN=name').",
            "missing_common_name",
        )
    return result
