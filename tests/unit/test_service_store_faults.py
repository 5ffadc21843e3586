"""The store failing at the last step of a redemption, on the real SQLite store.

Two cases a network store (Vault) really produces: the write is lost (the token must stay
redeemable and the signed certificate must be revoked), or the write landed but the
answer was lost (the redemption succeeded and must be reported as such).
"""

from __future__ import annotations

import pytest
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, make_key


class _Flaky:
    """Wraps the real store; record_redemption fails once, before or after really writing."""

    def __init__(self, store, after_write: bool):
        self._store = store
        self.after_write = after_write
        self.failures = 1

    def __getattr__(self, name):
        return getattr(self._store, name)

    def record_redemption(self, record, expected_version, certificate):
        if self.failures:
            self.failures -= 1
            if self.after_write:
                self._store.record_redemption(record, expected_version, certificate)
            raise ConnectionError("connection reset by peer")
        return self._store.record_redemption(record, expected_version, certificate)


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


def test_lost_write_keeps_token_and_discards_the_certificate(service, tmp_path):
    service.store = _Flaky(service.store, after_write=False)
    record, secret = service.create_token("default", name="flaky", common_name="flaky.example")
    key = make_key("p256")
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, make_csr(key, cn="x"))
    assert info.value.code == "store_unavailable" and info.value.status == 503
    assert service.get_token("default", record.id).status() == "active"
    assert service.list_certificates("default").total == 0
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"event":"certificate.discarded"' in audit and secret not in audit
    retried = service.redeem("default", secret, make_csr(key, cn="x"))
    assert not retried.replayed and service.list_certificates("default").total == 1


def test_write_landed_but_answer_lost_is_a_success(service):
    service.store = _Flaky(service.store, after_write=True)
    record, secret = service.create_token("default", name="landed", common_name="landed.example")
    key = make_key("p256")
    result = service.redeem("default", secret, make_csr(key, cn="x"))
    assert not result.replayed
    assert service.get_token("default", record.id).status() == "redeemed"
    stored = service.get_certificate("default", result.certificate.id)
    assert stored.revoked_at is None and stored.serial_number == result.certificate.serial_number
    again = service.redeem("default", secret, make_csr(key, cn="x"))
    assert again.replayed and again.certificate.id == result.certificate.id


def test_a_database_locked_past_busy_timeout_is_store_unavailable_and_burns_nothing(service, tmp_path):
    """Another writer holds SQLite's write lock longer than busy_timeout: the redemption answers
    503 store_unavailable (no traceback, no stall beyond the bound) and the token is as it was."""
    import sqlite3
    import time

    record, secret = service.create_token("default", name="locked", common_name="locked.example")
    service.store.busy_timeout = 0.3
    service.store.close()  # the next connection takes the shorter timeout
    blocker = sqlite3.connect(str(tmp_path / "frontdoor.db"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert info.value.code == "store_unavailable" and info.value.status == 503 and info.value.retry_after == 1
    assert time.monotonic() - started < 3
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.version == record.version and stored.claim_id is None
    assert service.redeem("default", secret, make_csr(make_key("p256"), cn="x")).replayed is False
