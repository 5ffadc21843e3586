"""``python -m bench.vault_ops``: OpenBao CPU per request for the operations a redemption uses.

Why: with the client, the gateway and OpenBao on the same cores, throughput follows CPU per
redemption. What OpenBao itself spends per KV v2 read, KV v2 check-and-set write and
``pki/sign`` is the floor of any KV-backed design, whatever the gateway does. Measured at
saturation (8 clients, closed loop, the bench's lean load generator) because Go's scheduler
spins when lightly loaded and would inflate per-request CPU at 1 client. The token is
policy-limited (the policy ``vault_policy.render_policy`` gives the gateway, plus signing with
the raw role), like the gateway's and the raw row's: the root token skips the ACL check.

Rows run in interleaved rounds (read, write, sign, read, ...) and report the median round.
Every write is a distinct key at KV version 1 written with ``cas=1`` (a claim), with a body
the size of a real token record; the "record" write carries a certificate as a redemption's
record CAS does.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import requests

from .csrs import make_csrs
from .gateway import process_cpu_seconds
from .loadgen import build_request, run_load
from .openbao import OpenBao, setup_pki, start_openbao, token_for

ROLE = "bench-raw"
PREFIX = "bench-ops"

RECORD = {
    "id": "tok_0123456789abcdef01234567", "frontdoorId": "default", "name": "bench-token-000000",
    "secretHash": "0" * 64, "commonName": "bench-cn", "organization": "Bench Org",
    "organizationalUnit": "Bench Unit", "createdAt": 1764300000.123456, "createdBy": "admin",
    "expiresAt": 1764386400.123456, "updatedAt": 1764300000.123456, "state": "active", "certificateTtl": None,
    "redeemedAt": None, "certificateId": None, "publicKeySha256": None, "claimId": "a" * 32,
    "claimUntil": 1764300030.0, "version": 2, "base": 0,
}


def _policy() -> str:
    from frontdoor_pki.config import load_config
    from frontdoor_pki.vault.policy import render_policy

    data = {"backend": "vault", "vault": {"url": "http://127.0.0.1:1", "token": "x", "kvPrefix": PREFIX},
            "frontdoors": [{"id": "default", "signer": "vault"}]}
    with tempfile.TemporaryDirectory() as state:
        policy = render_policy(load_config(None, state, env={}, data=data))
    return policy + '\npath "pki/sign/%s" {\n  capabilities = ["update"]\n}\n' % ROLE


def _prepare_keys(bao: OpenBao, token: str, count: int, start: int) -> List[str]:
    """``count`` keys at KV version 1 (what a fresh token record is before its claim)."""
    names = ["t/%064x" % (start + i) for i in range(count)]

    def create(chunk: List[str]) -> None:
        with requests.Session() as s:
            for name in chunk:
                r = s.post("%s/v1/secret/data/%s/%s" % (bao.url, PREFIX, name), headers={"X-Vault-Token": token},
                           json={"options": {"cas": 0}, "data": dict(RECORD, claimId=None, version=1)}, timeout=30)
                r.raise_for_status()

    chunks = [names[i::8] for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, chunks))
    return names


def measure(rounds: int = 3, seconds: float = 3.0, clients: int = 8, work: Optional[str] = None,
            token_type: str = "service") -> Dict[str, object]:
    own_work = work is None
    work = work or tempfile.mkdtemp(prefix="frontdoor-vault-ops-")
    bao = start_openbao(os.path.join(work, "openbao"))
    try:
        setup_pki(bao)
        from frontdoor_pki.signers.vault_pki import role_parameters

        bao.api("POST", "pki/roles/%s" % ROLE, role_parameters("Bench Org", "Bench Unit", 365 * 86400, False))
        token = token_for(bao, "bench-ops", _policy(), token_type)
        host = bao.url.split("//", 1)[1]
        headers = {"X-Vault-Token": token}
        per_row = int(6000 * seconds * rounds)  # above what 2 cores do for reads and signs
        per_write_row = int(2500 * seconds * rounds)  # above what 2 cores do for KV writes
        csrs = make_csrs(2000)
        cert = bao.api("POST", "pki/sign/%s" % ROLE, {"csr": csrs[0], "common_name": "x", "format": "pem"})["data"]
        certificate = {"id": "crt_0123456789abcdef01234567", "certificate": cert["certificate"],
                       "caChain": cert["ca_chain"], "serialNumber": "ab" * 16, "notBefore": 1.0, "notAfter": 2.0}
        read_keys = _prepare_keys(bao, token, 2000, 0)
        claim_keys = _prepare_keys(bao, token, per_write_row, 10_000_000)
        record_keys = _prepare_keys(bao, token, per_write_row, 20_000_000)
        pools = {
            "kv_read": [build_request("GET", host, "/v1/secret/data/%s/%s" % (PREFIX, read_keys[i % len(read_keys)]),
                                      None, headers) for i in range(per_row)],
            "kv_cas_write": [build_request("POST", host, "/v1/secret/data/%s/%s" % (PREFIX, k),
                                           {"options": {"cas": 1}, "data": RECORD}, headers) for k in claim_keys],
            "kv_cas_write_with_cert": [
                build_request("POST", host, "/v1/secret/data/%s/%s" % (PREFIX, k),
                              {"options": {"cas": 1}, "data": dict(RECORD, certificate=certificate)}, headers)
                for k in record_keys],
            "pki_sign": [build_request("POST", host, "/v1/pki/sign/%s" % ROLE, {
                "csr": csrs[i % len(csrs)], "common_name": "bench-raw-%d" % i, "use_csr_common_name": False,
                "use_csr_sans": False, "exclude_cn_from_sans": True, "ttl": "%ds" % (365 * 86400), "format": "pem",
            }, headers) for i in range(per_row)],
        }
        used = {k: 0 for k in pools}
        results: Dict[str, List[Dict[str, float]]] = {k: [] for k in pools}
        for _round in range(rounds):
            for name, reqs in pools.items():
                cpu0 = process_cpu_seconds(bao.process.pid)
                result = run_load(bao.url, reqs[used[name]:], clients, duration=seconds)
                cpu = process_cpu_seconds(bao.process.pid) - cpu0
                used[name] += result.sent
                if used[name] >= len(reqs):
                    print("  (%s ran out of pre-made requests: rate still valid, sample smaller)" % name,
                          file=sys.stderr)
                results[name].append({"rate_per_s": result.rate, "errors": result.errors,
                                      "openbao_cpu_us": cpu / result.sent * 1e6 if result.sent else 0.0,
                                      "client_cpu_us": result.client_cpu / result.sent * 1e6 if result.sent else 0.0,
                                      "samples": result.error_samples[:2]})
        out: Dict[str, object] = {"clients": clients, "rounds": rounds, "seconds": seconds, "openbao": bao.version(),
                                  "token_type": token_type}
        for name, rows in results.items():
            out[name] = {
                "rate_per_s": round(statistics.median(r["rate_per_s"] for r in rows), 1),
                "openbao_cpu_us_per_req": round(statistics.median(r["openbao_cpu_us"] for r in rows), 1),
                "client_cpu_us_per_req": round(statistics.median(r["client_cpu_us"] for r in rows), 1),
                "errors": sum(r["errors"] for r in rows),
                "error_samples": [s for r in rows for s in r["samples"]][:3],
            }
        return out
    finally:
        bao.stop()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vault_ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--token-type", choices=("service", "batch"), default="service",
                        help="the policy-limited token's type (the gateway's and the raw row's are service tokens)")
    args = parser.parse_args(argv)
    out = measure(args.rounds, args.seconds, args.clients, token_type=args.token_type)
    print(json.dumps(out, indent=2))
    print()
    print("| OpenBao %s, %d clients, %s token | per second | OpenBao CPU us/req | client CPU us/req | errors |"
          % (out["openbao"], args.clients, args.token_type))
    print("|---|---:|---:|---:|---:|")
    for name in ("kv_read", "kv_cas_write", "kv_cas_write_with_cert", "pki_sign"):
        r = out[name]
        print("| %s | %.0f | %.0f | %.0f | %d |" % (name, r["rate_per_s"], r["openbao_cpu_us_per_req"],
                                                  r["client_cpu_us_per_req"], r["errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
