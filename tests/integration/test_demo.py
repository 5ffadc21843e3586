"""`make demo` runs: the reference workflow over HTTPS against a gateway with its own certificate."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_workflow_over_https():
    result = subprocess.run([sys.executable, "-m", "frontdoor_gateway.demo"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed" in result.stdout
    assert "Starting frontdoor-gateway on https://127.0.0.1:" in result.stdout
    assert "curl --cacert $CA -X POST" in result.stdout and "-> 409 token_already_used" in result.stdout
