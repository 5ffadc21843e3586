"""Renewal rules that do not depend on the backend (SQLite + local CA): the per-frontdoor settings,
a certificate of this CA that was never recorded, the used-jti table, and the client helpers."""

from __future__ import annotations

import datetime as _dt
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from frontdoor_pki import renewal_client
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import SignRequest, Subject, utcnow
from support.crypto import load_cert, make_csr, shared_key
from support.helpers import error_of

FRONTDOORS = [
    {"id": "default"},
    {"id": "off", "renewalEnabled": False},
    {"id": "window", "certificateTtl": "30d", "renewalWindow": "10d"},
    {"id": "grace", "certificateTtl": "1d", "renewalGrace": "1h"},
]


@pytest.fixture
def service(tmp_path):
    config = load_config(state_dir=str(tmp_path), env={}, data={"frontdoors": FRONTDOORS})
    engine = build_service(config)
    yield engine
    engine.close()


def issue(service, frontdoor_id="default", key=None):
    key = key or shared_key("p256")
    _record, secret = service.create_token(frontdoor_id, name="n-%s" % uuid.uuid4().hex[:6], common_name="h.example")
    return service.redeem(frontdoor_id, secret, make_csr(key, cn="h.example")).certificate, key


def jwt_for(record, key, frontdoor_id, at=None):
    return "Bearer " + renewal_client.make_renewal_token(
        [load_cert(record.certificate_pem)], key, frontdoor_id, now=None if at is None else at.timestamp()
    )


def test_renewal_disabled(service):
    current, key = issue(service, "off")
    error = error_of(service.renew, "off", jwt_for(current, key, "off"), make_csr(key, cn="x"))
    assert error.code == "renewal_disabled" and error.status == 403


def test_renewal_window(service):
    current, key = issue(service, "window")
    error = error_of(service.renew, "window", jwt_for(current, key, "window"), make_csr(key, cn="x"))
    assert error.code == "renewal_too_early" and error.status == 409
    opens = current.not_after - _dt.timedelta(days=10)
    assert error.details["renewableFrom"].startswith(opens.strftime("%Y-%m-%dT%H:%M"))
    inside = opens + _dt.timedelta(minutes=1)
    service.clock = lambda: inside
    result = service.renew("window", jwt_for(current, key, "window", inside), make_csr(key, cn="x"))
    assert result.certificate.previous_certificate_id == current.id


def test_grace_after_expiry(service):
    current, key = issue(service, "grace")
    within = current.not_after + _dt.timedelta(minutes=30)
    service.clock = lambda: within
    result = service.renew("grace", jwt_for(current, key, "grace", within), make_csr(key, cn="x"))
    assert result.replayed is False
    other, key2 = issue(service, "grace", key=shared_key("p256", 2))
    past = other.not_after + _dt.timedelta(minutes=61)
    service.clock = lambda: past
    error = error_of(service.renew, "grace", jwt_for(other, key2, "grace", past), make_csr(key2, cn="x"))
    assert error.code == "certificate_expired"


def test_default_frontdoor_renews_at_any_time_and_the_lifetime_is_kept(service):
    current, key = issue(service)
    renewed = service.renew("default", jwt_for(current, key, "default"), make_csr(key, cn="x")).certificate
    life = lambda c: c.not_after - c.not_before  # noqa: E731
    assert abs(life(renewed) - life(current)) < _dt.timedelta(seconds=5)


def test_a_certificate_of_this_ca_that_was_never_recorded_is_unknown(service):
    """Signed by the frontdoor's own CA (as a lost record or a restored backup would leave it), so it chains:
    it still is not a certificate this frontdoor can vouch for."""
    key = shared_key("p256", 4)
    csr = x509.load_pem_x509_csr(make_csr(key, cn="ghost.example").encode())
    now = utcnow()
    issued = service.signers["default"].sign(SignRequest(
        frontdoor_id="default", csr_pem=None, csr=csr, subject=Subject("ghost.example"),
        not_before=now - _dt.timedelta(minutes=1), not_after=now + _dt.timedelta(days=1), token_id="token-x",
        name="ghost",
    ))
    token = "Bearer " + renewal_client.make_renewal_token([load_cert(issued.certificate_pem)], key, "default")
    error = error_of(service.renew, "default", token, make_csr(key, cn="x"))
    assert error.code == "certificate_unknown" and error.status == 403


def test_a_refusal_does_not_spend_the_jti_and_is_audited(service):
    current, key = issue(service)
    token = jwt_for(current, key, "default")
    error = error_of(service.renew, "default", token, "not a csr")
    assert error.code == "invalid_csr"
    assert service.renew("default", token, make_csr(key, cn="x")).replayed is False


def test_used_jtis_expire_from_the_table(service):
    store = service.store
    now = utcnow()
    assert store.use_renewal_jti("a" * 64, now + _dt.timedelta(seconds=10), now) is True
    assert store.use_renewal_jti("a" * 64, now + _dt.timedelta(seconds=10), now) is False
    later = now + _dt.timedelta(seconds=11)
    assert store.use_renewal_jti("b" * 64, later + _dt.timedelta(seconds=10), later) is True
    rows = store._rows("SELECT key FROM renewal_jtis")
    assert [r[0] for r in rows] == ["b" * 64]


def test_client_refuses_a_key_that_is_not_the_certificates():
    cert_pem = _self_signed(shared_key("p256", 1))
    other = renewal_client.key_pem(shared_key("p256", 2))
    with pytest.raises(FrontdoorError) as info:
        renewal_client.renewal_request(cert_pem, other, "default")
    assert info.value.code == "invalid_request"


def test_client_algorithms_follow_the_key():
    assert renewal_client.alg_for(shared_key("p256")) == "ES256"
    assert renewal_client.alg_for(shared_key("p384")) == "ES384"
    assert renewal_client.alg_for(shared_key("rsa2048")) == "RS256"
    assert renewal_client.alg_for(shared_key("ed25519")) == "EdDSA"
    with pytest.raises(FrontdoorError):
        renewal_client.alg_for(shared_key("p521"))


@pytest.mark.parametrize("kind", ["rsa2048", "ed25519", "p384"])
def test_every_key_type_renews(service, kind):
    current, key = issue(service, key=shared_key(kind))
    result = service.renew("default", jwt_for(current, key, "default"), make_csr(key, cn="x"))
    assert result.certificate.previous_certificate_id == current.id


def _self_signed(key) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_database_from_before_renewal_renews_its_certificates(tmp_path):
    """A state dir written before renewal existed (no renewal columns, table or index): opening it adds them,
    and a certificate issued then renews."""
    import sqlite3

    config = load_config(state_dir=str(tmp_path), env={}, data={"frontdoors": FRONTDOORS})
    engine = build_service(config)
    current, key = issue(engine)
    engine.close()
    path = str(tmp_path / "frontdoor.db")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE renewal_jtis")
        conn.execute("DROP INDEX certificates_fd_serial")
        for column in ("previous_certificate_id", "renewed_by", "renewal_claim", "renewal_claim_until"):
            conn.execute("ALTER TABLE certificates DROP COLUMN %s" % column)
    engine = build_service(config)
    try:
        assert engine.get_certificate("default", current.id).renewed_by is None
        renewed = engine.renew("default", jwt_for(current, key, "default"), make_csr(key, cn="x")).certificate
        assert engine.get_certificate("default", current.id).renewed_by == renewed.id
    finally:
        engine.close()
