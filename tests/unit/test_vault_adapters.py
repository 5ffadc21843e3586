"""Unit tests of the Vault adapters' hvac call shapes and error mapping (HTTP mocked with `responses`).

Behaviour against a real server is in tests/vault and the contract suite; these pin what is
sent and how each failure is reported, including paths a real dev server cannot produce easily.
`responses` replaces requests' transport, so urllib3's retries are not exercised here: the
policy itself is checked below through urllib3's own ``Retry.increment``, and its effect against a
real OpenBao behind a faulty proxy in tests/vault/test_vault_connections.py.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re

import pytest
import requests
import responses
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable, StoreUnavailable
from frontdoor_pki.model import CertificateRecord, SignRequest, Subject, TokenRecord, utcnow
from frontdoor_pki.signers.vault_pki import VaultPKISigner, role_name, vault_serial
from frontdoor_pki.stores.vault_kv import VaultKVStore
from frontdoor_pki.vault.client import VaultClient, VaultSettings, retry_policy
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


def test_one_pooled_session_with_the_retry_policy():
    c = client()
    adapter = c.session.get_adapter(URL)
    assert adapter.poolmanager.connection_pool_kw["maxsize"] >= 16
    assert adapter.max_retries is not None and adapter.max_retries.connect == 2 and adapter.max_retries.read == 1
    assert c.hvac.adapter.session is c.session
    assert c.session.trust_env is False  # no per-request env/netrc lookups; REQUESTS_CA_BUNDLE cannot override


def _protocol_error():
    return urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError("reset by peer"))


def _connect_error():
    return urllib3.exceptions.NewConnectionError(None, "Connection refused")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_retry_policy_never_resends_a_write_that_may_have_arrived(method):
    """A CAS write or pki/sign that reached Vault and lost its answer must not go again."""
    for error in (_protocol_error(), urllib3.exceptions.ReadTimeoutError(None, URL, "read timed out")):
        with pytest.raises(type(error)):
            retry_policy().increment(method, URL, error=error)
    # a failed connect sent nothing: retried twice for any method, then given up
    retry = retry_policy().increment(method, URL, error=_connect_error()).increment(method, URL, error=_connect_error())
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        retry.increment(method, URL, error=_connect_error())


@pytest.mark.parametrize("method", ["GET", "LIST", "DELETE"])
def test_retry_policy_resends_a_read_once(method):
    retry = retry_policy().increment(method, URL, error=_protocol_error())
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        retry.increment(method, URL, error=_protocol_error())


def test_retry_policy_leaves_http_answers_and_tls_failures_to_the_caller():
    policy = retry_policy()
    assert not any(policy.is_retry("GET", status, has_retry_after=True) for status in (429, 500, 503))
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        policy.increment("GET", URL, error=urllib3.exceptions.SSLError("certificate verify failed"))


@responses.activate
def test_tls_settings_reach_every_request():
    responses.add(responses.GET, re.compile(URL + "/.*"), json={"errors": []}, status=404)
    for settings, expected in (({"caCert": "/etc/vault-ca.pem"}, "/etc/vault-ca.pem"), ({"verify": False}, False),
                               ({}, True)):
        VaultKVStore(client(**settings), "secret", "fd").find_token_by_hash("a" * 64)
        assert responses.calls[-1].request.req_kwargs["verify"] == expected
        assert responses.calls[-1].request.req_kwargs["timeout"] == 10.0


@responses.activate
def test_headers_carry_the_token_and_namespace():
    responses.add(responses.GET, re.compile(URL + "/.*"), json={"errors": []}, status=404)
    VaultKVStore(client(namespace="team-a"), "secret", "fd").find_token_by_hash("a" * 64)
    headers = responses.calls[0].request.headers
    assert (headers["X-Vault-Token"], headers["X-Vault-Namespace"], headers["X-Vault-Request"]) == (TOKEN, "team-a", "true")


@responses.activate
def test_line_break_in_the_token_never_reaches_the_wire():
    store = VaultKVStore(client(token="hvs.abc\r\nX-Evil: 1"), "secret", "fd")
    with pytest.raises(StoreUnavailable) as info:
        store.find_token_by_hash("a" * 64)
    assert "hvs.abc" not in info.value.message and not responses.calls


def test_missing_ca_file_is_a_tls_error_with_the_hint(tmp_path):
    """requests raises a bare OSError for a CA path that is not there: still a 503 with the hint, not a 500."""
    store = VaultKVStore(client(url="https://127.0.0.1:1", caCert=str(tmp_path / "missing.pem")), "secret", "fd")
    with pytest.raises(StoreUnavailable, match="VAULT_CACERT"):
        store.find_token_by_hash("a" * 64)


@responses.activate
def test_a_redirect_is_followed_with_the_token():
    """A standby that does not forward answers 307 with the active node's address."""
    active = "http://active.test:8200"
    responses.add(responses.GET, KV_READ, status=307, headers={"Location": active + "/v1/secret/data/frontdoor/t/" + "a" * 64})
    responses.add(responses.GET, re.compile(active + "/.*"), json={"errors": []}, status=404)
    assert VaultKVStore(client(), "secret", "frontdoor").find_token_by_hash("a" * 64) is None
    assert responses.calls[-1].request.url.startswith(active) and responses.calls[-1].request.headers["X-Vault-Token"] == TOKEN


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
    cert.certificate_pem = "PEM"  # a no_store role: Vault kept no copy, it is sent the certificate
    VaultPKISigner(client(), "default", "pki", no_store=True).revoke(cert)
    assert body(responses.calls[1]) == {"certificate": "PEM"}
    assert vault_serial("0a") == "0a" and vault_serial("100") == "01:00"


@responses.activate
def test_crl_is_the_mounts_own_in_der():
    key, ca_cert = _ca()
    now = _dt.datetime.now(_dt.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
           .next_update(now + _dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    responses.add(responses.GET, URL + "/v1/pki/crl/pem", body=crl.public_bytes(serialization.Encoding.PEM),
                  content_type="application/x-pem-file")
    assert VaultPKISigner(client(), "default", "pki").crl([]) == crl.public_bytes(serialization.Encoding.DER)


@responses.activate
def test_ca_chain_is_read_and_a_mount_without_issuer_is_clear():
    ca_pem = _ca()[1].public_bytes(serialization.Encoding.PEM)
    responses.add(responses.GET, URL + "/v1/pki/ca_chain", body=ca_pem, content_type="application/pkix-cert")
    assert VaultPKISigner(client(), "default", "pki").ca_chain() == [ca_pem.decode()]
    responses.add(responses.GET, URL + "/v1/empty/ca_chain", status=204)  # what Vault answers without an issuer
    with pytest.raises(SignerUnavailable, match="has no CA"):
        VaultPKISigner(client(), "default", "empty").ca_chain()
    responses.add(responses.GET, URL + "/v1/empty/crl/pem", status=204)
    with pytest.raises(SignerUnavailable, match="served no CRL"):
        VaultPKISigner(client(), "default", "empty").crl([])


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


def test_role_template_is_validated_and_path_safe():
    with pytest.raises(FrontdoorError, match="roleTemplate"):
        VaultPKISigner(client(), "default", "pki", manage_roles=False, role_template="x-{org}")
    signer = VaultPKISigner(client(), "default", "pki", manage_roles=False, role_template="p-{organization}-{organizationalUnit}")
    assert signer.role_for("Example Corp/EU", "R&D") == "p-Example-Corp-EU-R-D"
