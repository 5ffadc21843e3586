"""The issued-key check: the certificate must carry the request's public key, compared as the
SubjectPublicKeyInfo DER cryptography encodes for each."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.issued import key_is
from frontdoor_pki.model import SignRequest, Subject
from support.backends import wrap_signer
from support.crypto import make_csr, shared_key

CA_KEY = ec.generate_private_key(ec.SECP256R1())


def issued_for(public_key) -> x509.Certificate:
    now = _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)
        .serial_number(1).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
        .sign(CA_KEY, hashes.SHA256())
    )


def request_for(public_key) -> SignRequest:
    now = _dt.datetime.now(_dt.timezone.utc)
    return SignRequest(frontdoor_id="default", csr_pem="", csr=None, subject=Subject("cn"), not_before=now,
                       not_after=now, token_id="t", name="n", public_key=public_key)


KINDS = ["p256", "p384", "rsa2048", "ed25519"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_key_passes(kind):
    key = shared_key(kind).public_key()
    assert key_is(issued_for(key), request_for(key)) is True


@pytest.mark.parametrize("kind", KINDS)
def test_another_key_of_the_same_kind_is_refused(kind):
    assert key_is(issued_for(shared_key(kind, 1).public_key()), request_for(shared_key(kind).public_key())) is False


def test_a_key_of_another_kind_is_refused():
    mine = shared_key("p256").public_key()
    for kind in ("p384", "rsa2048", "ed25519"):
        assert key_is(issued_for(shared_key(kind).public_key()), request_for(mine)) is False


def test_the_service_refuses_a_certificate_for_another_key(tmp_path):
    """A signer that certifies a key other than the CSR's: nothing handed out, token intact."""
    service = build_service(load_config(state_dir=str(tmp_path), env={}))
    try:
        other = shared_key("p256", 1).public_key()
        wrapper = wrap_signer(service, alter=lambda request: SignRequest(**dict(vars(request), public_key=other,
                                                                               public_key_der=None)))
        record, secret = service.create_token("default", name="key-swap", common_name="cn")
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(shared_key("p256"), cn="x"))
        assert info.value.code == "signer_error" and "public key differs" in info.value.message
        assert len(wrapper.issued) == 1  # the CA did sign, for the wrong key
        assert service.get_token("default", record.id).status() == "active"
        wrapper.alter = None
        assert service.redeem("default", secret, make_csr(shared_key("p256"), cn="x")).replayed is False
    finally:
        service.close()
