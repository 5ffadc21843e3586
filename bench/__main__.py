"""``python -m bench [--quick] [--json PATH] [--skip-vault]``: redemptions/s against OpenBao's pki/sign.

One run, side by side on this machine, so that every claim is a ratio:
  1. raw OpenBao ``pki/sign/<role>`` requests/s (1 and 8 clients);
  2. gateway redemptions/s on the embedded default (SQLite + local CA), on OpenBao
     (KV v2 store + PKI signer) and on SQLite + OpenBao PKI signer, fresh tokens made before
     the clock starts, every redemption a distinct token and a distinct pre-generated CSR;
  3. the in-process limit (CSR verify + sign; the engine's redeem) and token creation/s;
  4. redemption latency p50/p99 with 1 k and 100 k stored tokens (embedded) and 1 k and 10 k
     (OpenBao), measured alternately so that background noise hits both alike;
  5. the gateway's peak RSS (VmHWM summed over its processes).
Throughput rows run in interleaved rounds (raw, embedded, OpenBao, raw, ...) and report the
median round, so a burst of background load does not decide a ratio. Every row uses the same
load generator (bench/loadgen.py): one asyncio process, N keep-alive connections, closed loop.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import json
import os
import platform
import secrets as _secrets
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

from . import inprocess, report
from .csrs import make_csrs
from .floor import start_floor
from .gateway import Gateway, process_cpu_seconds, start_gateway
from .loadgen import LoadResult, build_request, percentile, run_load
from .openbao import OpenBao, setup_pki, start_openbao, token_for

ORG, OU = "Bench Org", "Bench Unit"
RAW_ROLE = "bench-raw"
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Profile:
    """How much to do. --quick keeps every measurement but shrinks counts and durations."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.rounds = 1 if quick else 3
        self.seconds = 2.0 if quick else 4.0  # per throughput row per round
        self.inproc_seconds = 1.0 if quick else 2.0
        self.many_local = 20_000 if quick else 100_000  # stored tokens for the latency ratio (embedded)
        self.few = 1_000
        self.many_vault = 3_000 if quick else 10_000
        self.latency_batches = 4 if quick else 10  # alternating batches per latency pair
        self.latency_batch = 25 if quick else 50  # redemptions per batch and label
        # requests made per row and second of measurement: above what this machine class does (2 cores)
        self.max_rate = {"raw1": 2000, "raw8": 4000, "emb1": 1500, "emb8": 4500, "bao1": 400, "bao8": 1000,
                         "hyb1": 800, "hyb8": 2000, "flr8": 4000}


def machine_info() -> Dict[str, object]:
    model = "?"
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import cryptography
    import fastapi
    import uvicorn

    try:
        import httptools  # noqa: F401

        parser = "httptools"
    except ImportError:
        parser = "h11"
    extras = []
    for name in ("uvloop",):  # picked up by uvicorn when installed (requirements.txt)
        try:
            __import__(name)
            extras.append(name)
        except ImportError:
            pass
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(RESULTS_DIR)).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "commit": commit, "nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
        "platform": platform.platform(), "cryptography": cryptography.__version__, "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__, "http_parser": "+".join([parser] + extras), "loadavg_start": list(os.getloadavg()),
    }


def _check_gateway(status: int, body: bytes) -> Optional[str]:
    return None if b'"certificate"' in body and b"BEGIN CERTIFICATE" in body else "no certificate in the answer"


def _check_raw(status: int, body: bytes) -> Optional[str]:
    return None if b'"certificate"' in body and b"BEGIN CERTIFICATE" in body else "no certificate in the answer"


def redeem_requests(gateway: Gateway, secrets: List[str], csrs: List[str]) -> List[bytes]:
    host = gateway.url.split("//", 1)[1]
    return [build_request("POST", host, "/frontdoor/default/client-certificates/token/%s" % s,
                          {"type": "CSR", "value": c}) for s, c in zip(secrets, csrs)]


def setup_raw_role(bao: OpenBao) -> str:
    """The role the raw rows sign with: the settings the gateway's Vault signer gives its own roles
    (``signer_vault.role_parameters``), and a token whose policy allows exactly signing with it."""
    from frontdoor_pki.signers.vault_pki import role_parameters

    bao.api("POST", "pki/roles/%s" % RAW_ROLE, role_parameters(ORG, OU, 365 * 86400, False))
    return token_for(bao, "bench-raw-sign", 'path "pki/sign/%s" {\n  capabilities = ["update"]\n}\n' % RAW_ROLE)


def raw_sign_requests(bao: OpenBao, token: str, csrs: List[str], start: int) -> List[bytes]:
    """The body the gateway's Vault signer sends (signer_vault.sign), for a role with the same settings."""
    host = bao.url.split("//", 1)[1]
    return [build_request("POST", host, "/v1/pki/sign/%s" % RAW_ROLE, {
        "csr": c, "common_name": "bench-raw-%d" % (start + i), "use_csr_common_name": False, "use_csr_sans": False,
        "exclude_cn_from_sans": True, "ttl": "%ds" % (365 * 86400), "format": "pem",
    }, {"X-Vault-Token": token}) for i, c in enumerate(csrs)]


def cycle(items: List[str], count: int) -> List[str]:
    return [items[i % len(items)] for i in range(count)]


class Pool:
    """Pre-made requests for one row, consumed round by round (each is sent at most once)."""

    def __init__(self, requests: List[bytes]):
        self.requests = requests
        self.used = 0

    def take(self) -> List[bytes]:
        return self.requests[self.used:]

    def consumed(self, result: LoadResult) -> None:
        self.used += result.sent


def run_row(url: str, pool: Pool, clients: int, seconds: float, check, cpu_groups) -> Dict[str, object]:
    """One timed row. ``cpu_groups``: name -> callable giving the PIDs whose CPU time counts as server."""
    before = {name: sum(process_cpu_seconds(p) for p in pids()) for name, pids in cpu_groups.items()}
    result = run_load(url, pool.take(), clients, duration=seconds, check=check)
    used = {name: sum(process_cpu_seconds(p) for p in pids()) - before[name] for name, pids in cpu_groups.items()}
    pool.consumed(result)
    if pool.used >= len(pool.requests) and result.wall < seconds * 0.9:
        print("  (row ran out of pre-made requests after %.1f s: rate still valid, sample smaller)" % result.wall)
    row = result.summary()
    row["server_cpu_s"] = round(sum(used.values()), 3)
    row["server_cpu_s_by_process"] = {k: round(v, 3) for k, v in used.items()}
    row["server_cpu_us_per_req"] = round(row["server_cpu_s"] / result.sent * 1e6, 1) if result.sent else None
    row["latencies"] = result.latencies
    return row


def merge_rounds(rounds: List[Dict[str, object]]) -> Dict[str, object]:
    """Median rate over rounds; latency percentiles and counts over all requests of all rounds."""
    latencies = [x for r in rounds for x in r.pop("latencies")]
    sent = sum(r["sent"] for r in rounds)
    client_cpu = sum(r["client_cpu_s"] for r in rounds)
    server_cpu = sum(r["server_cpu_s"] for r in rounds)
    by_process: Dict[str, float] = {}
    for r in rounds:
        for name, value in r["server_cpu_s_by_process"].items():
            by_process[name] = by_process.get(name, 0.0) + value
    return {
        "clients": rounds[0]["clients"],
        "rate_per_s": round(statistics.median(r["rate_per_s"] for r in rounds), 1),
        "rate_rounds": [r["rate_per_s"] for r in rounds],
        "sent": sent, "ok": sum(r["ok"] for r in rounds), "errors": sum(r["errors"] for r in rounds),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3), "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "client_cpu_us_per_req": round(client_cpu / sent * 1e6, 1) if sent else None,
        "client_cpu_share_of_one_core": round(client_cpu / sum(r["wall_s"] for r in rounds), 3),
        "server_cpu_us_per_req": round(server_cpu / sent * 1e6, 1) if sent else None,
        "server_cpu_us_per_req_by_process": {k: round(v / sent * 1e6, 1) for k, v in by_process.items()} if sent else {},
        "error_samples": [e for r in rounds for e in r["error_samples"]][:5],
    }


def vault_gateway_config(bao: OpenBao, prefix: str, backend: str = "vault") -> dict:
    """``backend: vault``: KV v2 store + PKI signer; ``backend: local``: SQLite store + PKI signer."""
    return {
        "backend": backend,
        "vault": {"url": bao.url, "kvMount": "secret", "kvPrefix": prefix, "pkiMount": "pki"},
        "frontdoors": [{"id": "default", "signer": "vault"}],
    }


def limited_token(bao: OpenBao, config: dict, state_dir: str) -> str:
    """A token with exactly the policy `frontdoor-gateway vault-policy` renders (never the root token)."""
    from frontdoor_pki.config import load_config
    from frontdoor_pki.vault.policy import render_policy

    policy = render_policy(load_config(None, state_dir, env={}, data=config))
    return token_for(bao, "frontdoor-bench-%s" % config["vault"]["kvPrefix"], policy)


def start_vault_gateway(bao: OpenBao, work: str, name: str, workers: int, extra_args: tuple, backend: str = "vault"):
    state = os.path.join(work, name)
    config = vault_gateway_config(bao, "bench-" + name, backend)
    config["vault"]["token"] = limited_token(bao, config, state)
    gateway = start_gateway(state, config=config, workers=workers, extra_args=extra_args)
    return gateway, config


def inprocess_service(state_dir: str, config: Optional[dict] = None):
    from frontdoor_pki.config import build_service, load_config

    return build_service(load_config(None, state_dir, env={}, data=config))


def create_vault_tokens(service, count: int, prefix: str, threads: int = 16) -> List[str]:
    """Through the store adapter, in parallel (each create is a few KV writes)."""
    chunk = max(1, count // threads)
    parts = [(i, min(chunk, count - i)) for i in range(0, count, chunk)]
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        futures = [executor.submit(inprocess.create_tokens, service, n, "%s-%d" % (prefix, i)) for i, n in parts]
        return [s for f in futures for s in f.result()]


def latency_pair(label_a: str, gw_a: Gateway, secrets_a: List[str], label_b: str, gw_b: Gateway,
                 secrets_b: List[str], csrs: List[str], batches: int, batch: int) -> Dict[str, object]:
    """1 client, alternating batches between the two gateways; p50/p99 over all batches."""
    lat: Dict[str, List[float]] = {label_a: [], label_b: []}
    errors = {label_a: 0, label_b: 0}
    samples: List[str] = []
    used = {label_a: 0, label_b: 0}
    csr_used = 0
    for _ in range(batches):
        for label, gateway, secrets in ((label_a, gw_a, secrets_a), (label_b, gw_b, secrets_b)):
            chosen = secrets[used[label]:used[label] + batch]
            used[label] += len(chosen)
            reqs = redeem_requests(gateway, chosen, csrs[csr_used:csr_used + len(chosen)])
            csr_used += len(chosen)
            result = run_load(gateway.url, reqs, 1, check=_check_gateway)
            lat[label].extend(result.latencies)
            errors[label] += result.errors
            samples.extend(result.error_samples)
    out: Dict[str, object] = {}
    for label in (label_a, label_b):
        out[label] = {"n": len(lat[label]), "errors": errors[label],
                      "p50_ms": round(percentile(lat[label], 50) * 1000, 3),
                      "p99_ms": round(percentile(lat[label], 99) * 1000, 3)}
    out["ratio_p50"] = round(out[label_b]["p50_ms"] / out[label_a]["p50_ms"], 3)
    out["labels"] = [label_a, label_b]
    out["error_samples"] = samples[:5]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Redemptions/s against OpenBao's pki/sign, latency vs stored tokens, "
        "RSS; prints a table, ratios and PASS/FAIL per target (exit 1 if a target fails).")
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter rows (~1-2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="write the results here (default bench/results/bench-<time>.json)")
    parser.add_argument("--skip-vault", action="store_true", help="no OpenBao rows (no bao binary needed)")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1,
                        help="gateway worker processes (default: nproc + 1, what docs/operations.md advises for the "
                        "embedded default with serve's --threads auto)")
    parser.add_argument("--gateway-arg", action="append", default=[],
                        help="extra argument for `frontdoor-gateway serve` (repeatable), e.g. --gateway-arg=--no-access-log")
    parser.add_argument("--write-docs", metavar="MD", help="replace the results section of this markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args(argv)

    profile = Profile(args.quick)
    started = time.time()
    info = machine_info()
    work = tempfile.mkdtemp(prefix="frontdoor-bench-")
    results: Dict[str, object] = {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
        "workers": args.workers, "gateway_args": args.gateway_arg, "machine": info, "rows": {}, "inprocess": {},
        "latency": {}, "memory": {}, "work_dir": work,
    }
    rows: Dict[str, Dict[str, object]] = results["rows"]  # type: ignore[assignment]
    extra = tuple(args.gateway_arg)
    gateways: List[Gateway] = []
    bao: Optional[OpenBao] = None
    vault = not args.skip_vault
    try:
        secs = profile.seconds * profile.rounds
        need = {k: int(v * secs) for k, v in profile.max_rate.items()}
        if not vault:
            need.update(raw1=0, raw8=0, bao1=0, bao8=0, hyb1=0, hyb8=0)
        floor_n = need.pop("flr8")  # the floor reuses CSRs, as raw signing does
        lat_n = profile.latency_batches * profile.latency_batch  # redemptions per latency label
        n_csrs = sum(v for k, v in need.items() if not k.startswith("raw")) + 4 * lat_n + 20_000
        print("bench: generating %d CSRs (P-256, each its own key)..." % n_csrs, flush=True)
        t0 = time.perf_counter()
        csrs = make_csrs(n_csrs)
        print("bench: %d CSRs in %.1f s" % (len(csrs), time.perf_counter() - t0), flush=True)
        cursor = [0]

        def take_csrs(n: int) -> List[str]:
            chunk = csrs[cursor[0]:cursor[0] + n]
            cursor[0] += n
            if len(chunk) < n:
                raise RuntimeError("not enough CSRs pre-generated")
            return chunk

        # ---- 3. in-process limits -------------------------------------------------------------------
        print("bench: in-process limits...", flush=True)
        inproc_state = os.path.join(work, "inprocess")
        results["inprocess"]["crypto"] = inprocess.crypto_limit(inproc_state, take_csrs(10_000), profile.inproc_seconds)
        service = inprocess_service(inproc_state)
        results["inprocess"]["token_create"] = inprocess.token_creation(service, 50_000, profile.inproc_seconds)
        secrets = inprocess.create_tokens(service, 6_000, "inproc-redeem")
        results["inprocess"]["engine_redeem"] = inprocess.engine_redeem(
            service, secrets, take_csrs(6_000), profile.inproc_seconds)
        service.close()
        for key, value in results["inprocess"].items():
            print("  %-14s %8.0f /s  (%.0f us each)" % (key, value["per_s"], value["us_per_op"]), flush=True)

        # ---- OpenBao --------------------------------------------------------------------------------
        pools: Dict[str, Pool] = {}
        if vault:
            bao = start_openbao(os.path.join(work, "openbao"))
            setup_pki(bao)
            raw_token = setup_raw_role(bao)
            info["openbao"] = bao.version()
            print("bench: OpenBao %s at %s" % (info["openbao"], bao.url), flush=True)
            # raw signing may reuse CSRs (OpenBao keeps nothing per CSR); a gateway redemption never does
            pools["raw1"] = Pool(raw_sign_requests(bao, raw_token, cycle(csrs, need["raw1"]), 0))
            pools["raw8"] = Pool(raw_sign_requests(bao, raw_token, cycle(csrs, need["raw8"]), need["raw1"]))

        # ---- gateways -------------------------------------------------------------------------------
        def prepare(key: str, gateway: Gateway, config: Optional[dict], create) -> None:
            """Tokens made in-process before the clock starts; one pool per client count."""
            gateways.append(gateway)
            service = inprocess_service(gateway.state_dir, config)
            t0 = time.perf_counter()
            secrets = create(service, need[key + "1"] + need[key + "8"], key)
            service.close()
            print("  %d tokens in %.1f s" % (len(secrets), time.perf_counter() - t0), flush=True)
            n1 = need[key + "1"]
            pools[key + "1"] = Pool(redeem_requests(gateway, secrets[:n1], take_csrs(n1)))
            pools[key + "8"] = Pool(redeem_requests(gateway, secrets[n1:], take_csrs(need[key + "8"])))

        print("bench: embedded gateway (%d workers)..." % args.workers, flush=True)
        emb = start_gateway(os.path.join(work, "embedded"), workers=args.workers, extra_args=extra)
        prepare("emb", emb, None, inprocess.create_tokens)

        print("bench: library floor (FastAPI + uvicorn + cryptography, no rules; %d workers)..." % args.workers,
              flush=True)
        floor = start_floor(args.workers, os.path.join(work, "floor.log"))
        gateways.append(floor)
        floor_host = floor.url.split("//", 1)[1]
        # the floor keeps nothing per request: CSRs may repeat, as for raw signing
        pools["flr8"] = Pool([build_request("POST", floor_host, "/frontdoor/default/client-certificates/token/%s"
                                            % _secrets.token_urlsafe(32), {"type": "CSR", "value": c})
                              for c in cycle(csrs, floor_n)])

        vgw = None
        if vault:
            print("bench: OpenBao-backed gateway (%d workers)..." % args.workers, flush=True)
            vgw, vconfig = start_vault_gateway(bao, work, "vault-main", args.workers, extra)
            prepare("bao", vgw, vconfig, create_vault_tokens)

            print("bench: SQLite store + OpenBao PKI signer gateway (%d workers)..." % args.workers, flush=True)
            hgw, hconfig = start_vault_gateway(bao, work, "vault-signer", args.workers, extra, backend="local")
            prepare("hyb", hgw, hconfig, inprocess.create_tokens)

        # ---- token creation over HTTP (8 clients) ------------------------------------------------------
        create_rows = {"create8_emb": emb}
        if vgw is not None:
            create_rows["create8_bao"] = vgw
        for name, gateway in create_rows.items():
            host = gateway.url.split("//", 1)[1]
            reqs = [build_request("POST", host, "/frontdoor/default/certificate-request-tokens",
                                  {"name": "http-%d" % i, "commonName": "http-%d" % i},
                                  {"Authorization": "Bearer %s" % gateway.admin_token}) for i in range(20_000)]
            groups = {"gateway": gateway.pids}
            if name == "create8_bao":
                groups["openbao"] = lambda: [bao.process.pid]
            rows[name] = merge_rounds([run_row(gateway.url, Pool(reqs), 8, profile.seconds / 2,
                                               lambda s, b: None if b'"token"' in b else "no token", groups)])

        # ---- 1-2. throughput rounds -------------------------------------------------------------------
        order = (["raw1", "raw8", "emb1", "emb8", "flr8", "bao1", "bao8", "hyb1", "hyb8"] if vault
                 else ["emb1", "emb8", "flr8"])
        per_round: Dict[str, List[Dict[str, object]]] = {k: [] for k in order}
        for rnd in range(profile.rounds):
            print("bench: throughput round %d/%d" % (rnd + 1, profile.rounds), flush=True)
            for key in order:
                clients = 1 if key.endswith("1") else 8
                if key.startswith("raw"):
                    url, check, groups = bao.url, _check_raw, {"openbao": lambda: [bao.process.pid]}
                elif key.startswith("emb"):
                    url, check, groups = emb.url, _check_gateway, {"gateway": emb.pids}
                elif key.startswith("flr"):
                    url, check, groups = floor.url, _check_gateway, {"floor": floor.pids}
                else:
                    gw = vgw if key.startswith("bao") else hgw
                    url, check = gw.url, _check_gateway
                    groups = {"gateway": gw.pids, "openbao": lambda: [bao.process.pid]}
                row = run_row(url, pools[key], clients, profile.seconds, check, groups)
                per_round[key].append(row)
                print("  %-5s %2d clients %8.1f /s  p50 %6.2f ms  p99 %7.2f ms  errors %d" % (
                    key, clients, row["rate_per_s"], row["p50_ms"], row["p99_ms"], row["errors"]), flush=True)
        for key in order:
            rows[key] = merge_rounds(per_round[key])

        # ---- 5. memory (after the load) ---------------------------------------------------------------
        results["memory"]["embedded"] = emb.memory()
        if vgw is not None:
            results["memory"]["vault"] = vgw.memory()
            results["memory"]["vault_signer"] = hgw.memory()
        # single use held: one certificate per successful redemption
        service = inprocess_service(emb.state_dir)
        issued = service.list_certificates("default", size=1).total
        service.close()
        redeemed_ok = sum(r["ok"] for k in ("emb1", "emb8") for r in [rows[k]])
        results["single_use_check"] = {"embedded_certificates": issued, "embedded_successful_redemptions": redeemed_ok}
        if vgw is not None:
            service = inprocess_service(hgw.state_dir, hconfig)
            results["single_use_check"]["vault_signer_certificates"] = service.list_certificates("default", size=1).total
            service.close()
            results["single_use_check"]["vault_signer_successful_redemptions"] = sum(
                rows[k]["ok"] for k in ("hyb1", "hyb8"))
        for gateway in list(gateways):
            gateway.stop()
            gateways.remove(gateway)

        # ---- 4. latency vs stored tokens ----------------------------------------------------------------
        print("bench: latency with %d vs %d stored tokens (embedded)..." % (profile.few, profile.many_local),
              flush=True)
        pair = []
        for label, count in (("few", profile.few), ("many", profile.many_local)):
            gateway = start_gateway(os.path.join(work, "latency-%s" % label), workers=args.workers, extra_args=extra)
            gateways.append(gateway)
            service = inprocess_service(gateway.state_dir)
            t0 = time.perf_counter()
            inprocess.create_tokens(service, count, "bg")  # background tokens
            secrets = inprocess.create_tokens(service, lat_n, "lat")
            service.close()
            print("  %s: %d tokens in %.1f s" % (label, count, time.perf_counter() - t0), flush=True)
            pair.append((gateway, secrets))
        results["latency"]["embedded"] = latency_pair(
            "%dk" % (profile.few // 1000), pair[0][0], pair[0][1], "%dk" % (profile.many_local // 1000), pair[1][0],
            pair[1][1], take_csrs(2 * lat_n), profile.latency_batches, profile.latency_batch)
        results["memory"]["embedded_%dk" % (profile.many_local // 1000)] = pair[1][0].memory()
        for gateway, _ in pair:
            gateway.stop()
            gateways.remove(gateway)

        if vault:
            print("bench: latency with %d vs %d stored tokens (OpenBao)..." % (profile.few, profile.many_vault),
                  flush=True)
            pair = []
            for label, count in (("few", profile.few), ("many", profile.many_vault)):
                gateway, config = start_vault_gateway(bao, work, "vault-%s" % label, args.workers, extra)
                gateways.append(gateway)
                service = inprocess_service(gateway.state_dir, config)
                t0 = time.perf_counter()
                create_vault_tokens(service, count, "bg")
                secrets = create_vault_tokens(service, lat_n, "lat")
                service.close()
                print("  %s: %d tokens in %.1f s" % (label, count, time.perf_counter() - t0), flush=True)
                pair.append((gateway, secrets))
            results["latency"]["vault"] = latency_pair(
                "%dk" % (profile.few // 1000), pair[0][0], pair[0][1], "%dk" % (profile.many_vault // 1000),
                pair[1][0], pair[1][1], take_csrs(2 * lat_n), profile.latency_batches, profile.latency_batch)
            for gateway, _ in pair:
                gateway.stop()
                gateways.remove(gateway)
    finally:
        for gateway in gateways:
            gateway.stop()
        if bao is not None:
            bao.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    info["loadavg_end"] = list(os.getloadavg())
    results["duration_s"] = round(time.time() - started, 1)
    results["targets"] = report.targets(results)
    text = report.table(results)
    print()
    print(text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = args.json or os.path.join(RESULTS_DIR, "bench-%s.json" % time.strftime("%Y%m%dT%H%M%S"))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    shutil.copyfile(path, os.path.join(RESULTS_DIR, "latest.json"))
    print("\nresults: %s" % path)
    if args.write_docs:
        report.write_docs(args.write_docs, results, text)
        print("updated %s" % args.write_docs)
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
