# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is an issued certificate the one that was asked for? Subject and key, cheaply.

The service checks every certificate a signer returns (``FrontdoorService._check_issued``),
and the Vault signer checks Vault's answer first to say what to fix on the Vault side; both
compare the same way, from the certificate's DER where they can.
"""

from __future__ import annotations

from typing import List, Optional

# Guarded: Ansible's import sanity test loads module_utils without third-party packages.
try:
    from cryptography import x509
except ImportError:  # pragma: no cover
    x509 = None

from . import csr as csrmod
from . import der_template
from .model import SignRequest, Subject


def tbs_fields(cert: x509.Certificate) -> Optional[List[bytes]]:
    """The encoded top-level fields of the certificate's TBS (version, serial, ..., subject, spki, ...),
    or None if they cannot be read that way."""
    try:
        tbs = cert.tbs_certificate_bytes
        _tag, start, end = der_template.read_tlv(tbs)
        fields = der_template.children(tbs, start, end)
    except (ValueError, IndexError):
        return None
    # a v3 layout only: [0] version first, so that subject and key are fields 5 and 6
    return fields if len(fields) > 6 and fields[0][:1] == b"\xa0" else None


def subject_is(cert: x509.Certificate, subject: Subject, fields: Optional[List[bytes]] = None) -> bool:
    """Whether the certificate's subject is exactly ``subject``.

    First by bytes: when the subject is encoded as the local CA writes it (O, OU, CN as UTF8String),
    equal DER means equal fields, and reading it takes a few microseconds where building
    cryptography's Name objects takes ~25. Any other encoding (another signer's choice of string
    types, order or extra attributes) is compared field by field.
    """
    if fields is None:
        fields = tbs_fields(cert)
    try:
        if fields is not None and fields[5] == der_template.subject_der(*subject.as_tuple()):
            return True
    except (ValueError, IndexError, UnicodeError):
        pass
    return csrmod.certificate_subject(cert).as_tuple() == subject.as_tuple()


def key_is(cert: x509.Certificate, request: SignRequest, fields: Optional[List[bytes]] = None) -> bool:
    """Whether the certificate carries the request's public key.

    First by bytes: the same SubjectPublicKeyInfo DER is the same key, and comparing it saves
    decoding the certificate's key (~20 us for an EC point). A different encoding of the same
    key (e.g. a compressed EC point) is decided by comparing the key objects.
    """
    if fields is None:
        fields = tbs_fields(cert)
    if fields is not None and fields[6] == request.spki():
        return True
    try:
        return cert.public_key() == request.key()
    except Exception:  # noqa: BLE001 - an unreadable or unsupported key in the certificate
        return False
