"""Leader failover of a 3-node OpenBao raft cluster under racing redemption load.

``make failover`` / ``python -m bench.failover``: not part of ``make test`` (about 2 minutes).

Set-up, all on loopback, every process started here and stopped by its PID at the end:

* three ``bao server`` processes, one config file each: ``storage "raft"`` with ``retry_join`` to the
  other two, a TCP listener without TLS (loopback only) and a cluster address; initialised with one
  unseal key share (threshold 1) and unsealed; KV v2 at ``secret`` and PKI at ``pki`` as
  docs/vault.md asks; the gateways get a token limited to ``frontdoor-gateway vault-policy``'s policy.
* HAProxy (Debian's package; ``haproxy`` on PATH) with two fronts:
  ``bao_active`` sends every request to the node whose ``/v1/sys/health`` answers 200 — the active
  node; standbys answer 429 and are left out — and ``gateways`` balances round robin over the gateways.
  Why the gateways talk to the active node through a load balancer, and not to one fixed node: a
  gateway pinned to a node is dead for as long as that node is, whatever the cluster does; pinned
  to a standby it survives a failover, but its writes are forwarded over the cluster port (one more
  hop), it dies with that standby, and OpenBao 2.x standbys answer reads from their own copy (eventual
  consistency, on unless ``disable_standby_reads = true``). ``--vault-route any`` measures the other
  choice: all unsealed nodes, round robin; ``--standby-reads off`` adds ``disable_standby_reads``.
* ``--gateways`` (3) ``frontdoor-gateway serve`` processes with ``backend: vault`` pointed at that front.

Load: ``--clients`` threads take tokens one by one through the gateways' front; every
``--pair-every``-th token is instead redeemed by two clients at once (two keys), each sent straight to
a different gateway. A client retries a 503/502/504, a lost connection and ``409
redemption_in_progress`` with the same CSR (after min(Retry-After, ``--retry-delay``)) until it gets
a certificate, a final refusal, or ``--give-up`` seconds have passed. Once a quarter of the tokens are
settled, the raft leader is killed with SIGKILL. The killed node is not restarted.

Measured: tokens for which clients received two different certificates (must be 0); tokens left
without a certificate (and their state in KV: claimed, or free); whether each of those is redeemable
after the claim lease; certificates in ``pki/certs`` that the store does not record (orphans);
seconds from the kill to the first certificate handed out, to the new leader, and to HAProxy routing
to it; every answer clients saw, by status and code, before and after the kill. Results go to
``bench/results/failover.json`` and stdout.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

import requests
from cryptography import x509

from .csrs import make_csrs
from .gateway import Gateway, start_gateway
from .openbao import bao_binary, free_port

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "failover.json")
KV_PREFIX = "failover"
FRONTDOOR = "default"


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or CA bundles from the environment on loopback
    return session


# -- the OpenBao raft cluster ------------------------------------------------------------------

@dataclasses.dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    dir: str
    process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _node_config(node: Node, peers: List[Node], performance_multiplier: int, standby_reads: bool = True) -> str:
    joins = "".join('  retry_join {\n    leader_api_addr = "%s"\n  }\n' % peer.url for peer in peers)
    return (
        'storage "raft" {\n  path = "%s"\n  node_id = "%s"\n%s%s}\n'
        'listener "tcp" {\n  address = "127.0.0.1:%d"\n  cluster_address = "127.0.0.1:%d"\n'
        '  tls_disable = true\n}\n'
        'api_addr = "%s"\ncluster_addr = "https://127.0.0.1:%d"\ndisable_mlock = true\nui = false\n'
        'log_level = "info"\n%s'
    ) % (os.path.join(node.dir, "raft"), node.name,
         "  performance_multiplier = %d\n" % performance_multiplier if performance_multiplier else "", joins,
         node.port, node.cluster_port,
         node.url, node.cluster_port, "" if standby_reads else "disable_standby_reads = true\n")


class Cluster:
    """Three raft nodes; ``root`` talks to whichever node is active (found by /sys/health)."""

    def __init__(self, work: str, performance_multiplier: int, standby_reads: bool = True):
        self.standby_reads = standby_reads
        self.nodes = [Node("n%d" % i, free_port(), free_port(), os.path.join(work, "n%d" % i)) for i in (1, 2, 3)]
        self.performance_multiplier = performance_multiplier
        self.root_token = ""
        self.unseal_key = ""
        self.session = _session()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        for node in self.nodes:
            os.makedirs(os.path.join(node.dir, "raft"), exist_ok=True)
            env["HOME"] = node.dir
            config = os.path.join(node.dir, "bao.hcl")
            with open(config, "w", encoding="utf-8") as handle:
                handle.write(_node_config(node, [p for p in self.nodes if p is not node], self.performance_multiplier,
                                          self.standby_reads))
            with open(os.path.join(node.dir, "bao.log"), "ab") as log:
                node.process = subprocess.Popen([bao_binary(), "server", "-config=%s" % config], stdout=log,
                                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        for node in self.nodes:
            self._wait(lambda n=node: self._status(n) is not None, "%s to listen" % node.name)
        first = self.nodes[0]
        init = self.session.put(first.url + "/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30)
        if init.status_code != 200:
            raise RuntimeError("sys/init on n1: HTTP %d %s\n%s" % (init.status_code, init.text[:300], self.log(first)))
        self.root_token = init.json()["root_token"]
        self.unseal_key = init.json()["keys_base64"][0]
        self._unseal(first)
        self._wait(lambda: self._status(first) == 200, "n1 to become active")
        for node in self.nodes[1:]:  # retry_join: a Shamir-sealed node joins once it is given the key
            self._unseal(node)
        for node in self.nodes[1:]:
            self._wait(lambda n=node: self._status(n) == 429, "%s to join as an unsealed standby" % node.name, 90)
        # autopilot adds a joining node as a non-voter until it has been healthy for a while (10 s by default):
        # killing the leader before both others vote would leave no quorum, and no new leader
        self._wait(lambda: sum(1 for p in self.raft_peers() if p.get("voter")) == 3, "3 raft voters", 90)

    def _unseal(self, node: Node) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = self.session.put(node.url + "/v1/sys/unseal", json={"key": self.unseal_key}, timeout=10)
                if answer.status_code == 200 and not answer.json().get("sealed", True):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not unseal:\n%s" % (node.name, self.log(node)))
            time.sleep(0.3)

    def _status(self, node: Node, session: Optional[requests.Session] = None) -> Optional[int]:
        """/sys/health's status code: 200 active, 429 standby, 503 sealed, 501 not initialised."""
        if not node.alive():
            return None
        try:
            return (session or self.session).get(node.url + "/v1/sys/health", timeout=2).status_code
        except requests.RequestException:
            return None

    def _wait(self, check, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and node.process.returncode != -9:
                    raise RuntimeError("%s exited:\n%s" % (node.name, self.log(node)))
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for %s:\n%s" % (what, "\n".join(self.log(n) for n in self.nodes)))
            time.sleep(0.1)

    def log(self, node: Node) -> str:
        with open(os.path.join(node.dir, "bao.log"), "r", encoding="utf-8", errors="replace") as handle:
            return "--- %s ---\n%s" % (node.name, handle.read()[-2500:])

    def active(self) -> Optional[Node]:
        for node in self.nodes:
            if self._status(node) == 200:
                return node
        return None

    def root(self, method: str, path: str, wait: float = 60.0, **kwargs) -> requests.Response:
        """A request as root to the active node, waiting up to ``wait`` s for there to be one (an election
        on a busy machine can outlast the load). Reads are sent again after a 5xx or a lost answer; writes
        never are (they may have been applied)."""
        kwargs.setdefault("timeout", 30)
        deadline = time.monotonic() + wait
        while True:
            node = self.active()
            answer = None
            if node is not None:
                try:
                    answer = self.session.request(method, "%s/v1/%s" % (node.url, path),
                                                  headers={"X-Vault-Token": self.root_token}, **kwargs)
                except requests.RequestException:
                    if method not in ("GET", "LIST"):
                        raise
                if answer is not None and (answer.status_code < 500 or method not in ("GET", "LIST")):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("no active OpenBao node answered %s %s within %.0f s" % (method, path, wait))
            time.sleep(0.25)
        if answer.status_code >= 400 and answer.status_code != 404:
            raise RuntimeError("%s %s -> %s %s" % (method, path, answer.status_code, answer.text[:300]))
        return answer

    def raft_peers(self) -> List[dict]:
        try:
            answer = self.root("GET", "sys/storage/raft/configuration", wait=2)
        except RuntimeError:
            return []
        return answer.json()["data"]["config"]["servers"]

    def setup_mounts(self) -> None:
        self.root("POST", "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}})
        self.root("POST", "sys/mounts/pki", json={"type": "pki", "config": {"max_lease_ttl": "87600h"}})
        self.root("POST", "pki/root/generate/internal", json={
            "common_name": "frontdoor failover root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"})

    def gateway_token(self, config: dict) -> str:
        """A token holding exactly the policy ``frontdoor-gateway vault-policy`` prints for ``config``."""
        from frontdoor_pki.config import load_config
        from frontdoor_pki.vault.policy import render_policy

        loaded = load_config(state_dir=tempfile.gettempdir(), env={},
                             data=dict(config, vault=dict(config["vault"], token="x")))
        self.root("PUT", "sys/policies/acl/frontdoor-gateway", json={"policy": render_policy(loaded)})
        return self.root("POST", "auth/token/create", json={
            "policies": ["frontdoor-gateway"], "no_default_policy": True, "ttl": "4h"}).json()["auth"]["client_token"]

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=5)
        self.session.close()


# -- HAProxy -----------------------------------------------------------------------------------

def haproxy_config(bao_port: int, gw_port: int, nodes: List[Node], gateways: List[Gateway], route: str) -> str:
    """Two fronts. ``route`` "active": only the node whose /sys/health is 200; "any": every unsealed node."""
    check = "/v1/sys/health" if route == "active" else "/v1/sys/health?standbyok=true"
    bao_servers = "".join(
        "    server %s 127.0.0.1:%d check inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down\n" % (n.name, n.port) for n in nodes)
    # A gateway is alive if it answers /healthz at all: 503 there means "Vault is away", which every
    # gateway sees at once (one Vault behind them all), so taking them all out would only replace the
    # gateways' JSON 503 with Retry-After by the balancer's HTML page.
    gw_servers = "".join("    server g%d %s check inter 1s fall 2 rise 1\n" % (i + 1, g.url.split("//", 1)[1])
                         for i, g in enumerate(gateways))
    return (
        "global\n    maxconn 4096\n\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n"
        "    timeout check 2s\n    retries 2\n    option redispatch\n\n"
        "frontend bao_%s\n    bind 127.0.0.1:%d\n    default_backend bao\n\n"
        "backend bao\n    balance roundrobin\n    option httpchk GET %s\n    http-check expect status 200\n%s\n"
        "frontend gateways\n    bind 127.0.0.1:%d\n    default_backend gw\n\n"
        "backend gw\n    balance roundrobin\n    option httpchk GET /healthz\n    http-check expect rstatus ^(200|503)$\n%s"
    ) % (route, bao_port, check, bao_servers, gw_port, gw_servers)


def start_haproxy(work: str, config: str) -> subprocess.Popen:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(binary, os.X_OK):
        raise RuntimeError("haproxy not found: apt-get install haproxy (Debian's package)")
    path = os.path.join(work, "haproxy.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config)
    check = subprocess.run([binary, "-c", "-q", "-f", path], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError("haproxy refused its configuration:\n%s%s" % (check.stdout, check.stderr))
    log = open(os.path.join(work, "haproxy.log"), "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen([binary, "-db", "-f", path], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process


def _wait_http(url: str, timeout: float = 30, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    with _session() as session:
        while True:
            try:
                if session.get(url, timeout=1).status_code == expect:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not answer %d within %.0f s" % (url, expect, timeout))
            time.sleep(0.1)


# -- load ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Attempt:
    token: int
    client: str
    via: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer
    code: str
    serial: Optional[str] = None
    replayed: bool = False


def _serial(text: str) -> str:
    """One spelling for serials: PKI lists 'aa-bb-...', records may say 'aa:bb:..' or plain hex."""
    return text.replace(":", "").replace("-", "").lower().lstrip("0")


class Load:
    RETRY_STATUSES = (0, 502, 503, 504)

    def __init__(self, secrets_: List[str], csrs: List[str], lb_url: str, gateway_urls: List[str], args):
        self.secrets = secrets_
        self.csrs = csrs
        self.lb_url = lb_url
        self.gateway_urls = gateway_urls
        self.args = args
        self.attempts: List[Attempt] = []
        self.lock = threading.Lock()
        self.settled = 0
        self.outcome: Dict[int, List[Tuple[str, str]]] = collections.defaultdict(list)  # token -> [(client, result)]
        self.next = 0
        self.stop_at: Optional[float] = None

    def _take(self) -> Optional[int]:
        with self.lock:
            if self.next >= len(self.secrets) or (self.stop_at is not None and time.monotonic() > self.stop_at):
                return None
            index = self.next
            self.next += 1
            return index

    def redeem(self, session: requests.Session, token: int, csr: str, client: str, base: str, via: str) -> None:
        """One client's redemption of one token, retrying what a real client retries."""
        url = "%s/frontdoor/%s/client-certificates/token/%s" % (base, FRONTDOOR, self.secrets[token])
        first = time.monotonic()
        result = "gave_up"
        while True:
            started = time.monotonic()
            status, code, serial, replayed, retry_after = 0, "", None, False, 0.0
            try:
                answer = session.post(url, json={"type": "CSR", "value": csr}, timeout=self.args.client_timeout)
                status = answer.status_code
                retry_after = float(answer.headers.get("Retry-After") or 0)
                try:
                    body = answer.json()
                except ValueError:  # e.g. the load balancer's own error page
                    body, code = None, "(not a JSON body: %s)" % answer.headers.get("Content-Type", "no type")
                if isinstance(body, dict) and status in (200, 201):
                    code = "replayed" if answer.headers.get("X-Frontdoor-Replayed") else "issued"
                    serial, replayed = _serial(body["serialNumber"]), code == "replayed"
                elif isinstance(body, dict):
                    code = (body.get("error") or {}).get("code", "?")
            except requests.RequestException as exc:
                code = type(exc).__name__
            ended = time.monotonic()
            with self.lock:
                self.attempts.append(Attempt(token, client, via, started, ended, status, code, serial, replayed))
            if serial is not None:
                result = serial
                break
            retryable = status in self.RETRY_STATUSES or code == "redemption_in_progress"
            if not retryable:
                result = code
                break
            if ended - first > self.args.give_up:
                break
            time.sleep(min(retry_after or self.args.retry_delay, self.args.retry_delay) * random.uniform(0.8, 1.2))
        with self.lock:
            self.outcome[token].append((client, result))

    def single_client(self, number: int) -> None:
        with _session() as session:
            while True:
                token = self._take()
                if token is None:
                    return
                if token % self.args.pair_every == 0:
                    self.pair(token, number)
                else:
                    self.redeem(session, token, self.csrs[2 * token], "c%d" % number, self.lb_url, "lb")
                with self.lock:
                    self.settled += 1

    def pair(self, token: int, number: int) -> None:
        """Two clients, two keys, two different gateways, released at the same instant."""
        first = (token // self.args.pair_every) % len(self.gateway_urls)
        second = (first + 1) % len(self.gateway_urls)
        barrier = threading.Barrier(2)

        def one(which: int, gateway: int) -> None:
            with _session() as session:
                barrier.wait()
                self.redeem(session, token, self.csrs[2 * token + which], "c%d%s" % (number, "ab"[which]),
                            self.gateway_urls[gateway], "g%d" % (gateway + 1))

        other = threading.Thread(target=one, args=(1, second))
        other.start()
        one(0, first)
        other.join()


class LeaderWatch(threading.Thread):
    """After the kill: when a surviving node reports itself active, and when HAProxy's front does."""

    def __init__(self, cluster: Cluster, killed: Node, bao_front: str):
        super().__init__(daemon=True)
        self.cluster, self.killed, self.bao_front = cluster, killed, bao_front
        self.new_leader: Optional[Tuple[str, float]] = None
        self.front_ok: Optional[float] = None
        self.done = threading.Event()

    def run(self) -> None:
        session = _session()
        while not self.done.is_set() and (self.new_leader is None or self.front_ok is None):
            if self.new_leader is None:
                for node in self.cluster.nodes:
                    if node is not self.killed and self.cluster._status(node, session) == 200:
                        self.new_leader = (node.name, time.monotonic())
            if self.front_ok is None:
                try:
                    if session.get(self.bao_front + "/v1/sys/health", timeout=1).status_code == 200:
                        self.front_ok = time.monotonic()
                except requests.RequestException:
                    pass
            time.sleep(0.05)
        session.close()


# -- measurement ---------------------------------------------------------------------------------

def kv_token(cluster: Cluster, secret: str) -> Optional[dict]:
    path = "secret/data/%s/t/%s" % (KV_PREFIX, hashlib.sha256(secret.encode("utf-8")).hexdigest())
    answer = cluster.root("GET", path)
    return None if answer.status_code == 404 else answer.json()["data"]["data"]


def pki_certificates(cluster: Cluster, revoked: Optional[set] = None) -> Dict[str, str]:
    """serial -> subject CN of every end-entity certificate OpenBao's PKI stored (the CA left out);
    the serials of revoked ones are added to ``revoked``."""
    answer = cluster.root("LIST", "pki/certs")
    keys = [] if answer.status_code == 404 else answer.json()["data"]["keys"]
    found = {}
    for key in keys:
        data = cluster.root("GET", "pki/cert/%s" % key).json()["data"]
        pem = data["certificate"]
        if revoked is not None and data.get("revocation_time"):
            revoked.add(_serial(key))
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except x509.ExtensionNotFound:
            pass
        cns = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        found[_serial(key)] = cns[0].value if cns else ""
    return found


def _audit_lines(gateways: List[Gateway], token_id: str, killed_at: float) -> List[str]:
    """What the gateways' audit logs say about one token (no secrets are in them), times from the kill."""
    wall_kill = time.time() - (time.monotonic() - killed_at)
    found = []
    for number, gateway in enumerate(gateways):
        try:
            with open(os.path.join(gateway.state_dir, "audit.jsonl"), "r", encoding="utf-8") as handle:
                lines = [json.loads(line) for line in handle if token_id in line]
        except (OSError, ValueError):
            continue
        for entry in lines:
            if entry.get("event") == "token.created":
                continue
            when = _dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp() - wall_kill
            found.append((when, "%+.2f audit g%d: %s %s" % (when, number + 1, entry.get("event"),
                                                             entry.get("code") or entry.get("reason") or "")))
    return [text for _, text in sorted(found)]


def _codes(attempts: List[Attempt]) -> Dict[str, int]:
    counted = collections.Counter("%s %s" % (a.status or "no-answer", a.code) for a in attempts)
    return dict(sorted(counted.items()))


def run(args) -> dict:
    work = tempfile.mkdtemp(prefix="frontdoor-failover-")
    cluster = Cluster(work, args.performance_multiplier, args.standby_reads == "on")
    gateways: List[Gateway] = []
    haproxy: Optional[subprocess.Popen] = None
    report: dict = {"setup": {
        "openbao": subprocess.run([bao_binary(), "version"], capture_output=True, text=True).stdout.strip(),
        "haproxy": subprocess.run([shutil.which("haproxy") or "haproxy", "-v"], capture_output=True,
                                  text=True).stdout.splitlines()[0],
        "nodes": 3, "gateways": args.gateways, "vault_route": args.vault_route, "standby_reads": args.standby_reads, "tokens": args.tokens,
        "clients": args.clients, "pair_every": args.pair_every, "claim_lease_s": args.lease,
        "raft_performance_multiplier": args.performance_multiplier, "retry_delay_s": args.retry_delay,
        "give_up_s": args.give_up, "cpus": os.cpu_count(),
    }}
    try:
        started = time.monotonic()
        cluster.start()
        cluster.setup_mounts()
        report["setup"]["cluster_ready_s"] = round(time.monotonic() - started, 1)
        bao_port, gw_port = free_port(), free_port()
        bao_front = "http://127.0.0.1:%d" % bao_port
        config = {"backend": "vault", "claimLeaseSeconds": args.lease,
                  "vault": {"url": bao_front, "kvPrefix": KV_PREFIX, "timeout": args.vault_timeout},
                  "frontdoors": [{"id": FRONTDOOR, "signer": {"type": "vault"}, "certificateTtl": "30d"}]}
        config["vault"]["token"] = cluster.gateway_token(config)
        # HAProxy first (the gateways need the Vault front to start); its gateway servers are known
        # only once they run, so it is started again with them (same PID file-less foreground process).
        haproxy = start_haproxy(work, haproxy_config(bao_port, gw_port, cluster.nodes, [], args.vault_route))
        _wait_http(bao_front + "/v1/sys/health?standbyok=true" if args.vault_route == "any" else bao_front + "/v1/sys/health")
        for number in range(args.gateways):
            gateways.append(start_gateway(os.path.join(work, "gw%d" % (number + 1)), config=config, workers=1))
        haproxy.send_signal(signal.SIGTERM)
        haproxy.wait(timeout=10)
        haproxy = start_haproxy(work, haproxy_config(bao_port, gw_port, cluster.nodes, gateways, args.vault_route))
        lb_url = "http://127.0.0.1:%d" % gw_port
        _wait_http(lb_url + "/healthz")
        time.sleep(2.5)  # every gateway's health check up, so round robin covers all of them

        # tokens, made on the first gateway (each gateway has an admin token of its own; the store is shared)
        admin = {"Authorization": "Bearer %s" % gateways[0].admin_token}

        def create(index: int) -> str:
            with _session() as session:
                answer = session.post("%s/frontdoor/%s/certificate-request-tokens" % (gateways[0].url, FRONTDOOR),
                                      headers=admin,
                                      json={"name": "fo-%d" % index, "commonName": "fo-%d.failover.test" % index,
                                            "ttl": "2h"}, timeout=30)
                answer.raise_for_status()
                return answer.json()["token"], answer.json()["id"]

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            made = list(pool.map(create, range(args.tokens)))
        secrets_, token_ids = [m[0] for m in made], [m[1] for m in made]
        report["setup"]["tokens_created_s"] = round(time.monotonic() - started, 1)
        csrs = make_csrs(2 * args.tokens)
        pki_before = set(pki_certificates(cluster))

        load = Load(secrets_, csrs, lb_url, [g.url for g in gateways], args)
        threads = [threading.Thread(target=load.single_client, args=(n,), daemon=True) for n in range(args.clients)]
        load_started = time.monotonic()
        for thread in threads:
            thread.start()
        leader = cluster.active()
        while load.settled < args.tokens * args.kill_at and any(t.is_alive() for t in threads):
            time.sleep(0.02)
        leader.process.send_signal(signal.SIGKILL)  # by PID
        killed_at = time.monotonic()
        watch = LeaderWatch(cluster, leader, bao_front)
        watch.start()
        load.stop_at = killed_at + args.after_kill  # no new tokens after this; clients finish what they hold
        for thread in threads:
            thread.join()
        load_ended = time.monotonic()
        watch.join(timeout=30)
        watch.done.set()

        # state right after the load, then again after the claim lease
        attempts = sorted(load.attempts, key=lambda a: a.ended)
        taken = load.next
        delivered: Dict[int, set] = collections.defaultdict(set)
        for attempt in attempts:
            if attempt.serial:
                delivered[attempt.token].add(attempt.serial)
        without = [t for t in range(taken) if not delivered.get(t)]
        kv_after_load = {}
        now = time.time()
        for token in without:
            doc = kv_token(cluster, secrets_[token])
            if doc is None:
                kv_after_load[token] = "missing"
            elif doc.get("state") == "redeemed":
                kv_after_load[token] = "redeemed"
            elif doc.get("claimId") and doc.get("claimUntil") and float(doc["claimUntil"]) > now:  # epoch seconds in KV
                kv_after_load[token] = "claimed"
            else:
                kv_after_load[token] = doc.get("state", "?")
        time.sleep(args.lease + 2)
        retried: Dict[int, str] = {}
        retry_args = argparse.Namespace(**dict(vars(args), give_up=10.0))
        with _session() as session:
            for token in without:
                retry = Load(secrets_, csrs, lb_url, [], retry_args)
                retry.redeem(session, token, csrs[2 * token], "after-lease", lb_url, "lb")
                last = retry.attempts[-1]
                retried[token] = last.code if last.serial else "%s %s" % (last.status or "no-answer", last.code)
                if last.serial:
                    delivered[token].add(last.serial)

        # the store against PKI
        recorded: Dict[str, int] = {}
        recorded_per_token: Dict[int, set] = collections.defaultdict(set)
        for token in range(taken):
            doc = kv_token(cluster, secrets_[token])
            cert = (doc or {}).get("certificate")
            if cert:
                recorded[_serial(cert["serialNumber"])] = token
                recorded_per_token[token].add(_serial(cert["serialNumber"]))
        revoked: set = set()
        pki_after = pki_certificates(cluster, revoked)
        new_pki = {s: cn for s, cn in pki_after.items() if s not in pki_before}
        orphans = sorted(s for s in new_pki if s not in recorded)
        per_cn = collections.Counter(new_pki.values())

        successes = [a for a in attempts if a.serial]
        after_kill = [a for a in successes if a.ended > killed_at]
        started_after = [a for a in successes if a.started > killed_at]
        gap, previous = 0.0, load_started
        for attempt in successes:
            gap, previous = max(gap, attempt.ended - previous), attempt.ended
        stranded_tokens = [t for t in without if kv_after_load.get(t) != "redeemed"]
        report["figures"] = {
            "tokens_taken": taken,
            "tokens_raced_by_two_clients": sum(1 for t in range(taken) if t % args.pair_every == 0),
            "attempts": len(attempts),
            "load_s": round(load_ended - load_started, 1),
            "leader_killed_after_s": round(killed_at - load_started, 1),
            "killed_node": leader.name,
            "certificates_before_kill": sum(1 for a in successes if a.ended <= killed_at),
            "tokens_redeemed_twice": sum(1 for t, s in delivered.items() if len(s) > 1),
            "tokens_with_two_recorded_certificates": sum(1 for s in recorded_per_token.values() if len(s) > 1),
            "pki_certificates_issued": len(new_pki),
            "pki_certificates_recorded": len([s for s in new_pki if s in recorded]),
            "orphan_certificates": len(orphans),
            "orphan_serials": orphans,
            "orphans_revoked_by_the_gateway": sum(1 for s in orphans if s in revoked),
            "orphan_certificate_subjects": sorted(new_pki[s] for s in orphans),
            "tokens_with_two_pki_certificates": sum(1 for n in per_cn.values() if n > 1),
            "tokens_without_certificate_after_load": len(without),
            "their_kv_state_after_load": dict(collections.Counter(kv_after_load.values())),
            "tokens_stranded": len(stranded_tokens),
            "stranded_token_subjects": sorted("fo-%d.failover.test" % t for t in stranded_tokens),
            "redeemed_after_lease": dict(collections.Counter(retried.values())),
            "s_kill_to_new_leader": round(watch.new_leader[1] - killed_at, 2) if watch.new_leader else None,
            "new_leader": watch.new_leader[0] if watch.new_leader else None,
            "s_kill_to_haproxy_routing_to_it": round(watch.front_ok - killed_at, 2) if watch.front_ok else None,
            "s_kill_to_first_certificate": round(after_kill[0].ended - killed_at, 2) if after_kill else None,
            "s_kill_to_first_certificate_of_a_request_sent_after_kill":
                round(min(a.ended for a in started_after) - killed_at, 2) if started_after else None,
            "longest_gap_without_certificate_s": round(gap, 2),
            "answers_before_kill": _codes([a for a in attempts if a.ended <= killed_at]),
            "answers_after_kill": _codes([a for a in attempts if a.ended > killed_at]),
            "certificates_per_s_before_kill": round(
                sum(1 for a in successes if a.ended <= killed_at) / max(killed_at - load_started, 1e-9), 1),
        }
        # what the clients saw, for every token that was stranded or has an orphan (times from the kill)
        traced = set(stranded_tokens) | {int(new_pki[s].split(".")[0][3:]) for s in orphans
                                         if new_pki[s].startswith("fo-")}
        report["traces"] = {
            "fo-%d" % t: ["%+.2f..%+.2f %s via %s: %s %s" % (a.started - killed_at, a.ended - killed_at, a.client, a.via,
                                                         a.status or "no-answer", a.code)
                          for a in attempts if a.token == t]
            + _audit_lines(gateways, token_ids[t], killed_at)
            for t in sorted(traced)}
        report["raft_after"] = [{"node": s["node_id"], "leader": s["leader"], "voter": s["voter"]}
                                for s in cluster.raft_peers()]
        return report
    finally:
        for gateway in gateways:
            gateway.stop()
        if haproxy is not None and haproxy.poll() is None:
            haproxy.send_signal(signal.SIGTERM)
            try:
                haproxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                haproxy.kill()
                haproxy.wait(timeout=5)
        cluster.stop()
        if args.keep:
            print("kept %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--clients", type=int, default=12, help="client threads (a pair uses 2)")
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--pair-every", type=int, default=4, help="every Nth token is raced by two clients")
    parser.add_argument("--kill-at", type=float, default=0.25, help="kill the leader once this share of tokens is settled")
    parser.add_argument("--after-kill", type=float, default=30.0, help="seconds of load after the kill")
    parser.add_argument("--lease", type=float, default=30.0, help="claimLeaseSeconds of the gateways")
    parser.add_argument("--vault-timeout", type=float, default=10.0, help="vault.timeout of the gateways")
    parser.add_argument("--vault-route", choices=("active", "any"), default="active")
    parser.add_argument("--standby-reads", choices=("on", "off"), default="on",
                        help="off: disable_standby_reads = true on every node (standbys forward reads too)")
    parser.add_argument("--performance-multiplier", type=int, default=1,
                        help="raft performance_multiplier (0: leave it out, OpenBao's default)")
    parser.add_argument("--retry-delay", type=float, default=0.5)
    parser.add_argument("--give-up", type=float, default=15.0,
                        help="a client stops retrying a token after this (less than the lease: a stuck claim shows)")
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) for inspection")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    figures = report["figures"]
    return 0 if figures["tokens_redeemed_twice"] == 0 and figures["tokens_with_two_recorded_certificates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
