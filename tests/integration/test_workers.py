"""`serve --workers N`: uvicorn's own supervisor, as a real process.

What it promises: a worker that dies (SIGKILL, no chance to clean up) is replaced within
seconds, requests keep being answered while it happens, SIGTERM to the supervisor stops
every worker, and a port in use is an error without a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import List, Tuple

import requests
from support.crypto import make_csr, shared_key
from support.gateway import Gateway, free_port, run_gateway

CERTS = "/frontdoor/default/client-certificates"
CLIENTS = 3


def _workers(supervisor: int) -> List[int]:
    """The supervisor's uvicorn workers: its children started by multiprocessing's spawn
    (the other child, multiprocessing's resource tracker, serves nothing)."""
    found = []
    for task in os.listdir("/proc/%d/task" % supervisor):
        with open("/proc/%d/task/%s/children" % (supervisor, task), encoding="ascii") as handle:
            for pid in handle.read().split():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            found.append(int(pid))
                except FileNotFoundError:  # exited meanwhile
                    continue
    return sorted(found)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("%s: not within %.0f s" % (what, timeout))


def _serving(gw: Gateway, pid: int) -> bool:
    """uvicorn logs this once the worker has built the app and is about to accept."""
    return ("Started server process [%d]" % pid) in gw.log()


class _Load:
    """CLIENTS threads, each with one keep-alive session, redeeming fresh tokens until stopped.

    Each outcome is (start, end, status or the connection error's class name)."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.stop = threading.Event()
        self.outcomes: List[Tuple[float, float, object]] = []
        self.csr = make_csr(shared_key("p256", 0), cn="x")
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test body never sets stop
        with requests.Session() as session:
            headers = self.gw.headers()
            while not self.stop.is_set() and time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    created = session.post(self.gw.url + "/frontdoor/default/certificate-request-tokens",
                                           json={"name": "w"}, headers=headers, timeout=20)
                    outcome: object = created.status_code
                    if created.status_code == 201:
                        outcome = session.post(self.gw.url + CERTS + "/token/" + created.json()["token"],
                                               json={"type": "CSR", "value": self.csr}, timeout=20).status_code
                except requests.RequestException as exc:  # a timeout too: judged below, never dropped
                    outcome = type(exc).__name__
                self.outcomes.append((start, time.monotonic(), outcome))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_supervisor_replaces_a_killed_worker_while_requests_keep_succeeding(tmp_path):
    with run_gateway(str(tmp_path / "w"), workers=2) as gw:
        supervisor = gw.process.pid
        first, second = _wait_for(lambda: len(_workers(supervisor)) == 2 and _workers(supervisor), 60, "2 workers")
        _wait_for(lambda: _serving(gw, first) and _serving(gw, second), 60, "both workers serving")
        kills = []
        with _Load(gw) as load:
            time.sleep(1.0)
            # Kill one worker; the other serves alone until the supervisor's replacement is up.
            kills.append(time.monotonic())
            os.kill(first, signal.SIGKILL)
            replacement = _wait_for(lambda: [p for p in _workers(supervisor) if p not in (first, second)], 30,
                                    "a replacement for worker %d" % first)[0]
            _wait_for(lambda: _serving(gw, replacement), 60, "replacement %d serving" % replacement)
            time.sleep(1.0)
            # Now kill the other original: from here until its own replacement is up, only the first
            # replacement can answer, so requests that keep succeeding prove it serves.
            kills.append(time.monotonic())
            os.kill(second, signal.SIGKILL)
            _wait_for(lambda: [p for p in _workers(supervisor) if p not in (first, second, replacement)], 30,
                      "a replacement for worker %d" % second)
            time.sleep(2.0)
        outcomes = load.outcomes
        assert len(_workers(supervisor)) == 2
    assert len([o for o in outcomes if o[0] > kills[-1] + 0.5]) >= CLIENTS, outcomes
    # Every HTTP answer is a success: a surviving worker never answers with an error.
    answered = [o for o in outcomes if isinstance(o[2], int)]
    assert answered and all(o[2] == 201 for o in answered), [o for o in answered if o[2] != 201]
    # A SIGKILLed worker takes the TCP connections it had accepted with it: a request in flight on
    # one of those fails with a connection error (POSTs are not retried). Pending connections in
    # the listen backlog are not lost (the socket is the supervisor's, shared by the workers).
    # So a failure is allowed only if it was in flight when a worker was killed, at most one per
    # client connection per kill.
    failed = [o for o in outcomes if not isinstance(o[2], int)]
    assert len(failed) <= CLIENTS * len(kills), failed
    for start, end, error in failed:
        assert error == "ConnectionError" and any(start <= kill + 0.2 and end >= kill for kill in kills), \
            (start, end, error, kills)


def test_sigterm_stops_every_worker(tmp_path):
    with run_gateway(str(tmp_path / "t"), workers=2) as gw:
        workers = _wait_for(lambda: len(_workers(gw.process.pid)) == 2 and _workers(gw.process.pid), 60, "2 workers")
        gw.process.send_signal(signal.SIGTERM)
        gw.process.wait(timeout=30)
        _wait_for(lambda: not any(os.path.exists("/proc/%d" % p) for p in workers), 10, "workers gone")


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
