"""Vault failing under the service: frozen, sealed, killed, refusing the sign. The token must survive."""

from __future__ import annotations

import re
import time

import pytest
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.signers.vault_pki import role_parameters
from frontdoor_pki.tokens import hash_secret
from support.backends import wrap_signer
from support.crypto import make_csr, shared_key

pytestmark = pytest.mark.vault


def _refused(fn, *args, **kwargs) -> FrontdoorError:
    with pytest.raises(FrontdoorError) as info:
        fn(*args, **kwargs)
    return info.value


def _after_thaw(fn, *args, **kwargs):
    """Call fn once Vault serves again: a process just thawed can take a moment (with a 1 s client
    timeout on a loaded machine) before it answers in time. Bounded to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return fn(*args, **kwargs)
        except FrontdoorError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _assert_no_credentials(exc: FrontdoorError, data: dict) -> None:
    token = data["vault"]["token"]
    assert token not in exc.message and token not in repr(exc.to_dict())


def test_frozen_vault_answers_503_within_the_timeout_and_token_survives(own_bao, make_vault_service):
    service, data = make_vault_service(own_bao, timeout=1)
    _, secret = service.create_token("default", name="frozen", common_name="frozen")
    csr = make_csr(shared_key("p256", 20), cn="x")
    with own_bao.frozen():
        started = time.monotonic()
        exc = _refused(service.redeem, "default", secret, csr)
        elapsed = time.monotonic() - started
    assert exc.code == "store_unavailable" and exc.status == 503, exc
    assert "did not answer within 1 s" in exc.message, exc
    assert elapsed < 4, elapsed
    _assert_no_credentials(exc, data)
    assert _after_thaw(service.redeem, "default", secret, csr).replayed is False


def test_vault_frozen_while_signing_signer_unavailable_then_redeemable(own_bao, make_vault_service):
    service, data = make_vault_service(own_bao, timeout=1, claim_lease=2.0)
    _, secret = service.create_token("default", name="midsign", common_name="midsign")
    csr = make_csr(shared_key("p256", 21), cn="x")
    service.redeem("default", service.create_token("default", name="warm", common_name="w")[1],
                   make_csr(shared_key("p256", 22), cn="x"))  # role exists, CA chain cached
    before = own_bao.certificate_count()
    wrapper = wrap_signer(service, before=lambda request, number: own_bao.freeze() if number == 1 else None)
    try:
        started = time.monotonic()
        exc = _refused(service.redeem, "default", secret, csr)
        elapsed = time.monotonic() - started
    finally:
        own_bao.thaw()
    assert exc.code == "signer_unavailable" and exc.status == 503, exc
    assert elapsed < 5, elapsed  # sign timed out (1 s), the claim release timed out (1 s)
    _assert_no_credentials(exc, data)
    # The sign request was already in Vault's socket when it froze: Vault may finish it after the
    # thaw. That certificate was never handed out nor recorded; at most one such orphan exists.
    time.sleep(0.3)
    orphaned = own_bao.certificate_count() - before
    assert orphaned in (0, 1)
    assert service.list_certificates("default", token_id=service.store.find_token_by_hash(hash_secret(secret)).id).total == 0
    # the release could not reach the frozen Vault: the claim lapses after its lease
    deadline = time.monotonic() + 10
    while True:
        try:
            result = service.redeem("default", secret, csr)
            break
        except FrontdoorError as again:
            assert again.code in ("redemption_in_progress", "store_unavailable", "signer_unavailable"), again
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert not result.replayed and wrapper.calls == 2
    assert own_bao.certificate_count() == before + orphaned + 1
    assert service.list_certificates("default", token_id=result.certificate.token_id).total == 1


def test_sealed_vault_503_then_unsealed_token_redeemable(own_bao, make_vault_service):
    service, data = make_vault_service(own_bao)
    _, secret = service.create_token("default", name="sealed", common_name="sealed")
    csr = make_csr(shared_key("p256", 23), cn="x")
    keys = re.findall(r"Unseal Key: (\S+)", own_bao.log())
    assert keys, "the dev server prints its unseal key"
    own_bao.root("PUT", "sys/seal")
    try:
        exc = _refused(service.redeem, "default", secret, csr)
        assert exc.status == 503 and exc.code == "store_unavailable"
        assert "sealed" in exc.message
        _assert_no_credentials(exc, data)
    finally:
        own_bao.root("PUT", "sys/unseal", json={"key": keys[-1]})
    deadline = time.monotonic() + 15
    while own_bao.session.get(own_bao.url + "/v1/sys/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert service.redeem("default", secret, csr).certificate.subject.common_name == "sealed"


def test_sign_capability_revoked_mid_flight(bao, make_vault_service):
    service, data = make_vault_service(bao)
    token = data["vault"]["token"]
    policy = bao.tokens[token][0]
    original = bao.root("GET", "sys/policies/acl/%s" % policy).json()["data"]["policy"]
    _, secret = service.create_token("default", name="denied", common_name="denied")
    csr = make_csr(shared_key("p256", 24), cn="x")
    service.redeem("default", service.create_token("default", name="warm", common_name="w")[1],
                   make_csr(shared_key("p256", 25), cn="x"))
    without_sign = re.sub(r'# Sign CSRs[^\n]*\npath "pki/sign/[^"]*" \{[^}]*\}\n', "", original)
    assert without_sign != original
    bao.root("PUT", "sys/policies/acl/%s" % policy, json={"policy": without_sign})
    try:
        exc = _refused(service.redeem, "default", secret, csr)
        assert exc.code == "signer_unavailable" and exc.status == 503
        assert "vault-policy" in exc.message and "permission" in exc.message
        _assert_no_credentials(exc, data)
        assert service.store.find_token_by_hash(hash_secret(secret)).status() == "active"
    finally:
        bao.root("PUT", "sys/policies/acl/%s" % policy, json={"policy": original})
    assert service.redeem("default", secret, csr).certificate.subject.common_name == "denied"


def test_operator_role_deleted_then_recreated(bao, make_vault_service, tmp_path):
    role = "ops-fixed-%d" % (int(time.time() * 1000) % 10**9)
    params = role_parameters(None, None, 365 * 86400, False)
    bao.root("POST", "pki/roles/%s" % role, json=params)
    frontdoors = [{"id": "default", "signer": {"type": "vault", "manageRoles": False, "role": role}}]
    service, data = make_vault_service(bao, frontdoors=frontdoors)
    assert 'path "pki/sign/%s"' % role in bao.root("GET", "sys/policies/acl/%s" % bao.tokens[data["vault"]["token"]][0]).json()["data"]["policy"]
    _, secret = service.create_token("default", name="fixed", common_name="fixed")
    csr = make_csr(shared_key("p256", 26), cn="x")
    bao.root("DELETE", "pki/roles/%s" % role)
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "signer_unavailable" and role in exc.message and "manageRoles" in exc.message
    bao.root("POST", "pki/roles/%s" % role, json=params)
    assert service.redeem("default", secret, csr).certificate.subject.common_name == "fixed"

    # an operator role that puts another O in the certificate: refused, token kept
    _, locked = service.create_token("default", name="locked", common_name="lk", organization="Acme")
    bad = _refused(service.redeem, "default", locked, make_csr(shared_key("p256", 27), cn="x"))
    assert bad.code == "signer_error" and "subject differs" in bad.message
    assert service.list_tokens("default", status="active").total == 1


def test_vault_killed_and_restarted(own_bao, make_vault_service):
    """The dev server keeps everything in memory: after a restart the data is gone, so the test
    checks the outage answer and that the same gateway objects recover without a restart."""
    service, data = make_vault_service(own_bao, timeout=2)
    _, secret = service.create_token("default", name="before", common_name="before")
    csr = make_csr(shared_key("p256", 28), cn="x")
    assert service.redeem("default", secret, csr)  # pooled keep-alive connections exist now
    own_bao.kill()
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "store_unavailable" and "could not be reached" in exc.message
    exc = _refused(service.create_token, "default", name="during", common_name="during")
    assert exc.status == 503
    own_bao.restart()  # same port, same token ids (policies re-created), empty storage
    _, fresh = service.create_token("default", name="after", common_name="after")
    result = service.redeem("default", fresh, make_csr(shared_key("p256", 29), cn="x"))
    assert result.certificate.subject.common_name == "after"
