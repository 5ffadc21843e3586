"""ansible-playbook against the three ways the modules reach the engine.

* ``local``: the embedded engine in the module (SQLite + local CA in a temp state dir);
* ``gateway``: a real ``frontdoor-gateway serve`` process, spoken to over HTTP;
* ``vault``: the engine in the module on a real OpenBao dev server (KV v2 + PKI).

One lifecycle play per backend covers create, idempotent rerun, check mode, diff, info,
redemption with a generated key, the rerun that must not spend a new token, delete and
cleanup; a failures play covers every error a redeemer or an admin can meet.
"""

from __future__ import annotations

import os
import stat

import pytest
import yaml
from ansible_helpers import failed_with, ok
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.gateway import run_gateway

pytestmark = pytest.mark.ansible


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with run_gateway(str(tmp_path_factory.mktemp("gateway-state"))) as gw:
        yield gw


@pytest.fixture(params=["local", "gateway", "vault"])
def backend(request, tmp_path):
    """module_defaults that point every frontdoor.pki module at one backend."""
    if request.param == "local":
        return {"state_dir": str(tmp_path / "state")}
    if request.param == "gateway":
        gw = request.getfixturevalue("gateway")
        return {"gateway_url": gw.url, "api_token": gw.admin_token}
    from support.openbao import session_server

    server = session_server(request)
    data = server.vault_config(state_dir=str(tmp_path / "state"))
    return {"backend": "vault", "state_dir": str(tmp_path / "state"), "vault_url": data["vault"]["url"],
            "vault_token": data["vault"]["token"], "kv_prefix": data["vault"]["kvPrefix"]}


def test_lifecycle(play, backend, tmp_path):
    key = str(tmp_path / "host" / "client.key")
    cert = str(tmp_path / "host" / "client.crt")
    chain = str(tmp_path / "host" / "chain.pem")
    os.makedirs(os.path.dirname(key))
    redeem = {"privatekey_path": key, "path": cert, "chain_path": chain, "mode": "0640"}
    subject = {"name": "web-1", "common_name": "web-1.example.com", "organization": "Example Corp",
               "organizational_unit": "Ops", "ttl": "1h"}
    r, _proc = play.run([
        ("create", {"frontdoor.pki.certificate_request_token": subject}),
        ("rerun", {"frontdoor.pki.certificate_request_token": subject}),
        ("check_create", {"frontdoor.pki.certificate_request_token": dict(subject, name="web-2"),
                          "check_mode": True}),
        ("info_all", {"frontdoor.pki.certificate_request_token_info": {}}),
        ("check_redeem", {"frontdoor.pki.client_certificate": dict(redeem, token="{{ create.token.token }}"),
                          "check_mode": True}),
        ("info_after_check", {"frontdoor.pki.certificate_request_token_info": {"name": "web-1"}}),
        ("redeem", {"frontdoor.pki.client_certificate": dict(redeem, token="{{ create.token.token }}")}),
        ("renewal", {"frontdoor.pki.certificate_request_token": dict(subject, name="web-1-renewal")}),
        ("rerun_redeem", {"frontdoor.pki.client_certificate": dict(redeem, token="{{ renewal.token.token }}")}),
        ("info_renewal", {"frontdoor.pki.certificate_request_token_info": {"name": "web-1-renewal"}}),
        ("info_redeemed", {"frontdoor.pki.certificate_request_token_info": {"status": ["redeemed"]}}),
        ("delete", {"frontdoor.pki.certificate_request_token": {"name": "web-1-renewal", "state": "absent"}}),
        ("delete_again", {"frontdoor.pki.certificate_request_token": {"name": "web-1-renewal", "state": "absent"}}),
        ("cleanup_check", {"frontdoor.pki.certificate_request_token_cleanup": {"include_redeemed": True},
                           "check_mode": True}),
        ("cleanup", {"frontdoor.pki.certificate_request_token_cleanup": {"include_redeemed": True}}),
        ("cleanup_again", {"frontdoor.pki.certificate_request_token_cleanup": {"include_redeemed": True}}),
        ("info_end", {"frontdoor.pki.certificate_request_token_info": {}}),
    ], module_defaults=backend, diff=True)

    created = ok(r["create"])
    assert created["changed"] is True and created["token"]["token"].startswith("crt_")
    assert created["diff"]["after"]["common_name"] == "web-1.example.com"
    assert ok(r["rerun"])["changed"] is False and "token" not in r["rerun"]["token"]
    assert r["rerun"]["token"]["id"] == created["token"]["id"]

    assert ok(r["check_create"])["changed"] is True
    listed = ok(r["info_all"])["tokens"]
    assert [t["name"] for t in listed] == ["web-1"], "check mode must not create a token"
    assert all("token" not in t for t in listed)

    checked = ok(r["check_redeem"])
    assert checked["changed"] is True and checked["redeemed"] is False and "certificate" not in checked
    assert [t["status"] for t in ok(r["info_after_check"])["tokens"]] == ["active"], "check mode spent the token"

    issued = ok(r["redeem"])
    assert issued["changed"] is True and issued["redeemed"] is True and issued["privatekey_generated"] is True
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert).st_mode) == 0o640
    certificate = x509.load_pem_x509_certificate(open(cert, "rb").read())
    private_key = serialization.load_pem_private_key(open(key, "rb").read(), None)
    assert certificate.public_key().public_numbers() == private_key.public_key().public_numbers()
    assert (issued["common_name"], issued["organization"], issued["organizational_unit"]) == (
        "web-1.example.com", "Example Corp", "Ops")
    assert issued["serial_number"] == "%x" % certificate.serial_number
    assert open(chain).read().count("BEGIN CERTIFICATE") == len(issued["ca_chain"]) >= 1
    assert issued["diff"]["before"] == {} and issued["diff"]["after"]["serial_number"] == issued["serial_number"]
    assert not [n for n in os.listdir(os.path.dirname(cert)) if n.startswith(".frontdoor")]

    again = ok(r["rerun_redeem"])
    assert again["changed"] is False and again["redeemed"] is False
    assert again["serial_number"] == issued["serial_number"]
    assert [t["status"] for t in ok(r["info_renewal"])["tokens"]] == ["active"], "an unneeded token was spent"
    assert [t["name"] for t in ok(r["info_redeemed"])["tokens"]] == ["web-1"]

    assert ok(r["delete"])["changed"] is True and r["delete"]["replaced_ids"] == [r["renewal"]["token"]["id"]]
    assert ok(r["delete_again"])["changed"] is False
    assert ok(r["cleanup_check"])["ids"] == [created["token"]["id"]]
    assert ok(r["cleanup"])["deleted"] == 1 and r["cleanup"]["ids"] == [created["token"]["id"]]
    assert ok(r["cleanup_again"])["changed"] is False
    assert ok(r["info_end"])["tokens"] == []


def test_failures_name_the_cause(play, backend, tmp_path):
    host = tmp_path / "host"
    host.mkdir()

    def redeem(token, name):
        return {"frontdoor.pki.client_certificate": {"token": token, "privatekey_path": str(host / (name + ".key")),
                                                     "path": str(host / (name + ".crt"))}}

    mistyped = "{{ good.token.token[:-1] ~ ('A' if good.token.token[-1] != 'A' else 'B') }}"
    r, _proc = play.run([
        ("good", {"frontdoor.pki.certificate_request_token": {"name": "good", "common_name": "good"}}),
        ("short", {"frontdoor.pki.certificate_request_token": {"name": "short", "common_name": "s", "ttl": "1s"}}),
        ("gone", {"frontdoor.pki.certificate_request_token": {"name": "gone", "common_name": "g"}}),
        ("delete_gone", {"frontdoor.pki.certificate_request_token": {"name": "gone", "state": "absent"}}),
        ("mistyped", redeem(mistyped, "a")),
        ("deleted", redeem("{{ gone.token.token }}", "a")),
        ("first", redeem("{{ good.token.token }}", "a")),
        ("retry_same_key", {"frontdoor.pki.client_certificate": {
            "token": "{{ good.token.token }}", "privatekey_path": str(host / "a.key"),
            "path": str(host / "a-again.crt")}}),
        ("other_key", redeem("{{ good.token.token }}", "b")),
        ("wait", {"ansible.builtin.pause": {"seconds": 2}}),
        ("expired", redeem("{{ short.token.token }}", "c")),
        ("no_token", redeem("", "d")),
    ], module_defaults=backend)

    msg = failed_with(r["mistyped"], "token_not_found")
    assert "mistyped" in msg
    msg = failed_with(r["deleted"], "token_not_found")
    assert "delete" in msg
    first = ok(r["first"])
    assert ok(r["retry_same_key"])["serial_number"] == first["serial_number"], "a retry must get the same cert"
    msg = failed_with(r["other_key"], "token_already_used")
    assert "already used" in msg and "single-use" in msg
    assert not (host / "b.crt").exists()
    msg = failed_with(r["expired"], "token_expired")
    assert "expired at 20" in msg and r["expired"]["error_details"]["expires_at"]
    msg = failed_with(r["no_token"], "invalid_request")
    assert "set token" in msg
    for name in ("mistyped", "deleted", "other_key", "expired"):
        assert "crt_" not in r[name]["msg"], "a token secret leaked into a failure message"


def test_tcp_shares_disabled(play, tmp_path, request):
    """The frontdoor's config says TCP shares are off: admins and redeemers are told so."""
    state = tmp_path / "state"
    state.mkdir()
    config = {"frontdoors": [{"id": "default", "tcpSharesEnabled": False}]}
    (state / "config.yaml").write_text(yaml.safe_dump(config))
    tasks = [("create", {"frontdoor.pki.certificate_request_token": {"name": "x", "common_name": "x"}}),
             ("redeem", {"frontdoor.pki.client_certificate": {
                 "token": "crt_" + "A" * 33, "privatekey_path": str(tmp_path / "k"), "path": str(tmp_path / "c")}})]
    r, _proc = play.run(tasks, module_defaults={"state_dir": str(state)})
    for name in ("create", "redeem"):
        msg = failed_with(r[name], "tcp_shares_disabled")
        assert "tcpSharesEnabled" in msg
    with run_gateway(str(tmp_path / "gw-state"), config=config) as gw:
        r, _proc = play.run(tasks, module_defaults={"gateway_url": gw.url, "api_token": gw.admin_token})
    for name in ("create", "redeem"):
        failed_with(r[name], "tcp_shares_disabled")


def test_gateway_permission_denied_and_unreachable(play, gateway):
    r, _proc = play.run([
        ("bad_token", {"frontdoor.pki.certificate_request_token": {"name": "x", "api_token": "fdk_wrong"}}),
        ("no_token", {"frontdoor.pki.certificate_request_token_info": {}}),
        ("down", {"frontdoor.pki.certificate_request_token_info": {"gateway_url": "http://127.0.0.1:9",
                                                                   "api_token": "x" * 20}}),
    ], module_defaults={"gateway_url": gateway.url})
    msg = failed_with(r["bad_token"], "unauthorized")
    assert "not valid" in msg and "FRONTDOOR_API_TOKEN" in msg
    msg = failed_with(r["no_token"], "unauthorized")
    assert "FRONTDOOR_API_TOKEN" in msg
    msg = failed_with(r["down"], "gateway_unavailable")
    assert "127.0.0.1:9" in msg


def test_environment_fallbacks_and_secrets_stay_out_of_the_output(play, gateway, tmp_path):
    """FRONTDOOR_URL / FRONTDOOR_API_TOKEN configure the modules; -vvv output never shows a secret."""
    r, proc = play.run([
        ("create", {"frontdoor.pki.certificate_request_token": {"name": "env", "common_name": "env"},
                    "no_log": True}),
        ("redeem", {"frontdoor.pki.client_certificate": {
            "token": "{{ create.token.token }}", "privatekey_path": str(tmp_path / "env.key"),
            "path": str(tmp_path / "env.crt")}}),
    ], env={"FRONTDOOR_URL": gateway.url, "FRONTDOOR_API_TOKEN": gateway.admin_token}, extra_args=["-vvv"])
    secret = ok(r["create"])["token"]["token"]
    assert ok(r["redeem"])["redeemed"] is True
    output = proc.stdout + proc.stderr
    assert secret not in output
    assert gateway.admin_token not in output
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output  # the redeem task's token argument, censored
    assert secret not in gateway.log()


def test_vault_approle_login(play, tmp_path, request):
    """backend: vault with vault_auth_method: approle, as community.hashi_vault users configure it."""
    import secrets

    from support.openbao import session_server

    server = session_server(request)
    data = server.vault_config(state_dir=str(tmp_path / "state"))
    (policy,) = server.tokens[data["vault"]["token"]]
    if "approle/" not in server.root("GET", "sys/auth").json()["data"]:
        server.root("POST", "sys/auth/approle", json={"type": "approle"})
    role = "fd-ansible-" + secrets.token_hex(4)
    server.root("POST", "auth/approle/role/%s" % role, json={"token_policies": [policy], "token_ttl": "1h"})
    role_id = server.root("GET", "auth/approle/role/%s/role-id" % role).json()["data"]["role_id"]
    secret_id = server.root("POST", "auth/approle/role/%s/secret-id" % role).json()["data"]["secret_id"]
    defaults = {"backend": "vault", "state_dir": str(tmp_path / "state"), "vault_url": server.url,
                "vault_auth_method": "approle", "vault_role_id": role_id, "vault_secret_id": secret_id,
                "kv_prefix": data["vault"]["kvPrefix"]}
    r, proc = play.run([
        ("create", {"frontdoor.pki.certificate_request_token": {"name": "approle", "common_name": "approle"}}),
        ("redeem", {"frontdoor.pki.client_certificate": {"token": "{{ create.token.token }}",
                                                         "privatekey_path": str(tmp_path / "k.pem"),
                                                         "path": str(tmp_path / "c.pem")}}),
        ("wrong_secret", {"frontdoor.pki.certificate_request_token_info": {"vault_secret_id": "not-" + secret_id}}),
    ], module_defaults=defaults, extra_args=["-v"])
    assert ok(r["create"])["changed"] is True
    assert ok(r["redeem"])["common_name"] == "approle"
    assert r["wrong_secret"]["failed"] is True and r["wrong_secret"].get("error_code")
    assert "AppRole" in r["wrong_secret"]["msg"]
    assert secret_id not in proc.stdout + proc.stderr
