"""Server CPU per redemption with rate limits and metrics off, then on (docs/operations.md quotes the result).

``python -m bench.observability [--count 400] [--rounds 3] [--workers 1]``: for each round, one gateway with
FRONTDOOR_RATE_LIMITS=off FRONTDOOR_METRICS=off and one with both on (the defaults), on fresh state dirs, the
order alternating from round to round; ``count`` tokens are created over HTTP before the clock starts, then redeemed by ``bench.loadgen`` over 4
keep-alive connections. The figure is the server processes' CPU time (utime + stime from /proc) during the
redemptions divided by their number. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import requests

from .csrs import make_csrs
from .gateway import GATEWAY_BIN, Gateway
from .loadgen import build_request, run_load
from .openbao import free_port

VARIANTS = {
    "off": {"FRONTDOOR_RATE_LIMITS": "off", "FRONTDOOR_METRICS": "off"},
    "on": {},
}


def start(state_dir: str, workers: int, extra_env: dict) -> Gateway:
    port = free_port()
    token = "fdk_bench_" + secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "PROMETHEUS_"))}
    env.update(extra_env, FRONTDOOR_ADMIN_TOKEN=token)
    log_path = os.path.join(state_dir, "gateway.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [GATEWAY_BIN, "serve", "--port", str(port), "--state-dir", state_dir, "--workers", str(workers),
             "--no-access-log"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    gateway = Gateway("http://127.0.0.1:%d" % port, token, state_dir, None, process, log_path)
    deadline = time.monotonic() + 60
    while gateway.workers_started() < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start: see %s" % log_path)
        time.sleep(0.1)
    return gateway


def measure(variant: str, count: int, workers: int, csrs) -> float:
    with tempfile.TemporaryDirectory() as state_dir:
        gateway = start(state_dir, workers, VARIANTS[variant])
        try:
            session = requests.Session()
            headers = {"Authorization": "Bearer " + gateway.admin_token}
            secrets_ = [session.post(gateway.url + "/frontdoor/default/certificate-request-tokens",
                                     json={"name": "b%d" % i}, headers=headers, timeout=30).json()["token"]
                        for i in range(count)]
            host = gateway.url.split("//", 1)[1]
            load = [build_request("POST", host, "/frontdoor/default/client-certificates/token/" + s,
                                  {"type": "CSR", "value": c}) for s, c in zip(secrets_, csrs)]
            time.sleep(0.5)
            cpu = gateway.cpu_seconds()
            result = run_load(gateway.url, load, clients=4, expect=(201,))
            used = gateway.cpu_seconds() - cpu
            if result.ok != count:
                raise RuntimeError("%s: %d of %d redemptions succeeded: %s" % (variant, result.ok, count,
                                                                                result.error_samples[:3]))
            return used / count * 1000
        finally:
            gateway.process.send_signal(signal.SIGTERM)
            gateway.process.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    csrs = make_csrs(args.count)
    results = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for variant in (("off", "on") if round_ % 2 == 0 else ("on", "off")):  # alternate: no order bias
            results[variant].append(round(measure(variant, args.count, args.workers, csrs), 3))
    summary = {v: {"cpu_ms_per_redemption": r, "median": statistics.median(r)} for v, r in results.items()}
    summary["overhead_ms"] = round(summary["on"]["median"] - summary["off"]["median"], 3)
    summary.update(count=args.count, workers=args.workers, rounds=args.rounds)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
