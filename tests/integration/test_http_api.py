"""The HTTP API from outside the process: a real `frontdoor-gateway serve`, real HTTP.

Covers the reference workflow with its bodies verbatim, every error code the gateway
can answer for bad input, and the token lifecycle endpoints.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.crypto import make_csr, make_key, shared_key
from support.gateway import run_gateway

TOKENS = "/frontdoor/default/certificate-request-tokens"
CERTS = "/frontdoor/default/client-certificates"

# The reference document's bodies, verbatim.
REFERENCE_CREATE = """{
"name": "api-service-cert",
"commonName": "api.example.com",
"organization": "Example Corp",
"organizationalUnit": "API Services"
}"""
REFERENCE_REDEEM_PLACEHOLDER = """{
"type": "CSR",
"value": "----- BEGIN CERTIFICATE REQUEST---- .... ----- END CERTIFICATE REQUEST -----"
}"""


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"] and "Traceback" not in response.text
    return body["error"]


def _curl(*args: str) -> tuple:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


def test_reference_workflow_with_curl_verbatim(gateway):
    """The reference's two curl commands, only host and ids changed."""
    status, text = _curl(
        "-X", "POST", "-H", "Authorization: Bearer %s" % gateway.admin_token, "-H", "Content-Type: application/json",
        "-d", REFERENCE_CREATE, gateway.url + TOKENS,
    )
    assert status == 201, text
    created = json.loads(text)
    assert created["id"].startswith("token-") and len(created["id"]) == len("token-") + 36
    assert created["token"].startswith("crt_") and len(created["token"]) >= 4 + 27
    for key, value in json.loads(REFERENCE_CREATE).items():
        assert created[key] == value
    expires = dt.datetime.fromisoformat(created["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23, minutes=59) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=24)
    assert created["status"] == "active" and created["createdAt"]

    # The reference's placeholder "PEM" is not a CSR: refused clearly, token not used.
    status, text = _curl("-X", "POST", "-H", "Content-Type: application/json", "-d", REFERENCE_REDEEM_PLACEHOLDER,
                         gateway.url + CERTS + "/token/" + created["token"])
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_csr"

    key = make_key("p256")
    body = json.dumps({"type": "CSR", "value": make_csr(key, cn="device-says-otherwise", ou="Device OU")})
    status, text = _curl("-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                         gateway.url + CERTS + "/token/" + created["token"])
    assert status == 201, text
    record = json.loads(text)
    for field in ("id", "tokenId", "name", "certificate", "caChain", "serialNumber", "commonName", "organization",
                  "organizationalUnit", "notBefore", "notAfter"):
        assert record.get(field), field
    assert record["tokenId"] == created["id"] and record["name"] == "api-service-cert"
    cert = x509.load_pem_x509_certificate(record["certificate"].encode())
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {NameOID.COMMON_NAME: "api.example.com", NameOID.ORGANIZATION_NAME: "Example Corp",
                       NameOID.ORGANIZATIONAL_UNIT_NAME: "API Services"}
    assert cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # The chain verifies: leaf <- intermediate <- root (self-signed).
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in record["caChain"]]
    cert.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(chain[1])
    assert "%x" % cert.serial_number == record["serialNumber"]


def test_secret_shown_once_and_never_logged(gateway):
    created = gateway.create_token(name="once", commonName="once.example").json()
    secret = created["token"]
    assert gateway.redeem(secret, make_csr(cn="x")).status_code == 201
    for path in (TOKENS, TOKENS + "/" + created["id"], TOKENS + "?status=redeemed", CERTS):
        response = gateway.request("GET", path)
        assert response.status_code == 200 and secret not in response.text and '"token"' not in response.text
    time.sleep(0.2)
    assert secret not in gateway.log()
    # uvicorn's own access line, through the redacting handler
    assert '"POST /frontdoor/default/client-certificates/token/crt_[REDACTED] HTTP/1.1" 201' in gateway.log()
    with open(os.path.join(gateway.state_dir, "audit.jsonl"), encoding="utf-8") as handle:
        audit = handle.read()
    assert secret not in audit and created["id"] in audit
    with open(os.path.join(gateway.state_dir, "frontdoor.db"), "rb") as handle:
        assert secret.encode() not in handle.read()


def test_replay_same_key_and_other_key(gateway):
    secret = gateway.create_token(commonName="r.example").json()["token"]
    key = make_key("p256")
    first = gateway.redeem(secret, make_csr(key, cn="a"))
    again = gateway.redeem(secret, make_csr(key, cn="b"))
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers.get("X-Frontdoor-Replayed") == "true"
    assert again.json()["certificate"] == first.json()["certificate"]
    err = _error(gateway.redeem(secret, make_csr(make_key("p256"), cn="c")), 409, "token_already_used")
    assert "already used" in err["message"]


def test_error_codes_for_redemption(gateway, tmp_path):
    fresh = gateway.create_token(commonName="e.example").json()
    secret = fresh["token"]
    # mistyped: one character changed -> checksum
    typo = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert "mistyped" in _error(gateway.redeem(typo, make_csr(cn="x")), 404, "token_not_found")["message"]
    # unknown but well-formed (from another gateway's vocabulary): deleted/never existed
    other = gateway.create_token(commonName="gone.example").json()
    assert gateway.request("DELETE", TOKENS + "/" + other["id"]).status_code == 204
    assert "delete" in _error(gateway.redeem(other["token"], make_csr(cn="x")), 404, "token_not_found")["message"]
    _error(gateway.redeem(secret, make_csr(cn="x"), frontdoor="nope"), 404, "frontdoor_not_found")
    # bad CSRs never burn the token
    _error(gateway.redeem(secret, "not a csr"), 400, "invalid_csr")
    _error(gateway.redeem(secret, make_csr(make_key("rsa1024"), cn="x")), 400, "invalid_csr")
    response = gateway.request("POST", CERTS + "/token/" + secret, auth=False, json={"type": "CERT", "value": "x"})
    _error(response, 400, "invalid_request")
    response = gateway.request("POST", CERTS + "/token/" + secret, auth=False, json={"type": "CSR"})
    assert "value is required" in _error(response, 400, "invalid_request")["message"]
    response = gateway.request("POST", CERTS + "/token/" + secret, auth=False, data="{not json",
                               headers={"Content-Type": "application/json"})
    assert "not valid JSON" in _error(response, 400, "invalid_request")["message"]
    response = gateway.request("POST", CERTS + "/token/" + secret, auth=False,
                               json={"type": "CSR", "value": make_csr(cn="x"), "extra": 1})
    _error(response, 400, "invalid_request")
    big = {"type": "CSR", "value": "A" * (70 * 1024)}
    _error(gateway.request("POST", CERTS + "/token/" + secret, auth=False, json=big), 413, "payload_too_large")

    def chunks():
        for _ in range(80):
            yield b"A" * 1024

    response = gateway.request("POST", CERTS + "/token/" + secret, auth=False, data=chunks(),
                               headers={"Content-Type": "application/json"})
    _error(response, 413, "payload_too_large")
    # after all of that the token is still good
    assert gateway.request("GET", TOKENS + "/" + fresh["id"]).json()["status"] == "active"
    assert gateway.redeem(secret, make_csr(cn="x")).status_code == 201


def test_expired_token(gateway):
    created = gateway.create_token(commonName="exp.example", ttl="1s").json()
    time.sleep(1.2)
    err = _error(gateway.redeem(created["token"], make_csr(cn="x")), 410, "token_expired")
    assert created["expiresAt"] in err["message"]
    assert gateway.request("GET", TOKENS + "/" + created["id"]).json()["status"] == "expired"


def test_admin_auth_errors(gateway):
    _error(gateway.request("POST", TOKENS, auth=False, json={"name": "x"}), 401, "unauthorized")
    _error(gateway.request("POST", TOKENS, token="wrong", json={"name": "x"}), 401, "unauthorized")
    _error(gateway.request("GET", TOKENS, auth=False, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    _error(gateway.request("GET", CERTS, auth=False), 401, "unauthorized")


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "name is required"),
        ({"name": ""}, "blank"),
        ({"name": 5}, "name"),
        ({"name": "x" * 129}, "128"),
        ({"name": "bad\x07name"}, "printable"),
        ({"name": "x", "commonName": "c" * 65}, "64"),
        ({"name": "x", "organization": ["a"]}, "organization"),
        ({"name": "x", "ttl": "soon"}, "not a duration"),
        ({"name": "x", "ttl": -5}, "positive"),
        ({"name": "x", "ttl": True}, "ttl"),
        ({"name": "x", "ttl": "1h", "expiresAt": "2099-01-01T00:00:00Z"}, "not both"),
        ({"name": "x", "expiresAt": "2001-01-01T00:00:00Z"}, "not in the future"),
        ({"name": "x", "expiresAt": "tomorrow"}, "RFC 3339"),
        ({"name": "x", "expiresAt": "2099-01-01T00:00:00"}, "time zone"),
        ({"name": "x", "ttl": "400d"}, "maximum"),
        ({"name": "x", "certificateTtl": "500d"}, "certificateTtl"),
        ({"name": "x", "surprise": True}, "unknown field"),
    ],
)
def test_create_validation(gateway, body, fragment):
    assert fragment in _error(gateway.request("POST", TOKENS, json=body), 400, "invalid_request")["message"]


def test_create_ttl_forms_and_expires_at(gateway):
    now = dt.datetime.now(dt.timezone.utc)
    for ttl, seconds in ((90, 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("1h30m", 5400)):
        created = gateway.create_token(ttl=ttl).json()
        expires = dt.datetime.fromisoformat(created["expiresAt"].replace("Z", "+00:00"))
        assert abs((expires - now).total_seconds() - seconds) < 30, (ttl, created["expiresAt"])
    created = gateway.create_token(expiresAt="2030-01-31T12:00:00+01:00")
    assert created.status_code == 400  # past the 30-day maximum
    when = (now + dt.timedelta(days=2)).replace(microsecond=0)
    created = gateway.create_token(expiresAt=when.isoformat().replace("+00:00", "Z")).json()
    assert created["expiresAt"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_list_paging_sort_filters(gateway):
    marker = "page-%d" % time.time_ns()
    ids = [gateway.create_token(name="%s-%02d" % (marker, i)).json()["id"] for i in range(7)]
    page = gateway.request("GET", TOKENS + "?page=0&size=3&sort=name,desc&name=%s-03" % marker).json()
    assert page["totalElements"] == 1 and page["content"][0]["id"] == ids[3]
    everything = []
    for number in range(100):
        page = gateway.request("GET", TOKENS + "?page=%d&size=5&sort=name,asc" % number).json()
        assert page["pageable"] == {"pageNumber": number, "pageSize": 5}
        everything += page["content"]
        if number + 1 >= page["totalPages"]:
            break
    assert len(everything) == page["totalElements"]
    names = [t["name"] for t in everything]
    assert names == sorted(names)
    assert all(set(t) >= {"id", "name", "expiresAt", "createdAt", "createdBy", "frontdoorId", "status"} for t in everything)
    assert all("token" not in t for t in everything)
    redeemed = gateway.request("GET", TOKENS + "?status=redeemed&size=1000").json()["content"]
    assert all(t["status"] == "redeemed" for t in redeemed)
    _error(gateway.request("GET", TOKENS + "?status=bogus"), 400, "invalid_request")
    _error(gateway.request("GET", TOKENS + "?sort=secretHash,asc"), 400, "invalid_request")
    _error(gateway.request("GET", TOKENS + "?size=0"), 400, "invalid_request")
    _error(gateway.request("GET", TOKENS + "?page=-1"), 400, "invalid_request")


def test_patch_refresh_delete(gateway):
    created = gateway.create_token(name="patch-me", commonName="old.example").json()
    patched = gateway.request("PATCH", TOKENS + "/" + created["id"], json={"commonName": "new.example", "ttl": "2h"})
    assert patched.status_code == 200 and patched.json()["commonName"] == "new.example" and "token" not in patched.json()
    _error(gateway.request("PATCH", TOKENS + "/" + created["id"], json={"secretHash": "x"}), 400, "invalid_request")
    _error(gateway.request("PATCH", TOKENS + "/" + created["id"], json={}), 400, "invalid_request")
    refreshed = gateway.request("POST", TOKENS + "/" + created["id"] + "/refresh", json={"ttl": "10m"})
    assert refreshed.status_code == 200 and refreshed.headers["Cache-Control"] == "no-store"
    new_secret = refreshed.json()["token"]
    assert new_secret != created["token"]
    _error(gateway.redeem(created["token"], make_csr(cn="x")), 404, "token_not_found")
    issued = gateway.redeem(new_secret, make_csr(cn="x"))
    assert issued.status_code == 201 and issued.json()["commonName"] == "new.example"
    _error(gateway.request("PATCH", TOKENS + "/" + created["id"], json={"name": "late"}), 409, "token_already_used")
    _error(gateway.request("POST", TOKENS + "/" + created["id"] + "/refresh"), 409, "token_already_used")
    assert gateway.request("DELETE", TOKENS + "/" + created["id"]).status_code == 204
    _error(gateway.request("GET", TOKENS + "/" + created["id"]), 404, "token_not_found")
    _error(gateway.request("DELETE", TOKENS + "/" + created["id"]), 404, "token_not_found")
    _error(gateway.request("GET", TOKENS + "/token-not-a-uuid"), 404, "token_not_found")


def test_cleanup_endpoint(gateway):
    expired = [gateway.create_token(ttl="1s").json()["id"] for _ in range(3)]
    live = gateway.create_token(ttl="1h").json()["id"]
    time.sleep(1.2)
    _error(gateway.request("DELETE", TOKENS), 400, "invalid_request")
    _error(gateway.request("DELETE", TOKENS + "?status=active"), 400, "invalid_request")
    dry = gateway.request("DELETE", TOKENS + "?status=expired&dryRun=true").json()
    assert set(expired) <= set(dry["ids"]) and dry["deleted"] == 0
    done = gateway.request("DELETE", TOKENS + "?status=expired").json()
    assert set(expired) <= set(done["ids"]) and done["deleted"] == len(done["ids"])
    for token_id in expired:
        _error(gateway.request("GET", TOKENS + "/" + token_id), 404, "token_not_found")
    assert gateway.request("GET", TOKENS + "/" + live).json()["status"] == "active"
    again = gateway.request("DELETE", TOKENS + "?status=expired,redeemed&olderThan=1h").json()
    assert live not in again["ids"]


def test_certificates_revoke_and_crl(gateway):
    created = gateway.create_token(commonName="revoke.example").json()
    cert = gateway.redeem(created["token"], make_csr(cn="x")).json()
    listed = gateway.request("GET", CERTS + "?tokenId=" + created["id"]).json()
    assert [c["id"] for c in listed["content"]] == [cert["id"]]
    assert gateway.request("GET", CERTS + "/" + cert["id"]).json()["serialNumber"] == cert["serialNumber"]
    _error(gateway.request("GET", CERTS + "/cert-00000000-0000-0000-0000-000000000000"), 404, "certificate_not_found")
    revoked = gateway.request("DELETE", CERTS + "/" + cert["id"])
    assert revoked.status_code == 200 and revoked.json()["revokedAt"]
    crl = x509.load_der_x509_crl(gateway.request("GET", "/frontdoor/default/crl", auth=False).content)
    assert crl.get_revoked_certificate_by_serial_number(int(cert["serialNumber"], 16)) is not None
    chain = gateway.request("GET", "/frontdoor/default/ca", auth=False).text
    issuer = x509.load_pem_x509_certificates(chain.encode())[0]
    assert crl.is_signature_valid(issuer.public_key())
    pem = gateway.request("GET", "/frontdoor/default/crl?format=pem", auth=False)
    assert pem.text.startswith("-----BEGIN X509 CRL-----")


def test_unknown_routes_and_methods(gateway):
    _error(gateway.request("GET", "/nope"), 404, "not_found")
    _error(gateway.request("PUT", TOKENS), 405, "method_not_allowed")
    _error(gateway.request("GET", "/frontdoor/elsewhere/certificate-request-tokens"), 404, "frontdoor_not_found")
    spec = gateway.request("GET", "/openapi.json", auth=False).json()
    assert "/frontdoor/{frontdoorId}/client-certificates/token/{token}" in spec["paths"]
    assert gateway.request("GET", "/healthz", auth=False).json()["status"] == "ok"


HOSTILE_BODIES = [
    b"", b"null", b"[]", b"\"str\"", b"{\"type\": null, \"value\": null}", b"\xff\xfe\x00",
    json.dumps({"type": "CSR", "value": "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----"}).encode(),
    json.dumps({"type": "CSR", "value": "\u0000" * 100}).encode(),
    b"[" * 30000 + b"]" * 30000,  # json.loads raises RecursionError, not a JSONDecodeError
    b'{"name": ' * 6000 + b"1" + b"}" * 6000,
    b'{"type": "CSR", "value": ' + b"9" * 20000 + b"}",  # past int()'s 4300-digit limit: ValueError
    b'{"name": 1e999999, "type": "CSR", "value": -1e999999}',  # infinities
    b'{"name": NaN, "type": "CSR", "value": NaN}',
    b'{"name": NaN}',
    # lone surrogates, in bodies of the right shape, so that they reach the engine
    b'{"type": "CSR", "value": "\\ud800"}', b'{"type": "\\ud800", "value": "x"}', b'{"name": "\\ud800"}',
    b'{"name": "x", "commonName": "\\udc80x"}', b'{"name": "x", "organizationalUnit": "\\ud800"}',
    b'{"name": "x", "ttl": "\\ud800"}', b'{"name": "x", "expiresAt": "2030-01-01T00:00:00\\ud800"}',
    b'{"name": "a\xff\xfeb", "type": "CSR", "value": "\xc3"}',  # not UTF-8 inside strings
    b'{"type": 1, "value": [1], "name": {"a": []}}',
    b'{"type": "CSR", "value": "x", "type": "CSR"}',
    b"\xef\xbb\xbf{}",  # UTF-8 BOM
]


def test_garbage_never_500(gateway):
    """Any body, any content type, to redemption and token creation: a 4xx with a code, never 5xx."""
    secret = gateway.create_token().json()["token"]
    for body in HOSTILE_BODIES:
        for path in (CERTS + "/token/" + secret, CERTS + "/token/%00", CERTS + "/token/crt_%ED%A0%80", TOKENS):
            for content_type in ("application/json", "text/plain", "application/json; charset=latin-1", None):
                headers = {"Content-Type": content_type} if content_type else {}
                response = gateway.request("POST", path, data=body, headers=headers)
                assert 400 <= response.status_code < 500, (path, body[:80], response.status_code, response.text)
                assert response.json()["error"]["code"], response.text
                assert "Traceback" not in response.text and secret not in response.text
    assert gateway.request("GET", TOKENS + "?status=active&size=1000").status_code == 200
    _error(gateway.request("GET", TOKENS + "?page=" + "9" * 30), 400, "invalid_request")
    _error(gateway.request("GET", CERTS + "?page=" + "9" * 30), 400, "invalid_request")
    # nothing above used the token
    assert gateway.redeem(secret, make_csr(cn="x")).status_code == 201


def test_oversize_body_is_413_json_on_any_route(gateway):
    for method, path in (("POST", TOKENS), ("GET", "/healthz"), ("POST", "/nope")):
        response = gateway.request(method, path, data=b"x" * (65 * 1024))
        _error(response, 413, "payload_too_large")


def test_threads_race_on_one_gateway(gateway):
    from concurrent.futures import ThreadPoolExecutor

    secrets_ = [gateway.create_token(commonName="race%d" % i).json()["token"] for i in range(5)]
    csrs = [make_csr(shared_key("p256", slot), cn="x") for slot in range(12)]

    def attempt(args):
        secret, csr = args
        with requests.Session() as session:
            response = session.post(gateway.url + CERTS + "/token/" + secret, json={"type": "CSR", "value": csr},
                                    timeout=30)
        return secret, response.status_code, response.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(attempt, [(s, c) for s in secrets_ for c in csrs]))
    for secret in secrets_:
        mine = [r for r in results if r[0] == secret]
        assert [r[1] for r in mine].count(201) == 1, [r[1] for r in mine]
        assert all(r[1] == 201 or r[2]["error"]["code"] in ("token_already_used", "redemption_in_progress") for r in mine)
    certs = gateway.request("GET", CERTS + "?size=1000").json()["content"]
    names = {c["commonName"] for c in certs}
    for i in range(5):
        assert sum(1 for c in certs if c["commonName"] == "race%d" % i) == 1, names


def test_two_gateways_one_state_dir_race(tmp_path):
    """Two gateway processes on one state dir, many clients: exactly one certificate per token."""
    from concurrent.futures import ThreadPoolExecutor

    state = str(tmp_path / "shared")
    with run_gateway(state) as first, run_gateway(state, admin_token=first.admin_token) as second:
        secrets_ = [first.create_token(commonName="dual%d" % i).json()["token"] for i in range(6)]
        csrs = [make_csr(shared_key("p256", slot), cn="x") for slot in range(6)]
        jobs = [(gw, s, c) for s in secrets_ for c in csrs for gw in (first, second)]

        def attempt(job):
            gw, secret, csr = job
            response = requests.post(gw.url + CERTS + "/token/" + secret, json={"type": "CSR", "value": csr}, timeout=30)
            return secret, response.status_code, response.json().get("certificate")

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(attempt, jobs))
        for secret in secrets_:
            codes = [code for s, code, _ in results if s == secret]
            assert codes.count(201) == 1, codes
            # 200 = the winner's own key retried on the other gateway: the same certificate, not a new one
            assert set(codes) <= {200, 201, 409}, codes
            issued = {cert for s, code, cert in results if s == secret and code in (200, 201)}
            assert len(issued) == 1
        issued = second.request("GET", CERTS + "?size=1000").json()
        assert issued["totalElements"] == len(secrets_)


def test_workers_share_single_use(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with run_gateway(str(tmp_path / "w"), workers=2) as gw:
        secret = gw.create_token(commonName="workers.example").json()["token"]
        csrs = [make_csr(shared_key("p256", slot), cn="x") for slot in range(10)]
        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(lambda c: requests.post(gw.url + CERTS + "/token/" + secret,
                                                          json={"type": "CSR", "value": c}, timeout=30).status_code, csrs))
        assert codes.count(201) == 1 and set(codes) <= {201, 409}, codes


def test_admin_token_generated_0600(tmp_path):
    state = tmp_path / "gen"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTDOOR_")}
    env["FRONTDOOR_STATE_DIR"] = str(state)
    gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([gateway_bin, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get("http://127.0.0.1:%d/healthz" % port, timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        path = state / "admin-token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        assert len(token) > 30
        response = requests.post("http://127.0.0.1:%d%s" % (port, TOKENS), json={"name": "x"},
                                 headers={"Authorization": "Bearer " + token}, timeout=10)
        assert response.status_code == 201
        for key in ("ca/root.key", "ca/default/intermediate.key"):
            assert stat.S_IMODE((state / key).stat().st_mode) == 0o600
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert str(state / "admin-token") in output
    assert token not in output


def test_api_tokens_permissions_and_tcp_shares(tmp_path):
    from frontdoor_gateway.auth import new_api_token, token_hash

    reader, creator = new_api_token(), new_api_token()
    config = {
        "frontdoors": [{"id": "default"}, {"id": "closed", "tcpSharesEnabled": False}],
        "apiTokens": [
            {"name": "reader", "sha256": token_hash(reader), "permissions": {"default": ["tokens:read"]}},
            {"name": "creator", "sha256": token_hash(creator),
             "permissions": {"*": ["tokens:create", "tokens:read"]}},
        ],
    }
    with run_gateway(str(tmp_path / "perm"), config=config) as gw:
        assert gw.request("GET", TOKENS, token=reader).status_code == 200
        err = _error(gw.request("POST", TOKENS, token=reader, json={"name": "x"}), 403, "forbidden")
        assert "tokens:create" in err["message"] and "reader" in err["message"]
        _error(gw.request("GET", CERTS, token=reader), 403, "forbidden")
        created = gw.request("POST", TOKENS, token=creator, json={"name": "by-creator"})
        assert created.status_code == 201 and created.json()["createdBy"] == "creator"
        _error(gw.request("DELETE", TOKENS + "/" + created.json()["id"], token=creator), 403, "forbidden")
        err = _error(gw.request("POST", "/frontdoor/closed/certificate-request-tokens", token=creator,
                                json={"name": "x"}), 403, "tcp_shares_disabled")
        assert "TCP shares" in err["message"]
        _error(gw.redeem(created.json()["token"], make_csr(cn="x"), frontdoor="closed"), 403, "tcp_shares_disabled")
        info = gw.request("GET", "/frontdoor/closed").json()
        assert info["tcpSharesEnabled"] is False


def test_cli_cleanup_and_help(tmp_path):
    gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTDOOR_")}
    env["FRONTDOOR_STATE_DIR"] = str(tmp_path / "cli")

    def run(*args):
        return subprocess.run([gateway_bin, *args], env=env, capture_output=True, text=True, timeout=60)

    help_text = run("--help").stdout
    for command in ("serve", "cleanup", "create-token", "list-tokens", "refresh-token", "vault-policy",
                    "step-ca-template", "new-api-token"):
        assert command in help_text
    created = json.loads(run("create-token", "--name", "cli", "--ttl", "1s", "--json").stdout)
    assert created["token"].startswith("crt_")
    time.sleep(1.2)
    listed = run("list-tokens", "--status", "expired").stdout
    assert created["id"] in listed and created["token"] not in listed
    dry = run("cleanup", "--dry-run")
    assert "would remove 1" in dry.stdout
    done = run("cleanup", "--json")
    assert json.loads(done.stdout)["deleted"] == 1
    bad = run("create-token", "--name", "x", "--ttl", "forever")
    assert bad.returncode == 1 and "invalid_request" in bad.stderr and "Traceback" not in bad.stderr


def test_periodic_cleanup(tmp_path):
    with run_gateway(str(tmp_path / "sweep"), extra_args=("--cleanup-interval", "1s")) as gw:
        expired = gw.create_token(ttl="1s").json()["id"]
        live = gw.create_token(ttl="1h").json()["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if gw.request("GET", TOKENS + "/" + expired).status_code == 404:
                break
            time.sleep(0.2)
        _error(gw.request("GET", TOKENS + "/" + expired), 404, "token_not_found")
        assert gw.request("GET", TOKENS + "/" + live).status_code == 200
        with open(os.path.join(gw.state_dir, "audit.jsonl"), encoding="utf-8") as handle:
            assert any('"actor":"gateway:sweeper"' in line and expired in line for line in handle)
