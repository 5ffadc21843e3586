"""Gateway processes on OpenBao: env-only start, the policy command, racing gateways, timeouts over HTTP."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from frontdoor_pki.config import load_config
from frontdoor_pki.vault.policy import render_policy
from support.crypto import load_cert, make_csr, shared_key
from support.gateway import GATEWAY_BIN, run_gateway
from support.openbao import ROOT_CA_CN

pytestmark = pytest.mark.vault


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    env.update(extra)
    return env


def test_vault_policy_command_prints_render_policy(bao, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "backend: vault\nvault: {kvMount: kv2, kvPrefix: gw}\nfrontdoors:\n"
        "  - {id: a, signer: {type: vault, pkiMount: pki-a}}\n"
        "  - {id: b, signer: {type: vault, manageRoles: false, role: ops}}\n"
    )
    env = _clean_env(VAULT_ADDR=bao.url)
    out = subprocess.run([GATEWAY_BIN, "vault-policy", "--state-dir", str(tmp_path / "s"), "--config", str(config_file)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = render_policy(load_config(str(config_file), state_dir=str(tmp_path / "s"), env=env))
    assert out.stdout.strip() == expected.strip()
    assert 'path "kv2/data/gw/*"' in out.stdout and 'path "pki-a/sign/frontdoor-*"' in out.stdout
    assert 'path "pki/sign/ops"' in out.stdout and 'path "pki-a/roles/frontdoor-*"' in out.stdout
    assert 'path "pki/roles/' not in out.stdout  # frontdoor b uses an operator's role: no role writes
    assert 'path "secret/' not in out.stdout
    # policies with what the store and signers need -- and the printed HCL is accepted by OpenBao
    bao.root("PUT", "sys/policies/acl/printed-check", json={"policy": out.stdout})


def _reference_workflow(gw, frontdoor="default"):
    created = gw.request("POST", "/frontdoor/%s/certificate-request-tokens" % frontdoor, json={
        "name": "laptop-alice", "commonName": "alice", "organization": "Example Org", "organizationalUnit": "Engineering",
    })
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    redeemed = gw.redeem(secret, make_csr(shared_key("p256", 40), cn="ignored"), frontdoor=frontdoor)
    assert redeemed.status_code == 201, redeemed.text
    body = redeemed.json()
    cert = load_cert(body["certificate"])
    assert {(a.oid._name, a.value) for a in cert.subject} == {
        ("commonName", "alice"), ("organizationName", "Example Org"), ("organizationalUnitName", "Engineering")}
    assert ROOT_CA_CN in load_cert(body["caChain"][-1]).subject.rfc4514_string()
    again = gw.redeem(secret, make_csr(shared_key("p256", 41), cn="x"), frontdoor=frontdoor)
    assert again.status_code == 409 and again.json()["error"]["code"] == "token_already_used"
    return body


@pytest.mark.parametrize("prefix", ["VAULT", "BAO"])
def test_env_only_gateway_runs_the_reference_workflow(bao, tmp_path, prefix):
    """FRONTDOOR_BACKEND=vault + *_ADDR + *_TOKEN (a token with the printed policy) is enough."""
    env = _clean_env(FRONTDOOR_BACKEND="vault", **{prefix + "_ADDR": bao.url, prefix + "_TOKEN": "unused"})
    policy = subprocess.run([GATEWAY_BIN, "vault-policy", "--state-dir", str(tmp_path / "p")], capture_output=True,
                            text=True, env=env, timeout=60)
    assert policy.returncode == 0, policy.stderr
    assert 'path "secret/data/frontdoor/*"' in policy.stdout and 'path "pki/sign/frontdoor-*"' in policy.stdout
    token = bao.token_for_policy(policy.stdout)
    with run_gateway(str(tmp_path / "state"), env={"FRONTDOOR_BACKEND": "vault", prefix + "_ADDR": bao.url,
                                                   prefix + "_TOKEN": token}) as gw:
        _reference_workflow(gw)
        assert not os.path.exists(os.path.join(gw.state_dir, "frontdoor.db"))  # no local state
        assert token not in gw.log()


def test_two_gateway_processes_race_one_certificate(bao, tmp_path):
    data = bao.vault_config(state_dir=str(tmp_path))
    rounds, racers = 4, 8
    with run_gateway(str(tmp_path / "a"), config=data) as a, run_gateway(str(tmp_path / "b"), config=data) as b:
        for round_number in range(rounds):
            created = a.create_token(commonName="race-%d" % round_number)
            assert created.status_code == 201, created.text
            secret = created.json()["token"]
            before = bao.certificate_count()
            barrier = threading.Barrier(racers)
            results = [None] * racers

            def redeem(i):
                gw = a if i % 2 else b
                csr = make_csr(shared_key("p256", 50 + i), cn="x")
                barrier.wait(timeout=30)
                results[i] = gw.redeem(secret, csr)

            threads = [threading.Thread(target=redeem, args=(i,)) for i in range(racers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            codes = sorted(r.status_code for r in results)
            assert codes.count(201) == 1, [r.text for r in results]
            assert set(codes) <= {201, 409}, [r.text for r in results]
            assert {r.json()["error"]["code"] for r in results if r.status_code == 409} <= {
                "token_already_used", "redemption_in_progress"}
            # the losers never had anything signed: exactly one new certificate in Vault
            assert bao.certificate_count() == before + 1
        listed = b.request("GET", "/frontdoor/default/client-certificates?size=100").json()
        assert listed["totalElements"] == rounds


def test_gateway_timeout_with_frozen_vault(own_bao, tmp_path):
    data = own_bao.vault_config(state_dir=str(tmp_path))
    with run_gateway(str(tmp_path / "gw"), config=data, env={"FRONTDOOR_VAULT_TIMEOUT": "1"}) as gw:
        created = gw.create_token(commonName="frozen-http")
        secret = created.json()["token"]
        csr = make_csr(shared_key("p256", 60), cn="x")
        with own_bao.frozen():
            started = time.monotonic()
            answer = gw.redeem(secret, csr)
            elapsed = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] in ("store_unavailable", "signer_unavailable")
        assert elapsed < 5, elapsed
        assert secret not in answer.text and data["vault"]["token"] not in answer.text
        deadline = time.monotonic() + 10  # the thawed server may need a moment to answer within 1 s again
        ok = gw.redeem(secret, csr)
        while ok.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            ok = gw.redeem(secret, csr)
        assert ok.status_code == 201, ok.text
        assert secret not in gw.log() and data["vault"]["token"] not in gw.log()
