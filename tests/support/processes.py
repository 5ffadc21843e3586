"""Engine processes for tests: real ``python -c`` children on a shared state directory.

Used by tests/integration/test_engine_processes.py (the claim path) and test_token_lock.py
(the local CA's lock path): ``spawn`` starts a child that builds the service, waits for
``<tmp>/go``, redeems the given secrets and prints a JSON report (per-secret outcomes, signer
calls, the CA chain).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child: build the service on the shared state dir, wait for the start signal, redeem,
# report JSON. Its real signer is wrapped (WrappedSigner: the service claims the token) to count
# calls and, with "block", to block in the signer; with "signer": "in-process" the local CA's
# own sign() is counted and blocked in place instead, so the signer still says in_process and
# the service holds the token's lock rather than claiming it.
CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.backends import blocking, wrap_signer
from support.crypto import make_csr, make_key

config = load_config(state_dir=args["state"], env={}, data=args["data"])
service = build_service(config)
hooks = {}
if args.get("block"):
    hooks["before"] = blocking(args["block"]["marker"], args["block"]["release"], timeout=60)
if args.get("signer") == "in-process":
    real_signer = service.signers["default"]
    assert real_signer.in_process
    real_sign = real_signer.sign

    class Counted:
        calls = 0

    signer = Counted()

    def sign(request):
        signer.calls += 1
        if "before" in hooks:
            hooks["before"](request, signer.calls)
        return real_sign(request)

    real_signer.sign = sign
else:
    signer = wrap_signer(service, "default", **hooks)
if args.get("create"):
    service.create_token("default", name="made-by-%d" % os.getpid())
csr = make_csr(make_key("p256"), cn="proc-%d" % os.getpid())
with open(args["ready"], "w") as handle:
    handle.write("ready")
deadline = time.monotonic() + 30
while not os.path.exists(args["go"]) and time.monotonic() < deadline:
    time.sleep(0.005)
results = []
for secret in args["secrets"]:
    try:
        result = service.redeem("default", secret, csr)
        results.append({"ok": True, "certificate": result.certificate.id, "replayed": result.replayed})
    except FrontdoorError as exc:
        results.append({"ok": False, "code": exc.code})
print(json.dumps({"results": results, "calls": signer.calls, "chain": service.ca_chain("default")}))
"""


def spawn(tmp_path, state: str, data: dict, name: str, secrets=(), **extra) -> tuple:
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


def db_counts(state: str) -> dict:
    with sqlite3.connect(os.path.join(state, "frontdoor.db")) as conn:
        return dict(conn.execute("SELECT token_id, COUNT(*) FROM certificates GROUP BY token_id").fetchall())
