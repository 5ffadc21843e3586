"""`frontdoor-gateway rotate-intermediate`: a new intermediate for a frontdoor of the local CA.

Real processes throughout: the admin command, and gateways before and after (a running signer keeps the key it
loaded, so the gateway is restarted as docs/operations.md says). Certificates issued before the rotation keep
verifying through the chain stored with them; new ones chain to the new intermediate; GET /ca serves the new chain.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from support.crypto import make_csr, make_key
from support.gateway import GATEWAY_BIN, run_gateway

pytestmark = pytest.mark.slow


def gateway_cli(*args: str, state_dir: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    return subprocess.run([GATEWAY_BIN, *args, "--state-dir", state_dir], capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def issue(gw, name: str):
    """Create and redeem a token; (certificate id, certificate, chain as returned)."""
    created = gw.create_token(name=name, commonName=name + ".example.com")
    assert created.status_code == 201, created.text
    answer = gw.redeem(created.json()["token"], make_csr(make_key("p256"), cn="x"))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["id"], x509.load_pem_x509_certificate(body["certificate"].encode()), body["caChain"]


def chain_verifies(cert: x509.Certificate, chain_pems) -> None:
    """cert <- chain[0] <- ... <- chain[-1] (self-signed root): each link's signature and issuer name."""
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pems]
    for child, parent in zip([cert] + chain[:-1], chain):
        child.verify_directly_issued_by(parent)
    chain[-1].verify_directly_issued_by(chain[-1])


def test_rotation_keeps_old_certificates_valid_and_issues_from_the_new_intermediate(tmp_path):
    state = str(tmp_path / "state")
    with run_gateway(state) as gw:
        old_id, old_cert, old_chain = issue(gw, "before")
        old_ca = gw.request("GET", "/frontdoor/default/ca", auth=False).text

    proc = gateway_cli("rotate-intermediate", state_dir=state)
    assert proc.returncode == 0, proc.stderr
    assert "retired:" in proc.stdout and "restart every gateway" in proc.stdout

    retired = os.path.join(state, "ca", "default", "retired")
    names = sorted(os.listdir(retired))
    serial = "%x" % x509.load_pem_x509_certificate(old_chain[0].encode()).serial_number
    assert names == ["intermediate-%s.key" % serial, "intermediate-%s.pem" % serial]
    assert stat.S_IMODE(os.stat(os.path.join(retired, names[0])).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(state, "ca", "default", "intermediate.key")).st_mode) == 0o600

    with run_gateway(state) as gw:
        new_id, new_cert, new_chain = issue(gw, "after")
        ca = gw.request("GET", "/frontdoor/default/ca", auth=False)
        old_record = gw.request("GET", "/frontdoor/default/client-certificates/%s" % old_id)
        assert old_record.status_code == 200
        old_record = old_record.json()

    # the same root, a new intermediate with its own key and its own name
    assert new_chain[-1] == old_chain[-1]
    old_int = x509.load_pem_x509_certificate(old_chain[0].encode())
    new_int = x509.load_pem_x509_certificate(new_chain[0].encode())
    assert new_int.serial_number != old_int.serial_number
    assert new_int.subject != old_int.subject
    assert new_int.public_key().public_bytes(*_spki()) != old_int.public_key().public_bytes(*_spki())
    assert new_cert.issuer == new_int.subject
    chain_verifies(new_cert, new_chain)
    with pytest.raises((ValueError, InvalidSignature)):  # the old intermediate did not sign it
        new_cert.verify_directly_issued_by(old_int)

    # the old certificate still verifies, through the chain recorded with it
    assert old_record["caChain"] == old_chain
    chain_verifies(old_cert, old_record["caChain"])

    # GET /ca serves the new chain
    assert ca.status_code == 200
    assert ca.text != old_ca
    assert x509.load_pem_x509_certificates(ca.text.encode())[0] == new_int


def test_an_interrupted_rotation_is_refused_then_finished_by_running_it_again(tmp_path):
    """A key that does not match its certificate (a crash between the two writes) is never signed with."""
    state = str(tmp_path / "state")
    assert gateway_cli("init", state_dir=state).returncode == 0
    key_path = os.path.join(state, "ca", "default", "intermediate.key")
    other = os.path.join(state, "ca", "root.key")  # any other valid key stands in for the half-written rotation
    with open(other, "rb") as src, open(key_path, "wb") as dst:
        dst.write(src.read())

    refused = gateway_cli("create-token", "--name", "x", state_dir=state)
    assert refused.returncode == 1
    assert "signer_unavailable" in refused.stderr and "rotate-intermediate" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert gateway_cli("rotate-intermediate", state_dir=state).returncode == 0
    with run_gateway(state) as gw:
        _id, cert, chain = issue(gw, "healed")
    chain_verifies(cert, chain)


def test_rotation_refuses_unknown_frontdoors_and_other_signers(tmp_path):
    state = str(tmp_path / "state")
    unknown = gateway_cli("rotate-intermediate", "--frontdoor", "nope", state_dir=state)
    assert unknown.returncode == 2 and "not configured" in unknown.stderr
    config = tmp_path / "config.yaml"
    config.write_text("frontdoors:\n  - {id: default}\n  - {id: remote, signer: step-ca}\n")
    other = gateway_cli("rotate-intermediate", "--frontdoor", "remote", "--config", str(config), state_dir=state)
    assert other.returncode == 2 and "step-ca" in other.stderr
    assert not os.path.exists(os.path.join(state, "ca", "remote"))


def _spki():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo



@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a rotation on a state dir owned by another user")
def test_rotation_as_root_leaves_the_files_to_the_state_dirs_owner(tmp_path):
    state = str(tmp_path / "state")
    assert gateway_cli("init", state_dir=state).returncode == 0
    uid, gid = 65534, 65534  # nobody: stands in for the service user
    for directory, dirs, files in os.walk(state):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            os.chown(name, uid, gid)
    assert gateway_cli("rotate-intermediate", state_dir=state).returncode == 0
    frontdoor_dir = os.path.join(state, "ca", "default")
    for directory, dirs, files in os.walk(frontdoor_dir):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            assert (os.stat(name).st_uid, os.stat(name).st_gid) == (uid, gid), name
