"""Unit tests of the Vault adapters' hvac call shapes and error mapping (HTTP mocked with `responses`).

Behaviour against a real server is in tests/vault and the contract suite; these pin what is
sent and how each failure is reported, including paths a real dev server cannot produce easily.
"""

from __future__ import annotations

import dataclasses
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
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable, StoreUnavailable
from frontdoor_pki.model import CertificateRecord, SignRequest, Subject, TokenRecord, utcnow
from frontdoor_pki.signers.vault_pki import VaultPKISigner, role_name, vault_serial
from frontdoor_pki.stores.vault_kv import VaultKVStore
from frontdoor_pki.vault.client import VaultClient, VaultSettings
from support.crypto import make_csr, shared_key

URL = "http://vault.test:8200"
TOKEN = "hvs.UNIT-TEST-TOKEN-never-shown"
CAS_ERROR = {"errors": ["check-and-set parameter did not match the current version"]}


def client(**vault) -> VaultClient:
    return VaultClient(VaultSettings(dict({"url": URL, "token": TOKEN}, **vault)))


def body(call) -> dict:
    return json.loads(call.request.body)


# -- settings ----------------------------------------------------------------------------------
def test_settings_defaults_and_validation():
    s = VaultSettings({"token": "t"})
    assert (s.url, s.kv_mount, s.kv_prefix, s.pki_mount, s.timeout, s.auth_method) == (
        "http://127.0.0.1:8200", "secret", "frontdoor", "pki", 10.0, "token")
    assert VaultSettings({"token": "t", "timeout": "2.5"}).timeout == 2.5
    assert VaultSettings({"token": "t", "caCert": "/ca.pem"}).verify == "/ca.pem"
    assert VaultSettings({"token": "t", "verify": "false"}).verify is False
    with pytest.raises(FrontdoorError, match="VAULT_TOKEN"):
        VaultSettings({})
    with pytest.raises(FrontdoorError, match="roleId"):
        VaultSettings({"authMethod": "approle"})
    with pytest.raises(FrontdoorError, match="timeout"):
        VaultSettings({"token": "t", "timeout": "soon"})
    with pytest.raises(FrontdoorError, match="Unknown vault configuration"):
        VaultSettings({"token": "t", "tokne": "x"})


def test_session_pools_connections():
    c = client()
    adapter = c.session.get_adapter(URL)
    assert adapter._pool_maxsize >= 16
    assert adapter.max_retries.read == 0  # a write that reached Vault is never sent twice
    assert c.session.trust_env is False  # no per-request env/netrc lookups; REQUESTS_CA_BUNDLE cannot override


def test_ca_bundle_reaches_every_request():
    c = client(caCert="/etc/vault-ca.pem")
    assert c.session.verify == "/etc/vault-ca.pem"
    assert c.hvac.adapter._kwargs["verify"] == "/etc/vault-ca.pem"
    assert client(verify=False).hvac.adapter._kwargs["verify"] is False


# -- error mapping -------------------------------------------------------------------------------
KV_READ = re.compile(URL + r"/v1/secret/data/frontdoor/t/.*")


@pytest.mark.parametrize("status, payload, expected", [
    (503, {"errors": ["Vault is sealed"]}, "sealed"),
    (403, {"errors": ["permission denied"]}, "vault-policy"),
    (500, {"errors": ["internal error"]}, "failed"),
    (429, {"errors": ["rate limited"]}, "rate limiting"),
])
@responses.activate
def test_store_maps_http_failures(status, payload, expected):
    responses.add(responses.GET, KV_READ, json=payload, status=status)
    store = VaultKVStore(client(), "secret", "frontdoor")
    with pytest.raises(StoreUnavailable) as info:
        store.find_token_by_hash("a" * 64)
    assert info.value.status == 503 and expected in info.value.message
    assert TOKEN not in info.value.message and URL in info.value.message


@pytest.mark.parametrize("error, expected", [
    (requests.ConnectionError("refused"), "could not be reached"),
    (requests.ReadTimeout("slow"), "did not answer within 10 s"),
    (requests.exceptions.SSLError("bad cert"), "VAULT_CACERT"),
])
@responses.activate
def test_store_maps_network_failures(error, expected):
    responses.add(responses.GET, KV_READ, body=error)
    with pytest.raises(StoreUnavailable) as info:
        VaultKVStore(client(), "secret", "frontdoor").find_token_by_hash("b" * 64)
    assert expected in info.value.message and TOKEN not in info.value.message


@responses.activate
def test_missing_key_is_none_not_an_error():
    responses.add(responses.GET, KV_READ, json={"errors": []}, status=404)
    assert VaultKVStore(client(), "secret", "frontdoor").find_token_by_hash("c" * 64) is None


@responses.activate
def test_approle_logs_in_and_again_after_expiry():
    logins = iter(["tok-1", "tok-2"])
    responses.add_callback(
        responses.POST, URL + "/v1/auth/approle/login",
        callback=lambda req: (200, {}, json.dumps({"auth": {"client_token": next(logins)}})),
    )
    responses.add(responses.GET, KV_READ, json={"errors": ["permission denied"]}, status=403)
    responses.add(responses.GET, KV_READ, json={"errors": []}, status=404)
    c = client(token=None, authMethod="approle", roleId="rid", secretId="sid")
    store = VaultKVStore(c, "secret", "frontdoor")
    assert store.find_token_by_hash("d" * 64) is None
    calls = [(call.request.method, call.request.url.split("/v1/")[1], call.request.headers.get("X-Vault-Token"))
             for call in responses.calls]
    assert calls[0][:2] == ("POST", "auth/approle/login") and body(responses.calls[0]) == {"role_id": "rid", "secret_id": "sid"}
    assert calls[1][2] == "tok-1" and calls[2][:2] == ("POST", "auth/approle/login") and calls[3][2] == "tok-2"


@responses.activate
def test_approle_refused_login_is_clear():
    responses.add(responses.POST, URL + "/v1/auth/approle/login", json={"errors": ["invalid secret id"]}, status=400)
    store = VaultKVStore(client(token=None, roleId="rid", secretId="sid-secret"), "secret", "frontdoor")
    with pytest.raises(StoreUnavailable) as info:
        store.find_token_by_hash("e" * 64)
    assert "AppRole login" in info.value.message and "sid-secret" not in info.value.message


# -- KV call shapes ---------------------------------------------------------------------------------
def _token(version=1) -> TokenRecord:
    now = utcnow()
    return TokenRecord(id="token-00000000-0000-4000-8000-000000000001", frontdoor_id="default", name="n",
                       secret_hash="f" * 64, subject=Subject("cn", None, None), created_at=now, created_by="t",
                       expires_at=now + _dt.timedelta(hours=1), updated_at=now, version=version)


@responses.activate
def test_create_writes_index_record_and_listing_with_cas():
    responses.add(responses.POST, re.compile(URL + r"/v1/secret/data/fd/.*"), json={"data": {"version": 1}})
    store = VaultKVStore(client(), "secret", "fd")
    record = _token()
    store.create_token(record)
    paths = [c.request.url.split("/v1/secret/data/")[1] for c in responses.calls]
    assert paths[0] == "fd/i/default/%s" % record.id and body(responses.calls[0])["options"] == {"cas": 0}
    assert paths[1] == "fd/t/%s" % record.secret_hash and body(responses.calls[1])["options"] == {"cas": 0}
    assert paths[2].startswith("fd/l/default/") and record.id in paths[2]
    assert "secretHash" in body(responses.calls[1])["data"] and body(responses.calls[1])["data"]["base"] == 0


@responses.activate
def test_replace_uses_the_kv_version_and_reports_a_lost_race():
    t_path = URL + "/v1/secret/data/fd/t/" + "f" * 64
    responses.add(responses.POST, re.compile(URL + r"/v1/secret/data/fd/[il]/.*"), json={"data": {"version": 1}})
    responses.add(responses.POST, t_path, json={"data": {"version": 1}})
    store = VaultKVStore(client(), "secret", "fd")
    record = _token()
    store.create_token(record)
    responses.add(responses.POST, t_path, json={"data": {"version": 2}})
    claimed = dataclasses.replace(record, claim_id="c", version=2)
    assert store.replace_token(claimed, 1) is True
    assert body(responses.calls[-1])["options"] == {"cas": 1}
    responses.add(responses.POST, t_path, json=CAS_ERROR, status=400)
    assert store.replace_token(dataclasses.replace(claimed, version=3), 2) is False
    assert body(responses.calls[-1])["options"] == {"cas": 2}


@responses.activate
def test_delete_is_a_metadata_delete():
    record = _token()
    responses.add(responses.GET, URL + "/v1/secret/data/fd/i/default/%s" % record.id,
                  json={"data": {"data": {"hash": record.secret_hash}, "metadata": {"version": 1}}})
    from frontdoor_pki.stores.vault_kv import token_to_dict

    responses.add(responses.GET, URL + "/v1/secret/data/fd/t/%s" % record.secret_hash,
                  json={"data": {"data": dict(token_to_dict(record), base=0), "metadata": {"version": 1}}})
    responses.add("LIST", URL + "/v1/secret/metadata/fd/l/default", json={"data": {"keys": []}})
    responses.add(responses.DELETE, re.compile(URL + r"/v1/secret/metadata/fd/.*"), status=204)
    assert VaultKVStore(client(), "secret", "fd").delete_token("default", record.id) is True
    deletes = [c.request.url.split("/v1/")[1] for c in responses.calls if c.request.method == "DELETE"]
    assert set(deletes) >= {"secret/metadata/fd/t/" + record.secret_hash, "secret/metadata/fd/i/default/" + record.id}
    assert not [c for c in responses.calls if "/v1/secret/data/" in c.request.url and c.request.method == "DELETE"]


# -- signer ------------------------------------------------------------------------------------------
def _ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit CA")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca, public_key, cn, o=None, not_after=None, sans=()):
    key, ca_cert = ca
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)] if o else []) + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
               .public_key(public_key).serial_number(0xABCDEF).not_valid_before(now)
               .not_valid_after(not_after or now + _dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _request(cn="alice", o="Acme", ou=None, days=30) -> SignRequest:
    pem = make_csr(shared_key("p256", 90), cn="mallory", o="Evil")
    csr = x509.load_pem_x509_csr(pem.encode())
    now = utcnow()
    return SignRequest(frontdoor_id="default", csr_pem=pem, csr=csr, subject=Subject(cn, o, ou),
                       not_before=now, not_after=now + _dt.timedelta(days=days), token_id="token-x", name="n")


def _sign_response(ca, leaf_pem):
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM).decode()
    return {"data": {"certificate": leaf_pem, "issuing_ca": ca_pem, "ca_chain": [ca_pem], "serial_number": "ab:cd:ef",
                     "expiration": 0}}


@responses.activate
def test_sign_creates_the_role_once_and_forces_the_subject():
    ca = _ca()
    request = _request()
    role = role_name("Acme", None, 86400 * 365, False)
    leaf = _leaf(ca, request.csr.public_key(), "alice", "Acme")
    responses.add(responses.POST, URL + "/v1/pki/roles/" + role, status=204)
    responses.add(responses.POST, URL + "/v1/pki/sign/" + role, json=_sign_response(ca, leaf))
    signer = VaultPKISigner(client(), "default", "pki")
    issued = signer.sign(request)
    signer.sign(_request())
    posted = [(c.request.url.split("/v1/")[1], body(c)) for c in responses.calls]
    assert [p for p, _ in posted] == ["pki/roles/" + role, "pki/sign/" + role, "pki/sign/" + role]
    role_body, sign_body = posted[0][1], posted[1][1]
    assert role_body["organization"] == ["Acme"] and role_body["ou"] == []
    assert role_body["client_flag"] is True and role_body["server_flag"] is False and role_body["key_type"] == "any"
    assert role_body["allow_any_name"] is True and role_body["enforce_hostnames"] is False
    assert role_body["cn_validations"] == ["disabled"] and role_body["basic_constraints_valid_for_non_ca"] is True
    assert role_body["key_usage"] == ["DigitalSignature"] and role_body["max_ttl"] == "31536000s"
    assert sign_body["common_name"] == "alice" and sign_body["csr"] == request.csr_pem
    assert sign_body["use_csr_common_name"] is False and sign_body["use_csr_sans"] is False
    assert sign_body["exclude_cn_from_sans"] is True and re.fullmatch(r"\d+s", sign_body["ttl"])
    assert issued.serial_number == "abcdef" and len(issued.ca_chain) == 1


@pytest.mark.parametrize("leaf_args, problem", [
    ({"cn": "mallory", "o": "Acme"}, "subject differs"),
    ({"cn": "alice", "o": "Other"}, "subject differs"),
    ({"cn": "alice", "o": "Acme", "sans": ["evil.example"]}, "subject alternative names"),
    ({"cn": "alice", "o": "Acme", "not_after": utcnow() + _dt.timedelta(days=400)}, "later than allowed"),
])
@responses.activate
def test_sign_refuses_a_certificate_that_does_not_match(leaf_args, problem):
    ca = _ca()
    request = _request()
    leaf = _leaf(ca, request.csr.public_key(), **leaf_args)
    responses.add(responses.POST, re.compile(URL + "/v1/pki/(roles|sign)/.*"), json=_sign_response(ca, leaf))
    with pytest.raises(FrontdoorError) as info:
        VaultPKISigner(client(), "default", "pki").sign(request)
    assert info.value.code == "signer_error" and problem in info.value.message


@responses.activate
def test_sign_accepts_a_clamped_shorter_validity():
    ca = _ca()
    request = _request(days=365)
    leaf = _leaf(ca, request.csr.public_key(), "alice", "Acme", not_after=utcnow() + _dt.timedelta(days=32))
    responses.add(responses.POST, re.compile(URL + "/v1/pki/(roles|sign)/.*"), json=_sign_response(ca, leaf))
    issued = VaultPKISigner(client(), "default", "pki").sign(request)
    assert issued.not_after < request.not_after - _dt.timedelta(days=300)


@responses.activate
def test_sign_denied_is_signer_unavailable_with_a_hint():
    responses.add(responses.POST, re.compile(URL + "/v1/pki/roles/.*"), status=204)
    responses.add(responses.POST, re.compile(URL + "/v1/pki/sign/.*"), json={"errors": ["1 error occurred:\n\t* permission denied\n\n"]}, status=403)
    with pytest.raises(SignerUnavailable) as info:
        VaultPKISigner(client(), "default", "pki").sign(_request())
    assert "vault-policy" in info.value.message and TOKEN not in info.value.message


@responses.activate
def test_operator_role_missing_is_reported_not_created():
    responses.add(responses.POST, URL + "/v1/pki/sign/ops", json={"errors": ["unknown role: ops"]}, status=400)
    signer = VaultPKISigner(client(), "default", "pki", manage_roles=False, role="ops")
    with pytest.raises(SignerUnavailable, match="ops does not exist"):
        signer.sign(_request())
    assert [c.request.url.split("/v1/")[1] for c in responses.calls] == ["pki/sign/ops"]


@responses.activate
def test_managed_role_that_vanished_is_recreated_once():
    role = role_name("Acme", None, 86400 * 365, False)
    ca = _ca()
    request = _request()
    responses.add(responses.POST, URL + "/v1/pki/roles/" + role, status=204)
    responses.add(responses.POST, URL + "/v1/pki/sign/" + role, json=_sign_response(ca, _leaf(ca, request.csr.public_key(), "alice", "Acme")))
    signer = VaultPKISigner(client(), "default", "pki")
    signer.sign(request)
    responses.replace(responses.POST, URL + "/v1/pki/sign/" + role, json={"errors": ["unknown role: " + role]}, status=400)
    responses.add(responses.POST, URL + "/v1/pki/sign/" + role, json=_sign_response(ca, _leaf(ca, request.csr.public_key(), "alice", "Acme")))
    signer.sign(request)
    paths = [c.request.url.split("/v1/")[1] for c in responses.calls]
    assert paths == ["pki/roles/" + role, "pki/sign/" + role, "pki/sign/" + role, "pki/roles/" + role, "pki/sign/" + role]


@responses.activate
def test_revoke_sends_the_colon_serial():
    responses.add(responses.POST, URL + "/v1/pki/revoke", json={"data": {"revocation_time": 1}})
    cert = CertificateRecord(id="cert-1", frontdoor_id="default", token_id="t", name="n", serial_number="abcdef1",
                             certificate_pem="", ca_chain=[], subject=Subject("a"), not_before=utcnow(),
                             not_after=utcnow(), created_at=utcnow(), public_key_sha256="x")
    VaultPKISigner(client(), "default", "pki").revoke(cert)
    assert body(responses.calls[0]) == {"serial_number": "0a:bc:de:f1"}
    assert vault_serial("0a") == "0a" and vault_serial("100") == "01:00"


@responses.activate
def test_crl_is_the_mounts_der():
    responses.add(responses.GET, URL + "/v1/pki/crl", body=b"\x30\x82\x01\x00der", content_type="application/pkix-crl")
    assert VaultPKISigner(client(), "default", "pki").crl([]) == b"\x30\x82\x01\x00der"


@responses.activate
def test_certificate_copy_that_failed_after_commit_is_written_later():
    record = _token()
    t_path = URL + "/v1/secret/data/fd/t/" + record.secret_hash
    responses.add(responses.POST, re.compile(URL + r"/v1/secret/data/fd/[il]/.*"), json={"data": {"version": 1}})
    responses.add(responses.POST, t_path, json={"data": {"version": 1}})
    store = VaultKVStore(client(), "secret", "fd")
    store.create_token(record)
    now = utcnow()
    cert = CertificateRecord(id="cert-00000000-0000-4000-8000-000000000002", frontdoor_id="default",
                             token_id=record.id, name="n", serial_number="ab", certificate_pem="PEM", ca_chain=[],
                             subject=Subject("cn"), not_before=now, not_after=now, created_at=now,
                             public_key_sha256="k")
    done = dataclasses.replace(record, state="redeemed", certificate_id=cert.id, version=2)
    responses.add(responses.POST, t_path, json={"data": {"version": 2}})
    copy = re.compile(URL + r"/v1/secret/data/fd/c/default/.*")
    responses.add(responses.POST, copy, json={"errors": ["Vault is sealed"]}, status=503)
    assert store.record_redemption(done, 1, cert) is True  # committed by the token CAS
    assert "certificate" in body(responses.calls[-2])["data"]  # the token record embeds it
    responses.replace(responses.POST, copy, json={"data": {"version": 1}})
    responses.add("LIST", URL + "/v1/secret/metadata/fd/c/default", json={"data": {"keys": []}})
    store.list_certificates("default")
    writes = [c for c in responses.calls if c.request.method == "POST" and "/fd/c/default/" in c.request.url]
    assert len(writes) == 2 and writes[-1].response.status_code == 200
    assert body(writes[-1])["options"] == {"cas": 0} and body(writes[-1])["data"]["id"] == cert.id


@pytest.mark.parametrize("landed", [True, False])
@responses.activate
def test_record_write_with_lost_answer_is_checked_by_reading(landed):
    """The record CAS reached Vault but its answer was lost: success only if the record is ours."""
    from frontdoor_pki.stores.vault_kv import cert_to_dict, token_to_dict

    record = _token()
    t_path = URL + "/v1/secret/data/fd/t/" + record.secret_hash
    responses.add(responses.POST, re.compile(URL + r"/v1/secret/data/fd/[ilc]/.*"), json={"data": {"version": 1}})
    responses.add(responses.POST, t_path, json={"data": {"version": 1}})
    store = VaultKVStore(client(), "secret", "fd")
    store.create_token(record)
    now = utcnow()
    cert = CertificateRecord(id="cert-00000000-0000-4000-8000-000000000003", frontdoor_id="default",
                             token_id=record.id, name="n", serial_number="ab", certificate_pem="PEM", ca_chain=[],
                             subject=Subject("cn"), not_before=now, not_after=now, created_at=now,
                             public_key_sha256="k")
    done = dataclasses.replace(record, state="redeemed", certificate_id=cert.id if landed else "cert-other", version=2)
    responses.add(responses.POST, t_path, body=requests.ConnectionError("reset by peer"))
    stored = dict(token_to_dict(done), base=0, certificate=cert_to_dict(cert))
    responses.add(responses.GET, t_path, json={"data": {"data": stored, "metadata": {"version": 2}}})
    if landed:
        assert store.record_redemption(done, 1, cert) is True
    else:
        with pytest.raises(StoreUnavailable):
            store.record_redemption(dataclasses.replace(done, certificate_id=cert.id), 1, cert)


def _dropped_connection():
    import http.client

    import urllib3

    return requests.ConnectionError(urllib3.exceptions.ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection without response")))


@responses.activate
def test_a_read_on_a_connection_the_server_closed_goes_again_once():
    responses.add(responses.GET, KV_READ, body=_dropped_connection())
    responses.add(responses.GET, KV_READ, json={"errors": []}, status=404)
    assert VaultKVStore(client(), "secret", "frontdoor").find_token_by_hash("a" * 64) is None
    assert len(responses.calls) == 2


@responses.activate
def test_a_write_on_a_connection_the_server_closed_is_never_resent():
    responses.add(responses.POST, re.compile(URL + r"/v1/secret/data/fd/.*"), body=_dropped_connection())
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        VaultKVStore(client(), "secret", "fd").create_token(_token())
    assert len(responses.calls) == 1


def test_role_template_is_validated_and_path_safe():
    with pytest.raises(FrontdoorError, match="roleTemplate"):
        VaultPKISigner(client(), "default", "pki", manage_roles=False, role_template="x-{org}")
    signer = VaultPKISigner(client(), "default", "pki", manage_roles=False, role_template="p-{organization}-{organizationalUnit}")
    assert signer.role_for("Example Corp/EU", "R&D") == "p-Example-Corp-EU-R-D"
