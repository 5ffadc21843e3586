# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway's own HTTPS server certificate, issued by the embedded local CA.

``frontdoor-gateway serve --tls-self NAME...`` uses this so that HTTPS works out of the box:
the state dir's root CA (the one the local signer's intermediates hang from) gets one more
intermediate, ``ca/_gateway-tls/`` (the leading ``_`` cannot be a frontdoor id, so it never
collides with one), which issues only server certificates. Clients trust the root
(``tls/ca.pem``), e.g. ``curl --cacert <state-dir>/tls/ca.pem``.

The rule: a certificate is reused while it names exactly the requested hosts, was issued by the
current TLS intermediate, matches its key and has more than a third of its lifetime left
(``RENEW_BEFORE``, as ACME clients renew); otherwise a new key and certificate replace it. The
client-certificate intermediates are not used for this so that a relying party that trusts a
frontdoor's intermediate for client certificates is never offered a server certificate from it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import os
import re
from typing import List, Sequence, Tuple, Union

# Guarded: Ansible's import sanity test loads module_utils without third-party packages.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover
    x509 = hashes = serialization = ec = ExtendedKeyUsageOID = NameOID = None

from ..files import write_atomically
from ..model import utcnow
from .local import INTERMEDIATE_LIFETIME, _ca_cert, _create_root_if_missing, _key_pem, _locked

SERVER_LIFETIME = _dt.timedelta(days=90)
RENEW_BEFORE = _dt.timedelta(days=30)
TLS_CA_DIR = "_gateway-tls"
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

Name = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclasses.dataclass(frozen=True)
class ServerCertificate:
    cert_path: str  # the server certificate followed by its intermediate (what the server presents)
    key_path: str  # its private key, 0600
    ca_path: str  # the root CA a client trusts (curl --cacert)
    names: Tuple[str, ...]
    not_after: _dt.datetime
    issued: bool  # True: made now; False: the existing one was reused


def normalize_names(names: Sequence[str]) -> List[Name]:
    """Host names (DNS, ASCII, lower-cased) and IP addresses, checked, duplicates removed, in order."""
    result: List[Name] = []
    for raw in names:
        value = str(raw).strip()
        if not value:
            continue
        try:
            name: Name = ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            name = value.lower().rstrip(".")
            labels = name.split(".")
            if not name.isascii() or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
                raise ValueError(
                    "%r is neither an IP address nor a DNS host name (ASCII letters, digits and '-' in dot-separated "
                    "labels; write an internationalised name in its xn-- form)" % value[:80]
                ) from None
        if name not in result:
            result.append(name)
    if not result:
        raise ValueError("give at least one host name or IP address for the server certificate")
    return result


def _san(names: Sequence[Name]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([
        x509.DNSName(n) if isinstance(n, str) else x509.IPAddress(n) for n in names
    ])


def _ensure_tls_intermediate(ca_dir: str, organization: str, now: _dt.datetime):
    """(certificate, key) of the TLS intermediate, created under the root if absent or near its end."""
    tls_dir = os.path.join(ca_dir, TLS_CA_DIR)
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    cert_path, key_path = os.path.join(tls_dir, "intermediate.pem"), os.path.join(tls_dir, "intermediate.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        with open(cert_path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
        if cert.not_valid_after_utc - now > SERVER_LIFETIME:
            with open(key_path, "rb") as handle:
                return cert, serialization.load_pem_private_key(handle.read(), None)
    root_path, root_key_path = _create_root_if_missing(ca_dir, organization)
    with open(root_key_path, "rb") as handle:
        root_key = serialization.load_pem_private_key(handle.read(), None)
    with open(root_path, "rb") as handle:
        root = x509.load_pem_x509_certificate(handle.read())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor.pki gateway TLS CA"),
    ])
    not_after = min(now + INTERMEDIATE_LIFETIME, root.not_valid_after_utc)
    cert = _ca_cert(name, root.subject, key.public_key(), root_key, not_after, 0, issuer_cert=root)
    write_atomically(key_path, _key_pem(key), 0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _reusable(cert_path: str, key_path: str, names: Sequence[Name], issuer, now: _dt.datetime) -> bool:
    try:
        with open(cert_path, "rb") as handle:
            cert = x509.load_pem_x509_certificates(handle.read())[0]
        with open(key_path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), None)
    except (OSError, ValueError):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - no SAN, another issuer, a bad signature: any doubt means reissue
        return False
    have = set(san.get_values_for_type(x509.DNSName)) | set(san.get_values_for_type(x509.IPAddress))
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return have == set(names) and same_key and cert.not_valid_after_utc - now > RENEW_BEFORE


def ensure_server_certificate(
    state_dir: str, names: Sequence[str], organization: str = "frontdoor.pki"
) -> ServerCertificate:
    """The gateway's server certificate for ``names`` in ``<state_dir>/tls/``, reused or (re)issued.

    Files: ``server.pem`` (certificate + TLS intermediate, 0600), ``server.key`` (0600), ``ca.pem`` (the
    root, 0644: it is what clients are given). Several gateways starting at once on one state dir agree
    on one certificate: the CA's file lock is held throughout.
    """
    wanted = normalize_names(names)
    ca_dir = os.path.join(state_dir, "ca")
    tls_dir = os.path.join(state_dir, "tls")
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    cert_path, key_path = os.path.join(tls_dir, "server.pem"), os.path.join(tls_dir, "server.key")
    ca_path = os.path.join(tls_dir, "ca.pem")
    with _locked(os.path.join(ca_dir, ".lock")):
        now = utcnow()
        issuer, issuer_key = _ensure_tls_intermediate(ca_dir, organization, now)
        root_path, _root_key = _create_root_if_missing(ca_dir, organization)
        with open(root_path, "rb") as handle:
            root_pem = handle.read()
        issued = not _reusable(cert_path, key_path, wanted, issuer, now)
        if issued:
            key = ec.generate_private_key(ec.SECP256R1())
            first = str(wanted[0])[:64]
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, first),
                ]))
                .issuer_name(issuer.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5))
                .not_valid_after(min(now + SERVER_LIFETIME, issuer.not_valid_after_utc))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True, content_commitment=False, key_encipherment=False,
                        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                        encipher_only=False, decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(_san(wanted), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                    ),
                    critical=False,
                )
            )
            cert = builder.sign(issuer_key, hashes.SHA256())
            # Each file is replaced atomically. A gateway reads both once at start, after this returns.
            write_atomically(key_path, _key_pem(key), 0o600)
            write_atomically(
                cert_path,
                cert.public_bytes(serialization.Encoding.PEM) + issuer.public_bytes(serialization.Encoding.PEM),
                0o600,
            )
        else:
            with open(cert_path, "rb") as handle:
                cert = x509.load_pem_x509_certificates(handle.read())[0]
        write_atomically(ca_path, root_pem, 0o644)
    return ServerCertificate(
        cert_path=cert_path, key_path=key_path, ca_path=ca_path, names=tuple(str(n) for n in wanted),
        not_after=cert.not_valid_after_utc, issued=issued,
    )
