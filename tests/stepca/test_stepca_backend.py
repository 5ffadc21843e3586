"""step-ca specifics, against a real step-ca (issue 6): who issues, what the certificate carries
whatever the CSR says, the one-time token's single use at step-ca, step-ca down and back, lifetimes,
revocation, and the messages an operator gets for a misconfigured provisioner.

Each test reads the real certificate step-ca issued; nothing here is mocked.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import utcnow
from support.crypto import load_cert, make_csr, make_key, shared_key, subject_values
from support.stepca import PLAIN_PROVISIONER, StepCA, verified_ott

pytestmark = pytest.mark.stepca

# step-ca's provisioner extension (its OID in smallstep's arc): names the provisioner that signed
STEP_PROVISIONER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.37476.9000.64.1")
UPSTREAM_DEFAULT_LEAF_TEMPLATE = """{
  "subject": {{ toJson .Subject }},
  "sans": {{ toJson .SANs }},
{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
  "keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
  "keyUsage": ["digitalSignature"],
{{- end }}
  "extKeyUsage": ["serverAuth", "clientAuth"]
}"""


def new_token(service, **kwargs):
    kwargs.setdefault("name", "stepca-test")
    return service.create_token("default", actor="stepca-test", **kwargs)


def refused(fn, *args) -> FrontdoorError:
    with pytest.raises(FrontdoorError) as info:
        fn(*args)
    return info.value


def test_issuer_is_the_stepca_intermediate_and_chain_reaches_its_root(stepca, service):
    _, secret = new_token(service, common_name="issuer.example")
    result = service.redeem("default", secret, make_csr(shared_key("p256"), cn="issuer.example"))
    cert = load_cert(result.certificate.certificate_pem)
    intermediate, root = load_cert(stepca.intermediate_pem), load_cert(stepca.root_pem)
    assert cert.issuer == intermediate.subject
    cert.verify_directly_issued_by(intermediate)
    assert [load_cert(p) for p in result.certificate.ca_chain] == [intermediate, root]
    assert [load_cert(p) for p in service.ca_chain("default")] == [intermediate, root]
    # step-ca (not some other CA) issued it, through our provisioner
    provisioner_ext = cert.extensions.get_extension_for_oid(STEP_PROVISIONER_OID).value.value
    assert b"frontdoor" in provisioner_ext


def test_ca_chain_before_and_after_the_first_certificate(stepca, make_service):
    service = make_service(stepca)
    expected = [load_cert(stepca.intermediate_pem), load_cert(stepca.root_pem)]
    # step-ca 0.19 has no API for its intermediate: learned from the first certificate, said plainly until then
    error = refused(service.ca_chain, "default")
    assert error.code == "signer_unavailable" and "first certificate" in error.message
    _, secret = new_token(service, common_name="chain.example")
    service.redeem("default", secret, make_csr(shared_key("p256", 14), cn="chain.example"))
    assert [load_cert(p) for p in service.ca_chain("default")] == expected
    # a restarted gateway (a new signer on the same state) answers from the chain recorded with that certificate
    restarted = make_service(stepca, state_dir=os.path.dirname(service.store.path))
    assert [load_cert(p) for p in restarted.ca_chain("default")] == expected


def test_csr_subject_differs_from_the_token_and_the_token_wins(service):
    _, secret = new_token(service, common_name="token-cn.example", organization="Token Org",
                          organizational_unit="Token Unit")
    csr = make_csr(shared_key("p256", 1), cn="csr-cn.example", o="CSR Org", ou="CSR Unit")
    result = service.redeem("default", secret, csr)
    cert = load_cert(result.certificate.certificate_pem)
    assert subject_values(cert) == {"CN": ["token-cn.example"], "O": ["Token Org"], "OU": ["Token Unit"]}
    assert {a.oid for a in cert.subject} == {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                                             NameOID.ORGANIZATIONAL_UNIT_NAME}


def test_csr_without_any_subject_gets_the_token_subject(service):
    # step-ca needs a token sub; with no CN in the CSR the signer uses the decided CN
    _, secret = new_token(service, common_name="no-subject.example")
    result = service.redeem("default", secret, make_csr(shared_key("p256", 2)))
    assert subject_values(load_cert(result.certificate.certificate_pem)) == {
        "CN": ["no-subject.example"], "O": [], "OU": []}


def test_no_sans_leak_from_the_csr(service):
    key = shared_key("p256", 3)
    names = [x509.DNSName("evil.example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
             x509.RFC822Name("evil@example.com"), x509.UniformResourceIdentifier("spiffe://evil/workload")]
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.example.com")]))
           .add_extension(x509.SubjectAlternativeName(names), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    _, secret = new_token(service, common_name="clean.example")
    cert = load_cert(service.redeem("default", secret, csr).certificate.certificate_pem)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert subject_values(cert)["CN"] == ["clean.example"]


def test_the_one_time_token_cannot_be_replayed_against_stepca(stepca, service):
    signer = service.signers["default"]
    captured = []
    original = signer._session.request

    def recording(method, url, **kwargs):
        if url.endswith("/1.0/sign"):
            captured.append(dict(kwargs["json"]))
        return original(method, url, **kwargs)

    signer._session.request = recording
    _, secret = new_token(service, common_name="replay.example", organization="Replay Org")
    csr = make_csr(shared_key("p256", 4), cn="what-the-csr-says", sans=["a.example"])
    assert service.redeem("default", secret, csr).replayed is False
    assert len(captured) == 1
    ott = captured[0]["ott"]
    # what we sent: an ES256 JWT for our provisioner, sub/sans echoing the CSR, the subject in our claim
    header, claims = verified_ott(ott, stepca.provisioner_jwk)  # the public key in step-ca's ca.json
    assert header["alg"] == "ES256" and header["kid"] == stepca.provisioner_jwk["kid"]
    assert claims["iss"] == "frontdoor" and claims["aud"] == stepca.url + "/1.0/sign"
    assert claims["sub"] == "what-the-csr-says" and claims["sans"] == ["a.example"]
    assert claims["frontdoor"]["cn"] == "replay.example" and claims["frontdoor"]["o"] == "Replay Org"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    # replaying the captured request, or the token with another CSR, is refused by step-ca
    again = stepca.post("/1.0/sign", captured[0])
    assert again.status_code == 401, again.text
    other = dict(captured[0], csr=make_csr(make_key("p256"), cn="what-the-csr-says", sans=["a.example"]))
    assert stepca.post("/1.0/sign", other).status_code == 401


def test_stepca_down_is_503_the_token_survives_and_redeems_after_restart(tmp_path, make_service):
    ca = StepCA.create(str(tmp_path / "ca"))
    ca.start()
    try:
        service = make_service(ca)
        _, warm = new_token(service, common_name="warm.example")
        service.redeem("default", warm, make_csr(shared_key("p256", 5), cn="warm"))  # pooled connection now open
        record, secret = new_token(service, common_name="survivor.example")
        csr = make_csr(shared_key("p256", 6), cn="survivor")
        ca.stop()
        error = refused(service.redeem, "default", secret, csr)
        assert error.code == "signer_unavailable" and error.status == 503
        assert ca.url in error.message and "not used" in error.message
        assert service.get_token("default", record.id).status() == "active"
        assert service.get_token("default", record.id).claim_id is None  # released, not left to the lease
        ca.start()
        result = service.redeem("default", secret, csr)
        assert result.replayed is False
        assert subject_values(load_cert(result.certificate.certificate_pem))["CN"] == ["survivor.example"]
        assert service.get_token("default", record.id).status() == "redeemed"
    finally:
        ca.stop()


def test_revocation_reaches_stepca(stepca, service):
    _, secret = new_token(service, common_name="revoke.example")
    issued = service.redeem("default", secret, make_csr(shared_key("p256", 7), cn="revoke")).certificate
    record = service.revoke_certificate("default", issued.id, actor="stepca-test")
    assert record.revoked_at is not None
    # step-ca recorded it: revoking the same serial once more is refused as already revoked
    serial = str(int(issued.serial_number, 16))
    ott = service.signers["default"].one_time_token("/1.0/revoke", serial)
    again = stepca.post("/1.0/revoke", {"serial": serial, "ott": ott, "reasonCode": 0, "passive": True})
    assert again.status_code == 400 and "already revoked" in again.json()["message"], again.text
    # and a second revocation through us is a no-op, not an error
    assert service.revoke_certificate("default", issued.id).revoked_at == record.revoked_at


def test_revocation_without_a_stepca_database_is_not_supported(tmp_path, make_service):
    ca = StepCA.create(str(tmp_path / "ca"), db=False)
    ca.start()
    try:
        service = make_service(ca)
        _, secret = new_token(service, common_name="nodb.example")
        issued = service.redeem("default", secret, make_csr(shared_key("p256", 8), cn="x")).certificate
        error = refused(service.revoke_certificate, "default", issued.id)
        assert error.code == "not_supported" and error.status == 501
        assert "database" in error.message
        assert service.get_certificate("default", issued.id).revoked_at is None
    finally:
        ca.stop()


def test_crl_is_not_supported(service):
    assert refused(service.crl, "default").code == "not_supported"


def test_provisioner_without_our_template_is_refused_before_anything_is_signed(stepca, make_service):
    service = make_service(stepca, provisioner=PLAIN_PROVISIONER, provisionerKey=stepca.plain_key_path)
    record, secret = new_token(service, common_name="template.example")
    error = refused(service.redeem, "default", secret, make_csr(shared_key("p256", 9), cn="template.example"))
    assert error.code == "signer_unavailable"
    assert "no x509 template" in error.message and "frontdoor-gateway step-ca-template" in error.message
    assert service.get_token("default", record.id).status() == "active"


def test_unknown_provisioner_names_what_the_ca_has(stepca, make_service):
    service = make_service(stepca, provisioner="no-such-provisioner")
    record, secret = new_token(service, common_name="x.example")
    error = refused(service.redeem, "default", secret, make_csr(shared_key("p256", 9), cn="x"))
    assert error.code == "signer_unavailable"
    assert "'no-such-provisioner'" in error.message and "frontdoor (JWK)" in error.message
    assert "STEP_PROVISIONER" in error.message
    assert service.get_token("default", record.id).status() == "active"


def test_a_template_we_cannot_inspect_is_still_caught_by_the_result_check(tmp_path, make_service):
    # templateFile is not published by /provisioners: step-ca signs with upstream's default leaf
    # template (CSR subject + SANs, serverAuth): the certificate is refused, revoked, never handed out.
    template_file = tmp_path / "leaf.tpl"
    template_file.write_text(UPSTREAM_DEFAULT_LEAF_TEMPLATE)
    ca = StepCA.create(str(tmp_path / "ca"), template={},
                       extra_provisioner_options={"x509": {"templateFile": str(template_file)}})
    ca.start()
    try:
        service = make_service(ca)
        record, secret = new_token(service, common_name="forced.example")
        error = refused(service.redeem, "default", secret, make_csr(shared_key("p256", 10), cn="csr.example"))
        assert error.code == "signer_error"
        assert "not handed out" in error.message and "was revoked" in error.message
        assert "step-ca-template" in error.message
        assert service.get_token("default", record.id).status() == "active"
        assert service.list_certificates("default").total == 0
    finally:
        ca.stop()


def test_lifetime_is_clamped_to_the_provisioner_maximum(tmp_path, make_service):
    ca = StepCA.create(str(tmp_path / "ca"), claims={"maxTLSCertDuration": "48h"})
    ca.start()
    try:
        service = make_service(ca)
        _, secret = new_token(service, common_name="clamped.example")  # frontdoor default: 365 days
        before = utcnow()
        cert = load_cert(service.redeem("default", secret, make_csr(shared_key("p256", 11), cn="x"))
                         .certificate.certificate_pem)
        lifetime = cert.not_valid_after_utc - before
        assert _dt.timedelta(hours=47, minutes=55) < lifetime <= _dt.timedelta(hours=48)
        # an operator's smaller maximum wins over the published one
        limited = make_service(ca, maxCertificateDuration="1h")
        _, secret = new_token(limited, common_name="one-hour.example")
        before = utcnow()
        cert = load_cert(limited.redeem("default", secret, make_csr(shared_key("p256", 12), cn="x"))
                         .certificate.certificate_pem)
        assert _dt.timedelta(minutes=55) < cert.not_valid_after_utc - before <= _dt.timedelta(hours=1)
    finally:
        ca.stop()


def test_lifetime_below_the_provisioner_minimum_is_an_actionable_refusal(service):
    record, secret = new_token(service, common_name="too-short.example", certificate_ttl="2m")
    error = refused(service.redeem, "default", secret, make_csr(shared_key("p256", 13), cn="x"))
    assert error.code == "signer_error" and error.status == 502
    assert "minTLSCertDuration" in error.message and "not used" in error.message
    assert service.get_token("default", record.id).status() == "active"
