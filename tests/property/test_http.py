"""The HTTP API with any request, in process: the ASGI app uvicorn serves (``app_factory``) on a
real state dir (SQLite + local CA), driven by starlette's TestClient.

Whatever the body (any JSON, deep nesting, numbers no float or int can hold, wrong types, unknown
keys, hostile strings in every field), content type, path segment or query parameter: the answer
is below 500, never FastAPI's 422, and every 4xx is ``{"error": {"code", "message"}}`` with the
status that code maps to. A refused redemption leaves the token redeemable.
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
from frontdoor_pki.errors import ERROR_STATUS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from support.crypto import make_csr, shared_key

ADMIN = "fdk_property_admin_token_0123456789"
TOKENS = "/frontdoor/default/certificate-request-tokens"
CERTS = "/frontdoor/default/client-certificates"
HTTP = settings(deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Raw:
    """A JSON literal written as is: numbers Python cannot print through json.dumps, NaN, deep nests."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return "Raw(%r)" % (self.text[:60] + ("...(%d chars)" % len(self.text) if len(self.text) > 60 else ""))


def to_json(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join("%s:%s" % (json.dumps(k), to_json(v)) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


raw_literals = st.one_of(
    st.integers(300, 6000).map(lambda n: Raw("9" * n)),  # > 4300 digits: int() refuses to parse them
    st.integers(300, 6000).map(lambda n: Raw("-" + "9" * n)),
    st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1" + "0" * 400 + ".5"),
                     Raw("0.1e-99999"), Raw("true"), Raw("-0")]),
    st.integers(1, 30_000).map(lambda n: Raw("[" * n + "]" * n)),  # deep nesting: RecursionError in json
    st.integers(1, 12_000).map(lambda n: Raw('{"a":' * n + "1" + "}" * n)),
)
hostile_strings = st.one_of(
    st.text(),
    st.builds(lambda n, c: " " * n + c, st.integers(0, 20_000), st.sampled_from("xs1")),
    st.sampled_from(["9" * 5000, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "\ud800", "\x00",
                     "1h30m", "7d", "2030-01-31T12:00:00Z", "crt_" + "a" * 33, "../../etc/passwd", "%00", "é" * 200]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | hostile_strings
    | raw_literals,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
CREATE_KEYS = ["name", "commonName", "organization", "organizationalUnit", "ttl", "expiresAt", "certificateTtl",
               "subjectAltNames"]
create_bodies = st.one_of(
    st.builds(lambda name, rest: {"name": name, **rest}, st.text(min_size=1, max_size=20),
              st.dictionaries(st.sampled_from(CREATE_KEYS), json_values, max_size=4)),
    st.dictionaries(st.sampled_from(CREATE_KEYS) | st.text(max_size=12), json_values, max_size=6),
    json_values,
)
redeem_bodies = st.one_of(
    st.fixed_dictionaries({"type": st.just("CSR") | json_values, "value": json_values}),
    st.dictionaries(st.sampled_from(["type", "value"]) | st.text(max_size=8), json_values, max_size=4),
    json_values,
)
header_text = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=40)
content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/json; charset=utf-16", "application/merge-patch+json", "", "*/*"]),
    header_text,
)
# a URL carries UTF-8: text with lone surrogates cannot even be sent (bodies can: JSON escapes them)
url_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
segments = url_text.filter(bool).map(lambda s: quote(s, safe=""))
query_values = hostile_strings.filter(lambda s: s.encode("utf-8", "replace").decode("utf-8") == s) | url_text | st.sampled_from(
    ["-1", "1e3", "true", "name,desc", "", "9" * 5000])


def body_bytes(body) -> bytes:
    return body if isinstance(body, bytes) else to_json(body).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The app uvicorn would serve (``app_factory``: same env, same middleware stack)."""
    from frontdoor_gateway.app import app_factory

    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in __import__("os").environ if k.startswith("FRONTDOOR_")]:
            patch.delenv(name)
        patch.setenv("FRONTDOOR_STATE_DIR", str(tmp_path_factory.mktemp("gw")))
        patch.setenv("FRONTDOOR_ADMIN_TOKEN", ADMIN)
        # every example comes from one address: with limits on, all redemptions after the 30th unknown secret
        # would be 429 and the rest of the run would test nothing else (limits: tests/integration/test_rate_limits_*)
        patch.setenv("FRONTDOOR_RATE_LIMITS", "off")
        app = app_factory()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def service(client):
    """The engine behind the app, to create tokens without going through the API under test."""
    app = client.app
    while not hasattr(getattr(app, "state", None), "service"):  # unwrap middleware, if any
        app = app.app
    return app.state.service


def check(response, what) -> None:
    """Below 500, never 422, and a 4xx is the documented error body; ``what`` names the input."""
    status = response.status_code
    assert status < 500 and status != 422, (status, response.text[:300], what)
    if status >= 400:
        body = response.json()
        assert set(body) == {"error"}, (status, body, what)
        error = body["error"]
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), (body, what)
        assert set(error) <= {"code", "message", "details"}, (body, what)
        assert ERROR_STATUS.get(error["code"]) == status, (status, body, what)


def send(client, method: str, path: str, body=None, content_type="application/json", auth: bool = True, params=None):
    headers = {"Authorization": "Bearer " + ADMIN} if auth else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    content = None if body is None else body_bytes(body)
    response = client.request(method, path, content=content, headers=headers, params=params)
    check(response, (method, path, params, content_type, content[:200] if content else None))
    return response


@HTTP
@given(body=create_bodies | st.binary(max_size=200), content_type=content_types | st.none())
@example(body={"name": "x", "ttl": " " * 80 + "x"}, content_type="application/json")
@example(body={"name": "x", "ttl": Raw("9" * 5000)}, content_type="application/json")
@example(body=Raw("[" * 30_000 + "]" * 30_000), content_type="application/json")
@example(body={"name": "x", "expiresAt": "0001-01-01T00:00:00+01:00"}, content_type="application/json")
def test_create_token(client, body, content_type):
    send(client, "POST", TOKENS, body, content_type)


@HTTP
@given(fd=segments, body=create_bodies)
def test_create_token_on_any_frontdoor(client, fd, body):
    send(client, "POST", "/frontdoor/%s/certificate-request-tokens" % fd, body)


@HTTP
@given(body=create_bodies, content_type=content_types, real=st.booleans(), token_id=segments)
def test_patch_token(client, service, body, content_type, real, token_id):
    if real:
        token_id = service.create_token("default", name="patch-me")[0].id
    send(client, "PATCH", TOKENS + "/" + token_id, body, content_type)
    send(client, "POST", TOKENS + "/" + token_id + "/refresh", body, content_type)


@HTTP
@given(body=redeem_bodies | st.binary(max_size=200), content_type=content_types | st.none(), real=st.booleans(),
       secret=segments)
@example(body={"type": "CSR", "value": Raw("9" * 5000)}, content_type="application/json", real=True, secret="x")
@example(body={"type": "CSR", "value": "\ud800"}, content_type="application/json", real=True, secret="x")
def test_redeem_any_body_and_a_refusal_keeps_the_token(client, service, body, content_type, real, secret):
    if real:
        secret = service.create_token("default", name="redeem-me", common_name="prop")[1]
    response = send(client, "POST", CERTS + "/token/" + secret, body, content_type, auth=False)
    if real and response.status_code >= 400:
        good = {"type": "CSR", "value": make_csr(shared_key("p256", 9), cn="after-refusal")}
        again = send(client, "POST", CERTS + "/token/" + secret, good, auth=False)
        assert again.status_code == 201, (again.status_code, again.text, body)


@HTTP
@given(params=st.dictionaries(st.sampled_from(["page", "size", "sort", "status", "name"]) | url_text,
                              query_values, max_size=5))
def test_list_tokens_query(client, params):
    send(client, "GET", TOKENS, params=params)


@HTTP
@given(params=st.dictionaries(st.sampled_from(["status", "olderThan", "dryRun"]) | url_text,
                              query_values, max_size=4))
@example(params={"status": "expired", "olderThan": " " * 80 + "x", "dryRun": "true"})
def test_cleanup_query(client, params):
    send(client, "DELETE", TOKENS, params=params)


@HTTP
@given(params=st.dictionaries(st.sampled_from(["page", "size", "sort", "tokenId", "revoked"]) | url_text,
                              query_values, max_size=5), cert_id=segments)
def test_certificates_query_and_ids(client, params, cert_id):
    send(client, "GET", CERTS, params=params)
    send(client, "GET", CERTS + "/" + cert_id)
    send(client, "DELETE", CERTS + "/" + cert_id)


@HTTP
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       path=st.lists(segments, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
       auth=st.booleans())
def test_any_method_on_any_path(client, method, path, auth):
    send(client, method, path, auth=auth)
    send(client, method, "/frontdoor" + path, auth=auth)
