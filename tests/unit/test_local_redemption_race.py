"""On the local CA a redemption does not claim the token before signing (``claim_before_signing``):
the record's check-and-set alone decides, so a redemption is one write. These tests force the race
that the claim would have prevented, on the real SQLite store and local CA: a second redemption of
the same token lands while the first is signing."""

from __future__ import annotations

import pytest
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, make_key


class _StoreWrites:
    """The real store, counting the writes a redemption makes."""

    def __init__(self, store):
        self._store = store
        self.writes = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def replace_token(self, record, expected_version):
        self.writes.append("replace_token")
        return self._store.replace_token(record, expected_version)

    def record_redemption(self, record, expected_version, certificate):
        self.writes.append("record_redemption")
        return self._store.record_redemption(record, expected_version, certificate)


class _SignsThenLetsAnotherWin:
    """The real local signer; during its first signature another redemption of the token runs to the end."""

    def __init__(self, signer, other):
        self._signer = signer
        self._other = other

    def __getattr__(self, name):
        return getattr(self._signer, name)

    def sign(self, request):
        other, self._other = self._other, None
        if other is not None:
            other()
        return self._signer.sign(request)


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


def test_a_local_redemption_is_one_write(service):
    assert service.signers["default"].claim_before_signing is False
    _record, secret = service.create_token("default", name="one-write", common_name="one.example")
    service.store = _StoreWrites(service.store)
    service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
    assert service.store.writes == ["record_redemption"]


@pytest.mark.parametrize("same_key", [False, True])
def test_the_loser_of_an_unclaimed_race_gets_no_certificate(service, tmp_path, same_key):
    record, secret = service.create_token("default", name="race", common_name="race.example")
    key = make_key("p256")
    winner_key = key if same_key else make_key("p256")
    won = []
    signer = service.signers["default"]
    service.signers["default"] = _SignsThenLetsAnotherWin(
        signer, lambda: won.append(service.redeem("default", secret, make_csr(winner_key, cn="w"))))

    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, make_csr(key, cn="l"))

    assert info.value.code == "redemption_in_progress" and info.value.status == 409
    assert len(won) == 1 and not won[0].replayed
    page = service.list_certificates("default")
    assert page.total == 1 and page.items[0].id == won[0].certificate.id
    assert service.get_token("default", record.id).certificate_id == won[0].certificate.id
    audit = (tmp_path / "audit.jsonl").read_text()
    assert audit.count('"event":"certificate.discarded"') == 1 and secret not in audit
    # the retry the 409 asks for: the same key as the winner gets the winner's certificate, another key is refused
    service.signers["default"] = signer
    if same_key:
        again = service.redeem("default", secret, make_csr(key, cn="l"))
        assert again.replayed and again.certificate.id == won[0].certificate.id
    else:
        with pytest.raises(FrontdoorError) as refused:
            service.redeem("default", secret, make_csr(key, cn="l"))
        assert refused.value.code == "token_already_used"
    assert service.list_certificates("default").total == 1


class _RefusesFirstRecord:
    """The real store, except that the first record check-and-set is refused without writing: what a replica
    that has not yet seen the claim answers (an OpenBao standby serving reads)."""

    def __init__(self, store):
        self._store = store
        self.refusals = 1

    def __getattr__(self, name):
        return getattr(self._store, name)

    def record_redemption(self, record, expected_version, certificate):
        if self.refusals:
            self.refusals -= 1
            return False
        return self._store.record_redemption(record, expected_version, certificate)


class _Claiming:
    """The real local signer, redeemed through the claiming protocol (as Vault and step-ca are)."""

    claim_before_signing = True

    def __init__(self, signer):
        self._signer = signer

    def __getattr__(self, name):
        return getattr(self._signer, name)


def test_a_refused_record_gives_the_claim_back(service):
    record, secret = service.create_token("default", name="stale", common_name="stale.example")
    service.store = _RefusesFirstRecord(service.store)
    service.signers["default"] = _Claiming(service.signers["default"])
    key = make_key("p256")
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, make_csr(key, cn="x"))
    assert info.value.code == "redemption_in_progress"
    stored = service.get_token("default", record.id)
    assert stored.claim_id is None and stored.status() == "active"  # not held for the lease
    again = service.redeem("default", secret, make_csr(key, cn="x"))  # at once, no 30 s wait
    assert not again.replayed and service.list_certificates("default").total == 1


@pytest.mark.parametrize("claim_first", [False, True])
def test_a_redemption_changes_only_the_redemption_fields(service, claim_first):
    """The SQLite store writes only REDEMPTION_FIELDS when it records a redemption (stores/base.py): should the
    engine ever change another field there, this fails instead of the change being silently dropped."""
    import dataclasses

    from frontdoor_pki.model import TokenRecord
    from frontdoor_pki.stores.base import REDEMPTION_FIELDS

    record, secret = service.create_token("default", name="fields", common_name="fields.example")
    before = service.store.get_token("default", record.id)
    if claim_first:
        service.signers["default"] = _Claiming(service.signers["default"])
    recorded = []
    store = service.store

    class _Spy(_StoreWrites):
        def record_redemption(self, record, expected_version, certificate):
            recorded.append(record)  # what the engine asks to be written, before the store narrows it
            return store.record_redemption(record, expected_version, certificate)

    service.store = _Spy(store)
    service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
    [done] = recorded
    changed = {f.name for f in dataclasses.fields(TokenRecord) if getattr(done, f.name) != getattr(before, f.name)}
    assert {"state", "redeemed_at", "certificate_id", "public_key_sha256", "version"} <= changed
    assert changed <= set(REDEMPTION_FIELDS), changed - set(REDEMPTION_FIELDS)
    assert store.get_token("default", record.id) == done
