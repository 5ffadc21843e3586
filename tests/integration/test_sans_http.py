"""Pre-approved Subject Alternative Names through a real gateway process (SQLite + local CA), real HTTP.

The target of issue 15: a token with dns, ip, uri (SPIFFE) and email SANs gives a certificate with
exactly those SANs, even from a CSR that asks for others; a token without SANs gives a certificate
without the extension, whatever the CSR asks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

from cryptography import x509
from support.crypto import make_csr, make_key
from support.sans import SPIFFE, cert_sans

TOKENS = "/frontdoor/default/certificate-request-tokens"
CERTS = "/frontdoor/default/client-certificates"
ASKED = {
    "dns": ["API.Example.com", "api-internal.example.com"],
    "ip": ["10.0.0.7", "2001:DB8:0:0::7"],
    "uri": [SPIFFE],
    "email": ["ops@Example.COM"],
}
# what the gateway keeps: DNS names and email domains lower-cased, IPv6 compressed
KEPT = {
    "dns": ["api.example.com", "api-internal.example.com"],
    "ip": ["10.0.0.7", "2001:db8::7"],
    "uri": [SPIFFE],
    "email": ["ops@example.com"],
}
# a CSR asking for other SANs of every kind (and one of the token's, to show nothing is merged)
CSR_SANS = x509.SubjectAlternativeName([
    x509.DNSName("evil.example.net"), x509.DNSName("api.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.66")),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/admin"), x509.RFC822Name("root@example.net"),
])


def test_certificate_carries_exactly_the_tokens_sans_whatever_the_csr_asks(gateway):
    created = gateway.create_token(name="sans-all", commonName="api.example.com", subjectAltNames=ASKED)
    assert created.status_code == 201, created.text
    token = created.json()
    assert token["subjectAltNames"] == KEPT
    assert gateway.request("GET", TOKENS + "/" + token["id"]).json()["subjectAltNames"] == KEPT

    csr = make_csr(make_key("p256"), cn="device", extensions=[CSR_SANS])
    redeemed = gateway.redeem(token["token"], csr)
    assert redeemed.status_code == 201, redeemed.text
    body = redeemed.json()
    assert cert_sans(body["certificate"], sort=False) == KEPT
    assert body["subjectAltNames"] == KEPT
    assert gateway.request("GET", CERTS + "/" + body["id"]).json()["subjectAltNames"] == KEPT
    listed = gateway.request("GET", CERTS, params={"tokenId": token["id"]}).json()["content"]
    assert [c["subjectAltNames"] for c in listed] == [KEPT]


def test_a_token_without_sans_gives_a_certificate_without_them(gateway):
    token = gateway.create_token(name="sans-none", commonName="plain.example.com").json()
    assert token["subjectAltNames"] == {}
    redeemed = gateway.redeem(token["token"], make_csr(make_key("p256"), cn="x", extensions=[CSR_SANS]))
    assert redeemed.status_code == 201, redeemed.text
    assert cert_sans(redeemed.json()["certificate"], sort=False) == {} and redeemed.json()["subjectAltNames"] == {}


def test_patch_replaces_or_removes_the_sans_and_refresh_keeps_them(gateway):
    token = gateway.create_token(name="sans-patch", commonName="p.example.com", subjectAltNames={"dns": ["a.example.com"]})
    token = token.json()
    path = TOKENS + "/" + token["id"]
    patched = gateway.request("PATCH", path, json={"subjectAltNames": {"uri": [SPIFFE], "ip": ["192.0.2.1"]}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["subjectAltNames"] == {"ip": ["192.0.2.1"], "uri": [SPIFFE]}
    renamed = gateway.request("PATCH", path, json={"name": "sans-patch-2"})  # other fields leave SANs alone
    assert renamed.json()["subjectAltNames"] == {"ip": ["192.0.2.1"], "uri": [SPIFFE]}
    refreshed = gateway.request("POST", path + "/refresh", json={"ttl": "1h"})
    assert refreshed.status_code == 200 and refreshed.json()["subjectAltNames"] == {"ip": ["192.0.2.1"], "uri": [SPIFFE]}
    redeemed = gateway.redeem(refreshed.json()["token"], make_csr(make_key("p256"), cn="x"))
    assert cert_sans(redeemed.json()["certificate"], sort=False) == {"ip": ["192.0.2.1"], "uri": [SPIFFE]}

    other = gateway.create_token(name="sans-removed", commonName="r.example.com", subjectAltNames={"dns": ["r.example.com"]})
    removed = gateway.request("PATCH", TOKENS + "/" + other.json()["id"], json={"subjectAltNames": None})
    assert removed.status_code == 200 and removed.json()["subjectAltNames"] == {}
    redeemed = gateway.redeem(other.json()["token"], make_csr(make_key("p256"), cn="x"))
    assert cert_sans(redeemed.json()["certificate"], sort=False) == {}


def test_bad_sans_are_400_invalid_request_and_create_nothing(gateway):
    before = gateway.request("GET", TOKENS, params={"size": 1}).json()["totalElements"]
    for sans in (
        {"dns": ["*.example.com"]}, {"dns": ["no-dot"]}, {"dns": ["a.example.com", "A.example.com"]},
        {"ip": ["10.0.0.256"]}, {"ip": ["fe80::1%eth0"]}, {"uri": ["not a uri"]}, {"uri": ["/relative/path"]},
        {"email": ["no-at-sign"]}, {"email": ["a,b@example.com"]}, {"dns": "a.example.com"}, {"dns": [7]},
        {"other": ["x"]}, ["a.example.com"], "a.example.com", {"dns": ["h%d.example.com" % n for n in range(101)]},
        {"uri": ["spiffe://example.org/" + "a" * 2000]}, {"dns": ["\u00e9x.example.com"]},
    ):
        response = gateway.create_token(name="bad-sans", commonName="x", subjectAltNames=sans)
        assert response.status_code == 400, (sans, response.status_code, response.text)
        assert response.json()["error"]["code"] == "invalid_request", (sans, response.text)
    assert gateway.request("GET", TOKENS, params={"size": 1}).json()["totalElements"] == before


def test_cli_create_token_with_sans(tmp_path):
    """frontdoor-gateway create-token --dns/--ip/--uri/--email (repeatable), and a bad one is a clean error."""
    gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTDOOR_")}
    env["FRONTDOOR_STATE_DIR"] = str(tmp_path / "cli")

    def run(*args):
        return subprocess.run([gateway_bin, *args], env=env, capture_output=True, text=True, timeout=60)

    made = run("create-token", "--name", "cli-sans", "--common-name", "api.example.com", "--dns", "API.example.com",
               "--dns", "api-internal.example.com", "--ip", "10.0.0.7", "--ip", "2001:DB8:0:0::7", "--uri", SPIFFE,
               "--email", "ops@Example.COM", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["subjectAltNames"] == KEPT
    text = run("create-token", "--name", "cli-sans-text", "--uri", SPIFFE)
    assert text.returncode == 0 and "sans:    uri:%s" % SPIFFE in text.stdout
    bad = run("create-token", "--name", "cli-bad", "--dns", "*.example.com")
    assert bad.returncode == 1 and "invalid_request" in bad.stderr and "wildcard" in bad.stderr
    assert "Traceback" not in bad.stderr
