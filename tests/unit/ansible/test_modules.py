"""Module logic run in-process on a real engine (SQLite + local CA in a temp state dir).

Covers argument handling, the idempotency decisions and the mapping of engine errors to
fail_json(error_code=...). The same behaviours through ansible-playbook are in tests/ansible.
"""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.crypto import make_csr, make_key


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def token_args(state, **kwargs):
    args = {"state_dir": state, "name": "web-1", "common_name": "web-1.example.com", "organization": "Example"}
    args.update(kwargs)
    return args


def info(run_module, state, **kwargs):
    return run_module("certificate_request_token_info", dict(state_dir=state, **kwargs))["tokens"]


# ---------------------------------------------------------------- certificate_request_token
def test_create_then_rerun_is_unchanged_and_shows_no_secret(run_module, state):
    first = run_module("certificate_request_token", token_args(state, ttl="1h"))
    assert first["changed"] is True
    assert first["token"]["token"].startswith("crt_")
    assert first["token"]["status"] == "active"
    again = run_module("certificate_request_token", token_args(state, ttl="2h"))  # ttl alone does not replace
    assert again["changed"] is False
    assert "token" not in again["token"]
    assert again["token"]["id"] == first["token"]["id"]


def test_blank_subject_field_means_unlocked_and_matches_absent_one(run_module, state):
    run_module("certificate_request_token", token_args(state, organization=None))
    again = run_module("certificate_request_token", token_args(state, organization=""))
    assert again["changed"] is False


def test_different_metadata_replaces_the_token(run_module, state):
    first = run_module("certificate_request_token", token_args(state))
    second = run_module("certificate_request_token", token_args(state, organizational_unit="Ops"), diff=True)
    assert second["changed"] is True
    assert second["replaced_ids"] == [first["token"]["id"]]
    assert second["token"]["token"] != first["token"]["token"]
    assert second["diff"]["before"]["organizational_unit"] is None
    assert second["diff"]["after"]["organizational_unit"] == "Ops"
    assert [t["id"] for t in info(run_module, state)] == [second["token"]["id"]]


def test_force_and_expires_at_replace(run_module, state):
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).replace(microsecond=0)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    first = run_module("certificate_request_token", token_args(state, expires_at=stamp))
    same_instant = when.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert run_module("certificate_request_token", token_args(state, expires_at=same_instant))["changed"] is False
    later = (when + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    moved = run_module("certificate_request_token", token_args(state, expires_at=later))
    assert moved["changed"] is True and moved["replaced_ids"] == [first["token"]["id"]]
    forced = run_module("certificate_request_token", token_args(state, expires_at=later, force=True))
    assert forced["changed"] is True and forced["replaced_ids"] == [moved["token"]["id"]]


def test_check_mode_creates_nothing(run_module, state):
    result = run_module("certificate_request_token", token_args(state), check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["token"]["id"] is None and "token" not in result["token"]
    assert result["diff"]["before"] == {}
    assert info(run_module, state) == []


def test_absent_deletes_every_token_of_the_name_and_is_idempotent(run_module, state):
    run_module("certificate_request_token", token_args(state))
    run_module("certificate_request_token", token_args(state, name="other"))
    check = run_module("certificate_request_token", dict(state_dir=state, name="web-1", state="absent"),
                       check_mode=True)
    assert check["changed"] is True and len(info(run_module, state)) == 2
    gone = run_module("certificate_request_token", dict(state_dir=state, name="web-1", state="absent"))
    assert gone["changed"] is True and len(gone["replaced_ids"]) == 1
    assert [t["name"] for t in info(run_module, state)] == ["other"]
    assert run_module("certificate_request_token", dict(state_dir=state, name="web-1", state="absent"))[
        "changed"] is False


def test_ttl_and_expires_at_are_mutually_exclusive(run_module, state):
    result = run_module("certificate_request_token", token_args(state, ttl="1h", expires_at="2030-01-01T00:00:00Z"))
    assert result["failed"] is True
    assert "mutually exclusive" in result["msg"]


@pytest.mark.parametrize("ttl", ["soon", "\u00b2", "9" * 5000])  # '²' passes str.isdigit() but not int()
def test_bad_ttl_fails_with_invalid_request_even_in_check_mode(run_module, state, ttl):
    result = run_module("certificate_request_token", token_args(state, ttl=ttl), check_mode=True)
    assert result["failed"] is True and result["error_code"] == "invalid_request"
    assert "ttl" in result["msg"]


def test_tcp_shares_disabled_comes_from_the_state_dir_config(run_module, state):
    os.makedirs(state)
    with open(os.path.join(state, "config.yaml"), "w") as handle:
        yaml.safe_dump({"frontdoors": [{"id": "default", "tcpSharesEnabled": False}]}, handle)
    result = run_module("certificate_request_token", token_args(state))
    assert result["failed"] is True
    assert result["error_code"] == "tcp_shares_disabled"
    assert "TCP shares" in result["msg"] and "tcpSharesEnabled" in result["msg"]


def test_unknown_frontdoor_is_frontdoor_not_found(run_module, state):
    result = run_module("certificate_request_token", token_args(state, frontdoor_id="nope"))
    assert result["failed"] is True and result["error_code"] == "frontdoor_not_found"


def test_info_filters_by_status_and_never_returns_secrets(run_module, state):
    created = run_module("certificate_request_token", token_args(state))
    tokens = info(run_module, state, status=["active"])
    assert [t["id"] for t in tokens] == [created["token"]["id"]]
    assert all("token" not in t for t in tokens)
    assert info(run_module, state, status=["redeemed"]) == []
    assert info(run_module, state, name="web-2") == []


def test_cleanup_check_mode_then_real(run_module, state):
    run_module("certificate_request_token", token_args(state, ttl="1s"))
    import time

    time.sleep(1.2)
    would = run_module("certificate_request_token_cleanup", dict(state_dir=state), check_mode=True)
    assert would["changed"] is True and would["deleted"] == 1
    assert len(info(run_module, state)) == 1
    young = run_module("certificate_request_token_cleanup", dict(state_dir=state, older_than="1h"))
    assert young["changed"] is False and young["ids"] == []
    done = run_module("certificate_request_token_cleanup", dict(state_dir=state))
    assert done["deleted"] == 1 and done["ids"] == would["ids"]
    assert info(run_module, state) == []


@pytest.mark.parametrize("age", ["a while", "\u00b2", "9" * 5000])
def test_cleanup_rejects_a_bad_age(run_module, state, age):
    result = run_module("certificate_request_token_cleanup", dict(state_dir=state, older_than=age))
    assert result["failed"] is True and result["error_code"] == "invalid_request"


# ---------------------------------------------------------------- client_certificate
def mint(run_module, state, **kwargs):
    return run_module("certificate_request_token", token_args(state, **kwargs))["token"]["token"]


def cert_args(state, tmp_path, token, **kwargs):
    args = {"state_dir": state, "token": token, "privatekey_path": str(tmp_path / "client.key"),
            "path": str(tmp_path / "client.crt"), "chain_path": str(tmp_path / "chain.pem")}
    args.update(kwargs)
    return args


def test_redeem_generates_key_writes_cert_and_rerun_keeps_the_token(run_module, state, tmp_path):
    secret = mint(run_module, state)
    result = run_module("client_certificate", cert_args(state, tmp_path, secret))
    assert result["changed"] is True and result["redeemed"] is True and result["privatekey_generated"] is True
    assert stat.S_IMODE(os.stat(tmp_path / "client.key").st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "client.key").read_bytes(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert result["common_name"] == "web-1.example.com" and result["organization"] == "Example"
    assert result["serial_number"] == "%x" % cert.serial_number
    assert (tmp_path / "chain.pem").read_text() == "".join(result["ca_chain"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".frontdoor")], "temporary files left behind"

    fresh = mint(run_module, state, name="web-1-renewal")
    again = run_module("client_certificate", cert_args(state, tmp_path, fresh))
    assert again["changed"] is False and again["redeemed"] is False
    assert again["serial_number"] == result["serial_number"]
    assert again["ca_chain"] == result["ca_chain"], "the chain read back from chain_path"
    assert [t["status"] for t in info(run_module, state, name="web-1-renewal")] == ["active"]


def test_check_mode_never_spends_the_token_nor_writes(run_module, state, tmp_path):
    secret = mint(run_module, state)
    result = run_module("client_certificate", cert_args(state, tmp_path, secret), check_mode=True)
    assert result["changed"] is True and result["redeemed"] is False
    assert not (tmp_path / "client.key").exists() and not (tmp_path / "client.crt").exists()
    assert [t["status"] for t in info(run_module, state)] == ["active"]


def test_remaining_days_and_force_renew(run_module, state, tmp_path):
    first = run_module("client_certificate", cert_args(state, tmp_path, mint(run_module, state)))
    second_token = mint(run_module, state, name="renew")
    renewed = run_module("client_certificate", cert_args(state, tmp_path, second_token, remaining_days=400,
                                                         backup=True))
    # renewed with the current certificate: the token given is not spent
    assert renewed["changed"] is True and renewed["renewed"] is True and renewed["redeemed"] is False
    assert renewed["serial_number"] != first["serial_number"]
    assert os.path.exists(renewed["backup_file"])
    assert "less than remaining_days (400)" in str(renewed["warnings"])
    assert [t["status"] for t in info(run_module, state, name="renew")] == ["active"]
    third = mint(run_module, state, name="forced")
    forced = run_module("client_certificate", cert_args(state, tmp_path, third, force=True))
    assert forced["redeemed"] is True


def test_missing_token_when_one_is_needed(run_module, state, tmp_path):
    result = run_module("client_certificate", cert_args(state, tmp_path, None))
    assert result["failed"] is True and result["error_code"] == "invalid_request"
    assert "set token" in result["msg"]


def test_redeem_errors_carry_the_gateway_codes(run_module, state, tmp_path):
    secret = mint(run_module, state)
    mistyped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    result = run_module("client_certificate", cert_args(state, tmp_path, mistyped))
    assert result["error_code"] == "token_not_found" and "mistyped" in result["msg"]
    assert secret not in str(result) and mistyped not in str(result)

    run_module("client_certificate", cert_args(state, tmp_path, secret))
    other = tmp_path / "other"
    other.mkdir()
    used = run_module("client_certificate", cert_args(state, other, secret))
    assert used["failed"] is True and used["error_code"] == "token_already_used"
    assert "already used" in used["msg"]


def test_expired_token_message_names_the_time(run_module, state, tmp_path):
    secret = mint(run_module, state, ttl="1s")
    import time

    time.sleep(1.2)
    result = run_module("client_certificate", cert_args(state, tmp_path, secret))
    assert result["error_code"] == "token_expired" and "expired at 20" in result["msg"]
    assert not (tmp_path / "client.crt").exists()


def test_csr_content_and_bad_csr(run_module, state, tmp_path):
    key = make_key("p256")
    csr = make_csr(key, cn="from-csr")
    secret = mint(run_module, state, common_name=None)
    bad = run_module("client_certificate", {"state_dir": state, "token": secret, "csr_content": "garbage",
                                            "path": str(tmp_path / "c.crt")})
    assert bad["failed"] is True and bad["error_code"] == "invalid_csr"
    good = run_module("client_certificate", {"state_dir": state, "token": secret, "csr_content": csr,
                                             "path": str(tmp_path / "c.crt")})
    assert good["changed"] is True and good["common_name"] == "from-csr"


def test_csr_source_options_are_mutually_exclusive_and_one_is_required(run_module, state, tmp_path):
    # (a one-letter token would be masked everywhere in the output: no_log at work)
    both = run_module("client_certificate", {"state_dir": state, "token": "crt_unused", "csr_content": "x",
                                             "privatekey_path": str(tmp_path / "k"), "path": str(tmp_path / "c")})
    assert both["failed"] is True and "mutually exclusive" in both["msg"]
    none = run_module("client_certificate", {"state_dir": state, "token": "crt_unused", "path": str(tmp_path / "c")})
    assert none["failed"] is True and "privatekey_path" in none["msg"]


def test_small_rsa_key_is_refused_before_anything(run_module, state, tmp_path):
    result = run_module("client_certificate", cert_args(state, tmp_path, "crt_unused", private_key_type="rsa",
                                                        private_key_size=1024))
    assert result["failed"] is True and "2048" in result["msg"]


def test_state_absent_removes_cert_and_chain_but_not_the_key(run_module, state, tmp_path):
    run_module("client_certificate", cert_args(state, tmp_path, mint(run_module, state)))
    gone = run_module("client_certificate", {"path": str(tmp_path / "client.crt"),
                                             "chain_path": str(tmp_path / "chain.pem"), "state": "absent"})
    assert gone["changed"] is True
    assert not (tmp_path / "client.crt").exists() and not (tmp_path / "chain.pem").exists()
    assert (tmp_path / "client.key").exists()
    again = run_module("client_certificate", {"path": str(tmp_path / "client.crt"), "state": "absent"})
    assert again["changed"] is False


def test_missing_chain_file_is_fetched_without_a_token(run_module, state, tmp_path):
    first = run_module("client_certificate", cert_args(state, tmp_path, mint(run_module, state)))
    os.unlink(tmp_path / "chain.pem")
    check = run_module("client_certificate", cert_args(state, tmp_path, None), check_mode=True)
    assert check["changed"] is True and not (tmp_path / "chain.pem").exists()
    again = run_module("client_certificate", cert_args(state, tmp_path, None))
    assert again["changed"] is True and again["redeemed"] is False
    assert (tmp_path / "chain.pem").read_text() == "".join(first["ca_chain"])
    assert run_module("client_certificate", cert_args(state, tmp_path, None))["changed"] is False
