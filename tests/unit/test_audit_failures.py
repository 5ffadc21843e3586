"""What the engine does when the audit log cannot be written (docs/operations.md, "Audit log").

The failure is a real one: the audit path becomes a symlink to /dev/full, so every write gets
ENOSPC from the kernel as on a full disk; removing the symlink is the disk having room again.
Actions that grant something (create, redeem, replay) do not happen without their line;
actions that take something away (revoke, delete) and refusals go ahead, their line going to the
``frontdoor.audit`` logger instead.
"""

from __future__ import annotations

import json
import logging

import pytest
from cryptography import x509
from frontdoor_pki.audit import AuditLog
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.audit_faults import disk_full, lines
from support.crypto import make_csr, make_key


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


@pytest.fixture
def audit_path(service) -> str:
    return service.audit.path


def test_a_failed_line_never_reaches_the_file_later_and_the_log_recovers(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path)
    log.emit("before")
    with disk_full(path):
        with pytest.raises(OSError) as info:
            log.emit("refused.action")
        assert info.value.errno == 28  # ENOSPC, from the kernel
    log.emit("after")  # the disk has room again: a new file, and no stuck stream
    log.close()
    assert [e["event"] for e in lines(path)] == ["before", "after"]


def test_create_fails_closed_and_leaves_no_token(service, audit_path, caplog):
    with disk_full(audit_path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(FrontdoorError) as info:
            service.create_token("default", name="unaudited", common_name="x.example", actor="alice")
    assert info.value.code == "audit_unavailable" and info.value.status == 503 and info.value.retry_after
    assert service.list_tokens("default").total == 0  # no token whose secret nobody saw
    assert "token.created" in caplog.text
    record, _secret = service.create_token("default", name="audited", actor="alice")
    assert [e["tokenId"] for e in lines(audit_path) if e["event"] == "token.created"] == [record.id]


def test_redeem_fails_closed_and_the_token_stays_redeemable(service, audit_path, caplog):
    record, secret = service.create_token("default", name="r", common_name="r.example")
    key = make_key("p256")
    with disk_full(audit_path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(key, cn="x"), source="192.0.2.7")
    assert info.value.code == "audit_unavailable"
    assert service.get_token("default", record.id).status() == "active"
    assert service.list_certificates("default").total == 0
    # the signed certificate was discarded, and that line went to the error log with its serial
    discarded = [r.getMessage() for r in caplog.records if "certificate.discarded" in r.getMessage()]
    assert len(discarded) == 1 and "audit log unavailable" in discarded[0]
    result = service.redeem("default", secret, make_csr(key, cn="x"), source="192.0.2.7")
    assert not result.replayed
    redeemed = [e for e in lines(audit_path) if e["event"] == "token.redeemed"]
    assert [e["serial"] for e in redeemed] == [result.certificate.serial_number]
    assert redeemed[0]["source"] == "192.0.2.7"


def test_replay_fails_closed_then_works(service, audit_path):
    _record, secret = service.create_token("default", name="p", common_name="p.example")
    key = make_key("p256")
    first = service.redeem("default", secret, make_csr(key, cn="x"))
    with disk_full(audit_path):
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(key, cn="x"))
    assert info.value.code == "audit_unavailable"
    again = service.redeem("default", secret, make_csr(key, cn="x"))
    assert again.replayed and again.certificate.id == first.certificate.id


def test_a_refusal_keeps_its_own_code(service, audit_path, caplog):
    _record, secret = service.create_token("default", name="u", common_name="u.example")
    service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
    with disk_full(audit_path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(make_key("p256"), cn="y"))
    assert info.value.code == "token_already_used"
    assert "redemption.refused" in caplog.text and secret[4:] not in caplog.text


def test_revoke_and_delete_go_ahead_and_report_their_line(service, audit_path, caplog):
    _record, secret = service.create_token("default", name="v", common_name="v.example")
    cert = service.redeem("default", secret, make_csr(make_key("p256"), cn="x")).certificate
    other, _ = service.create_token("default", name="d")
    with disk_full(audit_path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        revoked = service.revoke_certificate("default", cert.id, actor="alice")
        service.delete_token("default", other.id, actor="alice")
    assert revoked.revoked_at is not None
    crl = x509.load_der_x509_crl(service.crl("default"))
    assert crl.get_revoked_certificate_by_serial_number(int(cert.serial_number, 16)) is not None
    with pytest.raises(FrontdoorError):
        service.get_token("default", other.id)
    reported = [json.loads(r.getMessage().split(": ", 2)[2]) for r in caplog.records
                if r.getMessage().startswith("audit line not written")]
    assert [(e["event"], e.get("certificateId") or e.get("tokenId")) for e in reported] == [
        ("certificate.revoked", cert.id), ("token.deleted", other.id)]
