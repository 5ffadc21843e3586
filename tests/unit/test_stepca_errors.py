"""The step-ca signer's HTTP client: what it sends, and how every kind of step-ca answer maps to our
error codes (``responses`` stands in for step-ca here; tests/stepca runs the same against a real one).

The rule under test throughout: a step-ca failure is an error the operator can act on, and it never
burns a frontdoor token.
"""

from __future__ import annotations

import datetime as _dt
import json
import re

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable
from frontdoor_pki.model import SignRequest, Subject, utcnow
from frontdoor_pki.service import FrontdoorService, FrontdoorSettings
from frontdoor_pki.signers.stepca import StepCASigner, x509_template
from frontdoor_pki.stores.sqlite import SQLiteStore
from jwcrypto.jwk import JWK
from support.crypto import make_csr, shared_key
from support.stepca import provisioner_key, verified_ott

URL = "https://stepca.test:9443"
PASSWORD_LIKE = "pw-never-shown"


class UnitCA:
    """A root and intermediate made here, to answer /1.0/sign the way step-ca would."""

    def __init__(self, directory):
        now = utcnow()
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit root")])
        int_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit intermediate")])
        self.root = self._cert(root_name, root_name, self.root_key.public_key(), self.root_key, True, now + _dt.timedelta(days=3650))
        self.intermediate = self._cert(int_name, root_name, self.int_key.public_key(), self.root_key, True,
                                       now + _dt.timedelta(days=100))
        self.root_path = str(directory / "root.pem")
        with open(self.root_path, "wb") as handle:
            handle.write(self.root.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _cert(subject, issuer, public_key, key, ca, not_after, sans=(), eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(utcnow() - _dt.timedelta(minutes=1))
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        return builder.sign(key, hashes.SHA256())

    def leaf(self, request: SignRequest, subject: Subject = None, sans=()) -> x509.Certificate:
        subject = subject or request.subject
        attrs = []
        if subject.organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject.organization))
        if subject.organizational_unit:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject.common_name))
        return self._cert(x509.Name(attrs), self.intermediate.subject, request.csr.public_key(), self.int_key, False,
                          request.not_after, sans=sans)

    def sign_response(self, leaf: x509.Certificate) -> dict:
        pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (leaf, self.intermediate)]
        return {"crt": pems[0], "ca": pems[1], "certChain": pems}


@pytest.fixture
def ca(tmp_path):
    return UnitCA(tmp_path)


@pytest.fixture
def jwk():
    return JWK.from_json(provisioner_key(None)[1])


@pytest.fixture
def signer(ca, jwk):
    made = StepCASigner(URL, ca.root_path, "frontdoor", jwk, frontdoor_id="default")
    yield made
    made.close()


def provisioners(jwk, template=True, claims=None, name="frontdoor"):
    item = {"type": "JWK", "name": name, "key": jwk.export_public(as_dict=True)}
    if template:
        item["options"] = x509_template()
    if claims:
        item["claims"] = claims
    return {"provisioners": [item, {"type": "ACME", "name": "acme"}], "nextCursor": ""}


def sign_request(cn="csr-cn", sans=(), subject=None, ttl=3600) -> SignRequest:
    pem = make_csr(shared_key("p256"), cn=cn, sans=sans)
    csr = x509.load_pem_x509_csr(pem.encode())
    now = utcnow()
    return SignRequest(frontdoor_id="default", csr_pem=pem, csr=csr,
                       subject=subject or Subject("token-cn", "Token Org", None),
                       not_before=now - _dt.timedelta(minutes=1), not_after=now + _dt.timedelta(seconds=ttl),
                       token_id="token-1", name="n")


def sign_calls():
    return [c for c in responses.calls if c.request.url.endswith("/1.0/sign")]


def ott_claims(ott: str, jwk) -> dict:
    return verified_ott(ott, jwk.export_public(as_dict=True))[1]


def no_secrets(message: str, jwk) -> None:
    assert "eyJ" not in message and jwk["d"] not in message and PASSWORD_LIKE not in message


@responses.activate
def test_sends_one_ott_with_csr_sub_and_sans_and_our_subject_claim(signer, ca, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    request = sign_request(cn="device-cn", sans=["a.example", "10.0.0.1"])
    seen = []

    def answer(http_request):
        body = json.loads(http_request.body)
        seen.append(body)
        return 201, {}, json.dumps(ca.sign_response(ca.leaf(request)))

    responses.add_callback(responses.POST, URL + "/1.0/sign", callback=answer)
    before = int(utcnow().timestamp())
    issued = signer.sign(request)
    signer.sign(request)
    assert len(seen) == 2
    body = seen[0]
    assert body["csr"] == request.csr_pem
    assert body["notAfter"] == request.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    header, claims = verified_ott(body["ott"], jwk.export_public(as_dict=True))
    assert header["kid"] == jwk["kid"] and header["alg"] == "ES256"
    assert claims["iss"] == "frontdoor" and claims["aud"] == URL + "/1.0/sign"
    assert claims["sub"] == "device-cn" and claims["sans"] == ["a.example", "10.0.0.1"]
    assert claims["frontdoor"] == {"cn": "token-cn", "o": "Token Org", "frontdoorId": "default", "tokenId": "token-1"}
    assert before <= claims["iat"] == claims["nbf"] <= before + 2 and claims["exp"] - claims["iat"] == 120
    assert claims["jti"] != ott_claims(seen[1]["ott"], jwk)["jti"]
    assert re.fullmatch(r"[0-9a-f]{64}", claims["jti"])
    # what comes back: the leaf, the chain up to the configured root
    assert [x509.load_pem_x509_certificate(p.encode()) for p in issued.ca_chain] == [ca.intermediate, ca.root]
    assert issued.serial_number == "%x" % x509.load_pem_x509_certificate(issued.certificate_pem.encode()).serial_number
    assert signer.ca_chain() == issued.ca_chain


@responses.activate
def test_csr_without_cn_uses_the_decided_cn_as_sub(signer, ca, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    request = sign_request(cn=None)
    responses.post(URL + "/1.0/sign", json=ca.sign_response(ca.leaf(request)), status=201)
    signer.sign(request)
    claims = ott_claims(json.loads(sign_calls()[0].request.body)["ott"], jwk)
    assert claims["sub"] == "token-cn" and claims["sans"] == []


@responses.activate
def test_unreachable_stepca_is_signer_unavailable(signer, jwk):
    # nothing registered: responses refuses the connection
    with pytest.raises(SignerUnavailable) as info:
        signer.sign(sign_request())
    assert info.value.status == 503 and URL in info.value.message and "not used" in info.value.message
    no_secrets(info.value.message, jwk)


@responses.activate
@pytest.mark.parametrize("failure,words", [
    (requests.ConnectionError("refused"), "cannot be reached"),
    (requests.exceptions.ReadTimeout("slow"), "did not answer in time"),
    (requests.exceptions.SSLError("bad cert"), "does not verify against the root"),
])
def test_transport_failures_while_signing(signer, jwk, failure, words):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", body=failure)
    with pytest.raises(SignerUnavailable) as info:
        signer.sign(sign_request())
    assert words in info.value.message
    no_secrets(info.value.message, jwk)


@responses.activate
@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_signer_unavailable(signer, jwk, status):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": status, "message": "The certificate authority encountered an "
                                            "Internal Server Error."}, status=status)
    with pytest.raises(SignerUnavailable) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_unavailable" and str(status) in info.value.message
    assert info.value.retry_after


@responses.activate
def test_401_names_the_likely_causes(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": 401, "message": "The request lacked necessary authorization "
                                            "to be completed."}, status=401)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_unavailable"
    assert "clocks" in info.value.message and "dnsNames" in info.value.message and "stepca.test" in info.value.message
    no_secrets(info.value.message, jwk)


@responses.activate
def test_401_after_the_provisioner_was_removed_says_so(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": 401, "message": "unauthorized"}, status=401)
    responses.get(URL + "/provisioners", json={"provisioners": [], "nextCursor": ""})
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_unavailable" and "no JWK provisioner named 'frontdoor'" in info.value.message


@responses.activate
def test_preflight_refuses_a_provisioner_without_our_template_before_minting(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk, template=False))
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_unavailable" and "frontdoor-gateway step-ca-template" in info.value.message
    assert sign_calls() == []


@responses.activate
def test_preflight_refuses_a_foreign_template(signer, jwk):
    body = provisioners(jwk)
    body["provisioners"][0]["options"] = {"x509": {"template": '{"subject": {{ toJson .Subject }}}'}}
    responses.get(URL + "/provisioners", json=body)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert "not frontdoor's" in info.value.message and sign_calls() == []


@responses.activate
def test_preflight_matches_the_key_id_not_just_the_name(signer, jwk):
    other = JWK.from_json(provisioner_key(None)[1])
    responses.get(URL + "/provisioners", json=provisioners(other))
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert jwk["kid"] in info.value.message and "frontdoor (JWK)" in info.value.message


@responses.activate
def test_403_duration_names_the_claims(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": 403, "message": "requested duration of 8760h0m0s is more than "
                                            "the authorized maximum certificate duration of 24h1m0s"}, status=403)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_error" and info.value.status == 502
    assert "maxTLSCertDuration" in info.value.message and "24h1m0s" in info.value.message


@responses.activate
def test_403_name_mismatch(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": 403, "message": "certificate request does not contain the "
                                            "valid DNS names - got [a], want [b]"}, status=403)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_error" and "subject alternative names" in info.value.message


@responses.activate
def test_a_certificate_with_the_wrong_profile_is_revoked_and_refused(signer, ca, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    request = sign_request()
    bad = ca.leaf(request, subject=Subject("csr-cn", None, None), sans=["csr-cn"])
    responses.post(URL + "/1.0/sign", json=ca.sign_response(bad), status=201)
    responses.post(URL + "/1.0/revoke", json={"status": "ok"}, status=200)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(request)
    assert info.value.code == "signer_error" and "not handed out" in info.value.message
    assert "was revoked" in info.value.message
    revoke = json.loads([c for c in responses.calls if c.request.url.endswith("/1.0/revoke")][0].request.body)
    assert revoke["serial"] == str(bad.serial_number) and revoke["passive"] is True
    claims = ott_claims(revoke["ott"], jwk)
    assert claims["sub"] == str(bad.serial_number) and claims["aud"] == URL + "/1.0/revoke"


@responses.activate
def test_garbage_instead_of_a_certificate(signer, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"crt": "not a pem"}, status=201)
    with pytest.raises(FrontdoorError) as info:
        signer.sign(sign_request())
    assert info.value.code == "signer_error"


@responses.activate
@pytest.mark.parametrize("status,message,code", [
    (200, None, None),
    (400, "certificate with serial number '1' is already revoked", None),
    (501, "The requested method is not implemented by the certificate authority.", "not_supported"),
    (403, "forbidden", "not_supported"),
    (401, "unauthorized", "not_supported"),
    (500, "boom", "signer_unavailable"),
])
def test_revoke_mapping(signer, jwk, status, message, code):
    class Record:
        serial_number = "ff"

    responses.post(URL + "/1.0/revoke", json={"status": status, "message": message or "ok"}, status=status)
    if code is None:
        signer.revoke(Record())
    else:
        with pytest.raises(FrontdoorError) as info:
            signer.revoke(Record())
        assert info.value.code == code
    body = json.loads(responses.calls[0].request.body)
    assert body["serial"] == "255"
    assert ott_claims(body["ott"], jwk)["sub"] == "255"


@responses.activate
def test_ping(signer):
    responses.get(URL + "/health", json={"status": "ok"})
    signer.ping()
    responses.replace(responses.GET, URL + "/health", json={"status": "starting"}, status=503)
    with pytest.raises(SignerUnavailable):
        signer.ping()
    responses.replace(responses.GET, URL + "/health", body=requests.ConnectionError("down"))
    with pytest.raises(SignerUnavailable):
        signer.ping()


@responses.activate
def test_not_after_limit_never_raises_and_uses_published_claims(ca, jwk):
    down = StepCASigner(URL, ca.root_path, "frontdoor", jwk)
    limit = down.not_after_limit()  # nothing registered: unreachable
    expected = utcnow() + _dt.timedelta(hours=24) - _dt.timedelta(seconds=60)
    assert abs((limit - expected).total_seconds()) < 5
    up = StepCASigner(URL, ca.root_path, "frontdoor", jwk)
    responses.get(URL + "/provisioners", json=provisioners(jwk, claims={"maxTLSCertDuration": "2160h0m0s"}))
    limit = up.not_after_limit()
    assert abs((limit - (utcnow() + _dt.timedelta(days=90, seconds=-60))).total_seconds()) < 5
    configured = StepCASigner(URL, ca.root_path, "frontdoor", jwk, max_certificate_duration=3600)
    assert abs((configured.not_after_limit() - (utcnow() + _dt.timedelta(seconds=3540))).total_seconds()) < 5


@responses.activate
def test_not_after_limit_stays_within_the_intermediate(signer, ca, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk, claims={"maxTLSCertDuration": "87600h"}))
    request = sign_request()
    responses.post(URL + "/1.0/sign", json=ca.sign_response(ca.leaf(request)), status=201)
    signer.sign(request)
    assert signer.not_after_limit() == ca.intermediate.not_valid_after_utc


@responses.activate
def test_a_stepca_failure_never_burns_the_token(tmp_path, signer, ca, jwk):
    responses.get(URL + "/provisioners", json=provisioners(jwk))
    responses.post(URL + "/1.0/sign", json={"status": 500, "message": "db down"}, status=500)
    service = FrontdoorService(SQLiteStore(str(tmp_path / "fd.db")), {"default": FrontdoorSettings("default")},
                               {"default": signer})
    record, secret = service.create_token("default", name="survive", common_name="survive.example")
    csr = make_csr(shared_key("p256"), cn="x")
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, csr)
    assert info.value.status == 503
    after = service.get_token("default", record.id)
    assert after.status() == "active" and after.claim_id is None

    def answer(http_request):
        body = json.loads(http_request.body)
        req = x509.load_pem_x509_csr(body["csr"].encode())
        not_after = _dt.datetime.strptime(body["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
        fake = SignRequest("default", body["csr"], req, Subject("survive.example", None, None), utcnow(), not_after,
                           record.id, "survive")
        return 201, {}, json.dumps(ca.sign_response(ca.leaf(fake)))

    responses.remove(responses.POST, URL + "/1.0/sign")
    responses.add_callback(responses.POST, URL + "/1.0/sign", callback=answer)
    result = service.redeem("default", secret, csr)
    assert result.replayed is False and result.certificate.subject.common_name == "survive.example"
    assert service.get_token("default", record.id).status() == "redeemed"
