"""The collection through a gateway that fronts a real step-ca (issue: step-ca as a signer).

Runs in `make test-step-ca` (marked `stepca`): the admin play mints a token, the host play
redeems it with a key it generates, and the certificate comes from step-ca's intermediate
with the token's subject.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible_helpers import failed_with, ok
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from support.gateway import run_gateway
from support.stepca import StepCA

pytestmark = [pytest.mark.stepca, pytest.mark.ansible]


def test_playbook_through_gateway_on_stepca(play, tmp_path):
    gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
    template = json.loads(subprocess.run([gateway_bin, "step-ca-template"], capture_output=True, text=True,
                                         timeout=60, check=True).stdout)
    ca = StepCA.create(str(tmp_path / "ca"), template=template)
    ca.start()
    try:
        with run_gateway(str(tmp_path / "gw"), env=ca.env()) as gw:
            key = str(tmp_path / "host" / "client.key")
            cert = str(tmp_path / "host" / "client.crt")
            os.makedirs(os.path.dirname(key))
            subject = {"name": "edge-1", "common_name": "edge-1.example.com", "organization": "Example Corp",
                       "organizational_unit": "Edge", "ttl": "1h"}
            r, _proc = play.run([
                ("create", {"frontdoor.pki.certificate_request_token": subject}),
                ("redeem", {"frontdoor.pki.client_certificate": {
                    "token": "{{ create.token.token }}", "privatekey_path": key, "path": cert}}),
                ("rerun", {"frontdoor.pki.client_certificate": {
                    "token": "{{ create.token.token }}", "privatekey_path": key, "path": cert}}),
                ("spent", {"frontdoor.pki.client_certificate": {
                    "token": "{{ create.token.token }}", "privatekey_path": str(tmp_path / "other.key"),
                    "path": str(tmp_path / "other.crt")}}),
                ("info", {"frontdoor.pki.certificate_request_token_info": {"name": "edge-1"}}),
            ], module_defaults={"gateway_url": gw.url, "api_token": gw.admin_token})
            assert ok(r["create"])["changed"] is True
            issued = ok(r["redeem"])
            assert issued["changed"] is True and issued["redeemed"] is True
            certificate = x509.load_pem_x509_certificate(open(cert, "rb").read())
            private_key = serialization.load_pem_private_key(open(key, "rb").read(), None)
            assert certificate.public_key().public_numbers() == private_key.public_key().public_numbers()
            values = {a.oid: a.value for a in certificate.subject}
            assert values == {NameOID.COMMON_NAME: "edge-1.example.com", NameOID.ORGANIZATION_NAME: "Example Corp",
                              NameOID.ORGANIZATIONAL_UNIT_NAME: "Edge"}
            intermediate = x509.load_pem_x509_certificate(open(ca.intermediate_path, "rb").read())
            certificate.verify_directly_issued_by(intermediate)
            assert ok(r["rerun"])["changed"] is False
            failed_with(r["spent"], "token_already_used")
            assert [t["status"] for t in ok(r["info"])["tokens"]] == ["redeemed"]
    finally:
        ca.stop()
