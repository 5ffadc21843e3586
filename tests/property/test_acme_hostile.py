"""The ACME front with any request, in process (``app_factory`` on a real state dir, starlette's TestClient).

Whatever the body (not JSON, not a JWS, a JWS with hostile protected headers, a correctly signed JWS with
hostile payloads for every route, with a fresh nonce each time): the answer is below 500 with a ``Replay-Nonce``,
and a refusal is an ``application/problem+json`` body whose type is ``urn:ietf:params:acme:error:*``, and
the token behind the account is never used up by a refused request.
"""

from __future__ import annotations

import base64
import json

import josepy
import pytest
from acme import jws as acme_jws
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

ADMIN = "fdk_property_admin_token_acme_0123456789"
BASE = "http://testserver/acme/default"
HTTP = settings(deadline=5000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from frontdoor_gateway.app import app_factory

    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in __import__("os").environ if k.startswith("FRONTDOOR_")]:
            patch.delenv(name)
        patch.setenv("FRONTDOOR_STATE_DIR", str(tmp_path_factory.mktemp("acme-prop")))
        patch.setenv("FRONTDOOR_ADMIN_TOKEN", ADMIN)
        # every example comes from one address: with limits on, all redemptions after the 30th unknown secret
        # would be 429 and the rest of the run would test nothing else (limits: tests/integration/test_rate_limits_*)
        patch.setenv("FRONTDOOR_RATE_LIMITS", "off")
        app = app_factory()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def nonce(client) -> str:
    return client.head(BASE + "/new-nonce").headers["Replay-Nonce"]


def post(client, url: str, body: bytes, content_type: str = "application/jose+json"):
    return client.post(url, content=body, headers={"Content-Type": content_type})


def signed(client, key, url: str, payload: bytes, kid=None) -> bytes:
    return acme_jws.JWS.sign(payload, key=key, alg=josepy.ES256, nonce=josepy.decode_b64jose(nonce(client)), url=url,
                             kid=kid).json_dumps().encode()


@pytest.fixture(scope="module")
def account(client):
    """(key, account URL, order id, token id): an account bound to a token, with one ready order."""
    created = client.post("/frontdoor/default/certificate-request-tokens", headers={"Authorization": "Bearer " + ADMIN},
                          json={"name": "hostile", "commonName": "hostile.example"})
    assert created.status_code == 201, created.text
    token = created.json()
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    directory = messages.Directory.from_json(client.get(BASE + "/directory").json())
    eab = messages.ExternalAccountBinding.from_data(key.public_key(), token["acmeEab"]["keyId"],
                                                    token["acmeEab"]["hmacKey"], directory)
    body = json.dumps({"termsOfServiceAgreed": True, "externalAccountBinding": eab}).encode()
    answer = post(client, BASE + "/new-account", signed(client, key, BASE + "/new-account", body))
    assert answer.status_code == 201, answer.text
    kid = answer.headers["Location"]
    payload = json.dumps({"identifiers": [{"type": "dns", "value": "hostile.example"}]}).encode()
    order = post(client, BASE + "/new-order", signed(client, key, BASE + "/new-order", payload, kid=kid))
    assert order.status_code == 201, order.text
    return key, kid, order.headers["Location"].rsplit("/", 1)[1], token["id"]


def check(response) -> None:
    """Below 500 with a nonce; a refusal is an ACME problem (a POST-as-GET ignores its payload and may succeed)."""
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code < 400:
        assert response.headers.get("Replay-Nonce")
        return
    if response.status_code == 413:  # the body limit answers before any route, in the API's own error shape
        return
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    assert response.headers.get("Replay-Nonce")
    problem = response.json()
    assert problem["type"].startswith("urn:ietf:params:acme:error:"), problem
    assert isinstance(problem.get("detail"), str)


def token_unused(client, token_id: str) -> None:
    got = client.get("/frontdoor/default/certificate-request-tokens/" + token_id,
                     headers={"Authorization": "Bearer " + ADMIN})
    assert got.json()["status"] == "active"


ANON_ROUTES = ["/new-account", "/revoke-cert"]


def kid_routes(order_id: str, account_id: str) -> list:
    """Every route taking a kid, except a status change of the account itself (it would end the examples' account)."""
    return ["/acct/%s/orders" % account_id, "/acct/not-this-one", "/new-order", "/order/%s" % order_id, "/order/%s/finalize" % order_id, "/authz/%s/0" % order_id,
            "/authz/%s/9" % order_id, "/cert/cert-00000000-0000-0000-0000-000000000000", "/revoke-cert",
            "/key-change", "/order/nope", "/authz/nope/x"]


hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "\ud800", "../../etc", "=" * 5, "A" * 3000, "none", "HS256", "RS256", "ES256",
                     "http://testserver/acme/default/new-account", "token-00000000-0000-0000-0000-000000000000"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | hostile_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=10,
)
FIELDS = ["identifiers", "csr", "contact", "externalAccountBinding", "onlyReturnExisting", "status", "certificate",
          "reason", "account", "oldKey", "protected", "payload", "signature", "termsOfServiceAgreed", "notBefore"]
payloads = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
    st.fixed_dictionaries({"identifiers": st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["dns", "ip", "email", "", "DNS"]), "value": hostile_text}), max_size=3)}),
    st.fixed_dictionaries({"csr": st.one_of(hostile_text, st.binary(max_size=300).map(b64))}),
    st.fixed_dictionaries({"certificate": st.binary(max_size=300).map(b64), "reason": json_values}),
    json_values,
)


@HTTP
@given(route=st.sampled_from(ANON_ROUTES + ["/new-order", "/key-change", "/acct/x", "/order/x/finalize"]),
       body=st.one_of(st.binary(max_size=2000), json_values.map(lambda v: json.dumps(v).encode())),
       content_type=st.sampled_from(["application/jose+json", "application/json", "", "text/plain"]))
def test_any_body(client, account, route, body, content_type):
    check(post(client, BASE + route, body, content_type))
    token_unused(client, account[3])


@HTTP
@given(data=st.data(), payload=payloads)
def test_signed_hostile_payloads(client, account, data, payload):
    key, kid, order_id, token_id = account
    route = data.draw(st.sampled_from(kid_routes(order_id, kid.rsplit("/", 1)[1])))
    body = json.dumps(payload).encode()
    check(post(client, BASE + route, signed(client, key, BASE + route, body, kid=kid)))
    # the same payload signed by an unknown key (jwk) at the routes that take one
    route = data.draw(st.sampled_from(ANON_ROUTES))
    check(post(client, BASE + route, signed(client, josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1())),
                                            BASE + route, body)))
    token_unused(client, token_id)


@HTTP
@given(header=st.dictionaries(st.sampled_from(["alg", "jwk", "kid", "nonce", "url", "b64", "crit"]), json_values,
                              max_size=5),
       keep=st.sets(st.sampled_from(["alg", "jwk", "nonce", "url"])), payload=payloads)
def test_hostile_protected_headers(client, account, header, keep, payload):
    """Protected headers built by hand (any field, any value), signed with josepy's ES256."""
    key = account[0]
    good = {"alg": "ES256", "jwk": key.public_key().to_json(), "nonce": nonce(client), "url": BASE + "/new-account"}
    protected = dict({k: good[k] for k in keep}, **header)
    protected_b64 = b64(json.dumps(protected).encode())
    payload_b64 = b64(json.dumps(payload).encode())
    signature = josepy.ES256.sign(key.key, (protected_b64 + "." + payload_b64).encode())
    body = json.dumps({"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}).encode()
    check(post(client, BASE + "/new-account", body))
    token_unused(client, account[3])
