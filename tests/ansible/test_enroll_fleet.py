"""frontdoor.pki.enroll on a fleet: 20 hosts (local connections, a directory each) against a real gateway.

The target of issue 15: the first run issues 20 certificates; a rerun reports changed=0 and creates no token;
with the certificates close to expiry a run renews them all without any new token. Plus what a fleet owner
meets: a deleted or revoked certificate gets a new token, check mode mints nothing, admin errors stay visible,
and the token secret is in no output. (Timings against community.crypto: bench/ansible_fleet.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from ansible_helpers import BIN, ROOT, ansible_env
from support.gateway import run_gateway

pytestmark = pytest.mark.ansible

HOSTS = 20
PLAYBOOK = os.path.join(ROOT, "playbooks", "issue-client-certificates.yml")
CERT_LIFETIME_DAYS = 30


def write_inventory(path, base, hosts):
    lines = ["all:", "  vars:", "    ansible_connection: local", "    ansible_python_interpreter: %s" % sys.executable,
             "  children:", "    pki_clients:", "      hosts:"]
    for host in hosts:
        lines += ["        %s:" % host, "          frontdoor_pki_dir: %s" % os.path.join(base, host)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, collections_dir):
    base = tmp_path_factory.mktemp("fleet")
    config = {"frontdoors": [{"id": "default", "certificateTtl": "%dd" % CERT_LIFETIME_DAYS}]}
    with run_gateway(str(base / "gw"), config=config) as gw:
        yield gw, base


def play(gw, base, collections_dir, inventory, *extra, check=True):
    env = ansible_env(collections_dir, str(base), {"FRONTDOOR_API_TOKEN": gw.admin_token})
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), "-f", "10", PLAYBOOK,
           "-e", "frontdoor_gateway_url=%s" % gw.url, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("[WARNING]")]
        assert not warnings, warnings
    assert "crt_" not in proc.stdout + proc.stderr, "a token secret in the output"
    return proc


def recap(stdout):
    """{host: {ok, changed, failed, ...}} from the PLAY RECAP."""
    hosts = {}
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def total(gw, what):
    path = "/frontdoor/default/%s" % what
    return gw.request("GET", path, params={"size": 1}).json()["totalElements"]


def serials(base, hosts):
    from cryptography import x509

    return {h: x509.load_pem_x509_certificate((base / h / "client.crt").read_bytes()).serial_number for h in hosts}


def test_twenty_hosts_issue_rerun_renew(fleet, collections_dir):
    gw, base = fleet
    hosts = ["host%02d" % i for i in range(1, HOSTS + 1)]
    inventory = base / "fleet.yml"
    write_inventory(inventory, str(base), hosts)

    first = play(gw, base, collections_dir, inventory, "-e", "frontdoor_remaining_days=10")
    assert set(recap(first.stdout)) == set(hosts)
    assert all(r["failed"] == 0 and r["changed"] == 2 for r in recap(first.stdout).values()), first.stdout[-3000:]
    assert total(gw, "certificate-request-tokens") == HOSTS
    assert total(gw, "client-certificates") == HOSTS
    issued = serials(base, hosts)
    assert len(set(issued.values())) == HOSTS
    assert first.stdout.count("issued from a new token") == HOSTS

    second = play(gw, base, collections_dir, inventory, "-e", "frontdoor_remaining_days=10")
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap(second.stdout).values()), second.stdout[-3000:]
    assert total(gw, "certificate-request-tokens") == HOSTS, "a rerun minted a token"
    assert total(gw, "client-certificates") == HOSTS
    assert serials(base, hosts) == issued

    # every certificate now expires within remaining_days: all renew with the current certificate, no token
    third = play(gw, base, collections_dir, inventory, "-e", "frontdoor_remaining_days=%d" % CERT_LIFETIME_DAYS)
    assert all(r["changed"] == 1 and r["failed"] == 0 for r in recap(third.stdout).values()), third.stdout[-3000:]
    assert third.stdout.count("renewed") >= HOSTS
    assert total(gw, "certificate-request-tokens") == HOSTS, "renewal minted a token"
    assert total(gw, "client-certificates") == 2 * HOSTS
    renewed = serials(base, hosts)
    assert all(renewed[h] != issued[h] for h in hosts)


def test_deleted_revoked_check_mode_and_visible_errors(fleet, collections_dir):
    gw, base = fleet
    hosts = ["solo1", "solo2"]
    inventory = base / "solo.yml"
    write_inventory(inventory, str(base), hosts)
    play(gw, base, collections_dir, inventory)
    tokens_before = total(gw, "certificate-request-tokens")

    # check mode on a fresh host: reports a change, mints nothing, writes nothing
    write_inventory(base / "fresh.yml", str(base), ["fresh1"])
    dry = play(gw, base, collections_dir, base / "fresh.yml", "--check")
    assert recap(dry.stdout)["fresh1"]["changed"] >= 1
    assert not (base / "fresh1" / "client.crt").exists()
    assert total(gw, "certificate-request-tokens") == tokens_before

    # solo1's certificate file deleted, solo2's certificate revoked: each gets a new token, nothing else does
    os.unlink(base / "solo1" / "client.crt")
    solo2 = serials(base, ["solo2"])["solo2"]
    certs = gw.request("GET", "/frontdoor/default/client-certificates", params={"size": 1000}).json()["content"]
    (record,) = [c for c in certs if int(c["serialNumber"].replace(":", ""), 16) == solo2]
    assert gw.request("DELETE", "/frontdoor/default/client-certificates/%s" % record["id"]).status_code in (200, 204)
    again = play(gw, base, collections_dir, inventory, "-e", "frontdoor_remaining_days=%d" % CERT_LIFETIME_DAYS)
    assert all(r["changed"] == 1 for r in recap(again.stdout).values()), again.stdout[-3000:]
    assert again.stdout.count("issued from a new token") == 2
    assert total(gw, "certificate-request-tokens") == tokens_before + 2

    # a wrong admin token: the error is there to read, not "censored"
    os.unlink(base / "solo1" / "client.crt")
    env = ansible_env(collections_dir, str(base), {"FRONTDOOR_API_TOKEN": "fdk_wrong"})
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), "--limit", "solo1", PLAYBOOK,
                           "-e", "frontdoor_gateway_url=%s" % gw.url], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode != 0
    assert "censored" not in proc.stdout
    assert "unauthorized" in proc.stdout or "api_token" in proc.stdout, proc.stdout[-3000:]


def test_enroll_on_the_embedded_engine_registers_no_secret(play, tmp_path):
    """Without a gateway: the controller enrols itself on a state dir; SANs from the token; the info module."""
    import json

    files = {"privatekey_path": str(tmp_path / "k.pem"), "path": str(tmp_path / "c.pem"),
             "chain_path": str(tmp_path / "chain.pem")}
    enroll = dict(files, common_name="self.example.com", subject_alt_names={"dns": ["self.example.com"],
                                                                             "uri": ["spiffe://example.org/self"]})
    results, proc = play.run([
        ("first", {"frontdoor.pki.enroll": enroll}),
        ("again", {"frontdoor.pki.enroll": enroll}),
        ("info", {"frontdoor.pki.client_certificate_info": dict(files, remaining_days=400)}),
    ], module_defaults={"state_dir": str(tmp_path / "state")})
    first, again, info = results["first"], results["again"], results["info"]
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True and first["minted"] is True and first["redeemed"] is True
    assert again["changed"] is False and again["minted"] is False
    assert info["exists"] is True and info["key_matches"] is True and info["issued_by_frontdoor"] is True
    assert info["subject_alt_names"]["dns"] == ["self.example.com"]
    assert info["subject_alt_names"]["uri"] == ["spiffe://example.org/self"]
    assert info["needs_renewal"] is True and info["common_name"] == "self.example.com"
    assert "crt_" not in json.dumps(results) and "crt_" not in proc.stdout


def test_enroll_failures_are_visible_and_leave_no_orphan_token(play, tmp_path):
    state = str(tmp_path / "state")
    results, _proc = play.run([
        # the host cannot write its key: the token minted for it is deleted again
        ("unwritable", {"frontdoor.pki.enroll": {"privatekey_path": str(tmp_path / "missing" / "k.pem"),
                                                 "path": str(tmp_path / "c.pem")}}),
        # the controller cannot mint (a CN the frontdoor refuses): the error is there to read
        ("refused", {"frontdoor.pki.enroll": {"privatekey_path": str(tmp_path / "k.pem"),
                                              "path": str(tmp_path / "c.pem"), "common_name": "x" * 65}}),
        ("left", {"frontdoor.pki.certificate_request_token_info": {}}),
    ], module_defaults={"state_dir": state})
    unwritable, refused = results["unwritable"], results["refused"]
    assert unwritable["failed"] is True and unwritable["minted"] is True and unwritable["token_deleted"] is True
    assert "does not exist" in unwritable["msg"]
    assert refused["failed"] is True and refused["minted"] is False
    assert refused["error_code"] == "invalid_request" and "Minting a token" in refused["msg"]
    assert "censored" not in str(refused)
    assert results["left"]["tokens"] == []


def test_enroll_revokes_and_decommissions(play, tmp_path):
    files = {"path": str(tmp_path / "c.pem"), "chain_path": str(tmp_path / "chain.pem")}
    results, _proc = play.run([
        ("enrolled", {"frontdoor.pki.enroll": dict(files, privatekey_path=str(tmp_path / "k.pem"))}),
        ("revoked", {"frontdoor.pki.enroll": dict(files, state="revoked")}),
        ("again", {"frontdoor.pki.enroll": dict(files, state="revoked")}),
        ("renewal", {"frontdoor.pki.client_certificate": dict(files, privatekey_path=str(tmp_path / "k.pem"),
                                                              remaining_days=400, missing_token="skip")}),
        ("gone", {"frontdoor.pki.enroll": dict(files, state="absent", revoke=True)}),
        ("nothing", {"frontdoor.pki.enroll": dict(files, state="absent", revoke=True)}),
    ], module_defaults={"state_dir": str(tmp_path / "state")})
    assert results["enrolled"]["minted"] is True
    revoked = results["revoked"]
    assert revoked["changed"] is True and revoked["revoked"] is True
    assert revoked["serial_number"] == results["enrolled"]["serial_number"]
    assert results["again"]["changed"] is False
    assert results["renewal"]["needs_token"] is True and results["renewal"]["renewal_refused"] == "certificate_revoked"
    gone = results["gone"]
    assert gone["changed"] is True and gone["removed"] == [files["path"], files["chain_path"]]
    assert (tmp_path / "k.pem").exists() and not (tmp_path / "c.pem").exists()
    assert results["nothing"]["changed"] is False and results["nothing"]["revoked"] is False
