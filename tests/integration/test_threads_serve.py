"""`frontdoor-gateway serve --threads`, as real processes: each worker applies the limit it was given (auto: 2
on the embedded default) and says so in its log; a bad value is refused before anything is created."""

from __future__ import annotations

import os
import time

import pytest
from support.crypto import make_csr, shared_key
from support.gateway import free_port, run_gateway


def _redeem_one(gw) -> int:
    created = gw.create_token(commonName="threads.example")
    assert created.status_code == 201, created.text
    return gw.redeem(created.json()["token"], make_csr(shared_key(), "threads")).status_code


@pytest.mark.parametrize("args, expected", [((), 2), (("--threads", "6"), 6)])
def test_every_worker_applies_its_thread_limit(tmp_path, args, expected):
    with run_gateway(str(tmp_path / "state"), workers=2, extra_args=args) as gw:
        assert _redeem_one(gw) == 201
        deadline = time.monotonic() + 30  # the second worker may still be starting when the first answers
        while True:
            lines = [line for line in gw.log().splitlines() if "blocking work:" in line]
            if len(lines) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(lines) == 2 and all("%d threads in this worker" % expected in line for line in lines), lines


@pytest.mark.parametrize("value", ["0", "many", "5000"])
def test_a_bad_thread_count_is_refused_before_anything_is_created(tmp_path, monkeypatch, capsys, value):
    from frontdoor_gateway.cli import main

    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "s"
    code = main(["serve", "--state-dir", str(state), "--port", str(free_port()), "--threads", value])
    assert code == 2
    assert "--threads must be auto or a number from 1 to 1000" in capsys.readouterr().err
    assert not os.path.exists(state)
