"""Contract: single use across OS processes sharing the backend's store (issue 2, section 5).

Real ``python -c`` children (support/processes.py) build their own service from the backend's
configuration, like gateway workers or several gateways: racing processes and threads issue
exactly one certificate per token and a loser never reaches the signer; a process killed while
it holds a claim leaves a token that is redeemable once the (short, contract) lease has passed.
"""

from __future__ import annotations

import os
import signal
import time

from support.helpers import csr, error_of
from support.processes import run_together, spawn, wait_for

PROCESSES = 3
THREADS = 4  # per process
TOKENS = 12


def test_processes_and_threads_racing_issue_one_certificate_per_token(tmp_path, backend, service):
    tokens = [service.create_token("default", name="proc-race-%d" % i, common_name="p%d" % i) for i in range(TOKENS)]
    secrets = [secret for _, secret in tokens]
    state = backend.config.state_dir
    reports = run_together(tmp_path, [
        spawn(tmp_path, state, backend.data, "p%d" % n, secrets, threads=THREADS) for n in range(PROCESSES)
    ])

    assert sum(report["calls"] for report in reports) == TOKENS, "only the winner of each race may reach the signer"
    for index, (record, _) in enumerate(tokens):
        outcomes = [outcome for report in reports for outcome in report["results"][index]]
        assert len(outcomes) == PROCESSES * THREADS
        won = [o for o in outcomes if o["ok"]]
        assert len(won) == 1 and won[0]["replayed"] is False, outcomes
        assert {o["code"] for o in outcomes if not o["ok"]} <= {"token_already_used", "redemption_in_progress"}
        page = service.list_certificates("default", token_id=record.id)
        assert page.total == 1 and page.items[0].id == won[0]["certificate"]
        assert service.get_token("default", record.id).certificate_id == won[0]["certificate"]


def test_a_process_killed_holding_a_claim_leaves_the_token_redeemable_after_the_lease(tmp_path, backend, service):
    lease = backend.config.claim_lease
    record, secret = service.create_token("default", name="crash", common_name="crash")
    marker, release = str(tmp_path / "in-signer"), str(tmp_path / "never-created")
    process, ready = spawn(tmp_path, backend.config.state_dir, backend.data, "victim", [secret],
                           block={"marker": marker, "release": release})
    try:
        wait_for(ready, [process])
        (tmp_path / "go").write_text("go")
        wait_for(marker, [process])  # the child holds the claim and sits in its signer
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "redemption_in_progress" and 1 <= error.retry_after <= lease + 1
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.claimed(service.clock())
    assert service.list_certificates("default").total == 0

    deadline = time.monotonic() + lease + 5
    while stored.claimed(service.clock()):  # bounded: the claim lapses after the lease
        assert time.monotonic() < deadline, "the claim never lapsed"
        time.sleep(0.1)
    result = service.redeem("default", secret, csr())
    assert result.replayed is False
    page = service.list_certificates("default")
    assert page.total == 1 and page.items[0].id == result.certificate.id
    assert not os.path.exists(release)
