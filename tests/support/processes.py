"""Engine processes for tests: real ``python -c`` children on shared state (a state dir, a Vault).

``spawn`` starts a child that builds the service from the given configuration, waits for
``<tmp>/go``, redeems the given secrets from ``threads`` threads (each with its own key) and
prints a JSON report: per secret, the outcomes of every thread; the signer calls; the CA chain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child's real signer is wrapped (support.backends.WrappedSigner) to count its calls and,
# with "block", to block in the signer (after the claim, before the record) until killed.
CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.backends import blocking, wrap_signer
from support.crypto import make_csr, make_key

service = build_service(load_config(state_dir=args["state"], env={}, data=args["data"]))
hooks = {}
if args.get("block"):
    hooks["before"] = blocking(args["block"]["marker"], args["block"]["release"], timeout=60)
signer = wrap_signer(service, "default", **hooks)
if args.get("create"):
    service.create_token("default", name="made-by-%d" % os.getpid())
threads = args.get("threads", 1)
csrs = [make_csr(make_key("p256"), cn="proc-%d-%d" % (os.getpid(), n)) for n in range(threads)]
results = [[] for _ in args["secrets"]]
with open(args["ready"], "w") as handle:
    handle.write("ready")
deadline = time.monotonic() + 30
while not os.path.exists(args["go"]) and time.monotonic() < deadline:
    time.sleep(0.005)

def redeem_all(n):
    for index, secret in enumerate(args["secrets"]):
        try:
            result = service.redeem("default", secret, csrs[n])
            results[index].append({"ok": True, "certificate": result.certificate.id, "replayed": result.replayed})
        except FrontdoorError as exc:
            results[index].append({"ok": False, "code": exc.code})

workers = [threading.Thread(target=redeem_all, args=(n,)) for n in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"results": results, "calls": signer.calls, "chain": service.ca_chain("default")}))
service.close()
"""


def spawn(tmp_path, state: str, data: dict, name: str, secrets=(), **extra) -> tuple:
    """(process, ready marker path). ``extra``: threads=N, block={marker, release}, create=True."""
    ready = str(tmp_path / ("ready-" + name))
    args = dict(state=state, data=data, secrets=list(secrets), ready=ready, go=str(tmp_path / "go"), **extra)
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, TESTS_DIR, json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return process, ready


def wait_for(path: str, processes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        for process in processes:
            if process.poll() is not None:
                raise AssertionError("child exited early: %s" % process.communicate()[1][-2000:])
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % path)
        time.sleep(0.01)


def finish(process, timeout: float = 60) -> dict:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError("child hung: %s" % err[-2000:]) from None
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def run_together(tmp_path, children) -> list:
    """Start ``children`` ((process, ready) pairs) at once and return their reports; kills on failure."""
    processes = [process for process, _ in children]
    try:
        for _, ready in children:
            wait_for(ready, processes)
        (tmp_path / "go").write_text("go")
        return [finish(process, timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
