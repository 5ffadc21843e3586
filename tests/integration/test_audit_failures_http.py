"""The audit log failing under a running gateway (docs/operations.md, "Audit log"), over HTTP.

The gateway's audit file turns into /dev/full (every write ENOSPC, as a full disk) while it runs:
create and redeem answer 503 audit_unavailable and change nothing a client can see; revoke and a
refused redemption answer as usual, their lines going to the gateway's error log; once the disk has
room the same requests succeed.
"""

from __future__ import annotations

import json
import os

import pytest
from support.audit_faults import disk_full
from support.crypto import make_csr, make_key
from support.gateway import run_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("gw-audit"))
    with run_gateway(state, config={"audit": {"path": os.path.join(state, "audit", "audit.jsonl")}}) as gateway:
        yield gateway


def _audit_path(gw) -> str:
    return os.path.join(gw.state_dir, "audit", "audit.jsonl")


def _unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_create_is_refused_and_leaves_no_token(gw):
    with disk_full(_audit_path(gw)):
        _unavailable(gw.create_token(name="unaudited-create"))
    listed = gw.request("GET", "/frontdoor/default/certificate-request-tokens?name=unaudited-create").json()
    assert listed["totalElements"] == 0
    assert gw.create_token(name="unaudited-create").status_code == 201


def test_redeem_is_refused_and_the_token_stays_redeemable(gw):
    created = gw.create_token(name="unaudited-redeem", commonName="r.example").json()
    key = make_key("p256")
    with disk_full(_audit_path(gw)):
        _unavailable(gw.redeem(created["token"], make_csr(key, cn="x")))
        # a refusal changes nothing: its own code, not 503
        wrong = gw.redeem("crt_" + "B" * 32, make_csr(key, cn="x"))
        assert wrong.status_code in (400, 404) and wrong.json()["error"]["code"] != "audit_unavailable"
    token = gw.request("GET", "/frontdoor/default/certificate-request-tokens/" + created["id"]).json()
    assert token["status"] == "active"
    certs = gw.request("GET", "/frontdoor/default/client-certificates?tokenId=" + created["id"]).json()
    assert certs["totalElements"] == 0
    issued = gw.redeem(created["token"], make_csr(key, cn="x"))
    assert issued.status_code == 201
    with open(_audit_path(gw), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    assert [e["serial"] for e in events if e["event"] == "token.redeemed"] == [issued.json()["serialNumber"]]


def test_revoke_goes_ahead_and_its_line_reaches_the_error_log(gw):
    created = gw.create_token(name="revoke-me", commonName="v.example").json()
    cert = gw.redeem(created["token"], make_csr(make_key("p256"), cn="x")).json()
    with disk_full(_audit_path(gw)):
        revoked = gw.request("DELETE", "/frontdoor/default/client-certificates/" + cert["id"])
    assert revoked.status_code == 200 and revoked.json()["revokedAt"]
    reported = [line for line in gw.log().splitlines() if "audit line not written" in line]
    assert any('"event":"certificate.revoked"' in line and cert["id"] in line for line in reported)
    assert created["token"][4:] not in gw.log()
