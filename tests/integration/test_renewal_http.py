"""Renewal with the current certificate through a real gateway process (SQLite + local CA), real HTTP,
and the client command `frontdoor-gateway renew` end to end (issue 15, part 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from frontdoor_pki import renewal_client
from support.crypto import load_cert, make_csr, make_key

RENEW = "/frontdoor/default/client-certificates/renew"
CERTS = "/frontdoor/default/client-certificates"
GATEWAY_BIN = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
SANS = {"dns": ["host7.example.org"], "uri": ["spiffe://example.org/ns/prod/sa/host7"]}


def enrol(gateway, tmp_path, name="host7", kind="p256"):
    """A certificate from a token, written as a host would keep it: (cert path, key path, answer)."""
    key = make_key(kind)
    created = gateway.create_token(name=name, commonName="%s.example.org" % name, organization="Example Corp",
                                   subjectAltNames=SANS)
    assert created.status_code == 201, created.text
    answer = gateway.redeem(created.json()["token"], make_csr(key, cn="whatever")).json()
    cert_path, key_path = tmp_path / ("%s.crt" % name), tmp_path / ("%s.key" % name)
    cert_path.write_text(answer["certificate"] + "".join(answer["caChain"][:-1]))
    key_path.write_bytes(renewal_client.key_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path, answer


def post_renew(gateway, cert_path, key_path, new_key=False, authorization=None):
    auth, body, _key = renewal_client.renewal_request(cert_path.read_bytes(), key_path.read_bytes(), "default", new_key)
    headers = {"Content-Type": "application/json", "Authorization": authorization if authorization is not None else auth}
    return gateway.request("POST", RENEW, auth=False, data=body, headers=headers), auth, body


def test_renew_over_http(gateway, tmp_path):
    cert_path, key_path, first = enrol(gateway, tmp_path)
    response, auth, body = post_renew(gateway, cert_path, key_path)
    assert response.status_code == 201, response.text
    renewed = response.json()
    assert response.headers["Cache-Control"] == "no-store"
    assert renewed["serialNumber"] != first["serialNumber"]
    assert renewed["previousCertificateId"] == first["id"]
    assert (renewed["commonName"], renewed["organization"]) == ("host7.example.org", "Example Corp")
    assert renewed["subjectAltNames"] == SANS
    new, old = load_cert(renewed["certificate"]), load_cert(first["certificate"])
    assert new.subject == old.subject
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the same JWT again: refused, as JSON with its code
    again = gateway.request("POST", RENEW, auth=False, data=body,
                            headers={"Content-Type": "application/json", "Authorization": auth})
    assert again.status_code == 401 and again.json()["error"]["code"] == "renewal_token_replayed"
    # the admin API shows the link
    listed = gateway.request("GET", CERTS + "/" + first["id"]).json()
    assert listed["renewedBy"] == renewed["id"]
    # counted in the metrics, apart from redemptions
    metrics = gateway.request("GET", "/metrics").text
    assert 'frontdoor_renewals_total{frontdoor="default",outcome="issued"}' in metrics
    assert 'frontdoor_renewals_total{frontdoor="default",outcome="renewal_token_replayed"}' in metrics


def test_refusals_over_http_are_json_4xx(gateway, tmp_path):
    cert_path, key_path, _first = enrol(gateway, tmp_path, name="host8")
    for authorization, status, code in (
        ("", 401, "invalid_renewal_token"),
        ("Bearer not-a-jwt", 401, "invalid_renewal_token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJhdWQiOiIvIn0.", 401, "invalid_renewal_token"),
    ):
        response, _auth, _body = post_renew(gateway, cert_path, key_path, authorization=authorization)
        assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    response = gateway.request("POST", RENEW, auth=False, json={"type": "CSR", "value": 5},
                               headers={"Authorization": "Bearer x.y.z"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    response = gateway.request("POST", "/frontdoor/nope/client-certificates/renew", auth=False,
                               json={"type": "CSR", "value": make_csr(make_key("p256"), cn="x")})
    assert response.status_code == 404 and response.json()["error"]["code"] == "frontdoor_not_found"


def run_cli(*args):
    return subprocess.run([GATEWAY_BIN, "renew", *args], capture_output=True, text=True, timeout=60)


def test_cli_renews_then_rotates_the_key(gateway, tmp_path):
    cert_path, key_path, first = enrol(gateway, tmp_path, name="host9", kind="p384")
    old_cert_text = cert_path.read_text()
    done = run_cli("--url", gateway.url, "--cert", str(cert_path), "--key", str(key_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["previousCertificateId"] == first["id"] and summary["keyRotated"] is False
    second = x509.load_pem_x509_certificates(cert_path.read_bytes())
    assert len(second) == 2  # the old file had the intermediate: so does the new one
    assert "%x" % second[0].serial_number == summary["serialNumber"]
    key_before = key_path.read_bytes()

    rotated = run_cli("--url", gateway.url, "--cert", str(cert_path), "--key", str(key_path), "--new-key")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["keyRotated"] is True
    assert key_path.read_bytes() != key_before and oct(key_path.stat().st_mode & 0o777) == "0o600"
    assert not os.path.exists(str(key_path) + ".next")
    third = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert third.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert third.subject == second[0].subject

    # the first certificate was renewed already: a new key for it is refused, and nothing is written
    stale_cert = tmp_path / "stale.crt"
    stale_cert.write_text(old_cert_text)
    stale_key = tmp_path / "stale.key"
    stale_key.write_bytes(key_before)
    refused = run_cli("--url", gateway.url, "--cert", str(stale_cert), "--key", str(stale_key), "--new-key")
    assert refused.returncode == 1 and "certificate_already_renewed" in refused.stderr
    assert stale_cert.read_text() == old_cert_text and stale_key.read_bytes() == key_before


def test_cli_reports_an_unreachable_gateway(tmp_path, gateway):
    cert_path, key_path, _first = enrol(gateway, tmp_path, name="host10")
    done = run_cli("--url", "http://127.0.0.1:9", "--cert", str(cert_path), "--key", str(key_path), "--timeout", "3")
    assert done.returncode == 1 and "gateway_unavailable" in done.stderr


def test_frontdoor_settings_show_renewal(gateway):
    settings = gateway.request("GET", "/frontdoor/default").json()
    assert (settings["renewalEnabled"], settings["renewalWindow"], settings["renewalGrace"]) == (True, None, 0)
    paths = gateway.request("GET", "/openapi.json").json()["paths"]
    assert set(paths["/frontdoor/{frontdoorId}/client-certificates/renew"]["post"]["responses"]) >= {"200", "201", "400", "401", "403", "409", "500"}
