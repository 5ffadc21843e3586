"""Contract: the token rules (issue 2, sections 5 and 7) at the service level.

Expiry tests use lifetimes of one second and sleep just past them.
"""

from __future__ import annotations

import datetime as _dt
import re
import time

import pytest
from frontdoor_pki.model import isoformat, utcnow
from frontdoor_pki.tokens import hash_secret, new_secret
from support.crypto import make_csr, shared_key
from support.helpers import csr, error_of

SLACK = _dt.timedelta(seconds=5)


def wait_past(moment: _dt.datetime, extra: float = 0.05) -> None:
    """Sleep until just after ``moment`` (bounded: callers use 1-2 s lifetimes)."""
    delay = (moment - utcnow()).total_seconds() + extra
    assert delay < 5, "the test asked to wait %.1f s" % delay
    if delay > 0:
        time.sleep(delay)


# ------------------------------------------------------------------ create / read
def test_create_returns_secret_once_and_stores_only_its_hash(service, token):
    before = utcnow()
    record, secret = token(name="api-service-cert", common_name="api.example.com")
    assert re.fullmatch(r"token-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", record.id)
    assert re.fullmatch(r"crt_[A-Za-z0-9_-]{33}", secret)  # URL-safe; 160 random bits + checksum
    assert record.status() == "active"
    assert before + _dt.timedelta(hours=24) - SLACK <= record.expires_at <= utcnow() + _dt.timedelta(hours=24)
    stored = service.get_token("default", record.id)
    assert secret not in repr(stored)
    assert stored.secret_hash == hash_secret(secret)  # a hash, never the secret
    assert stored.name == "api-service-cert" and stored.subject.common_name == "api.example.com"
    assert stored.created_by == "contract-test"
    secrets = {token(name="n%d" % i)[1] for i in range(20)}
    assert len(secrets) == 20


def test_expiry_given_as_ttl_or_expires_at(service, token):
    now = utcnow()
    record, _ = token(ttl="15m")
    assert abs(record.expires_at - (now + _dt.timedelta(minutes=15))) < SLACK
    record, _ = token(ttl=90)
    assert abs(record.expires_at - (now + _dt.timedelta(seconds=90))) < SLACK
    when = (now + _dt.timedelta(hours=2)).replace(microsecond=0)
    record, _ = token(expires_at=isoformat(when))
    assert record.expires_at == when
    for kwargs in ({"ttl": 0}, {"ttl": "-5s"}, {"ttl": "soon"}, {"ttl": True},
                   {"expires_at": isoformat(now - _dt.timedelta(seconds=1))},
                   {"expires_at": "2030-01-01T00:00:00"},  # no time zone
                   {"ttl": "1h", "expires_at": isoformat(when)},
                   {"ttl": "31d"}):  # past the frontdoor's maximum (30d)
        error = error_of(token, **kwargs)
        assert error.code == "invalid_request", kwargs
    error = error_of(token, "short", ttl="2h")  # "short" allows 1 h
    assert error.code == "invalid_request" and "maximum" in error.message


# ------------------------------------------------------------------ single use
def test_single_use_replay_with_same_key_and_refusal_for_another(service, token):
    record, secret = token(common_name="single")
    first = service.redeem("default", secret, csr(0))
    assert first.replayed is False
    # a client that lost the response retries with the same key (even a new CSR for it)
    again = service.redeem("default", secret, make_csr(shared_key("p256", 0), cn="other", o="Other"))
    assert again.replayed is True
    assert again.certificate.id == first.certificate.id
    assert again.certificate.certificate_pem == first.certificate.certificate_pem
    error = error_of(service.redeem, "default", secret, csr(1))
    assert error.code == "token_already_used"
    assert "single-use" in error.message
    stored = service.get_token("default", record.id)
    assert stored.status() == "redeemed" and stored.certificate_id == first.certificate.id
    page = service.list_certificates("default", token_id=record.id)
    assert page.total == 1


def test_expiry_enforced_at_redemption(service, token):
    record, secret = token(ttl="1s", common_name="brief")
    wait_past(record.expires_at)
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "token_expired"
    assert error.details["expiresAt"] == isoformat(record.expires_at)
    assert service.get_token("default", record.id).status() == "expired"
    assert service.list_certificates("default").total == 0


def test_refresh_replaces_the_secret_and_expiry(service, token):
    record, old = token(ttl="1s", common_name="refresh")
    wait_past(record.expires_at)
    refreshed, new = service.refresh_token("default", record.id, ttl="1h", actor="admin")
    assert new != old and refreshed.id == record.id
    assert refreshed.expires_at > utcnow() + _dt.timedelta(minutes=59)
    error = error_of(service.redeem, "default", old, csr())
    assert error.code == "token_not_found"
    result = service.redeem("default", new, csr())
    assert result.certificate.token_id == record.id
    error = error_of(service.refresh_token, "default", record.id)
    assert error.code == "token_already_used"


def test_update_metadata_and_expiry(service, token):
    record, secret = token(name="before", common_name="old-cn", organization="Old Org")
    updated = service.update_token(
        "default", record.id,
        {"name": "after", "common_name": "new-cn", "organization": "", "organizational_unit": "New OU", "ttl": "2h"},
        actor="admin",
    )
    assert updated.name == "after"
    assert updated.subject.as_tuple() == ("new-cn", None, "New OU")  # '' unlocks organization
    assert updated.expires_at > utcnow() + _dt.timedelta(minutes=119)
    assert updated.version > record.version
    assert service.get_token("default", record.id).name == "after"
    for changes in ({"name": "x" * 129}, {"common_name": "c" * 65}, {"secret": "x"}, {},
                    {"expires_at": isoformat(utcnow() - _dt.timedelta(minutes=1))}):
        assert error_of(service.update_token, "default", record.id, changes).code == "invalid_request", changes
    result = service.redeem("default", secret, make_csr(shared_key("p256"), cn="ignored", o="CSR Org"))
    assert result.certificate.subject.as_tuple() == ("new-cn", "CSR Org", "New OU")
    assert result.certificate.name == "after"
    error = error_of(service.update_token, "default", record.id, {"name": "too-late"})
    assert error.code == "token_already_used"


def test_delete_makes_the_token_gone(service, token):
    record, secret = token()
    deleted = service.delete_token("default", record.id, actor="admin")
    assert deleted.id == record.id
    for call in (lambda: service.get_token("default", record.id),
                 lambda: service.delete_token("default", record.id),
                 lambda: service.update_token("default", record.id, {"name": "x"}),
                 lambda: service.refresh_token("default", record.id),
                 lambda: service.redeem("default", secret, csr())):
        assert error_of(call).code == "token_not_found"
    assert service.list_tokens("default").total == 0


def test_not_found_reasons_tell_mistyped_from_unknown(service, token):
    _, secret = token()
    position = 10
    mistyped = secret[:position] + ("A" if secret[position] != "A" else "B") + secret[position + 1:]
    error = error_of(service.redeem, "default", mistyped, csr())
    assert error.code == "token_not_found" and error.details["reason"] == "checksum"
    assert "mistyped" in error.message
    error = error_of(service.redeem, "default", secret[:-3], csr())
    assert error.code == "token_not_found" and error.details["reason"] == "malformed"
    error = error_of(service.redeem, "default", new_secret(), csr())
    assert error.code == "token_not_found" and error.details["reason"] == "unknown"
    for message in (error.message,):
        assert secret not in message
    # a token of another frontdoor is not found here
    error = error_of(service.redeem, "short", secret, csr())
    assert error.code == "token_not_found"
    assert service.redeem("default", secret, csr()).replayed is False


def test_ids_that_are_not_ours_are_not_found(service):
    for bad in ("token-nope", "../etc/passwd", "", None, "token-" + "0" * 36, 42):
        assert error_of(service.get_token, "default", bad).code == "token_not_found"
    assert error_of(service.get_certificate, "default", "cert-nope").code == "certificate_not_found"


# ------------------------------------------------------------------ cleanup and listing
def test_cleanup_expired_and_redeemed(service, token):
    expired, _ = token(name="expired", ttl="1s")
    expired_short, _ = token("short", name="expired-elsewhere", ttl="1s")
    active, _ = token(name="active")
    redeemed, secret = token(name="redeemed")
    service.redeem("default", secret, csr())
    wait_past(max(expired.expires_at, expired_short.expires_at))

    assert service.cleanup("default", statuses=["expired"], dry_run=True) == [expired.id]
    assert service.get_token("default", expired.id).status() == "expired"  # dry run deleted nothing
    assert service.cleanup("default", statuses=["expired"], older_than="1h") == []  # expired < 1 h ago
    assert service.cleanup("default", statuses=["expired", "redeemed"], older_than="1h") == []
    assert service.cleanup("default", statuses=["expired"]) == [expired.id]
    assert error_of(service.get_token, "default", expired.id).code == "token_not_found"
    assert service.cleanup("default", statuses="redeemed", dry_run=True) == [redeemed.id]
    assert service.cleanup("default", statuses="redeemed") == [redeemed.id]
    assert error_of(service.cleanup, "default", statuses=["active"]).code == "invalid_request"
    assert error_of(service.cleanup, "default", statuses=["bogus"]).code == "invalid_request"
    assert error_of(service.cleanup, "nowhere").code == "frontdoor_not_found"
    # the active token and the other frontdoor's expired token are untouched
    assert service.get_token("default", active.id).status() == "active"
    assert service.get_token("short", expired_short.id).status() == "expired"
    # the certificate of the cleaned-up token stays on record
    assert service.list_certificates("default").total == 1
    assert service.cleanup(None) == [expired_short.id]  # every frontdoor


def test_listing_paging_sort_and_filters(service, token):
    names = ["tok-c", "tok-a", "tok-e", "tok-b", "tok-d"]
    made = {name: token(name=name) for name in names}
    token("short", name="tok-elsewhere")
    page = service.list_tokens("default", page=0, size=2, sort="name,asc")
    assert [t.name for t in page.items] == ["tok-a", "tok-b"]
    assert page.total == 5 and page.page == 0 and page.size == 2
    page = service.list_tokens("default", page=2, size=2, sort="name,asc")
    assert [t.name for t in page.items] == ["tok-e"]
    assert service.list_tokens("default", page=7, size=2).items == []
    page = service.list_tokens("default", size=10, sort="name,desc")
    assert [t.name for t in page.items] == sorted(names, reverse=True)
    page = service.list_tokens("default", size=10)  # default: creation order
    assert [t.name for t in page.items] == names
    page = service.list_tokens("default", name="tok-d")
    assert [t.id for t in page.items] == [made["tok-d"][0].id]
    assert service.list_tokens("default", name="tok").total == 0  # exact match

    service.redeem("default", made["tok-a"][1], csr())
    brief, _ = token(name="tok-brief", ttl="1s")
    wait_past(brief.expires_at)
    assert [t.name for t in service.list_tokens("default", status="redeemed").items] == ["tok-a"]
    assert [t.name for t in service.list_tokens("default", status="expired").items] == ["tok-brief"]
    assert service.list_tokens("default", status="active").total == 4
    assert service.list_tokens("default", status="active,redeemed").total == 5
    assert service.list_tokens("default", status=["expired", "redeemed"]).total == 2
    assert service.list_tokens("default").total == 6
    for kwargs in ({"sort": "secret_hash,asc"}, {"sort": "name,up"}, {"size": 0}, {"size": 100000},
                   {"page": -1}, {"page": "x"}, {"status": "used"}):
        assert error_of(service.list_tokens, "default", **kwargs).code == "invalid_request", kwargs


# ------------------------------------------------------------------ frontdoors
def test_tcp_shares_disabled_blocks_create_and_redeem(service):
    error = error_of(service.create_token, "closed", name="x")
    assert error.code == "tcp_shares_disabled"
    assert "TCP shares" in error.message and "tcpSharesEnabled" in error.message
    # a token made while shares were on cannot be redeemed once they are off, and survives that
    settings = service.frontdoors["closed"]
    settings.tcp_shares_enabled = True
    record, secret = service.create_token("closed", name="made-while-open", common_name="x")
    settings.tcp_shares_enabled = False
    error = error_of(service.redeem, "closed", secret, csr())
    assert error.code == "tcp_shares_disabled"
    assert service.get_token("closed", record.id).status() == "active"
    settings.tcp_shares_enabled = True
    assert service.redeem("closed", secret, csr()).replayed is False


def test_unknown_frontdoor(service, token):
    _, secret = token()
    for call in (lambda: service.create_token("nowhere", name="x"),
                 lambda: service.list_tokens("nowhere"),
                 lambda: service.get_token("nowhere", "token-x"),
                 lambda: service.redeem("nowhere", secret, csr()),
                 lambda: service.list_certificates("nowhere"),
                 lambda: service.ca_chain("nowhere"),
                 lambda: service.crl("nowhere")):
        error = error_of(call)
        assert error.code == "frontdoor_not_found"
        assert "nowhere" in error.message
    assert service.redeem("default", secret, csr()).replayed is False  # not used up by the wrong frontdoor


# ------------------------------------------------------------------ input limits
@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "n" * 129},
        {"name": ""},
        {"name": "   "},
        {"name": None},
        {"name": 7},
        {"name": "line\nbreak"},
        {"name": "bell\x07"},
        {"name": "ok", "common_name": "c" * 65},
        {"name": "ok", "organization": "o" * 65},
        {"name": "ok", "organizational_unit": "u" * 65},
        {"name": "ok", "common_name": "tab\there"},
        {"name": "ok", "common_name": "nul\x00"},
        {"name": "ok", "common_name": " padded"},
        {"name": "ok", "common_name": 5},
        {"name": "ok", "certificate_ttl": "forever"},
    ],
    ids=lambda kw: ",".join("%s=%r" % item for item in kw.items())[:40],
)
def test_limits_on_input(service, kwargs):
    error = error_of(service.create_token, "default", **kwargs)
    assert error.code == "invalid_request"
    assert service.list_tokens("default").total == 0


def test_limits_at_the_boundary_are_accepted(service):
    record, _ = service.create_token("default", name="n" * 128, common_name="c" * 64, organization="o" * 64,
                                     organizational_unit="u" * 64)
    assert record.name == "n" * 128
    assert record.subject.as_tuple() == ("c" * 64, "o" * 64, "u" * 64)
    record, _ = service.create_token("default", name="Ünïcödé ✓ name")
    assert record.name == "Ünïcödé ✓ name"
