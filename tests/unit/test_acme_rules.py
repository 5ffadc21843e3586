"""The ACME front's rules without HTTP: identifiers, nonces, EAB derivation, the store's ACME state on SQLite
(insert-if-absent has one winner, the server key is made once, 0600) and the engine's redeem_bound entry point."""

from __future__ import annotations

import datetime as _dt
import multiprocessing
import os
import stat
import threading

import pytest
from frontdoor_pki.acme import protocol
from frontdoor_pki.acme.problems import AcmeProblem
from frontdoor_pki.acme.server import normalize_identifier, token_identifiers
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import UTC
from frontdoor_pki.stores.sqlite import SQLiteStore
from support.crypto import make_csr, shared_key


@pytest.fixture
def service(tmp_path):
    engine = build_service(load_config(state_dir=str(tmp_path), env={}, data={"backend": "local"}))
    yield engine
    engine.close()


def test_token_identifiers_cn_and_sans(service):
    record, _secret = service.create_token("default", name="a", common_name="Web.Example.COM",
                                           subject_alt_names={"dns": ["alt.example.com"], "ip": ["2001:db8::1"]})
    assert token_identifiers(record) == [("dns", "web.example.com"), ("dns", "alt.example.com"), ("ip", "2001:db8::1")]
    record, _secret = service.create_token("default", name="b", common_name="192.0.2.7")
    assert token_identifiers(record) == [("ip", "192.0.2.7")]
    record, _secret = service.create_token("default", name="c")
    assert token_identifiers(record) == []


def test_normalize_identifier():
    assert normalize_identifier({"type": "dns", "value": "WWW.Example.com."}) == ("dns", "www.example.com")
    assert normalize_identifier({"type": "ip", "value": "2001:0db8:0:0::1"}) == ("ip", "2001:db8::1")
    for bad, kind in (({"type": "email", "value": "a@b"}, "unsupportedIdentifier"),
                      ({"type": "ip", "value": "999.1.1.1"}, "rejectedIdentifier"),
                      ({"type": "dns", "value": "a b"}, "rejectedIdentifier"),
                      ({"type": "dns"}, "malformed"), ("dns", "malformed"),
                      ({"type": "dns", "value": "x", "extra": 1}, "malformed")):
        with pytest.raises(AcmeProblem) as refused:
            normalize_identifier(bad)
        assert refused.value.kind == kind


def test_nonces_are_macd_and_expire():
    key, now = os.urandom(32), _dt.datetime.now(UTC)
    nonce = protocol.new_nonce(key, now)
    assert protocol.nonce_expiry(key, nonce, now) == int(now.timestamp() + protocol.NONCE_TTL)
    later = now + _dt.timedelta(seconds=protocol.NONCE_TTL + 1)
    flipped = nonce[:10] + ("A" if nonce[10] != "A" else "B") + nonce[11:]
    for bad, key_used, when in ((nonce, key, later), (nonce, os.urandom(32), now), (flipped, key, now),
                                ("", key, now), ("%%%", key, now), (None, key, now), (nonce + "=", key, now)):
        with pytest.raises(AcmeProblem) as refused:
            protocol.nonce_expiry(key_used, bad, when)
        assert refused.value.kind == "badNonce"


def test_eab_is_derived_and_changes_with_the_secret(service):
    record, _secret = service.create_token("default", name="eab", common_name="eab.example")
    key = service.store.acme_server_key()
    eab = protocol.eab_credentials(key, record)
    assert eab["keyId"] == record.id and "=" not in eab["hmacKey"] and len(protocol.unb64url(eab["hmacKey"])) == 32
    assert protocol.eab_credentials(key, record) == eab
    refreshed, _secret = service.refresh_token("default", record.id)
    assert protocol.eab_credentials(key, refreshed)["hmacKey"] != eab["hmacKey"]
    assert protocol.eab_credentials(os.urandom(32), record)["hmacKey"] != eab["hmacKey"]


def test_sqlite_insert_if_absent_has_one_winner(tmp_path):
    store = SQLiteStore(str(tmp_path / "db.sqlite"))
    barrier, wins = threading.Barrier(8), []

    def race(index):
        barrier.wait()
        if store.acme_put("binding", "default/token-x", {"account": str(index)}, 0):
            wins.append(index)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    doc, version = store.acme_get("binding", "default/token-x")
    assert doc == {"account": str(wins[0])} and version == 1
    assert not store.acme_put("binding", "default/token-x", {"account": "late"}, 2)  # stale version
    assert store.acme_put("binding", "default/token-x", {"account": "next"}, 1)
    assert store.acme_get("binding", "default/token-x") == ({"account": "next"}, 2)
    now = _dt.datetime.now(UTC)
    store.acme_put("nonce", "1/a", {}, 0, expires_at=now - _dt.timedelta(seconds=1))
    store.acme_put("nonce", "1/b", {}, 0, expires_at=now + _dt.timedelta(hours=1))
    assert store.acme_purge("nonce", now) == 1
    assert store.acme_get("nonce", "1/a") is None and store.acme_get("nonce", "1/b") is not None
    store.acme_delete("binding", "default/token-x")
    assert store.acme_get("binding", "default/token-x") is None


def _key_of(path: str, queue) -> None:
    queue.put(SQLiteStore(path).acme_server_key())


def test_server_key_is_made_once_0600_across_processes(tmp_path):
    path = str(tmp_path / "state" / "frontdoor.db")
    SQLiteStore(path)  # the schema first, so the processes race only on the key
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_key_of, args=(path, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    keys = {queue.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)
    assert len(keys) == 1 and len(next(iter(keys))) == 32
    key_file = tmp_path / "state" / "acme-server.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SQLiteStore(path).acme_server_key() in keys
    assert [p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")] == []


def test_redeem_bound_single_use_and_renewal_rules(service):
    record, _secret = service.create_token("default", name="bound", common_name="bound.example")
    with pytest.raises(FrontdoorError) as early:  # renewal of a token never redeemed
        service.redeem_bound("default", record.id, make_csr(shared_key("p256", 90), cn="x"), renewal=True)
    assert early.value.code == "token_already_used"
    first = service.redeem_bound("default", record.id, make_csr(shared_key("p256", 90), cn="x"))
    assert not first.replayed and first.certificate.subject.common_name == "bound.example"
    with pytest.raises(FrontdoorError) as again:  # a second first-time redemption: single use holds
        service.redeem_bound("default", record.id, make_csr(shared_key("p256", 91), cn="x"))
    assert again.value.code == "token_already_used"
    renewed = service.redeem_bound("default", record.id, make_csr(shared_key("p256", 91), cn="x"), renewal=True)
    assert renewed.certificate.id != first.certificate.id and renewed.certificate.token_id == record.id
    token = service.get_token("default", record.id)
    assert token.certificate_id == renewed.certificate.id and token.redeemed_at == first.certificate.created_at
    service.revoke_certificate("default", renewed.certificate.id)
    with pytest.raises(FrontdoorError) as revoked:
        service.redeem_bound("default", record.id, make_csr(shared_key("p256", 92), cn="x"), renewal=True)
    assert revoked.value.code == "token_already_used" and "valid" in revoked.value.message
    # a bad CSR never touches the token
    other, _secret = service.create_token("default", name="bad-csr", common_name="b.example")
    with pytest.raises(FrontdoorError) as bad:
        service.redeem_bound("default", other.id, "not a csr")
    assert bad.value.code == "invalid_csr"
    assert service.get_token("default", other.id).status() == "active"
