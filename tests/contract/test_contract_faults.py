"""Contract: failures before the certificate is recorded leave the token redeemable; claims,
leases, races with administrators; audit lines; revocation and the CRL.

Faults are injected around the backend's *real* signer (support.backends.WrappedSigner).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time

import pytest
from cryptography import x509
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable, StoreUnavailable
from frontdoor_pki.model import utcnow
from frontdoor_pki.tokens import hash_secret, new_secret
from support.backends import other_subject, raising
from support.crypto import load_cert, tamper_signature
from support.helpers import csr, error_of, redeem_through_a_store_fault


@pytest.mark.parametrize(
    "exc_factory",
    [lambda: RuntimeError("connection reset by peer"), lambda: SignerUnavailable("CA is down"),
     lambda: OSError("no route to host")],
    ids=["runtime-error", "signer-unavailable", "os-error"],
)
def test_signer_that_raises_leaves_the_token_redeemable(backend, make_service, exc_factory):
    service = make_service(before=raising(exc_factory, calls=[1]))
    record, secret = service.create_token("default", name="flaky", common_name="flaky")
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "signer_unavailable"
    assert "Traceback" not in error.message
    if not isinstance(exc_factory(), FrontdoorError):
        assert "redeemed again" in error.message  # tells the redeemer the token is intact
    assert service.get_token("default", record.id).status() == "active"
    assert not service.get_token("default", record.id).claimed(record.created_at)  # claim released at once
    assert service.list_certificates("default").total == 0
    result = service.redeem("default", secret, csr())  # no wait: the claim was released
    assert result.replayed is False
    assert service.signers["default"].calls == 2


def test_signer_returning_a_wrong_subject_is_caught(backend, make_service):
    service = make_service(alter=other_subject)
    record, secret = service.create_token("default", name="swapped", common_name="right-cn")
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "signer_error"
    assert "subject" in error.message
    wrapper = service.signers["default"]
    assert len(wrapper.issued) == 1  # the real CA did issue it ...
    assert load_cert(wrapper.issued[0].certificate_pem).subject != x509.Name([])
    assert service.list_certificates("default").total == 0  # ... but it was not recorded or handed out
    assert service.get_token("default", record.id).status() == "active"
    wrapper.alter = None  # the CA behaves again
    result = service.redeem("default", secret, csr())
    assert result.certificate.subject.common_name == "right-cn"


def test_claim_blocks_others_until_done_and_lapses_after_the_lease(backend, make_service):
    """A slow redemption holds the token (others get redemption_in_progress with a retry hint);
    when it outlives its lease another redeemer may take over, and still exactly one
    certificate is recorded: the slow one's is discarded."""
    lease = backend.config.claim_lease
    release = threading.Event()

    def hold_first(request, number):
        if number == 1:
            release.wait(timeout=lease + 15)  # bounded; released by the test below

    slow = make_service(before=hold_first)
    fast = backend.new_service()
    record, secret = slow.create_token("default", name="slow", common_name="slow")
    outcome = {}

    def slow_redeem():
        try:
            outcome["slow"] = slow.redeem("default", secret, csr(0))
        except FrontdoorError as exc:
            outcome["slow"] = exc

    thread = threading.Thread(target=slow_redeem)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and slow.signers["default"].calls == 0:
            time.sleep(0.01)
        assert slow.signers["default"].calls == 1  # the slow redeemer holds the claim, in its signer
        error = error_of(fast.redeem, "default", secret, csr(1))
        assert error.code == "redemption_in_progress"
        assert error.retry_after is not None and 1 <= error.retry_after <= lease + 1
        assert error_of(fast.update_token, "default", record.id, {"name": "x"}).code == "redemption_in_progress"
        assert error_of(fast.refresh_token, "default", record.id).code == "redemption_in_progress"
        assert error_of(fast.delete_token, "default", record.id).code == "redemption_in_progress"
        time.sleep(lease + 0.1)  # the slow claim has lapsed, its signer is still busy
        taken = fast.redeem("default", secret, csr(1))
        assert taken.replayed is False
    finally:
        release.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert isinstance(outcome["slow"], FrontdoorError)
    assert outcome["slow"].code in ("redemption_in_progress", "token_already_used")
    assert len(slow.signers["default"].issued) == 1  # it did get a certificate from the CA ...
    page = fast.list_certificates("default")
    assert page.total == 1 and page.items[0].id == taken.certificate.id  # ... which was not recorded
    assert fast.get_token("default", record.id).certificate_id == taken.certificate.id
    assert any(line["event"] == "certificate.discarded" for line in backend.audit_lines())


def test_refresh_racing_a_redemption_never_lets_the_old_secret_in(backend, make_service):
    """The old secret is looked up, then an administrator refreshes before the claim lands:
    the redemption must fail rather than claim with the replaced secret."""
    service = make_service()
    record, old_secret = service.create_token("default", name="race", common_name="race")
    admin = backend.new_service()
    store = service.store
    real_replace = store.replace_token
    fired = []

    def replace_after_refresh(candidate, expected_version):
        if not fired:
            fired.append(admin.refresh_token("default", record.id, ttl="1h"))
        return real_replace(candidate, expected_version)

    store.replace_token = replace_after_refresh
    try:
        error = error_of(service.redeem, "default", old_secret, csr())
    finally:
        store.replace_token = real_replace
    assert fired, "the refresh was injected"
    assert error.code == "token_not_found"
    assert service.list_certificates("default").total == 0
    new_secret_value = fired[0][1]
    assert service.redeem("default", new_secret_value, csr()).replayed is False


def test_audit_lines_never_contain_a_secret(backend, service):
    record, secret = service.create_token("default", name="audited", common_name="aud", actor="alice")
    service.update_token("default", record.id, {"name": "audited-2"}, actor="alice")
    _, secret2 = service.refresh_token("default", record.id, actor="alice")
    mistyped = secret2[:-1] + ("A" if secret2[-1] != "A" else "B")
    unknown = new_secret()
    for bad in (secret, mistyped, unknown):
        error_of(service.redeem, "default", bad, csr())
    error_of(service.redeem, "default", secret2, tamper_signature(csr()))
    cert = service.redeem("default", secret2, csr(), source="203.0.113.7").certificate
    service.redeem("default", secret2, csr())  # replay
    error_of(service.redeem, "default", secret2, csr(1))
    if backend.has("revoke"):
        service.revoke_certificate("default", cert.id, actor="alice")
    other, secret3 = service.create_token("default", name="to-delete", actor="alice")
    service.delete_token("default", other.id, actor="bob")
    service.cleanup("default", statuses=["redeemed"], actor="bob")

    text = backend.audit_text()
    for value in (secret, secret2, secret3, mistyped, unknown):
        assert value not in text
        assert value[4:] not in text  # not even without the prefix
        assert hash_secret(value) not in text  # nor the hash that would confirm a guess
    lines = backend.audit_lines()
    events = [line["event"] for line in lines]
    for expected in ("token.created", "token.updated", "token.refreshed", "redemption.refused", "token.redeemed",
                     "redemption.replayed", "token.deleted", "tokens.cleaned"):
        assert expected in events, expected
    if backend.has("revoke"):
        assert "certificate.revoked" in events
    refused = [line for line in lines if line["event"] == "redemption.refused"]
    assert {line["code"] for line in refused} == {"token_not_found", "invalid_csr", "token_already_used"}
    assert {line.get("reason") for line in refused if line["code"] == "token_not_found"} >= {"checksum", "unknown"}
    redeemed = next(line for line in lines if line["event"] == "token.redeemed")
    assert redeemed["tokenId"] == record.id and redeemed["frontdoor"] == "default"
    assert redeemed["serial"] == cert.serial_number and redeemed["source"] == "203.0.113.7"
    created = next(line for line in lines if line["event"] == "token.created")
    assert created["actor"] == "alice"
    assert all("time" in line for line in lines)


def test_revocation_and_crl(backend, service):
    _, secret = service.create_token("default", name="revoke-me", common_name="revoke-me")
    cert = service.redeem("default", secret, csr()).certificate
    _, secret2 = service.create_token("default", name="keep-me", common_name="keep-me")
    kept = service.redeem("default", secret2, csr(1)).certificate
    if backend.has("revoke"):
        revoked = service.revoke_certificate("default", cert.id, actor="admin")
        assert revoked.revoked_at is not None
        assert service.revoke_certificate("default", cert.id).revoked_at == revoked.revoked_at  # idempotent
        assert [c.id for c in service.list_certificates("default", revoked=True).items] == [cert.id]
        assert [c.id for c in service.list_certificates("default", revoked=False).items] == [kept.id]
    else:
        assert error_of(service.revoke_certificate, "default", cert.id).code == "not_supported"
        assert service.get_certificate("default", cert.id).revoked_at is None
    assert error_of(service.revoke_certificate, "default", "cert-unknown").code == "certificate_not_found"
    assert error_of(service.get_certificate, "short", kept.id).code == "certificate_not_found"  # per frontdoor
    assert error_of(service.revoke_certificate, "short", kept.id).code == "certificate_not_found"

    if backend.has("crl"):
        crl = x509.load_der_x509_crl(service.crl("default"))
        issuer = load_cert(service.ca_chain("default")[0])
        assert crl.issuer == issuer.subject
        assert crl.is_signature_valid(issuer.public_key())
        assert crl.get_revoked_certificate_by_serial_number(int(cert.serial_number, 16)) is not None
        assert crl.get_revoked_certificate_by_serial_number(int(kept.serial_number, 16)) is None
    else:
        assert error_of(service.crl, "default").code == "not_supported"


def test_signer_failing_before_signing_releases_the_claim(backend, make_service):
    """Anything the signer does after the claim may fail (here: asking the CA for its expiry)."""
    service = make_service()
    wrapper = service.signers["default"]
    real_limit = wrapper.not_after_limit

    def broken_limit():
        raise ConnectionError("CA unreachable")

    wrapper.not_after_limit = broken_limit
    record, secret = service.create_token("default", name="limit", common_name="limit")
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "signer_unavailable"
    wrapper.not_after_limit = real_limit
    assert service.redeem("default", secret, csr()).replayed is False  # at once: no claim left behind


@pytest.mark.parametrize("write_lands", [False, True], ids=["write-lost", "response-lost"])
def test_store_failing_while_recording(backend, make_service, write_lands):
    """The store errors on the final write. If nothing was written the token stays redeemable
    (and the signed certificate is discarded); if the write landed and only the answer was
    lost, the redemption succeeded and must say so, with exactly one certificate."""
    service = make_service()
    record, stored, result = redeem_through_a_store_fault(service, write_lands)
    if stored is not None:
        assert stored.claim_id is None  # released at once
    assert service.get_token("default", record.id).certificate_id == result.certificate.id


def test_not_after_is_clamped_to_the_ca_expiry(backend, make_service):
    """A CA that expires before the default lifetime ends must not be asked for more."""
    service = make_service()
    wrapper = service.signers["default"]
    limit = (utcnow() + _dt.timedelta(days=2)).replace(microsecond=0)
    wrapper.not_after_limit = lambda: limit
    _, secret = service.create_token("default", name="clamped", common_name="clamped")
    cert = load_cert(service.redeem("default", secret, csr()).certificate.certificate_pem)
    assert cert.not_valid_after_utc <= limit + _dt.timedelta(seconds=1)
    assert cert.not_valid_after_utc >= limit - _dt.timedelta(minutes=5)


def test_a_delete_the_store_fails_releases_its_claim(backend, service):
    """A delete claims the token before removing it; if the removal fails the claim is released,
    so the token is not held up for a lease. A redeemed token can be deleted (no claim needed)."""
    record, secret = service.create_token("default", name="undeletable", common_name="undeletable")
    real_delete = service.store.delete_token

    def failing_delete(*args):
        raise StoreUnavailable("connection reset while deleting")

    service.store.delete_token = failing_delete
    try:
        assert error_of(service.delete_token, "default", record.id).code == "store_unavailable"
    finally:
        service.store.delete_token = real_delete
    assert not service.get_token("default", record.id).claimed(service.clock())
    assert service.redeem("default", secret, csr()).replayed is False
    assert service.delete_token("default", record.id).id == record.id
    assert error_of(service.get_token, "default", record.id).code == "token_not_found"
