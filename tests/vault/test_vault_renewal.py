"""Renewal on OpenBao (KV v2 store, PKI signer) beyond the contract suite: what the KV layout adds (used JWT ids
swept once expired, the serial lookup, a revocation racing a renewal), and a renewal over HTTP with the client
command against a gateway on OpenBao with the least-privilege policy."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess

import pytest
from frontdoor_pki import renewal_client
from frontdoor_pki.model import utcnow
from support.crypto import load_cert, make_csr, shared_key
from support.gateway import GATEWAY_BIN, run_gateway

pytestmark = pytest.mark.vault


def issue(service, slot=50):
    key = shared_key("p256", slot)
    _record, secret = service.create_token("default", name="vault-renew", common_name="vr.example.org",
                                           subject_alt_names={"dns": ["vr.example.org"]})
    return service.redeem("default", secret, make_csr(key, cn="vr.example.org")).certificate, key


def test_used_jtis_are_kept_then_swept_once_expired(bao, make_vault_service):
    service, _data = make_vault_service(bao)
    store = service.store
    now = utcnow()
    assert store.use_renewal_jti("c" * 64, now + _dt.timedelta(seconds=5), now) is True
    assert store.use_renewal_jti("c" * 64, now + _dt.timedelta(seconds=5), now) is False
    assert store._read(store._p("j", "c" * 64)) is not None
    later = now + _dt.timedelta(seconds=6)
    store._jti_swept = None  # the sweep runs at most every 10 minutes; this one is due
    assert store.use_renewal_jti("d" * 64, later + _dt.timedelta(seconds=5), later) is True
    assert store._read(store._p("j", "c" * 64)) is None  # expired: gone, all versions
    assert store._read(store._p("j", "d" * 64)) is not None


def test_serial_lookup_with_and_without_the_not_before_hint(bao, make_vault_service):
    service, _data = make_vault_service(bao)
    first, _key = issue(service)
    second, _key2 = issue(service, slot=51)
    other = make_vault_service(bao, data=_data)[0].store  # a second gateway: nothing cached
    cert = load_cert(second.certificate_pem)
    assert other.find_certificate_by_serial("default", second.serial_number, cert.not_valid_before_utc).id == second.id
    far = cert.not_valid_before_utc - _dt.timedelta(days=3)
    assert other.find_certificate_by_serial("default", first.serial_number, far).id == first.id
    assert other.find_certificate_by_serial("default", first.serial_number).id == first.id
    assert other.find_certificate_by_serial("default", "1234") is None


def test_a_revocation_during_a_renewal_wins(bao, make_vault_service):
    """The revocation rewrites the certificate record (check-and-set) and drops the renewal claim: the renewal's
    record step then fails, and the new certificate is discarded (revoked at the signer)."""
    service, _data = make_vault_service(bao)
    current, key = issue(service, slot=52)
    store = service.store
    now = utcnow()
    assert store.claim_renewal("default", current.id, "claim-1", now + _dt.timedelta(seconds=30), now) is True
    assert store.claim_renewal("default", current.id, "claim-2", now + _dt.timedelta(seconds=30), now) is False
    service.revoke_certificate("default", current.id, actor="test")
    renewed, _key = issue(service, slot=53)  # any certificate record will do as the would-be renewal
    assert store.record_renewal("default", current.id, "claim-1", renewed) is False
    assert service.get_certificate("default", current.id).renewed_by is None


def test_cli_renewal_against_a_gateway_on_openbao(bao, tmp_path):
    data = bao.vault_config(state_dir=str(tmp_path / "gw"))
    with run_gateway(str(tmp_path / "gw"), config=data) as gw:
        created = gw.create_token(name="vault-cli", commonName="vc.example.org",
                                  subjectAltNames={"uri": ["spiffe://example.org/ns/prod/sa/vc"]})
        assert created.status_code == 201, created.text
        key = shared_key("p256", 54)
        answer = gw.redeem(created.json()["token"], make_csr(key, cn="x")).json()
        cert_path, key_path = tmp_path / "vc.crt", tmp_path / "vc.key"
        cert_path.write_text(answer["certificate"])
        key_path.write_bytes(renewal_client.key_pem(key))
        os.chmod(key_path, 0o600)
        done = subprocess.run([GATEWAY_BIN, "renew", "--url", gw.url, "--cert", str(cert_path), "--key", str(key_path),
                               "--new-key"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["previousCertificateId"] == answer["id"] and summary["keyRotated"] is True
        renewed = gw.request("GET", "/frontdoor/default/client-certificates/" + summary["id"]).json()
        assert renewed["subjectAltNames"] == {"uri": ["spiffe://example.org/ns/prod/sa/vc"]}
        assert renewed["commonName"] == "vc.example.org"
        new_cert = load_cert(cert_path.read_text())
        assert "%x" % new_cert.serial_number == renewed["serialNumber"] != answer["serialNumber"]
        assert gw.request("GET", "/frontdoor/default/client-certificates/" + answer["id"]).json()["renewedBy"] == \
            summary["id"]
