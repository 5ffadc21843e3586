"""`serve --workers N`: N pre-forked processes on one port.

What the pre-fork promises (gateway/prefork.py): a worker that dies leaves the others serving,
SIGTERM to the main process stops every worker, and a port in use is an error, not a silent
second group on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests
from support.crypto import make_csr
from support.gateway import free_port, run_gateway

CERTS = "/frontdoor/default/client-certificates"


def _children(pid: int) -> list:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open("/proc/%d/stat" % pid) as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_dead_worker_leaves_others_serving_and_sigterm_stops_all(tmp_path):
    with run_gateway(str(tmp_path / "pf"), workers=3) as gw:
        main = gw.process.pid
        workers = _children(main)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.5)
        # new connections each: the kernel must stop routing to the dead worker's socket
        for _ in range(30):
            secret = gw.create_token(commonName="pf.example").json()["token"]
            response = requests.post(gw.url + CERTS + "/token/" + secret,
                                     json={"type": "CSR", "value": make_csr(cn="x")}, timeout=10)
            assert response.status_code == 201, response.text
        assert "exited" in gw.log()
        gw.process.send_signal(signal.SIGTERM)
        gw.process.wait(timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers[1:]):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers[1:])


def test_port_in_use_is_an_error(tmp_path):
    port = free_port()
    with run_gateway(str(tmp_path / "a"), port=port, workers=2):
        gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTDOOR_")}
        env["FRONTDOOR_ADMIN_TOKEN"] = "x" * 40
        proc = subprocess.run([gateway_bin, "serve", "--port", str(port), "--workers", "2", "--state-dir",
                               str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
