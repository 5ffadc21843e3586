"""Unit tests of the embedded local CA (frontdoor_pki.signers.local)."""

from __future__ import annotations

import datetime as _dt
import os
import stat
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.csr import load_csr
from frontdoor_pki.model import SignRequest, Subject, utcnow
from frontdoor_pki.signers.local import LocalCASigner, ensure_local_ca
from support.crypto import load_cert, make_csr, public_key_der, shared_key


def sign_request(frontdoor_id="default", kind="p256", subject=("cn", "org", "unit"), days=365):
    now = utcnow()
    csr = load_csr(make_csr(shared_key(kind), cn="ignored"))
    return SignRequest(frontdoor_id=frontdoor_id, csr_pem="", csr=csr, subject=Subject(*subject),
                       not_before=now - _dt.timedelta(seconds=60), not_after=now + _dt.timedelta(days=days),
                       token_id="token-x", name="n")


def test_ca_files_are_created_once_with_private_keys_0600(tmp_path):
    root, inter, key = ensure_local_ca(str(tmp_path), "default")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(str(tmp_path), "ca", "root.key")).st_mode) == 0o600
    before = [open(p, "rb").read() for p in (root, inter, key)]
    assert ensure_local_ca(str(tmp_path), "default") == (root, inter, key)
    assert [open(p, "rb").read() for p in (root, inter, key)] == before  # never regenerated


def test_ca_hierarchy(tmp_path):
    signer = LocalCASigner(str(tmp_path), "default")
    other = LocalCASigner(str(tmp_path), "other")
    inter, root = (load_cert(pem) for pem in signer.ca_chain())
    other_inter, other_root = (load_cert(pem) for pem in other.ca_chain())
    assert root == other_root and inter != other_inter  # one root, one intermediate per frontdoor
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    inter.verify_directly_issued_by(root)
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert inter.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert "default" in inter.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert signer.not_after_limit() == inter.not_valid_after_utc
    assert inter.not_valid_after_utc <= root.not_valid_after_utc


def test_bad_frontdoor_ids(tmp_path):
    for bad in ("../escape", "", "a/b", "x" * 65, ".hidden"):
        with pytest.raises(ValueError):
            ensure_local_ca(str(tmp_path), bad)
    assert not os.path.exists(os.path.join(str(tmp_path), "escape"))


@pytest.mark.parametrize("kind, key_encipherment", [("p256", False), ("rsa2048", True), ("ed25519", False)])
def test_sign(tmp_path, kind, key_encipherment):
    signer = LocalCASigner(str(tmp_path), "default")
    request = sign_request(kind=kind)
    issued = signer.sign(request)
    cert = load_cert(issued.certificate_pem)
    assert issued.serial_number == "%x" % cert.serial_number
    assert issued.ca_chain == signer.ca_chain()
    assert [(a.oid, a.value) for a in cert.subject] == [
        (NameOID.ORGANIZATION_NAME, "org"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "unit"), (NameOID.COMMON_NAME, "cn")]
    assert public_key_der(cert.public_key()) == public_key_der(request.csr.public_key())
    cert.verify_directly_issued_by(load_cert(signer.ca_chain()[0]))
    assert cert.not_valid_before_utc == request.not_before.replace(microsecond=0)
    assert cert.not_valid_after_utc == request.not_after.replace(microsecond=0)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert ext.get_extension_for_class(x509.KeyUsage).value.key_encipherment is key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert {e.oid for e in ext} == {x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid,
                                    x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid}
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(request.csr.public_key())
    issuer_ski = load_cert(signer.ca_chain()[0]).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == issuer_ski.digest
    assert issued.certificate == cert  # the parsed certificate handed to the service is the one in the PEM


def test_sign_with_only_a_common_name(tmp_path):
    cert = load_cert(LocalCASigner(str(tmp_path), "default").sign(sign_request(subject=("only", None, None)))
                     .certificate_pem)
    assert [(a.oid, a.value) for a in cert.subject] == [(NameOID.COMMON_NAME, "only")]


def test_crl(tmp_path):
    signer = LocalCASigner(str(tmp_path), "default")
    issuer = load_cert(signer.ca_chain()[0])
    empty = x509.load_der_x509_crl(signer.crl([]))
    assert len(empty) == 0 and empty.is_signature_valid(issuer.public_key())
    revoked_at = utcnow().replace(microsecond=0)
    crl = x509.load_der_x509_crl(signer.crl([("1f3a", revoked_at), ("abcdef0123456789", revoked_at)]))
    assert crl.is_signature_valid(issuer.public_key())
    assert crl.issuer == issuer.subject
    assert {r.serial_number for r in crl} == {0x1F3A, 0xABCDEF0123456789}
    assert crl.get_revoked_certificate_by_serial_number(0x1F3A).revocation_date_utc == revoked_at
    assert crl.next_update_utc > utcnow()


def test_threads_creating_the_ca_at_once_agree(tmp_path):
    chains, errors = [], []

    def build():
        try:
            chains.append(tuple(LocalCASigner(str(tmp_path), "default").ca_chain()))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(chains) == 8 and len(set(chains)) == 1
