"""lego (Debian's package, a Go ACME client) against a real gateway: the second real client.

Marker ``lego``: run by ``make test-lego`` (part of ``make test``), which installs lego with apt-get first
(``make lego``), like step-ca. Selected without lego installed, the test fails: it never skips.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.acme_clients import lego_binary, run_lego

pytestmark = pytest.mark.lego


def _token_status(gw, token_id: str) -> str:
    return gw.request("GET", "/frontdoor/default/certificate-request-tokens/%s" % token_id).json()["status"]


def test_lego_obtains_and_renews(gw, server, new_token, tmp_path):
    assert lego_binary(), "lego is not installed: run `make lego` (apt-get install lego)"
    token = new_token("lego.acme.example", organization="Example Corp", organizationalUnit="Go")
    home = str(tmp_path / "lego")
    done = run_lego(home, server, token["acmeEab"], ["lego.acme.example"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "authorization already valid; skipping challenge" in done.stderr
    path = os.path.join(home, "certificates", "lego.acme.example.crt")
    with open(path, "rb") as handle:
        chain = x509.load_pem_x509_certificates(handle.read())
    cert = chain[0]
    assert {a.oid: a.value for a in cert.subject} == {
        NameOID.COMMON_NAME: "lego.acme.example", NameOID.ORGANIZATION_NAME: "Example Corp",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Go"}
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(chain[1])
    assert _token_status(gw, token["id"]) == "redeemed"

    renewed = run_lego(home, server, token["acmeEab"], ["lego.acme.example"], command="renew")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    with open(path, "rb") as handle:
        again = x509.load_pem_x509_certificates(handle.read())[0]
    assert again.serial_number != cert.serial_number
    listed = gw.request("GET", "/frontdoor/default/client-certificates", params={"tokenId": token["id"]}).json()
    assert listed["totalElements"] == 2


def test_lego_foreign_identifier_refused(server, new_token, tmp_path, gw):
    assert lego_binary(), "lego is not installed: run `make lego` (apt-get install lego)"
    token = new_token("only.acme.example")
    refused = run_lego(str(tmp_path / "l"), server, token["acmeEab"], ["elsewhere.acme.example"])
    assert refused.returncode != 0
    assert "rejectedIdentifier" in refused.stdout + refused.stderr
    assert _token_status(gw, token["id"]) == "active"
