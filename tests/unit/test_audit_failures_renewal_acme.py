"""The audit rule (docs/operations.md, "Audit log") on the renewal and ACME faces: a certificate is not handed out
without its line, written before the record; if it cannot be written the signed certificate is discarded, the claim
released, 503 audit_unavailable, and the certificate (or token) stays renewable (redeemable). Refusals and
deactivations go ahead with their line in the error log. The failure is real: the audit path on /dev/full."""

from __future__ import annotations

import json
import logging

import pytest
from frontdoor_pki import renewal_client
from frontdoor_pki.acme.problems import AcmeProblem, from_engine
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.acme_inprocess import Client, new_token
from support.audit_faults import disk_full, lines
from support.crypto import load_cert, make_csr, shared_key


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


def jwt_for(record, key):
    return "Bearer " + renewal_client.make_renewal_token([load_cert(record.certificate_pem)], key, "default")


def discarded_serials(caplog) -> list:
    return [json.loads(r.getMessage().split(": ", 2)[2])["serial"] for r in caplog.records
            if r.getMessage().startswith("audit line not written") and "certificate.discarded" in r.getMessage()]


def test_a_second_full_disk_is_noticed_like_the_first(tmp_path):
    """After a failed line the handler reopens the path by name; it must still notice the next swap of the path
    (here /dev/full again) instead of writing on into the file renamed away."""
    from frontdoor_pki.audit import AuditLog

    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path)
    log.emit("before", episode=0)
    log.emit("before", episode=0)  # the handler now knows the file's identity
    for episode in (1, 2):
        with disk_full(path):
            with pytest.raises(OSError):
                log.emit("refused", episode=episode)
        log.emit("after", episode=episode)
    log.close()
    assert [(e["event"], e["episode"]) for e in lines(path)] == [("after", 1), ("after", 2)]  # .before: the last renamed file


def test_renewal_fails_closed_and_the_certificate_stays_renewable(service, caplog):
    key = shared_key("p256", 40)
    _record, secret = service.create_token("default", name="ren", common_name="ren.example")
    current = service.redeem("default", secret, make_csr(key, cn="ren.example")).certificate
    path = service.audit.path
    with disk_full(path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(FrontdoorError) as info:
            service.renew("default", jwt_for(current, key), make_csr(key, cn="x"), source="192.0.2.8")
    assert info.value.code == "audit_unavailable" and info.value.status == 503 and info.value.retry_after
    # nothing recorded, the old record not marked renewed nor left claimed, the signed one discarded (revoked)
    assert service.list_certificates("default").total == 1
    assert service.get_certificate("default", current.id).renewed_by is None
    serials = discarded_serials(caplog)
    assert len(serials) == 1 and serials[0] != current.serial_number
    assert "certificate.renewed could not be written" in caplog.text
    # the log writable again: a new JWT renews at once (no renewal_in_progress from a stranded claim)
    renewed = service.renew("default", jwt_for(current, key), make_csr(key, cn="x"), source="192.0.2.8")
    assert not renewed.replayed and renewed.certificate.previous_certificate_id == current.id
    written = [e for e in lines(path) if e["event"] == "certificate.renewed"]
    assert [e["serial"] for e in written] == [renewed.certificate.serial_number]
    assert renewed.certificate.serial_number != serials[0]


def test_renewal_replay_fails_closed_and_a_refusal_keeps_its_code(service, caplog):
    key = shared_key("p256", 41)
    _record, secret = service.create_token("default", name="rep", common_name="rep.example")
    current = service.redeem("default", secret, make_csr(key, cn="rep.example")).certificate
    renewed = service.renew("default", jwt_for(current, key), make_csr(key, cn="x")).certificate
    with disk_full(service.audit.path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(FrontdoorError) as replay:  # the same key again: the renewed certificate, handed out
            service.renew("default", jwt_for(current, key), make_csr(key, cn="x"))
        with pytest.raises(FrontdoorError) as refused:  # another key: a refusal, its true answer
            service.renew("default", jwt_for(current, key), make_csr(shared_key("p256", 42), cn="x"))
    assert replay.value.code == "audit_unavailable"
    assert refused.value.code == "certificate_already_renewed"
    assert "renewal.refused" in caplog.text
    again = service.renew("default", jwt_for(current, key), make_csr(key, cn="x"))
    assert again.replayed and again.certificate.id == renewed.id


def test_acme_finalize_fails_closed_and_the_order_and_token_stay_usable(service, caplog):
    token = new_token(service, "fin.example")
    client = Client(service)
    client.register(token)
    order = client.order("fin.example")
    csr = make_csr(shared_key("p256", 43), cn="fin.example", sans=["fin.example"])
    with disk_full(service.audit.path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(AcmeProblem) as info:
            client.finalize(order, csr)
    problem = info.value  # what the ACME face answers
    assert (problem.kind, problem.status, bool(problem.retry_after)) == ("serverInternal", 503, True)
    assert "audit_unavailable" in problem.detail
    assert service.get_token("default", token["id"]).status() == "active"
    assert service.list_certificates("default").total == 0
    assert len(discarded_serials(caplog)) == 1
    assert client.post("order", None, arg=order.location.rsplit("/", 1)[1]).body["status"] == "ready"
    done = client.finalize(order, csr)
    assert done.body["status"] == "valid"
    redeemed = [e for e in lines(service.audit.path) if e["event"] == "token.redeemed"]
    assert len(redeemed) == 1 and redeemed[0]["actor"].startswith("acme:")
    # an ACME renewal (a second order of the bound account) follows the same rule
    renewal = client.order("fin.example")
    with disk_full(service.audit.path):
        with pytest.raises(AcmeProblem) as again:
            client.finalize(renewal, csr)
    assert again.value.status == 503 and service.list_certificates("default").total == 1
    assert client.finalize(renewal, csr).body["status"] == "valid"
    assert [e["event"] for e in lines(service.audit.path)].count("token.renewed") == 1


def test_acme_account_binding_fails_closed_and_a_retry_binds(service, caplog):
    token = new_token(service, "bind.example")
    client = Client(service)
    with disk_full(service.audit.path):
        with pytest.raises(FrontdoorError) as info:
            client.register(token)
    assert info.value.code == "audit_unavailable"  # the gateway answers it as from_engine() maps it:
    assert (from_engine(info.value).kind, from_engine(info.value).status) == ("serverInternal", 503)
    assert service.store.acme_list("account", "default") == []  # no account exists without its line
    assert client.register(token).status == 201
    bound = [e for e in lines(service.audit.path) if e["event"] == "acme.account.bound"]
    assert len(bound) == 1 and bound[0]["tokenId"] == token["id"]
    # a refusal (another key presenting the same EAB) goes ahead, its line in the error log
    with disk_full(service.audit.path), caplog.at_level(logging.ERROR, logger="frontdoor.audit"):
        with pytest.raises(AcmeProblem) as refused:
            Client(service).register(token)
    assert refused.value.kind == "unauthorized" and "acme.account.refused" in caplog.text
