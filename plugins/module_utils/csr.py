# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CSR parsing and the key policy.

Everything here runs before a token is touched, so a bad CSR can never use a
token up (step-ca's most common complaint).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from typing import List, Optional

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report a missing cryptography with missing_required_lib (HAS_CRYPTOGRAPHY) instead of a traceback.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

    # Signature algorithms a CSR is verified for with the key already loaded: (key class, hash).
    _VERIFY_WITH_KEY = {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256: (ec.EllipticCurvePublicKey, hashes.SHA256),
        SignatureAlgorithmOID.ECDSA_WITH_SHA384: (ec.EllipticCurvePublicKey, hashes.SHA384),
        SignatureAlgorithmOID.ECDSA_WITH_SHA512: (ec.EllipticCurvePublicKey, hashes.SHA512),
        SignatureAlgorithmOID.RSA_WITH_SHA256: (rsa.RSAPublicKey, hashes.SHA256),
        SignatureAlgorithmOID.RSA_WITH_SHA384: (rsa.RSAPublicKey, hashes.SHA384),
        SignatureAlgorithmOID.RSA_WITH_SHA512: (rsa.RSAPublicKey, hashes.SHA512),
        SignatureAlgorithmOID.ED25519: (ed25519.Ed25519PublicKey, None),
    }
except ImportError:  # pragma: no cover
    x509 = serialization = hashes = ec = ed25519 = padding = rsa = NameOID = SignatureAlgorithmOID = None
    _VERIFY_WITH_KEY = {}

from .der_template import read_tlv
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


def load_csr_and_key(pem, csr_type="CSR"):
    """``load_csr`` plus the public key it checked: each ``csr.public_key()`` builds a new key object
    (~9 us), and a redemption needs the key three times."""
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
    try:
        csr = x509.load_pem_x509_csr(pem.strip().encode("utf-8"))
    except (ValueError, TypeError, UnicodeError):
        raise _invalid(
            "The PEM block could not be decoded as a PKCS#10 certificate request (truncated or corrupted?).",
            "undecodable",
        ) from None
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType, Exception):  # noqa: BLE001 - any parse failure
        raise _invalid("The CSR's public key could not be read or uses an unsupported algorithm.", "bad_key") from None
    check_key_policy(public_key)
    if not signature_is_valid(csr, public_key):
        raise _invalid(
            "The CSR's signature does not verify against its public key (proof of possession failed): "
            "sign the request with the private key it carries.",
            "bad_signature",
        )
    return csr, public_key


def signature_is_valid(csr: x509.CertificateSigningRequest, public_key) -> bool:
    """``csr.is_signature_valid``, with the key the caller already loaded.

    Why: ``is_signature_valid`` parses the public key out of the CSR again (point decoding and
    the on-curve check for EC), ~25 us of a ~100 us P-256 verification. For the common
    algorithms the same check is made with ``public_key.verify``; the key's class must match the
    algorithm, as cryptography requires. Anything else (RSA-PSS, Ed448, SHA-1, ...) is left to
    ``is_signature_valid``.
    """
    try:
        known = _VERIFY_WITH_KEY.get(csr.signature_algorithm_oid)
        if known is None:
            return bool(csr.is_signature_valid)
        key_class, hash_class = known
        if not isinstance(public_key, key_class):
            return False
        signature, data = csr.signature, csr.tbs_certrequest_bytes
        if hash_class is None:
            public_key.verify(signature, data)
        elif key_class is rsa.RSAPublicKey:
            public_key.verify(signature, data, padding.PKCS1v15(), hash_class())
        else:
            public_key.verify(signature, data, ec.ECDSA(hash_class()))
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, or cryptography's errors for odd signatures
        return False


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
    """SubjectPublicKeyInfo DER: what ``public_key_sha256`` hashes."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_sha256(public_key, der: Optional[bytes] = None) -> str:
    return hashlib.sha256(public_key_der(public_key) if der is None else der).hexdigest()


def _first(name: x509.Name, oid) -> Optional[str]:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


# DER of the three attribute types read from a CSR's subject, and the string types decoded here
_SUBJECT_OIDS = {b"\x55\x04\x03": 0, b"\x55\x04\x0a": 1, b"\x55\x04\x0b": 2}  # CN, O, OU
_UTF8STRING, _PRINTABLESTRING = 0x0C, 0x13
_PRINTABLE = re.compile(rb"[A-Za-z0-9 '()+,\-./:=?]*\Z")


def _plain_name(der: bytes, pos: int, end: int) -> Optional[Subject]:
    """CN, O and OU of the Name encoded at ``der[pos:]``, when it is written the plain way: one
    attribute per RDN, every value a UTF8String or PrintableString (what openssl req, most
    libraries and Vault write). None for anything else, which the callers leave to cryptography.

    Why: building cryptography's Name objects (and the warnings filter around them) cost
    ~25 us per subject read. The answer is the same: the first CN, O and OU, decoded.
    """
    try:
        tag, pos, name_end = read_tlv(der, pos, end)
        if tag != 0x30:
            return None
        values: List[Optional[str]] = [None, None, None]
        while pos < name_end:
            tag, set_start, set_end = read_tlv(der, pos, name_end)
            if tag != 0x31:
                return None
            tag, atv_start, atv_end = read_tlv(der, set_start, set_end)
            if tag != 0x30 or atv_end != set_end:  # not exactly one attribute in this RDN
                return None
            tag, oid_start, oid_end = read_tlv(der, atv_start, atv_end)
            vtag, value_start, value_end = read_tlv(der, oid_end, atv_end)
            if tag != 0x06 or value_end != atv_end:
                return None
            raw = der[value_start:value_end]
            if vtag == _UTF8STRING:
                text = raw.decode("utf-8")
            elif vtag == _PRINTABLESTRING and _PRINTABLE.match(raw):
                text = raw.decode("ascii")
            else:
                return None
            slot = _SUBJECT_OIDS.get(der[oid_start:oid_end])
            if slot is not None and values[slot] is None:
                values[slot] = text
            pos = set_end
        if pos != name_end:
            return None
        return Subject(values[0], values[1], values[2])
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _plain_subject(csr) -> Optional[Subject]:
    """The request's subject from its DER (see ``_plain_name``): CertificationRequestInfo is
    version, subject, ..."""
    try:
        info = csr.tbs_certrequest_bytes
        _tag, pos, end = read_tlv(info, 0, len(info))
        _tag, _s, pos = read_tlv(info, pos, end)  # version
    except (ValueError, IndexError):
        return None
    return _plain_name(info, pos, end)


def _plain_certificate_subject(cert) -> Optional[Subject]:
    """The certificate's subject from its DER (see ``_plain_name``): a v3 TBSCertificate is
    [0] version, serial, signature, issuer, validity, subject, ..."""
    try:
        tbs = cert.tbs_certificate_bytes
        _tag, pos, end = read_tlv(tbs, 0, len(tbs))
        tag, _s, after = read_tlv(tbs, pos, end)
        if tag != 0xA0:
            return None
        pos = after
        for _skip in range(4):  # serial, signature, issuer, validity
            _tag, _s, pos = read_tlv(tbs, pos, end)
    except (ValueError, IndexError):
        return None
    return _plain_name(tbs, pos, end)


def csr_subject(csr: x509.CertificateSigningRequest) -> Subject:
    plain = _plain_subject(csr)
    if plain is not None:
        return plain
    try:
        with warnings.catch_warnings():
            # cryptography warns on over-long attributes (RFC 5280 bounds); decide_subject refuses them itself.
            warnings.simplefilter("ignore", UserWarning)
            subject = csr.subject
            return Subject(
                _first(subject, NameOID.COMMON_NAME),
                _first(subject, NameOID.ORGANIZATION_NAME),
                _first(subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
            )
    except ValueError:
        raise _invalid("The CSR's subject could not be decoded.", "bad_subject") from None


def certificate_subject(cert: x509.Certificate) -> Subject:
    plain = _plain_certificate_subject(cert)
    if plain is not None:
        return plain
    return Subject(
        _first(cert.subject, NameOID.COMMON_NAME),
        _first(cert.subject, NameOID.ORGANIZATION_NAME),
        _first(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


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
