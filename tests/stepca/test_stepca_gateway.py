"""`FRONTDOOR_SIGNER=step-ca frontdoor-gateway serve` on a real step-ca, from outside the process.

The CA's provisioner carries exactly the template `frontdoor-gateway step-ca-template` prints, and
the reference document's curl bodies run verbatim (only host and ids changed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.signers.stepca import x509_template
from support.crypto import make_csr, make_key, public_key_der
from support.gateway import run_gateway
from support.stepca import StepCA

pytestmark = pytest.mark.stepca

GATEWAY_BIN = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
TOKENS = "/frontdoor/default/certificate-request-tokens"
CERTS = "/frontdoor/default/client-certificates"
REFERENCE_CREATE = """{
"name": "api-service-cert",
"commonName": "api.example.com",
"organization": "Example Corp",
"organizationalUnit": "API Services"
}"""


def _curl(*args: str) -> tuple:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


def test_printed_template_is_the_signer_template():
    out = subprocess.run([GATEWAY_BIN, "step-ca-template"], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == x509_template()


def test_reference_workflow_through_the_gateway_on_stepca(tmp_path):
    printed = subprocess.run([GATEWAY_BIN, "step-ca-template"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    ca = StepCA.create(str(tmp_path / "ca"), template=json.loads(printed))
    ca.start()
    try:
        with run_gateway(str(tmp_path / "gw"), env=ca.env()) as gw:
            info = gw.request("GET", "/frontdoor/default")
            assert info.status_code == 200 and info.json()["signer"] == "step-ca", info.text

            # Step 1 of the reference, verbatim
            status, text = _curl("-X", "POST", "-H", "Authorization: Bearer %s" % gw.admin_token,
                                 "-H", "Content-Type: application/json", "-d", REFERENCE_CREATE, gw.url + TOKENS)
            assert status == 201, text
            created = json.loads(text)
            for key, value in json.loads(REFERENCE_CREATE).items():
                assert created[key] == value

            # Step 3: redeem with a CSR that claims another subject and carries SANs
            key = make_key("p256")
            body = json.dumps({"type": "CSR", "value": make_csr(key, cn="device-says-otherwise", o="Other",
                                                                  sans=["device.example", "10.1.2.3"])})
            status, text = _curl("-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                                 gw.url + CERTS + "/token/" + created["token"])
            assert status == 201, text
            record = json.loads(text)
            cert = x509.load_pem_x509_certificate(record["certificate"].encode())
            assert {a.oid: a.value for a in cert.subject} == {
                NameOID.COMMON_NAME: "api.example.com", NameOID.ORGANIZATION_NAME: "Example Corp",
                NameOID.ORGANIZATIONAL_UNIT_NAME: "API Services"}
            assert public_key_der(cert.public_key()) == public_key_der(key)
            assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
                ExtendedKeyUsageOID.CLIENT_AUTH]
            with pytest.raises(x509.ExtensionNotFound):
                cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            intermediate = x509.load_pem_x509_certificate(ca.intermediate_pem.encode())
            root = x509.load_pem_x509_certificate(ca.root_pem.encode())
            cert.verify_directly_issued_by(intermediate)
            assert [x509.load_pem_x509_certificate(p.encode()) for p in record["caChain"]] == [intermediate, root]
            assert "%x" % cert.serial_number == record["serialNumber"]

            # the same token again with another key: used
            again = gw.redeem(created["token"], make_csr(make_key("p256"), cn="x"))
            assert again.status_code == 409 and again.json()["error"]["code"] == "token_already_used"

            # the CA chain endpoint serves step-ca's intermediate and root
            chain = gw.request("GET", "/frontdoor/default/ca", auth=False)
            assert chain.status_code == 200
            assert x509.load_pem_x509_certificates(chain.content) == [intermediate, root]

            # step-ca down: 503 with a message, the token survives; back up: it redeems
            waiting = gw.create_token(commonName="waiting.example").json()
            csr = make_csr(make_key("p256"), cn="waiting")
            ca.stop()
            down = gw.redeem(waiting["token"], csr)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "signer_unavailable" and "not used" in down.json()["error"]["message"]
            assert gw.request("GET", TOKENS + "/" + waiting["id"]).json()["status"] == "active"
            ca.start()
            up = gw.redeem(waiting["token"], csr)
            assert up.status_code == 201, up.text

            # revocation goes to step-ca
            revoked = gw.request("DELETE", CERTS + "/" + record["id"])
            assert revoked.status_code in (200, 204), revoked.text
            listed = gw.request("GET", CERTS + "/" + record["id"]).json()
            assert listed["revokedAt"], listed

            log = gw.log()
            assert ca.password not in log and created["token"] not in log and "eyJ" not in log
    finally:
        ca.stop()
