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
