# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is an issued certificate the one that was asked for? Subject, SANs and key, read by cryptography.

The service checks every certificate a signer returns (``FrontdoorService._check_issued``),
and the Vault signer checks Vault's answer first to say what to fix on the Vault side.

The subject is compared as a multiset of (attribute type, value): exactly the decided CN, O and
OU, none missing, none extra, none twice. RDN order is not compared, because signers do not
agree on it (the local CA writes O, OU, CN; Vault writes CN first) and a relying party matches
attributes, not positions. String types (UTF8String, PrintableString) are not compared either:
cryptography decodes both to the same text.

The Subject Alternative Names are compared the same way, as a multiset of (kind, value): exactly the
token's DNS names, IPs, URIs and emails, none missing, none extra (a signer that adds the CN as a DNS
name, or keeps a SAN the CSR asked for, is refused), no other kind of name. A token without SANs
means a certificate without the extension.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Dict, List, Optional

# Guarded: Ansible's import sanity test loads module_utils without third-party packages.
try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.x509.oid import ExtensionOID, NameOID
except ImportError:  # pragma: no cover
    x509 = UnsupportedAlgorithm = ExtensionOID = NameOID = None

from .csr import public_key_der
from .model import SignRequest, Subject, SubjectAltNames


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


def san_general_names(sans: SubjectAltNames) -> List[x509.GeneralName]:
    """The token's SANs as cryptography GeneralNames, in API order (dns, ip, uri, email): what a
    signer that builds the certificate itself (the local CA) puts in the extension."""
    return (
        [x509.DNSName(name) for name in sans.dns]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans.ip]
        + [x509.UniformResourceIdentifier(uri) for uri in sans.uri]
        + [x509.RFC822Name(email) for email in sans.email]
    )


def expected_sans(sans: SubjectAltNames) -> Counter:
    """The (kind, value) pairs the certificate's SAN extension must hold; IPs as ``ipaddress`` objects."""
    return Counter(
        [("dns", name) for name in sans.dns]
        + [("ip", ipaddress.ip_address(ip)) for ip in sans.ip]
        + [("uri", uri) for uri in sans.uri]
        + [("email", email) for email in sans.email]
    )


def _san_pair(name) -> Optional[tuple]:
    if isinstance(name, x509.DNSName):
        return ("dns", name.value)
    if isinstance(name, x509.IPAddress):
        return ("ip", name.value)
    if isinstance(name, x509.UniformResourceIdentifier):
        return ("uri", name.value)
    if isinstance(name, x509.RFC822Name):
        return ("email", name.value)
    return None  # otherName, directoryName, registeredID: nothing a token approves


def _san_extension(cert: x509.Certificate):
    """The SAN extension or None. A loop, not get_extension_for_class: the ExtensionNotFound it raises for the
    usual certificate without SANs cost ~8 us per redemption, the loop ~2 us."""
    for extension in cert.extensions:
        if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            return extension
    return None


def certificate_sans(cert: x509.Certificate) -> Optional[Counter]:
    """The certificate's SANs as (kind, value) pairs; empty without the extension; None when the
    extension cannot be read or holds a kind of name no token approves."""
    try:
        extension = _san_extension(cert)
    except (ValueError, TypeError):  # an extension cryptography cannot decode, or one present twice
        return None
    if extension is None:
        return Counter()
    pairs = [_san_pair(name) for name in extension.value]
    if any(pair is None for pair in pairs):
        return None
    return Counter(pairs)


def san_dict(cert: x509.Certificate) -> Dict[str, List[str]]:
    """The certificate's SANs in the API shape (``SubjectAltNames.to_dict()``: kinds without values left out,
    IPs in compressed form), for results read from a certificate file; names of other kinds are left out."""
    result: Dict[str, List[str]] = {}
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError, TypeError):
        return result
    for name in names:
        pair = _san_pair(name)
        if pair is None:
            continue
        kind, value = pair
        result.setdefault(kind, []).append(value.compressed if kind == "ip" else value)
    return {kind: result[kind] for kind in ("dns", "ip", "uri", "email") if kind in result}


def sans_are(cert: x509.Certificate, sans: SubjectAltNames) -> bool:
    """Whether the certificate carries exactly the token's SANs (see the module doc)."""
    if not sans:  # the common case, on every redemption: no extension wanted, no Counters needed
        try:
            extension = _san_extension(cert)
        except (ValueError, TypeError):
            return False
        return extension is None or not list(extension.value)
    actual = certificate_sans(cert)
    return actual is not None and actual == expected_sans(sans)
