"""Vault specifics at the service level, against a real OpenBao (the shared rules are in tests/contract)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.signers.vault_pki import role_name
from support.crypto import load_cert, make_csr, shared_key
from support.openbao import ROOT_CA_CN

pytestmark = pytest.mark.vault


def _redeem(service, secret, csr):
    return service.redeem("default", secret, csr)


def test_issuer_is_the_vault_ca(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="issuer", common_name="issuer-test")
    result = _redeem(service, secret, make_csr(shared_key("p256"), cn="whatever"))
    cert = load_cert(result.certificate.certificate_pem)
    root = load_cert(result.certificate.ca_chain[-1])
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_CA_CN
    assert cert.issuer == root.subject
    root.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    # the served chain is the same CA, fetched from the mount
    assert load_cert(service.ca_chain("default")[-1]) == root
    # and Vault has the certificate under the serial we recorded
    serial = ":".join("%02x" % b for b in cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big"))
    stored = bao.root("GET", "pki/cert/%s" % serial).json()["data"]["certificate"]
    assert load_cert(stored) == cert


def test_subject_forced_and_no_sans_leak(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="forced", common_name="alice", organization="Acme",
                                     organizational_unit="Ops")
    csr = make_csr(shared_key("p256", 1), cn="mallory", o="Evil Corp", ou="Root",
                   sans=["evil.example", "10.0.0.1"],
                   extensions=[x509.BasicConstraints(ca=True, path_length=None)])
    cert = load_cert(_redeem(service, secret, csr).certificate.certificate_pem)
    names = {(a.oid, a.value) for a in cert.subject}
    assert names == {(NameOID.COMMON_NAME, "alice"), (NameOID.ORGANIZATION_NAME, "Acme"),
                     (NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops")}
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_open_fields_come_from_the_csr(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="open", organization="Locked Org")
    cert = load_cert(_redeem(service, secret, make_csr(shared_key("p256", 2), cn="bob", o="Ignored", ou="Team B"))
                     .certificate.certificate_pem)
    names = {(a.oid, a.value) for a in cert.subject}
    assert names == {(NameOID.COMMON_NAME, "bob"), (NameOID.ORGANIZATION_NAME, "Locked Org"),
                     (NameOID.ORGANIZATIONAL_UNIT_NAME, "Team B")}


def _roles(bao):
    response = bao.session.request("LIST", bao.url + "/v1/pki/roles", headers={"X-Vault-Token": bao.root_token})
    return set(response.json()["data"]["keys"]) if response.status_code == 200 else set()


def test_one_role_per_o_ou_created_once_and_reused(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    org = "RoleOrg-%s" % id(service)
    signer = service.signers["default"]
    client = service.store.client
    expected_a = role_name(org, "A", signer.role_max_ttl, False)
    expected_b = role_name(org, "B", signer.role_max_ttl, False)
    before = _roles(bao)
    assert expected_a not in before and expected_b not in before

    _, s1 = service.create_token("default", name="r1", common_name="one", organization=org, organizational_unit="A")
    _redeem(service, s1, make_csr(shared_key("p256", 3), cn="x"))
    assert _roles(bao) - before == {expected_a}
    role = bao.root("GET", "pki/roles/%s" % expected_a).json()["data"]
    assert role["organization"] == [org] and role["ou"] == ["A"]
    assert role["client_flag"] is True and role["server_flag"] is False and role["key_type"] == "any"

    # same (O, OU): no role write, only the redemption's own requests
    _, s2 = service.create_token("default", name="r2", common_name="two", organization=org, organizational_unit="A")
    start = client.requests
    _redeem(service, s2, make_csr(shared_key("p256", 4), cn="x"))
    assert client.requests - start == 5
    assert _roles(bao) - before == {expected_a}

    _, s3 = service.create_token("default", name="r3", common_name="three", organization=org, organizational_unit="B")
    _redeem(service, s3, make_csr(shared_key("p256", 5), cn="x"))
    assert _roles(bao) - before == {expected_a, expected_b}


def test_round_trips_per_redemption(bao, make_vault_service, capsys):
    """find-by-hash read, claim CAS, sign, record CAS, certificate copy: 5 requests, nothing else."""
    service, _ = make_vault_service(bao)
    client = service.store.client
    _, warm = service.create_token("default", name="warm", common_name="warm")
    _redeem(service, warm, make_csr(shared_key("p256", 6), cn="x"))  # role + CA chain fetched once
    counts = []
    for i in range(5):
        _, secret = service.create_token("default", name="rt%d" % i, common_name="rt%d" % i)
        start = client.requests
        _redeem(service, secret, make_csr(shared_key("p256", 7), cn="x"))
        counts.append(client.requests - start)
    # replay (same key again) reads the token and the certificate only
    start = client.requests
    assert _redeem(service, secret, make_csr(shared_key("p256", 7), cn="x")).replayed
    replay = client.requests - start
    with capsys.disabled():
        print("\nVault requests per redemption: %s; per replay: %d" % (counts, replay))
    assert counts == [5] * 5
    assert replay == 2


def _raw_forms(secret: str):
    body = secret[4:]
    raw = base64.urlsafe_b64decode(body[:27] + "=")
    return [secret, body, body[:27], raw.hex(), base64.b64encode(raw).decode(), base64.b64encode(secret.encode()).decode()]


def test_nothing_secret_in_kv(bao, make_vault_service):
    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    secrets_seen = []
    record, secret = service.create_token("default", name="kept", common_name="k")
    secrets_seen.append(secret)
    _, redeemed = service.create_token("default", name="used", common_name="u")
    secrets_seen.append(redeemed)
    _redeem(service, redeemed, make_csr(shared_key("p256", 8), cn="x"))
    _, refreshed = service.refresh_token("default", record.id)
    secrets_seen.append(refreshed)
    dump = json.dumps(bao.kv_dump(path=prefix + "/"))
    assert record.id in dump and "-----BEGIN CERTIFICATE-----" in dump  # the scan does see the data
    from frontdoor_pki.tokens import hash_secret

    assert hash_secret(refreshed) in dump
    for secret in secrets_seen:
        for form in _raw_forms(secret):
            assert form not in dump, "a form of a token secret is stored in KV"


def test_refresh_moves_the_record_and_old_secret_dies(bao, make_vault_service):
    from frontdoor_pki.tokens import hash_secret

    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    record, old = service.create_token("default", name="mv", common_name="mv")
    _, new = service.refresh_token("default", record.id, ttl="2h")
    keys = bao.kv_dump(path=prefix + "/t/")
    assert prefix + "/t/" + hash_secret(old) not in keys
    assert prefix + "/t/" + hash_secret(new) in keys
    with pytest.raises(FrontdoorError) as info:
        _redeem(service, old, make_csr(shared_key("p256", 9), cn="x"))
    assert info.value.code == "token_not_found"
    # the id index follows; PATCH after refresh works with check-and-set on the new key
    service.update_token("default", record.id, {"name": "renamed"})
    assert service.get_token("default", record.id).name == "renamed"
    assert [t.name for t in service.list_tokens("default").items] == ["renamed"]
    assert _redeem(service, new, make_csr(shared_key("p256", 9), cn="x")).certificate.name == "renamed"


def test_interrupted_refresh_is_completed_by_a_reader(bao, make_vault_service):
    """A gateway that died after writing the tombstone: the next reader finishes the move."""
    from frontdoor_pki.stores.vault_kv import token_to_dict
    from frontdoor_pki.tokens import hash_secret, new_secret

    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    record, old = service.create_token("default", name="half", common_name="half")
    secret = new_secret()
    moved = token_to_dict(record)
    moved.update(secretHash=hash_secret(secret), version=record.version + 1)
    bao.root("POST", "secret/data/%s/t/%s" % (prefix, hash_secret(old)),
             json={"data": {"movedTo": hash_secret(secret), "record": moved}})
    other, _ = make_vault_service(bao, data=data)  # another gateway, nothing cached
    assert other.get_token("default", record.id).secret_hash == hash_secret(secret)
    assert other.redeem("default", secret, make_csr(shared_key("p256", 10), cn="x")).certificate.token_id == record.id


def test_lost_certificate_copy_is_recreated(bao, make_vault_service):
    """Crash between the token CAS (commit) and the certificate copy: the copy comes back from the record."""
    import time

    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    _, secret = service.create_token("default", name="copy", common_name="copy", ttl="3s")
    csr = make_csr(shared_key("p256", 11), cn="x")
    first = _redeem(service, secret, csr).certificate
    for key in bao.kv_dump(path=prefix + "/c/"):
        bao.root("DELETE", "secret/metadata/%s" % key)
    other, _ = make_vault_service(bao, data=data)
    assert other.list_certificates("default").total == 0
    replay = other.redeem("default", secret, csr)
    assert replay.replayed and replay.certificate.id == first.id
    assert other.list_certificates("default").total == 1
    # and a purge of redeemed tokens never drops a certificate whose copy is missing
    for key in bao.kv_dump(path=prefix + "/c/"):
        bao.root("DELETE", "secret/metadata/%s" % key)
    third, _ = make_vault_service(bao, data=data)
    assert third.cleanup("default", statuses=["redeemed"]) == []  # not read while it is unexpired
    time.sleep(max(0.0, (first.created_at.timestamp() + 3.1) - time.time()))
    assert third.cleanup("default", statuses=["redeemed"]) == [first.token_id]
    assert [c.id for c in third.list_certificates("default").items] == [first.id]


def test_cleanup_really_deletes(bao, make_vault_service):
    import time

    service, data = make_vault_service(bao)
    prefix = data["vault"]["kvPrefix"]
    gone, _ = service.create_token("default", name="short", ttl="1s")
    kept, _ = service.create_token("default", name="long")
    time.sleep(1.2)
    assert service.cleanup("default") == [gone.id]
    dump = bao.kv_dump(path=prefix + "/")
    assert not [k for k in dump if gone.id in k or gone.secret_hash in k]
    assert [k for k in dump if kept.id in k]
    assert all(gone.id not in json.dumps(v) for v in dump.values())


def test_listing_reads_only_the_page(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    client = service.store.client
    for i in range(120):
        service.create_token("default", name="bulk-%03d" % i, ttl="1s" if i % 3 == 0 else "1h")
    import time

    time.sleep(1.1)
    start = client.requests
    page = service.list_tokens("default", status="active", page=2, size=10, sort="name,desc")
    used = client.requests - start
    assert page.total == 80
    assert [t.name for t in page.items] == ["bulk-%03d" % i for i in sorted(
        (i for i in range(120) if i % 3), reverse=True)][20:30]
    assert used <= 2 + 10  # one LIST of entries, one of certificates, then the page's records
    start = client.requests
    assert service.list_tokens("default", status="expired", size=1).total == 40
    assert client.requests - start <= 3


def test_policy_is_least_privilege(bao, make_vault_service):
    """The printed policy lets the gateway work (every test here) and nothing more."""
    _, data = make_vault_service(bao)
    token = data["vault"]["token"]
    prefix = data["vault"]["kvPrefix"]

    def status(method, path, **kwargs):
        return bao.session.request(method, "%s/v1/%s" % (bao.url, path), headers={"X-Vault-Token": token},
                                   timeout=10, **kwargs).status_code

    assert status("GET", "secret/data/%s/ping" % prefix) == 404  # allowed, absent
    assert status("GET", "secret/data/other/x") == 403
    assert status("POST", "secret/data/other/x", json={"data": {"a": 1}}) == 403
    assert status("DELETE", "secret/data/%s/x" % prefix) == 403  # no soft delete
    assert status("POST", "pki/roles/not-ours", json={"allow_any_name": True}) == 403
    assert status("POST", "pki/issue/frontdoor-x", json={"common_name": "x"}) == 403
    assert status("POST", "pki/sign-verbatim", json={"csr": "x"}) == 403
    assert status("GET", "sys/mounts") == 403
    assert status("LIST", "pki/certs") == 403


def test_cleanup_of_every_frontdoor_and_delete(bao, make_vault_service):
    import time

    frontdoors = [{"id": "default", "signer": {"type": "vault"}}, {"id": "second", "signer": {"type": "vault"}}]
    service, data = make_vault_service(bao, frontdoors=frontdoors)
    prefix = data["vault"]["kvPrefix"]
    a, _ = service.create_token("default", name="a", ttl="1s")
    b, _ = service.create_token("second", name="b", ttl="1s")
    c, _ = service.create_token("second", name="c")
    time.sleep(1.1)
    assert sorted(service.cleanup(None, dry_run=True)) == sorted([a.id, b.id])
    assert service.list_tokens("second").total == 2  # dry run kept them
    assert sorted(service.cleanup(None)) == sorted([a.id, b.id])
    service.delete_token("second", c.id)
    assert service.list_tokens("default").total == 0 and service.list_tokens("second").total == 0
    assert [k for k in bao.kv_dump(path=prefix + "/") if "/t/" in k or "/i/" in k or "/l/" in k] == []


def test_no_store_roles_still_revoke_and_publish_the_crl(bao, make_vault_service):
    """noStore: true saves Vault a storage write per certificate; revocation then sends the PEM."""
    frontdoors = [{"id": "default", "signer": {"type": "vault", "noStore": True}}]
    service, _ = make_vault_service(bao, frontdoors=frontdoors)
    before = bao.certificate_count()
    _, secret = service.create_token("default", name="nostore", common_name="nostore")
    issued = service.redeem("default", secret, make_csr(shared_key("p256", 12), cn="x")).certificate
    assert bao.certificate_count() == before
    service.revoke_certificate("default", issued.id)
    crl = x509.load_der_x509_crl(service.crl("default"))
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial_number, 16)) is not None


def test_approle_login_and_relogin_after_token_expiry(bao, make_vault_service):
    import time

    data = bao.vault_config()
    policy = bao.tokens[data["vault"]["token"]][0]
    if "approle/" not in bao.root("GET", "sys/auth").json()["data"]:
        bao.root("POST", "sys/auth/approle", json={"type": "approle"})
    role = "gw-%s" % policy
    bao.root("POST", "auth/approle/role/%s" % role,
             json={"token_policies": [policy], "token_ttl": "2s", "token_max_ttl": "2s"})
    role_id = bao.root("GET", "auth/approle/role/%s/role-id" % role).json()["data"]["role_id"]
    secret_id = bao.root("POST", "auth/approle/role/%s/secret-id" % role).json()["data"]["secret_id"]
    vault = dict(data["vault"], authMethod="approle", roleId=role_id, secretId=secret_id)
    vault.pop("token")
    service, _ = make_vault_service(bao, data=dict(data, vault=vault))
    _, first = service.create_token("default", name="approle-1", common_name="a1")
    _, second = service.create_token("default", name="approle-2", common_name="a2")
    assert service.redeem("default", first, make_csr(shared_key("p256", 13), cn="x"))
    time.sleep(2.5)  # the AppRole token has expired: the next call gets 403, logs in again, succeeds
    assert service.redeem("default", second, make_csr(shared_key("p256", 14), cn="x"))


def test_tls_with_ca_bundle_and_without(tmp_path, make_vault_service):
    from support.openbao import OpenBao

    server = OpenBao.start(tls=True)
    try:
        service, data = make_vault_service(server, caCert=server.ca_cert)
        _, secret = service.create_token("default", name="tls", common_name="tls")
        assert service.redeem("default", secret, make_csr(shared_key("p256", 15), cn="x"))
        untrusted_vault = {k: v for k, v in data["vault"].items() if k != "caCert"}
        untrusted, _ = make_vault_service(server, data=dict(data, vault=untrusted_vault))
        with pytest.raises(FrontdoorError) as info:
            untrusted.create_token("default", name="no-ca")
        assert info.value.code == "store_unavailable" and "VAULT_CACERT" in info.value.message
        unverified, _ = make_vault_service(server, data=dict(data, vault=dict(untrusted_vault, verify=False)))
        assert unverified.create_token("default", name="lab-only")[0].name == "lab-only"  # verify: false (lab only)
        missing, _ = make_vault_service(server, data=dict(data, vault=dict(data["vault"], caCert=server.ca_cert + ".gone")))
        with pytest.raises(FrontdoorError) as info:
            missing.create_token("default", name="missing-ca")
        assert info.value.code == "store_unavailable" and "VAULT_CACERT" in info.value.message
    finally:
        server.stop()


def test_printed_policy_grants_exactly_these_paths():
    import re

    from frontdoor_pki.config import load_config
    from frontdoor_pki.vault.policy import render_policy

    config = load_config(state_dir="/nonexistent", env={"FRONTDOOR_BACKEND": "vault"}, data={})
    grants = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', render_policy(config)))
    assert {path: sorted(c.strip().strip('"') for c in caps.split(",")) for path, caps in grants.items()} == {
        "secret/data/frontdoor/*": ["create", "read", "update"],
        "secret/metadata/frontdoor/*": ["delete", "list"],
        "pki/sign/frontdoor-*": ["update"],
        "pki/roles/frontdoor-*": ["update"],
        "pki/revoke": ["update"],
    }


def test_kv_mount_with_cas_required(bao, make_vault_service):
    """A hardened KV mount (cas_required=true) refuses unconditional writes; the store copes."""
    mount = "kvcas"
    if mount + "/" not in bao.root("GET", "sys/mounts").json()["data"]:
        bao.root("POST", "sys/mounts/" + mount, json={"type": "kv", "options": {"version": "2"}})
        bao.root("POST", mount + "/config", json={"cas_required": True})
    service, _ = make_vault_service(bao, kvMount=mount)
    record, secret = service.create_token("default", name="cas", common_name="cas")
    record, secret = service.refresh_token("default", record.id)
    service.update_token("default", record.id, {"name": "cas-renamed"})
    result = service.redeem("default", secret, make_csr(shared_key("p256", 16), cn="x"))
    service.revoke_certificate("default", result.certificate.id)
    assert service.list_tokens("default", status="redeemed").total == 1
    assert [s for s, _ in service.store.revoked_serials("default")] == [result.certificate.serial_number]


def test_namespace(bao, make_vault_service):
    """vault.namespace: everything (KV, PKI, policy, token) lives in the namespace."""
    bao.setup_namespace("team-a")
    service, data = make_vault_service(bao, namespace="team-a")
    prefix = data["vault"]["kvPrefix"]
    _, secret = service.create_token("default", name="ns", common_name="ns")
    result = service.redeem("default", secret, make_csr(shared_key("p256", 17), cn="x"))
    assert "team-a" in load_cert(result.certificate.ca_chain[-1]).subject.rfc4514_string()
    assert bao.kv_dump(path=prefix + "/") == {}  # nothing in the root namespace's secret/
    inside = bao.root("LIST", "secret/metadata/%s/t" % prefix, namespace="team-a").json()["data"]["keys"]
    assert len(inside) == 1
