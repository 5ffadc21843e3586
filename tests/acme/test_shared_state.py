"""Two gateway processes on one state dir (SQLite): the ACME state and the server key are shared, so an EAB,
an account and a nonce of one are good at the other, and a nonce is still accepted only once."""

from __future__ import annotations

import json

import josepy
import requests
from acme import jws as acme_jws
from support.acme_clients import Certbot, account_key, directory_url
from support.gateway import run_gateway


def test_two_gateways_share_acme_state(gw, new_token, tmp_path):
    with run_gateway(gw.state_dir, admin_token=gw.admin_token) as other:
        token = new_token("shared-state.acme.example")
        certbot = Certbot(str(tmp_path / "m"), directory_url(other.url))
        done = certbot.certonly(token["acmeEab"], "shared-state.acme.example")
        assert done.returncode == 0, done.stderr + certbot.log()[-3000:]
        assert gw.request("GET", "/frontdoor/default/certificate-request-tokens/%s" % token["id"]).json()[
            "status"] == "redeemed"

        nonce = requests.head(directory_url(gw.url).replace("directory", "new-nonce"), timeout=10).headers[
            "Replay-Nonce"]
        url = directory_url(other.url).replace("directory", "new-account")
        body = acme_jws.JWS.sign(json.dumps({}).encode(), key=account_key("es256"), alg=josepy.ES256,
                                 nonce=josepy.decode_b64jose(nonce), url=url).json_dumps().encode()
        headers = {"Content-Type": "application/jose+json"}
        first = requests.post(url, data=body, headers=headers, timeout=10)
        assert first.json()["type"] == "urn:ietf:params:acme:error:externalAccountRequired", first.text
        again = requests.post(url, data=body, headers=headers, timeout=10)
        assert again.json()["type"] == "urn:ietf:params:acme:error:badNonce", again.text


def test_acme_routes_are_not_in_the_openapi_document(gw):
    paths = requests.get(gw.url + "/openapi.json", timeout=10).json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/acme")]
