"""A token's ACME state (binding, account, key index, orders) goes with the token: on delete, on cleanup, and
when the token is deleted in the middle of a request that creates some (docs/acme.md, "State"). SQLite here;
the same on a real OpenBao in tests/vault/test_vault_acme.py."""

from __future__ import annotations

import datetime as _dt
import json
import logging

import pytest
from frontdoor_pki.acme import server as acme_server
from frontdoor_pki.acme.problems import AcmeProblem
from frontdoor_pki.config import build_service, load_config
from support.acme_inprocess import Client, documents, issued_through_acme, new_token

EMPTY = {"binding": [], "account": [], "key": [], "order": []}


@pytest.fixture
def service(tmp_path):
    engine = build_service(load_config(state_dir=str(tmp_path), env={}, data={"backend": "local"}))
    yield engine
    engine.close()


def test_delete_removes_the_tokens_acme_state_and_only_its(service):
    token, client = issued_through_acme(service, "gone.example")
    kept, _other = issued_through_acme(service, "kept.example")
    before = documents(service.store)
    assert [len(before[k]) for k in ("binding", "account", "key", "order")] == [2, 2, 2, 4]
    service.delete_token("default", token["id"], actor="alice")
    after = documents(service.store)
    assert after["binding"] == [kept["id"]] and len(after["account"]) == 1 and len(after["order"]) == 2
    assert len(after["key"]) == 1
    with pytest.raises(AcmeProblem) as gone:
        client.order("gone.example")
    assert gone.value.kind == "accountDoesNotExist"
    lines = [json.loads(line) for line in open(service.audit.path, encoding="utf-8")]
    deleted = [e for e in lines if e["event"] == "token.deleted"]
    assert deleted[-1]["tokenId"] == token["id"] and deleted[-1]["acmeObjectsRemoved"] == 5  # binding, account, key, 2 orders


def test_cleanup_removes_purged_tokens_state_and_leftovers(service, caplog):
    token, _client = issued_through_acme(service, "old.example")
    left, _client = issued_through_acme(service, "left.example")
    # a deletion whose ACME removal failed (the store went away right after the token's deletion): the token's
    # deletion stands, the failure is reported, and the binding is still there for the sweep to find
    real_delete = service.store.acme_delete

    def failing(kind, key):
        raise acme_server.FrontdoorError("store_unavailable", "the store is down")

    service.store.acme_delete = failing
    with caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        service.delete_token("default", left["id"])
    service.store.acme_delete = real_delete
    assert left["id"] in documents(service.store)["binding"]
    later = service.clock() + _dt.timedelta(seconds=5)
    service.clock = lambda: later
    purged = service.cleanup("default", statuses=["redeemed"])
    assert purged == [token["id"]]
    assert documents(service.store) == EMPTY


def test_a_token_deleted_during_new_order_or_new_account_leaves_nothing(service):
    token = new_token(service, "race.example")
    client = Client(service)
    client.register(token)
    store = service.store
    real_put = store.acme_put

    def put_then_delete(kind, key, doc, version, expires_at=None):
        written = real_put(kind, key, doc, version, expires_at=expires_at)
        if kind == "order":  # the deletion lands between the order's write and the request's end
            service.delete_token("default", token["id"])
        return written

    store.acme_put = put_then_delete
    with pytest.raises(AcmeProblem) as refused:
        client.order("race.example")
    store.acme_put = real_put
    assert refused.value.kind in ("unauthorized", "accountDoesNotExist")
    assert documents(store) == EMPTY

    other = new_token(service, "race2.example")

    def account_then_delete(kind, key, doc, version, expires_at=None):
        written = real_put(kind, key, doc, version, expires_at=expires_at)
        if kind == "account":
            service.delete_token("default", other["id"])
        return written

    store.acme_put = account_then_delete
    with pytest.raises(AcmeProblem) as refused:
        Client(service).register(other)
    store.acme_put = real_put
    assert refused.value.kind == "unauthorized"
    assert documents(store) == EMPTY


def test_orders_past_the_listed_number_are_deleted(service, monkeypatch):
    monkeypatch.setattr(acme_server, "MAX_ORDERS_LISTED", 3)
    token = new_token(service, "many.example")
    client = Client(service)
    client.register(token)
    made = [client.order("many.example").location.rsplit("/", 1)[1] for _ in range(5)]
    assert documents(service.store)["order"] == sorted(made[-3:])
    service.delete_token("default", token["id"])
    assert documents(service.store) == EMPTY


def test_key_change_then_delete_removes_the_new_key(service):
    token = new_token(service, "roll.example")
    client = Client(service)
    client.register(token)
    import josepy
    from acme import jws as acme_jws
    from cryptography.hazmat.primitives.asymmetric import ec

    new_key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    inner = acme_jws.JWS.sign(
        json.dumps({"account": client.kid, "oldKey": client.key.public_key().to_json()}).encode(), key=new_key,
        alg=josepy.ES256, nonce=None, url=client.urls.key_change,
    ).to_json()
    assert client.post("key-change", inner).status == 200
    assert len(documents(service.store)["key"]) == 1
    service.delete_token("default", token["id"])
    assert documents(service.store) == EMPTY
