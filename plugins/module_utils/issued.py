# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is an issued certificate the one that was asked for? Subject and key, read by cryptography.

The service checks every certificate a signer returns (``FrontdoorService._check_issued``),
and the Vault signer checks Vault's answer first to say what to fix on the Vault side.

The subject is compared as a multiset of (attribute type, value): exactly the decided CN, O and
OU, none missing, none extra, none twice. RDN order is not compared, because signers do not
agree on it (the local CA writes O, OU, CN; Vault writes CN first) and a relying party matches
attributes, not positions. String types (UTF8String, PrintableString) are not compared either:
cryptography decodes both to the same text.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

# Guarded: Ansible's import sanity test loads module_utils without third-party packages.
try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = UnsupportedAlgorithm = NameOID = None

from .csr import public_key_der
from .model import SignRequest, Subject


def expected_attributes(subject: Subject) -> Counter:
    """The (OID, value) pairs the certificate's subject must hold: the fields the rules set."""
    pairs = (
        (NameOID.COMMON_NAME, subject.common_name),
        (NameOID.ORGANIZATION_NAME, subject.organization),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit),
    )
    return Counter((oid, value) for oid, value in pairs if value)


def subject_is(cert: x509.Certificate, subject: Subject) -> bool:
    """Whether the certificate's subject holds exactly the decided attributes (see the module doc)."""
    actual = _subject_attributes(cert)
    return actual is not None and actual == expected_attributes(subject)


def _subject_attributes(cert: x509.Certificate) -> Optional[Counter]:
    # cryptography decodes the subject on first access; a signer's odd encoding is a mismatch
    try:
        return Counter((attribute.oid, attribute.value) for attribute in cert.subject)
    except (ValueError, TypeError):
        return None


def key_is(cert: x509.Certificate, request: SignRequest) -> bool:
    """Whether the certificate carries the request's public key, compared as SubjectPublicKeyInfo
    DER re-encoded by cryptography (so another encoding of the same key, e.g. a compressed EC
    point, is still the same key)."""
    try:
        return public_key_der(cert.public_key()) == request.spki()
    except (ValueError, UnsupportedAlgorithm):  # a key in the certificate that cannot be read
        return False
