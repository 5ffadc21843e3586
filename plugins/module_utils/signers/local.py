# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded default signer: a local CA in the state directory.

One root for the state dir and one intermediate per frontdoor (as Frontdoor signs with a
per-frontdoor intermediate), EC P-256 because it signs ~2x faster than RSA-2048 here.
Keys are written 0600 and created under a file lock, so two gateways starting at once
on a fresh state dir agree on one CA.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import re
import secrets
from contextlib import contextmanager
from typing import Iterable, List, Optional, Tuple

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report a missing cryptography with missing_required_lib (HAS_CRYPTOGRAPHY) instead of a traceback.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover
    x509 = hashes = serialization = ec = rsa = ExtendedKeyUsageOID = NameOID = None

from ..errors import FrontdoorError, SignerUnavailable
from ..files import write_atomically
from ..issued import san_general_names
from ..model import IssuedCertificate, SignRequest, Subject, utcnow
from .base import Signer

FRONTDOOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROOT_LIFETIME = _dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = _dt.timedelta(days=1825)


@contextmanager
def _locked(path: str):
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _ca_cert(subject, issuer, public_key, signing_key, not_after, path_length, issuer_cert=None):
    now = utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _create_root_if_missing(ca_dir: str, organization: str) -> Tuple[str, str]:
    """The state dir's root CA (cert, key paths), created if absent. Call with ``ca_dir/.lock`` held."""
    root_key_path, root_path = os.path.join(ca_dir, "root.key"), os.path.join(ca_dir, "root.pem")
    if not os.path.exists(root_path):
        root_key = ec.generate_private_key(ec.SECP256R1())
        # The DN is unique per install (a random serialNumber attribute): a certificate from another install's CA
        # never has the same issuer name as ours, so a name comparison cannot mistake one for the other.
        root_name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor.pki local root CA"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
        ])
        root = _ca_cert(root_name, root_name, root_key.public_key(), root_key, utcnow() + ROOT_LIFETIME, 1)
        write_atomically(root_key_path, _key_pem(root_key), 0o600)
        write_atomically(root_path, root.public_bytes(serialization.Encoding.PEM), 0o644)
    return root_path, root_key_path


def ensure_local_ca(state_dir: str, frontdoor_id: str, organization: str = "frontdoor.pki") -> Tuple[str, str, str]:
    """Create (once) and return paths (root cert, intermediate cert, intermediate key)."""
    if not FRONTDOOR_ID_RE.match(frontdoor_id):
        raise ValueError("frontdoor id %r: use letters, digits, '.', '_' or '-' (at most 64)" % frontdoor_id)
    ca_dir = os.path.join(state_dir, "ca")
    fd_dir = os.path.join(ca_dir, frontdoor_id)
    os.makedirs(fd_dir, mode=0o700, exist_ok=True)
    root_key_path, root_path = os.path.join(ca_dir, "root.key"), os.path.join(ca_dir, "root.pem")
    int_key_path, int_path = os.path.join(fd_dir, "intermediate.key"), os.path.join(fd_dir, "intermediate.pem")
    if os.path.exists(int_path) and os.path.exists(root_path):
        return root_path, int_path, int_key_path
    with _locked(os.path.join(ca_dir, ".lock")):
        now = utcnow()
        _create_root_if_missing(ca_dir, organization)
        if not os.path.exists(int_path):
            with open(root_key_path, "rb") as handle:
                root_key = serialization.load_pem_private_key(handle.read(), None)
            with open(root_path, "rb") as handle:
                root = x509.load_pem_x509_certificate(handle.read())
            int_key = ec.generate_private_key(ec.SECP256R1())
            int_name = x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor.pki intermediate CA for %s" % frontdoor_id),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),  # unique per install, as the root
            ])
            not_after = min(now + INTERMEDIATE_LIFETIME, root.not_valid_after_utc)
            inter = _ca_cert(int_name, root.subject, int_key.public_key(), root_key, not_after, 0, issuer_cert=root)
            write_atomically(int_key_path, _key_pem(int_key), 0o600)
            write_atomically(int_path, inter.public_bytes(serialization.Encoding.PEM), 0o644)
    return root_path, int_path, int_key_path


def subject_name(subject: Subject) -> x509.Name:
    """O, OU, CN (those set), one attribute per RDN: the order openssl and most CAs write."""
    fields = (
        (NameOID.ORGANIZATION_NAME, subject.organization),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit),
        (NameOID.COMMON_NAME, subject.common_name),
    )
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in fields if value])


class LocalCASigner(Signer):
    kind = "local"
    # It keeps no record of what it signs: an unrecorded signature is never seen by anyone (see the base class).
    claim_before_signing = False

    def __init__(self, state_dir: str, frontdoor_id: str):
        self.frontdoor_id = frontdoor_id
        root_path, int_path, int_key_path = ensure_local_ca(state_dir, frontdoor_id)
        with open(root_path, "rb") as handle:
            self._root_pem = handle.read().decode("ascii")
        with open(int_path, "rb") as handle:
            self._int_pem = handle.read().decode("ascii")
        with open(int_key_path, "rb") as handle:
            self._key = serialization.load_pem_private_key(handle.read(), None)
        self._int = x509.load_pem_x509_certificate(self._int_pem.encode("ascii"))
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if self._key.public_key().public_bytes(*spki) != self._int.public_key().public_bytes(*spki):
            # only an interrupted `rotate-intermediate` leaves this: never sign with a key its certificate disowns
            raise SignerUnavailable(
                "The local CA's intermediate key for %r does not match %s (an interrupted rotation?): run "
                "`frontdoor-gateway rotate-intermediate --frontdoor %s` again, or restore ca/ from a backup."
                % (frontdoor_id, int_path, frontdoor_id)
            )
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            self._int.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
        # The parts of every client certificate that do not depend on the request (builders are immutable).
        self._base = {is_rsa: self._base_builder(is_rsa) for is_rsa in (False, True)}

    def _base_builder(self, is_rsa: bool) -> x509.CertificateBuilder:
        """The client profile: not a CA, digitalSignature (+ keyEncipherment, which only RSA keys
        can do), clientAuth only, and the issuer's key identifier."""
        return (
            x509.CertificateBuilder()
            .issuer_name(self._int.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(self._aki, critical=False)
        )

    def ca_chain(self) -> List[str]:
        return [self._int_pem, self._root_pem]

    def not_after_limit(self) -> Optional[_dt.datetime]:
        return self._int.not_valid_after_utc

    def sign(self, request: SignRequest) -> IssuedCertificate:
        public_key = request.key()
        builder = (
            self._base[isinstance(public_key, rsa.RSAPublicKey)]
            .subject_name(subject_name(request.subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(request.not_before)
            .not_valid_after(request.not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if request.subject_alt_names:  # exactly the token's; the CSR's extensions are never copied
            builder = builder.add_extension(
                x509.SubjectAlternativeName(san_general_names(request.subject_alt_names)), critical=False
            )
        try:
            cert = builder.sign(self._key, hashes.SHA256())
        except (ValueError, TypeError) as exc:
            raise SignerUnavailable("The local CA could not sign: %s" % exc) from None
        return IssuedCertificate(
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            ca_chain=[self._int_pem, self._root_pem],
            serial_number="%x" % cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            certificate=cert,
        )

    def revoke(self, certificate) -> None:
        """The local CA revokes by listing the serial in its CRL; the store records that."""

    def crl(self, revoked: Iterable[Tuple[str, _dt.datetime]]) -> bytes:
        now = utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._int.subject)
            .last_update(now)
            .next_update(now + _dt.timedelta(days=1))
            .add_extension(self._aki, critical=False)
        )
        for serial, revoked_at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(revoked_at).build()
            )
        try:
            return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        except ValueError as exc:
            raise FrontdoorError("internal_error", "The CRL could not be built: %s" % exc) from None
