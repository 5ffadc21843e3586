"""The ACME front on the Vault backend (real OpenBao): state in KV v2, shared by two gateway processes."""

from __future__ import annotations

import json

import josepy
import pytest
import requests
from acme import jws as acme_jws
from cryptography import x509
from cryptography.x509.oid import NameOID
from support.acme_clients import Certbot, account_key, directory_url
from support.gateway import run_gateway

pytestmark = pytest.mark.vault


def _signed(key, url: str, nonce: str, payload) -> bytes:
    return acme_jws.JWS.sign(json.dumps(payload).encode(), key=key, alg=josepy.ES256,
                             nonce=josepy.decode_b64jose(nonce), url=url).json_dumps().encode()


def _post(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/jose+json"}, timeout=30)


def test_certbot_on_vault_across_two_gateways(bao, tmp_path):
    data = bao.vault_config(state_dir=str(tmp_path))
    with run_gateway(str(tmp_path / "a"), config=data) as a, run_gateway(str(tmp_path / "b"), config=data) as b:
        created = a.create_token(commonName="vault.acme.example", organization="Example Org")
        assert created.status_code == 201, created.text
        token = created.json()
        # the EAB is derived from a server key kept in Vault: gateway b accepts what gateway a handed out
        certbot = Certbot(str(tmp_path / "machine"), directory_url(b.url))
        done = certbot.certonly(token["acmeEab"], "vault.acme.example")
        assert done.returncode == 0, done.stderr + certbot.log()[-3000:]
        cert = x509.load_pem_x509_certificate(certbot.live("vault.acme.example").encode())
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Org"
        chain = x509.load_pem_x509_certificates(a.request("GET", "/frontdoor/default/ca", auth=False).content)
        cert.verify_directly_issued_by(chain[0])
        status = a.request("GET", "/frontdoor/default/certificate-request-tokens/%s" % token["id"]).json()["status"]
        assert status == "redeemed"
        renewed = certbot.run("renew", "--force-renewal", "--no-random-sleep-on-renew")
        assert renewed.returncode == 0, renewed.stderr + certbot.log()[-3000:]
        listed = a.request("GET", "/frontdoor/default/client-certificates", params={"tokenId": token["id"]}).json()
        assert listed["totalElements"] == 2

        # the binding lives in Vault: a second account through gateway a is refused
        other = Certbot(str(tmp_path / "other"), directory_url(a.url))
        refused = other.register(token["acmeEab"])
        assert refused.returncode != 0
        assert "already bound to another ACME account" in other.log()

        # a nonce from gateway a is good at gateway b, once: the used nonces are in Vault too
        nonce = requests.head(directory_url(a.url).replace("directory", "new-nonce"), timeout=10).headers["Replay-Nonce"]
        key = account_key("es256")
        url = directory_url(b.url).replace("directory", "new-account")
        body = _signed(key, url, nonce, {"termsOfServiceAgreed": True})
        first = _post(url, body)
        assert first.json()["type"] == "urn:ietf:params:acme:error:externalAccountRequired", first.text
        again = _post(url, body)
        assert again.json()["type"] == "urn:ietf:params:acme:error:badNonce", again.text
        assert not (tmp_path / "a" / "acme-server.key").exists()  # the key is in Vault, not in a state dir

        # deleting the token removes certbot's account, its key index, binding and orders from KV
        prefix = data["vault"]["kvPrefix"] + "/acme/"
        kinds = ("binding/", "account/", "key/", "order/")
        assert [k for k in bao.kv_dump(path=prefix) if k[len(prefix):].startswith(kinds)]
        deleted = b.request("DELETE", "/frontdoor/default/certificate-request-tokens/%s" % token["id"])
        assert deleted.status_code == 204, deleted.text
        assert [k for k in bao.kv_dump(path=prefix) if k[len(prefix):].startswith(kinds)] == []


def test_acme_state_goes_with_its_token_on_vault(bao, make_vault_service):
    """Delete, a token deleted in the middle of newOrder, cleanup and the sweep of leftovers, on KV v2 (the same
    rules as tests/unit/test_acme_state_cleanup.py on SQLite), checked in KV itself."""
    import datetime as _dt

    from frontdoor_pki.acme.problems import AcmeProblem
    from support.acme_inprocess import Client, documents, issued_through_acme, new_token

    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    store = service.store
    gone, client = issued_through_acme(service, "gone.vault.example", seed=70)
    kept, _kept_client = issued_through_acme(service, "kept.vault.example", seed=72)
    service.delete_token("default", gone["id"])
    after = documents(store)
    assert after["binding"] == [kept["id"]] and len(after["account"]) == len(after["key"]) == 1
    assert len(after["order"]) == 2
    with pytest.raises(AcmeProblem) as refused:
        client.order("gone.vault.example")
    assert refused.value.kind == "accountDoesNotExist"

    racing = new_token(service, "race.vault.example")
    racer = Client(service)
    racer.register(racing)
    real_put = store.acme_put

    def put_then_delete(kind, key, doc, version, expires_at=None):
        written = real_put(kind, key, doc, version, expires_at=expires_at)
        if kind == "order":
            service.delete_token("default", racing["id"])
        return written

    store.acme_put = put_then_delete
    try:
        with pytest.raises(AcmeProblem):
            racer.order("race.vault.example")
    finally:
        store.acme_put = real_put
    assert documents(store)["binding"] == [kept["id"]] and len(documents(store)["order"]) == 2

    # leftovers of a token deleted while its ACME removal failed: the next cleanup sweeps them
    left, _left_client = issued_through_acme(service, "left.vault.example", seed=74)
    real_delete = store.acme_delete
    store.acme_delete = lambda kind, key: (_ for _ in ()).throw(AcmeProblem("serverInternal", "down"))
    try:
        service.delete_token("default", left["id"])
    finally:
        store.acme_delete = real_delete
    assert left["id"] in documents(store)["binding"]
    later = service.clock() + _dt.timedelta(seconds=5)
    service.clock = lambda: later
    assert service.cleanup("default", statuses=["redeemed"]) == [kept["id"]]
    assert documents(store) == {"binding": [], "account": [], "key": [], "order": []}
    in_kv = bao.kv_dump(path=prefix + "/acme/")
    assert prefix + "/acme/server/key" in in_kv  # the dump sees the ACME documents
    assert [k for k in in_kv if not k.startswith((prefix + "/acme/nonce/", prefix + "/acme/server/"))] == []
