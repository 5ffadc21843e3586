"""``python -m bench.ansible_fleet [--hosts 20] [--forks 5] [--rounds 1]``: enrolling a fleet with Ansible, timed.

Issue 15's target, measured side by side in one run on this machine:

* **frontdoor.pki**: ``playbooks/issue-client-certificates.yml`` (one ``frontdoor.pki.enroll`` task per host)
  against a real gateway - the first run (a token minted and redeemed per host), the rerun (nothing to do, no
  token) and the renewal run (every certificate within ``remaining_days``: renewed with the current
  certificate, no token);
* **community.crypto**: the usual play - ``openssl_privatekey`` + ``x509_certificate_info`` (is it due?) +
  ``openssl_csr`` + ``x509_certificate`` with the ``ownca`` provider (``force`` when due) + the chain copied -
  with the same three runs. The CA files are on the same machine, so no CSR or certificate travels between
  controller and host: the fastest form of that play.

Both use ``N`` hosts with ``ansible_connection=local``, a directory each, the same forks. Wall time per run,
median of ``--rounds``. community.crypto is not in the locks: it is taken from the ``ansible`` package's wheel on
PyPI (``pip download ansible==<ANSIBLE_PACKAGE_VERSION> --no-deps``, the release built for ansible-core 2.19),
cached under ``.tmp/bench-cache`` and put on ANSIBLE_COLLECTIONS_PATH for this run only. Not a test: ``make
bench-ansible`` (the figures go to bench/results/ansible-fleet.json and docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Dict, List

import requests

from .gateway import start_gateway

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CACHE = os.path.join(ROOT, ".tmp", "bench-cache")
RESULTS = os.path.join(ROOT, "bench", "results", "ansible-fleet.json")
ANSIBLE_PACKAGE_VERSION = os.environ.get("ANSIBLE_PACKAGE_VERSION", "12.3.0")  # ships community.crypto 3.0.5
CERT_LIFETIME_DAYS = 30
REMAINING_DAYS = 10

COMMUNITY_CRYPTO_PLAY = """
- name: community.crypto - key, CSR and certificate from our own CA on every host
  hosts: pki_clients
  gather_facts: false
  vars:
    frontdoor_dir: "{{ frontdoor_pki_dir }}"
  tasks:
    - name: Certificate directory
      ansible.builtin.file:
        path: "{{ frontdoor_dir }}"
        state: directory
        mode: "0755"
    - name: Private key
      community.crypto.openssl_privatekey:
        path: "{{ frontdoor_dir }}/client.key"
        type: ECC
        curve: secp256r1
    - name: Is the certificate due?
      community.crypto.x509_certificate_info:
        path: "{{ frontdoor_dir }}/client.crt"
        valid_at:
          renew: "+{{ frontdoor_remaining_days }}d"
      register: current
      failed_when: false
    - name: CSR
      community.crypto.openssl_csr:
        path: "{{ frontdoor_dir }}/client.csr"
        privatekey_path: "{{ frontdoor_dir }}/client.key"
        common_name: "{{ inventory_hostname }}"
        organization_name: Bench Org
        extended_key_usage: [clientAuth]
        basic_constraints: ["CA:FALSE"]
    - name: Certificate from the CA (renewed when due)
      community.crypto.x509_certificate:
        path: "{{ frontdoor_dir }}/client.crt"
        csr_path: "{{ frontdoor_dir }}/client.csr"
        provider: ownca
        ownca_path: "{{ bench_ca_dir }}/ca.pem"
        ownca_privatekey_path: "{{ bench_ca_dir }}/ca.key"
        ownca_not_after: "+%(lifetime)dd"
        force: "{{ current.valid_at is defined and not current.valid_at.renew }}"
        mode: "0644"
    - name: CA chain
      ansible.builtin.copy:
        src: "{{ bench_ca_dir }}/ca.pem"
        dest: "{{ frontdoor_dir }}/ca-chain.pem"
        mode: "0644"
""" % {"lifetime": CERT_LIFETIME_DAYS}


def community_crypto() -> str:
    """A collections directory holding community.crypto from the ansible wheel (downloaded once)."""
    collections = os.path.join(CACHE, "ansible-%s" % ANSIBLE_PACKAGE_VERSION)
    target = os.path.join(collections, "ansible_collections", "community", "crypto")
    if os.path.isfile(os.path.join(target, "MANIFEST.json")):
        return collections
    os.makedirs(CACHE, exist_ok=True)
    wheel = os.path.join(CACHE, "ansible-%s-py3-none-any.whl" % ANSIBLE_PACKAGE_VERSION)
    if not os.path.exists(wheel):
        subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                        "--no-deps", "--only-binary=:all:", "-d", CACHE, "ansible==%s" % ANSIBLE_PACKAGE_VERSION],
                       check=True)
    prefix = "ansible_collections/community/crypto/"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                archive.extract(name, collections)
    return collections


def make_ca(directory: str) -> None:
    """The CA of the community.crypto play: EC P-256, like the frontdoor's local CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench ownca")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "ca.key"), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(os.path.join(directory, "ca.key"), 0o600)
    with open(os.path.join(directory, "ca.pem"), "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))


def inventory(path: str, base: str, hosts: int) -> None:
    lines = ["all:", "  vars:", "    ansible_connection: local", "    ansible_python_interpreter: %s" % sys.executable,
             "  children:", "    pki_clients:", "      hosts:"]
    for i in range(1, hosts + 1):
        lines += ["        host%02d:" % i, "          frontdoor_pki_dir: %s" % os.path.join(base, "host%02d" % i)]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def run_play(playbook: str, inv: str, env: Dict[str, str], forks: int, extra: List[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inv, "-f", str(forks), playbook] + extra,
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    recap = proc.stdout.split("PLAY RECAP")[-1]
    if proc.returncode != 0 or "failed=0" not in recap:
        raise RuntimeError("%s failed:\n%s\n%s" % (playbook, proc.stdout[-4000:], proc.stderr[-2000:]))
    return elapsed


def count(gateway, what: str) -> int:
    response = requests.get("%s/frontdoor/default/%s" % (gateway.url, what), params={"size": 1},
                            headers={"Authorization": "Bearer %s" % gateway.admin_token}, timeout=10)
    return response.json()["totalElements"]


def one_round(work: str, collections: str, hosts: int, forks: int) -> Dict[str, float]:
    """Both ways, three runs each, in fresh directories."""
    ours_base, theirs_base = os.path.join(work, "ours"), os.path.join(work, "theirs")
    os.makedirs(ours_base)
    os.makedirs(theirs_base)
    links = os.path.join(work, "collections", "ansible_collections")
    os.makedirs(os.path.join(links, "frontdoor"))
    os.symlink(ROOT, os.path.join(links, "frontdoor", "pki"))
    os.symlink(os.path.join(collections, "ansible_collections", "community"), os.path.join(links, "community"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "ANSIBLE_"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "collections"), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               HOME=work, ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="false", ANSIBLE_HOST_KEY_CHECKING="false")
    times: Dict[str, float] = {}

    gateway = start_gateway(os.path.join(work, "gw"), config={
        "frontdoors": [{"id": "default", "certificateTtl": "%dd" % CERT_LIFETIME_DAYS}]})
    try:
        ours_env = dict(env, FRONTDOOR_API_TOKEN=gateway.admin_token)
        inv = os.path.join(work, "ours.yml")
        inventory(inv, ours_base, hosts)
        playbook = os.path.join(ROOT, "playbooks", "issue-client-certificates.yml")
        common = ["-e", "frontdoor_gateway_url=%s" % gateway.url]
        times["ours_first"] = run_play(playbook, inv, ours_env, forks, common + ["-e", "frontdoor_remaining_days=%d"
                                                                                 % REMAINING_DAYS])
        tokens = count(gateway, "certificate-request-tokens")
        times["ours_rerun"] = run_play(playbook, inv, ours_env, forks, common + ["-e", "frontdoor_remaining_days=%d"
                                                                                 % REMAINING_DAYS])
        times["ours_renew"] = run_play(playbook, inv, ours_env, forks, common + ["-e", "frontdoor_remaining_days=%d"
                                                                                 % CERT_LIFETIME_DAYS])
        if count(gateway, "certificate-request-tokens") != tokens or tokens != hosts:
            raise RuntimeError("tokens: %d after the first run, %d at the end (expected %d, no more)"
                               % (tokens, count(gateway, "certificate-request-tokens"), hosts))
        if count(gateway, "client-certificates") != 2 * hosts:
            raise RuntimeError("expected %d certificates (issued + renewed), the gateway has %d"
                               % (2 * hosts, count(gateway, "client-certificates")))
    finally:
        gateway.stop()

    ca_dir = os.path.join(work, "ca")
    make_ca(ca_dir)
    play = os.path.join(work, "community-crypto.yml")
    with open(play, "w", encoding="utf-8") as handle:
        handle.write(COMMUNITY_CRYPTO_PLAY)
    inv = os.path.join(work, "theirs.yml")
    inventory(inv, theirs_base, hosts)
    common = ["-e", "bench_ca_dir=%s" % ca_dir]
    times["cc_first"] = run_play(play, inv, env, forks, common + ["-e", "frontdoor_remaining_days=%d" % REMAINING_DAYS])
    times["cc_rerun"] = run_play(play, inv, env, forks, common + ["-e", "frontdoor_remaining_days=%d" % REMAINING_DAYS])
    times["cc_renew"] = run_play(play, inv, env, forks, common + ["-e", "frontdoor_remaining_days=%d"
                                                                  % CERT_LIFETIME_DAYS])
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--forks", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=RESULTS)
    args = parser.parse_args(argv)
    collections = community_crypto()
    rounds = []
    for _ in range(args.rounds):
        work = tempfile.mkdtemp(prefix="frontdoor-fleet-bench-")
        try:
            rounds.append(one_round(work, collections, args.hosts, args.forks))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    load = os.getloadavg()
    lines = ["Ansible fleet enrolment: %d hosts (ansible_connection=local), forks %d, median of %d round(s); "
             "load average %.1f at the end" % (args.hosts, args.forks, args.rounds, load[0]),
             "| run | frontdoor.pki enroll | community.crypto (ownca) | ratio |", "|---|---|---|---|"]
    for run, label in (("first", "first run (issue)"), ("rerun", "rerun (nothing to do)"),
                       ("renew", "renewal run (all due)")):
        ours, theirs = median["ours_" + run], median["cc_" + run]
        lines.append("| %s | %.1f s | %.1f s | %.1fx |" % (label, ours, theirs, theirs / ours))
    print("\n".join(lines))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"hosts": args.hosts, "forks": args.forks, "rounds": rounds, "median": median,
                   "ansible_package": ANSIBLE_PACKAGE_VERSION, "load_average": load,
                   "when": _dt.datetime.now(_dt.timezone.utc).isoformat()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
