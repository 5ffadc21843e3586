"""client_certificate in-process on a real engine: renewal by itself, key rotation, file options, the issuer
check, revocation, check mode without a gateway, and the urls-based gateway client's messages."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import socket
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def mint(run_module, state, name="web-1"):
    result = run_module("certificate_request_token", {"state_dir": state, "name": name,
                                                      "common_name": "%s.example.com" % name})
    return result["token"]["token"]


def args(state_dir, tmp_path, token=None, **kwargs):
    base = {"state_dir": state_dir, "privatekey_path": str(tmp_path / "client.key"),
            "path": str(tmp_path / "client.crt"), "chain_path": str(tmp_path / "chain.pem")}
    if token:
        base["token"] = token
    base.update(kwargs)
    return base


def tokens(run_module, state):
    return run_module("certificate_request_token_info", {"state_dir": state})["tokens"]


def cert_at(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def key_at(path):
    return serialization.load_pem_private_key(open(path, "rb").read(), None)


def test_renews_by_itself_with_the_current_certificate_no_token(run_module, state, tmp_path):
    first = run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    assert first["redeemed"] is True and first["replayed"] is False
    renewed = run_module("client_certificate", args(state, tmp_path, remaining_days=365))
    assert renewed["changed"] is True and renewed["renewed"] is True and renewed["redeemed"] is False
    assert renewed["needs_token"] is False
    assert renewed["serial_number"] != first["serial_number"]
    assert renewed["common_name"] == first["common_name"] == "web-1.example.com"
    assert "less than" not in str(renewed.get("warnings")), "365 days are not less than 365"
    assert [t["status"] for t in tokens(run_module, state)] == ["redeemed"], "no new token"
    # the key is kept (regenerate's default keeps a key of the asked type)
    assert cert_at(tmp_path / "client.crt").serial_number == int(renewed["serial_number"], 16)
    again = run_module("client_certificate", args(state, tmp_path))
    assert again["changed"] is False and again["needs_certificate"] is False


def test_regenerate_always_rotates_the_key_through_renewal(run_module, state, tmp_path):
    run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    old_key = key_at(tmp_path / "client.key")
    rotated = run_module("client_certificate", args(state, tmp_path, regenerate="always"))
    assert rotated["renewed"] is True and rotated["privatekey_generated"] is True
    new_key = key_at(tmp_path / "client.key")
    assert new_key.public_key().public_numbers() != old_key.public_key().public_numbers()
    assert cert_at(tmp_path / "client.crt").public_key().public_numbers() == new_key.public_key().public_numbers()
    assert stat.S_IMODE(os.stat(tmp_path / "client.key").st_mode) == 0o600


def test_key_type_mismatch_regenerates_or_fails_as_asked(run_module, state, tmp_path):
    run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    refused = run_module("client_certificate", args(state, tmp_path, private_key_type="rsa", regenerate="fail"))
    assert refused["failed"] is True and "an EC secp256r1 key, not an RSA 2048 key" in refused["msg"]
    kept = run_module("client_certificate", args(state, tmp_path, private_key_type="rsa", regenerate="never"))
    assert kept["changed"] is False
    moved = run_module("client_certificate", args(state, tmp_path, private_key_type="rsa"))
    assert moved["renewed"] is True and moved["privatekey_generated"] is True
    assert isinstance(key_at(tmp_path / "client.key"), rsa.RSAPrivateKey)
    assert run_module("client_certificate", args(state, tmp_path, private_key_type="rsa"))["changed"] is False


def test_key_owner_group_mode_and_fullchain(run_module, state, tmp_path):
    result = run_module("client_certificate", args(state, tmp_path, mint(run_module, state), privatekey_mode="0640",
                                                   fullchain_path=str(tmp_path / "full.pem"), mode="0644"))
    assert stat.S_IMODE(os.stat(tmp_path / "client.key").st_mode) == 0o640
    assert result["fullchain_path"] == str(tmp_path / "full.pem")
    full = (tmp_path / "full.pem").read_text()
    assert full == result["certificate"] + "".join(result["ca_chain"])
    os.chmod(tmp_path / "client.key", 0o600)
    os.unlink(tmp_path / "full.pem")
    fixed = run_module("client_certificate", args(state, tmp_path, privatekey_mode="0640",
                                                  fullchain_path=str(tmp_path / "full.pem"), mode="0644"))
    assert fixed["changed"] is True and fixed["renewed"] is False and fixed["redeemed"] is False
    assert stat.S_IMODE(os.stat(tmp_path / "client.key").st_mode) == 0o640
    assert (tmp_path / "full.pem").read_text() == full


def test_lost_answer_is_replayed_with_the_same_token_and_key(run_module, state, tmp_path):
    secret = mint(run_module, state)
    first = run_module("client_certificate", args(state, tmp_path, secret))
    os.unlink(tmp_path / "client.crt")  # as if the answer never arrived
    again = run_module("client_certificate", args(state, tmp_path, secret))
    assert again["redeemed"] is True and again["replayed"] is True
    assert again["serial_number"] == first["serial_number"]


def test_deleted_certificate_needs_a_token_and_skip_reports_it(run_module, state, tmp_path):
    run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    os.unlink(tmp_path / "client.crt")
    failed = run_module("client_certificate", args(state, tmp_path))
    assert failed["failed"] is True and failed["error_code"] == "invalid_request"
    assert "there is no certificate yet" in failed["msg"] and "frontdoor.pki.enroll" in failed["msg"]
    skipped = run_module("client_certificate", args(state, tmp_path, missing_token="skip"))
    assert skipped["changed"] is False and skipped["needs_token"] is True and "failed" not in skipped


def _foreign_certificate_with_our_issuer_name(tmp_path):
    """A CA of its own that copies our intermediate's DN, and a certificate for our key signed by it."""
    ours = cert_at(tmp_path / "client.crt")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = key_at(tmp_path / "client.key")
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(ours.subject).issuer_name(ours.issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=300))
            .sign(ca_key, hashes.SHA256()))


def test_a_certificate_from_another_ca_with_the_same_dn_is_not_ours(run_module, state, tmp_path):
    run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    forged = _foreign_certificate_with_our_issuer_name(tmp_path)
    (tmp_path / "client.crt").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    result = run_module("client_certificate", args(state, tmp_path, missing_token="skip"))
    assert result["needs_certificate"] is True and result["needs_token"] is True
    assert "not issued by this frontdoor's CA" in result["reason"]
    fresh = run_module("client_certificate", args(state, tmp_path, mint(run_module, state, name="web-2")))
    assert fresh["redeemed"] is True


def test_local_ca_names_differ_between_installs(run_module, tmp_path):
    names = []
    for install in ("a", "b"):
        state = str(tmp_path / install)
        directory = tmp_path / ("host-" + install)
        directory.mkdir()
        run_module("client_certificate", args(state, directory, mint(run_module, state)))
        names.append(cert_at(directory / "client.crt").issuer)
    assert names[0] != names[1]


def test_check_mode_needs_no_gateway_when_nothing_is_to_do(run_module, state, tmp_path):
    run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % sock.getsockname()[1]
    offline = args(state, tmp_path, gateway_url=dead)
    assert run_module("client_certificate", offline, check_mode=True)["changed"] is False
    assert run_module("client_certificate", offline)["changed"] is False
    due = run_module("client_certificate", dict(offline, remaining_days=365), check_mode=True)
    assert due["changed"] is True and due["needs_certificate"] is True
    down = run_module("client_certificate", dict(offline, remaining_days=365))
    assert down["failed"] is True and down["error_code"] == "gateway_unavailable"
    # the whole reason, errno and words, never cut off
    assert "Connection refused" in down["msg"] and down["msg"].endswith("that the gateway is running.")


def test_revoke_then_renewal_is_refused_and_a_token_is_needed(run_module, state, tmp_path):
    first = run_module("client_certificate", args(state, tmp_path, mint(run_module, state)))
    revoked = run_module("client_certificate", args(state, tmp_path, state="revoked"))
    assert revoked["changed"] is True and revoked["revoked"] is True
    assert revoked["serial_number"] == first["serial_number"]
    assert run_module("client_certificate", args(state, tmp_path, state="revoked"))["changed"] is False
    after = run_module("client_certificate", args(state, tmp_path, remaining_days=365, missing_token="skip"))
    assert after["needs_token"] is True and after.get("renewal_refused") == "certificate_revoked"
    gone = run_module("client_certificate", args(state, tmp_path, state="absent", revoke=True))
    assert gone["removed"] == [str(tmp_path / "client.crt"), str(tmp_path / "chain.pem")]
    assert (tmp_path / "client.key").exists()


def test_doc_fragment_documents_the_file_options(collection_path):
    common = importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common")
    fragment = importlib.import_module("ansible_collections.frontdoor.pki.plugins.doc_fragments.client_certificate")
    documented = yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"]
    spec = common.certificate_files_argument_spec()
    assert set(documented) == set(spec)
    for name, opt in spec.items():
        assert documented[name]["type"] == opt["type"], name
        assert documented[name].get("default") == opt.get("default"), name
        assert documented[name].get("choices") == opt.get("choices"), name
