"""Run a real `frontdoor-gateway serve` process for tests, on a free loopback port.

Tests talk to it over HTTP exactly as a user would; it is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Iterator, Optional

import requests
import yaml

GATEWAY_BIN = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Gateway:
    url: str
    admin_token: str
    state_dir: str
    process: subprocess.Popen
    log_path: str
    session: requests.Session

    def headers(self, token: Optional[str] = None) -> Dict[str, str]:
        return {"Authorization": "Bearer %s" % (token or self.admin_token)}

    def request(self, method: str, path: str, token: Optional[str] = None, auth: bool = True, **kwargs):
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers.update(self.headers(token))
        kwargs.setdefault("timeout", 30)
        # explicit: requests lets $REQUESTS_CA_BUNDLE override a session's verify (psf/requests#3829)
        kwargs.setdefault("verify", self.session.verify)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def create_token(self, frontdoor: str = "default", **body):
        body.setdefault("name", "t-%s" % secrets.token_hex(4))
        return self.request("POST", "/frontdoor/%s/certificate-request-tokens" % frontdoor, json=body)

    def redeem(self, secret: str, csr_pem: str, frontdoor: str = "default", **kwargs):
        return self.request(
            "POST", "/frontdoor/%s/client-certificates/token/%s" % (frontdoor, secret), auth=False,
            json={"type": "CSR", "value": csr_pem}, **kwargs,
        )

    def log(self) -> str:
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.session.close()


def wait_healthy(url: str, process: subprocess.Popen, log_path: str, timeout: float = 30.0, verify=True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, "r", encoding="utf-8", errors="replace") as handle:
                raise RuntimeError("gateway exited with %s:\n%s" % (process.returncode, handle.read()))
        try:
            if requests.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                return
        except (requests.RequestException, OSError):  # OSError: the CA file of --tls-self is not written yet
            pass
        time.sleep(0.05)
    raise RuntimeError("gateway did not become healthy within %.0f s" % timeout)


def start_gateway(
    state_dir: str,
    config: Optional[dict] = None,
    env: Optional[Dict[str, str]] = None,
    port: Optional[int] = None,
    admin_token: Optional[str] = None,
    workers: int = 1,
    extra_args: tuple = (),
    ca_file: Optional[str] = None,
) -> Gateway:
    """Start a gateway; the caller must call .stop() (or use run_gateway).

    ``ca_file``: the gateway serves HTTPS (``extra_args`` carry --tls-cert/--tls-key or --tls-self) and clients
    verify it with this CA file; ``url`` is then ``https://127.0.0.1:PORT``."""
    os.makedirs(state_dir, exist_ok=True)
    port = port or free_port()
    admin_token = admin_token or "fdk_test_" + secrets.token_urlsafe(16)
    args = [GATEWAY_BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--state-dir", state_dir,
            "--workers", str(workers)]
    if config is not None:
        path = os.path.join(state_dir, "gateway-test-config.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        args += ["--config", path]
    args += list(extra_args)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    full_env["FRONTDOOR_ADMIN_TOKEN"] = admin_token
    # A test bed: many tests fail on purpose from one address (127.0.0.1) faster than any client would, so the
    # rate limits are off unless a test asks for them (env={"FRONTDOOR_RATE_LIMITS": "on"}, tests/integration/
    # test_rate_limits_metrics.py). Production has them on by default.
    full_env["FRONTDOOR_RATE_LIMITS"] = "off"
    full_env.update(env or {})
    log_path = os.path.join(state_dir, "gateway-%d.log" % port)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    log.close()
    url = "%s://127.0.0.1:%d" % ("https" if ca_file else "http", port)
    try:
        wait_healthy(url, process, log_path, verify=ca_file or True)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    session = requests.Session()
    if ca_file:
        session.verify = ca_file
    return Gateway(url, admin_token, state_dir, process, log_path, session)


@contextlib.contextmanager
def run_gateway(state_dir: str, config: Optional[dict] = None, env: Optional[Dict[str, str]] = None,
                port: Optional[int] = None, **kwargs) -> Iterator[Gateway]:
    gateway = start_gateway(state_dir, config=config, env=env, port=port, **kwargs)
    try:
        yield gateway
    finally:
        gateway.stop()
