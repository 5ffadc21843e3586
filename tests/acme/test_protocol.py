"""RFC 8555 behaviour through the ``acme`` package's ClientV2 and JWS signed by josepy, on a real gateway.

What a command-line client only reports as text is checked here by problem type: replayed nonce, expired
token, account keys (RS256, ES256, ES384), onlyReturnExisting, deactivation, keyChange, the content type.
"""

from __future__ import annotations

import datetime
import json
import time

import josepy
import pytest
import requests
from acme import errors as acme_errors
from acme import jws as acme_jws
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support.acme_clients import account_key, library_client, register
from support.crypto import make_csr, shared_key

PROBLEM = "application/problem+json"


def _signed(key, alg, url: str, nonce: str, payload, kid=None) -> bytes:
    body = b"" if payload is None else json.dumps(payload).encode()
    return acme_jws.JWS.sign(body, key=key, alg=alg, nonce=josepy.decode_b64jose(nonce), url=url, kid=kid).json_dumps().encode()


def _nonce(server: str) -> str:
    directory = requests.get(server, timeout=10).json()
    return requests.head(directory["newNonce"], timeout=10).headers["Replay-Nonce"]


def _post(url: str, body: bytes, content_type: str = "application/jose+json") -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=30)


def _existing(server: str, key) -> str:
    """The account URL of ``key`` (newAccount with onlyReturnExisting; ClientV2 reports 200 as a conflict)."""
    with pytest.raises(acme_errors.ConflictError) as found:
        library_client(server, key).new_account(messages.NewRegistration(only_return_existing=True))
    return found.value.location


def _problem(answer: requests.Response, kind: str, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    assert answer.headers.get("Replay-Nonce")
    problem = answer.json()
    assert problem["type"] == "urn:ietf:params:acme:error:" + kind, problem
    return problem


@pytest.mark.parametrize("kind", ["rs256", "es256", "es384"])
def test_account_keys_and_a_full_order(kind, new_token, server):
    token = new_token("%s.proto.example" % kind)
    key = account_key(kind)
    client = library_client(server, key)
    account = register(client, key, token["acmeEab"])
    assert account.body.status == "valid"
    order = client.new_order(make_csr(shared_key("p256", 80), cn="%s.proto.example" % kind,
                                      sans=["%s.proto.example" % kind]).encode())
    assert [a.body.status for a in order.authorizations] == [messages.STATUS_VALID]
    assert order.authorizations[0].body.challenges == ()
    done = client.finalize_order(order, deadline=datetime.datetime.now() + datetime.timedelta(seconds=30))
    cert = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    assert cert.subject.rfc4514_string() == "CN=%s.proto.example" % kind
    # the certificate by POST-as-GET, as a PEM chain
    alg = {"rs256": josepy.RS256, "es256": josepy.ES256, "es384": josepy.ES384}[kind]
    fetched = _post(done.body.certificate, _signed(key, alg, done.body.certificate, _nonce(server), None, kid=account.uri))
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "application/pem-certificate-chain"
    assert fetched.text == done.fullchain_pem
    # account update (contact), then the same key asking again gets its account back; onlyReturnExisting finds it
    updated = client.update_registration(account, messages.Registration(contact=("mailto:new@example.com",)))
    assert updated.body.contact == ("mailto:new@example.com",)
    assert _existing(server, key) == account.uri


def test_replayed_nonce_is_bad_nonce(server):
    directory = requests.get(server, timeout=10).json()
    key = account_key("es256")
    nonce = _nonce(server)
    body = _signed(key, josepy.ES256, directory["newAccount"], nonce, {"termsOfServiceAgreed": True})
    first = _post(directory["newAccount"], body)
    _problem(first, "externalAccountRequired", 400)  # the nonce was good, and is spent now
    _problem(_post(directory["newAccount"], body), "badNonce", 400)
    forged = nonce[:-2] + ("AA" if not nonce.endswith("AA") else "BB")
    _problem(_post(directory["newAccount"], _signed(key, josepy.ES256, directory["newAccount"], forged, {})),
             "badNonce", 400)


def test_url_and_content_type_and_signature_are_checked(server):
    directory = requests.get(server, timeout=10).json()
    key = account_key("es256")
    body = _signed(key, josepy.ES256, directory["newOrder"], _nonce(server), {})
    _problem(_post(directory["newAccount"], body), "unauthorized", 403)  # url header of another resource
    body = _signed(key, josepy.ES256, directory["newAccount"], _nonce(server), {})
    _problem(_post(directory["newAccount"], body, "application/json"), "malformed", 415)
    other = account_key("es256")
    tampered = json.loads(_signed(key, josepy.ES256, directory["newAccount"], _nonce(server), {}))
    tampered["signature"] = json.loads(_signed(other, josepy.ES256, directory["newAccount"], _nonce(server), {}))[
        "signature"]
    _problem(_post(directory["newAccount"], json.dumps(tampered).encode()), "malformed", 400)


def test_wrong_hmac_and_unknown_key_id_are_unauthorized(new_token, server):
    token = new_token("wrong.proto.example")
    key = account_key("es256")
    client = library_client(server, key)
    bad = dict(token["acmeEab"], hmacKey=josepy.b64encode(b"\x01" * 32).decode())
    with pytest.raises(messages.Error) as refused:
        register(client, key, bad)
    assert refused.value.typ == "urn:ietf:params:acme:error:unauthorized"
    with pytest.raises(messages.Error) as unknown:
        register(client, key, dict(token["acmeEab"], keyId="token-00000000-0000-0000-0000-000000000000"))
    assert unknown.value.typ == "urn:ietf:params:acme:error:unauthorized"
    with pytest.raises(messages.Error) as missing:
        register(client, key, None)
    assert missing.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"


def test_refreshed_token_gets_a_new_eab_and_the_old_one_stops(gw, new_token, server):
    token = new_token("refresh.proto.example")
    refreshed = gw.request("POST", "/frontdoor/default/certificate-request-tokens/%s/refresh" % token["id"], json={})
    assert refreshed.status_code == 200, refreshed.text
    new_eab = refreshed.json()["acmeEab"]
    assert new_eab["keyId"] == token["id"] and new_eab["hmacKey"] != token["acmeEab"]["hmacKey"]
    key = account_key("es256")
    client = library_client(server, key)
    with pytest.raises(messages.Error) as old:
        register(client, key, token["acmeEab"])
    assert old.value.typ == "urn:ietf:params:acme:error:unauthorized"
    assert register(client, key, new_eab).body.status == "valid"


def test_expired_token(new_token, server):
    bound = new_token("late.proto.example", ttl="3s")
    unbound = new_token("later.proto.example", ttl="3s")
    key = account_key("es256")
    client = library_client(server, key)
    register(client, key, bound["acmeEab"])
    time.sleep(3.5)
    with pytest.raises(messages.Error) as order:
        client.new_order(make_csr(shared_key("p256", 81), cn="late.proto.example", sans=["late.proto.example"]).encode())
    assert order.value.typ == "urn:ietf:params:acme:error:unauthorized" and "expired" in order.value.detail
    other_key = account_key("es256")
    with pytest.raises(messages.Error) as account:
        register(library_client(server, other_key), other_key, unbound["acmeEab"])
    assert account.value.typ == "urn:ietf:params:acme:error:unauthorized" and "expired" in account.value.detail


def test_deactivated_account_and_deleted_token(gw, new_token, server):
    token = new_token("gone.proto.example")
    key = account_key("es256")
    client = library_client(server, key)
    account = register(client, key, token["acmeEab"])
    deleted = gw.request("DELETE", "/frontdoor/default/certificate-request-tokens/%s" % token["id"])
    assert deleted.status_code == 204
    with pytest.raises(messages.Error) as order:
        client.new_order(make_csr(shared_key("p256", 82), cn="gone.proto.example", sans=["gone.proto.example"]).encode())
    # the account went with its token (docs/acme.md, "State"), and the EAB with the token's secret
    assert order.value.typ == "urn:ietf:params:acme:error:accountDoesNotExist", order.value
    assert "removed with its token" in order.value.detail
    with pytest.raises(messages.Error) as again:
        register(library_client(server, key), key, token["acmeEab"])
    assert again.value.typ == "urn:ietf:params:acme:error:unauthorized"
    # and asked by the account itself
    token = new_token("quit.proto.example")
    key = account_key("rs256")
    client = library_client(server, key)
    account = register(client, key, token["acmeEab"])
    gone = client.deactivate_registration(account)
    assert gone.body.status == "deactivated"
    with pytest.raises((messages.Error, acme_errors.Error)):
        client.new_order(make_csr(shared_key("p256", 83), cn="quit.proto.example", sans=["quit.proto.example"]).encode())


def test_key_change(new_token, server):
    token = new_token("rollover.proto.example")
    old_key = account_key("es256")
    client = library_client(server, old_key)
    account = register(client, old_key, token["acmeEab"])
    directory = requests.get(server, timeout=10).json()
    new_key = account_key("es256")
    inner = acme_jws.JWS.sign(
        json.dumps({"account": account.uri, "oldKey": old_key.public_key().to_json()}).encode(), key=new_key,
        alg=josepy.ES256, nonce=None, url=directory["keyChange"],
    ).to_json()
    outer = _signed(old_key, josepy.ES256, directory["keyChange"], _nonce(server), inner, kid=account.uri)
    answer = _post(directory["keyChange"], outer)
    assert answer.status_code == 200, answer.text
    # the new key finds the account; the old one no longer does
    assert _existing(server, new_key) == account.uri
    with pytest.raises(messages.Error) as old:
        _existing(server, old_key)
    assert old.value.typ == "urn:ietf:params:acme:error:accountDoesNotExist"


def test_every_answer_has_a_nonce_and_the_directory_requires_eab(server):
    directory = requests.get(server, timeout=10).json()
    assert directory["meta"]["externalAccountRequired"] is True
    assert set(directory) >= {"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"}
    got = requests.get(directory["newNonce"], timeout=10)
    assert got.status_code == 204 and got.headers["Replay-Nonce"] and got.headers["Cache-Control"] == "no-store"
    head = requests.head(directory["newNonce"], timeout=10)
    assert head.status_code == 200 and head.headers["Replay-Nonce"] != got.headers["Replay-Nonce"]
    unknown = requests.get(server.replace("/default/", "/nope/"), timeout=10)
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith(PROBLEM)


def test_other_methods_and_paths_are_acme_problems(server):
    directory = requests.get(server, timeout=10)
    assert directory.headers.get("Replay-Nonce")
    wrong_method = requests.get(directory.json()["newAccount"], timeout=10)
    _problem(wrong_method, "malformed", 405)
    _problem(requests.post(server.replace("directory", "nope/x"), data=b"{}", timeout=10), "malformed", 404)


def test_racing_accounts_bind_one_and_racing_finalizes_issue_one(gw, new_token, server):
    """Eight accounts race for one EAB: one is bound. Its two orders finalized at once: one certificate."""
    import threading

    token = new_token("race.proto.example")
    keys = [account_key("es256") for _ in range(8)]
    clients = [library_client(server, key) for key in keys]
    barrier, outcomes = threading.Barrier(len(keys)), []

    def bind(index):
        barrier.wait()
        try:
            register(clients[index], keys[index], token["acmeEab"])
            outcomes.append(("bound", index))
        except messages.Error as exc:
            outcomes.append((exc.typ, index))

    threads = [threading.Thread(target=bind, args=(i,)) for i in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for kind, i in outcomes if kind == "bound"]
    assert len(winners) == 1, outcomes
    assert {kind for kind, _i in outcomes if kind != "bound"} == {"urn:ietf:params:acme:error:unauthorized"}

    client = clients[winners[0]]
    csrs = [make_csr(shared_key("p256", 84 + i), cn="race.proto.example", sans=["race.proto.example"]).encode()
            for i in range(2)]
    orders = [client.new_order(csr) for csr in csrs]
    barrier, results = threading.Barrier(2), []

    def finalize(order):
        barrier.wait()
        try:
            done = client.finalize_order(order, deadline=datetime.datetime.now() + datetime.timedelta(seconds=30))
            results.append(("issued", done.fullchain_pem))
        except messages.Error as exc:
            results.append((exc.typ, None))

    threads = [threading.Thread(target=finalize, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(kind for kind, _pem in results)[0] == "issued", results
    assert [kind for kind, _pem in results].count("issued") == 1, results
    loser = [kind for kind, _pem in results if kind != "issued"][0]
    assert loser in ("urn:ietf:params:acme:error:unauthorized", "urn:ietf:params:acme:error:rateLimited"), results
    listed = gw.request("GET", "/frontdoor/default/client-certificates", params={"tokenId": token["id"]}).json()
    assert listed["totalElements"] == 1


def test_revocation_by_the_certificate_key_and_refusals(gw, new_token, server):
    """RFC 8555 §7.6: the account that obtained it, or the certificate's own key; nobody else."""
    directory = requests.get(server, timeout=10).json()
    cert_key = shared_key("p256", 88)
    token = new_token("revoke.proto.example")
    key = account_key("es256")
    client = library_client(server, key)
    register(client, key, token["acmeEab"])
    order = client.new_order(make_csr(cert_key, cn="revoke.proto.example", sans=["revoke.proto.example"]).encode())
    done = client.finalize_order(order, deadline=datetime.datetime.now() + datetime.timedelta(seconds=30))
    cert = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    payload = {"certificate": josepy.encode_b64jose(cert.public_bytes(Encoding.DER)), "reason": 1}
    url = directory["revokeCert"]

    stranger = account_key("es256")  # any other key, and another account, are refused
    _problem(_post(url, _signed(stranger, josepy.ES256, url, _nonce(server), payload)), "unauthorized", 403)
    other_token = new_token("other.proto.example")
    other_key = account_key("es256")
    other = register(library_client(server, other_key), other_key, other_token["acmeEab"])
    _problem(_post(url, _signed(other_key, josepy.ES256, url, _nonce(server), payload, kid=other.uri)),
             "unauthorized", 403)
    _problem(_post(url, _signed(key, josepy.ES256, url, _nonce(server), dict(payload, reason=7))),
             "badRevocationReason", 400)

    by_cert_key = _signed(josepy.JWKEC(key=cert_key), josepy.ES256, url, _nonce(server), payload)
    answer = _post(url, by_cert_key)
    assert answer.status_code == 200, answer.text
    record = gw.request("GET", "/frontdoor/default/client-certificates", params={"tokenId": token["id"]}).json()
    assert record["content"][0]["revokedAt"] is not None
    _problem(_post(url, _signed(josepy.JWKEC(key=cert_key), josepy.ES256, url, _nonce(server), payload)),
             "alreadyRevoked", 400)
