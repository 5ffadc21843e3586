"""Start a real ``frontdoor-gateway serve`` for the benchmark and read its memory.

Same idea as tests/support/gateway.py (the bench must not import from tests/): a process on a
free loopback port, waited for on /healthz, stopped by its PID.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import requests
import yaml

from .openbao import free_port

GATEWAY_BIN = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    try:
        with open("/proc/%d/stat" % pid, "r", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


@dataclasses.dataclass
class Gateway:
    url: str
    admin_token: str
    state_dir: str
    config_path: Optional[str]
    process: subprocess.Popen
    log_path: str

    def pids(self) -> List[int]:
        """The server process and every descendant (uvicorn workers)."""
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            try:
                for task in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/children" % (pid, task), "r", encoding="ascii") as handle:
                        queue.extend(int(p) for p in handle.read().split())
            except OSError:
                continue
        return found

    def workers_started(self) -> int:
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read().count("Application startup complete")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server processes (to report server CPU per request)."""
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def memory(self) -> Dict[str, object]:
        """Peak RSS (VmHWM) summed over the processes, plus PSS (shared pages split fairly) for context."""
        per_process = []
        for pid in self.pids():
            entry = {"pid": pid}
            try:
                with open("/proc/%d/status" % pid, "r", encoding="ascii") as handle:
                    for line in handle:
                        if line.startswith(("VmHWM:", "VmRSS:")):
                            entry[line.split(":")[0]] = int(line.split()[1])  # kB
                with open("/proc/%d/smaps_rollup" % pid, "r", encoding="ascii") as handle:
                    for line in handle:
                        if line.startswith("Pss:"):
                            entry["Pss"] = int(line.split()[1])
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    entry["cmd"] = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")[:120]
            except OSError:
                continue
            per_process.append(entry)
        return {
            "processes": len(per_process),
            "peak_rss_mb": round(sum(p.get("VmHWM", 0) for p in per_process) / 1024, 1),
            "peak_rss_mb_max": round(max([p.get("VmHWM", 0) for p in per_process] or [0]) / 1024, 1),
            "rss_mb": round(sum(p.get("VmRSS", 0) for p in per_process) / 1024, 1),
            "pss_mb": round(sum(p.get("Pss", 0) for p in per_process) / 1024, 1),
            "per_process": per_process,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_gateway(state_dir: str, config: Optional[dict] = None, workers: int = 1, extra_args: tuple = (),
                  timeout: float = 60.0) -> Gateway:
    os.makedirs(state_dir, exist_ok=True)
    port = free_port()
    admin_token = "fdk_bench_" + secrets.token_urlsafe(16)
    args = [GATEWAY_BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--state-dir", state_dir,
            "--workers", str(workers)] + list(extra_args)
    config_path = None
    if config is not None:
        config_path = os.path.join(state_dir, "bench-config.yaml")
        with open(config_path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        args += ["--config", config_path]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    env["FRONTDOOR_ADMIN_TOKEN"] = admin_token
    log_path = os.path.join(state_dir, "gateway-%d.log" % port)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    gateway = Gateway(url, admin_token, state_dir, config_path, process, log_path)
    deadline = time.monotonic() + timeout
    healthy_since = None
    while True:
        if process.poll() is not None:
            with open(log_path, "r", encoding="utf-8", errors="replace") as handle:
                raise RuntimeError("gateway exited with %s:\n%s" % (process.returncode, handle.read()[-3000:]))
        try:
            ok = requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            # With several workers the first answer comes from the first worker up: wait until every worker
            # has said so in the log (uvicorn logs "Application startup complete" once per worker).
            healthy_since = healthy_since or time.monotonic()
            if workers <= 1 or gateway.workers_started() >= workers or time.monotonic() - healthy_since > 10:
                return gateway
        if time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError("gateway did not become healthy within %.0f s" % timeout)
        time.sleep(0.05)
