"""subject_alt_names through ansible-playbook on the three backends (embedded engine, gateway over HTTP, Vault):
the token keeps them, a rerun with the SANs reordered changes nothing, and the redeemed certificate carries
exactly them, whatever the host's CSR asks."""

from __future__ import annotations

import os

import pytest
from ansible_helpers import failed_with, ok
from cryptography import x509
from test_playbooks import backend, gateway  # noqa: F401 - the same backends as the lifecycle play

pytestmark = pytest.mark.ansible

SPIFFE = "spiffe://example.org/ns/prod/sa/web"
SANS = {"dns": ["web-1.example.com"], "ip": ["10.0.0.7", "2001:db8::7"], "uri": [SPIFFE], "email": ["ops@example.com"]}


def test_sans_through_playbooks(play, backend, tmp_path):  # noqa: F811
    cert = str(tmp_path / "host" / "client.crt")
    os.makedirs(os.path.dirname(cert))
    token = {"name": "web-sans", "common_name": "web-1.example.com", "ttl": "1h", "subject_alt_names": SANS}
    reordered = dict(token, subject_alt_names={"email": ["ops@example.com"], "uri": [SPIFFE],
                                               "ip": ["2001:DB8::7", "10.0.0.7"], "dns": ["WEB-1.example.com"]})
    r, _proc = play.run([
        ("create", {"frontdoor.pki.certificate_request_token": token}),
        ("rerun", {"frontdoor.pki.certificate_request_token": reordered}),
        ("bad", {"frontdoor.pki.certificate_request_token": dict(token, name="bad",
                                                                 subject_alt_names={"dns": ["*.example.com"]}),
                 "ignore_errors": True}),
        ("redeem", {"frontdoor.pki.client_certificate": {
            "token": "{{ create.token.token }}", "privatekey_path": str(tmp_path / "host" / "client.key"),
            "path": cert, "chain_path": str(tmp_path / "host" / "chain.pem"), "common_name": "asks-other"}}),
    ], module_defaults=backend)
    created = ok(r["create"])
    assert created["changed"] is True and created["token"]["subject_alt_names"] == SANS
    assert ok(r["rerun"])["changed"] is False and r["rerun"]["token"]["id"] == created["token"]["id"]
    assert "wildcard" in failed_with(r["bad"], "invalid_request")
    issued = ok(r["redeem"])
    assert issued["changed"] is True and issued["subject_alt_names"] == SANS
    names = x509.load_pem_x509_certificate(open(cert, "rb").read()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert sorted(str(ip) for ip in names.get_values_for_type(x509.IPAddress)) == sorted(SANS["ip"])
    assert names.get_values_for_type(x509.DNSName) == SANS["dns"]
    assert names.get_values_for_type(x509.RFC822Name) == SANS["email"]
