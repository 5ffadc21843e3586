"""The engine across OS processes sharing one state directory (issue 2, section 5).

Real processes (``python -c``), real SQLite, the real local CA: racing processes issue exactly
one certificate per token, a process killed mid-redemption leaves a claim that lapses after
the lease, and processes starting together on a fresh state dir agree on one CA.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, shared_key
from support.processes import db_counts, finish, spawn, wait_for

LEASE = 2


@pytest.fixture
def shared_state(tmp_path):
    state = str(tmp_path / "state")
    data = {"claimLeaseSeconds": LEASE}
    service = build_service(load_config(state_dir=state, env={}, data=data))
    yield state, data, service
    service.close()


def test_processes_racing_on_the_same_tokens_issue_one_certificate_each(tmp_path, shared_state):
    state, data, service = shared_state
    tokens = [service.create_token("default", name="proc-race-%d" % i, common_name="p%d" % i) for i in range(12)]
    secrets = [secret for _, secret in tokens]
    children = [spawn(tmp_path, state, data, "p%d" % n, secrets) for n in range(4)]
    processes = [process for process, _ in children]
    try:
        for _, ready in children:
            wait_for(ready, processes)
        (tmp_path / "go").write_text("go")
        reports = [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    winners = {}
    for index, (record, _) in enumerate(tokens):
        outcomes = [report["results"][index] for report in reports]
        won = [o for o in outcomes if o["ok"]]
        assert len(won) == 1, (index, outcomes)
        assert won[0]["replayed"] is False
        assert {o["code"] for o in outcomes if not o["ok"]} <= {"token_already_used", "redemption_in_progress"}
        winners[record.id] = won[0]["certificate"]
    # certificates issued by the CA, across all processes: one per token, no loser signed anything
    assert sum(report["calls"] for report in reports) == len(tokens)
    # rows in SQLite: one per token
    counts = db_counts(state)
    assert counts == {record.id: 1 for record, _ in tokens}
    for record, _ in tokens:
        assert service.get_token("default", record.id).certificate_id == winners[record.id]


def test_process_killed_mid_redemption_leaves_a_claim_that_lapses(tmp_path, shared_state):
    state, data, service = shared_state
    record, secret = service.create_token("default", name="crash", common_name="crash")
    marker, release = str(tmp_path / "in-signer"), str(tmp_path / "never-created")
    process, ready = spawn(tmp_path, state, data, "victim", [secret], block={"marker": marker, "release": release})
    try:
        wait_for(ready, [process])
        (tmp_path / "go").write_text("go")
        wait_for(marker, [process])  # the child holds the claim and sits in the signer
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    killed_at = time.monotonic()

    csr = make_csr(shared_key("p256"), cn="survivor")
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, csr)
    assert info.value.code == "redemption_in_progress"
    assert 1 <= info.value.retry_after <= LEASE + 1
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.claim_until is not None
    assert db_counts(state) == {}

    deadline = killed_at + LEASE + 5
    while True:  # bounded: the lease is LEASE seconds
        remaining = (stored.claim_until - service.clock()).total_seconds()
        if remaining < 0:
            break
        assert time.monotonic() < deadline, "the claim never lapsed"
        time.sleep(min(remaining + 0.05, 0.5))
    result = service.redeem("default", secret, csr)
    assert result.replayed is False
    assert db_counts(state) == {record.id: 1}
    assert service.get_token("default", record.id).status() == "redeemed"
    assert not os.path.exists(release)


def test_processes_starting_together_on_a_fresh_state_dir_share_one_ca(tmp_path):
    state = str(tmp_path / "fresh")
    children = [spawn(tmp_path, state, {}, "s%d" % n, create=True) for n in range(4)]
    processes = [process for process, _ in children]
    try:
        for _, ready in children:
            wait_for(ready, processes)
        (tmp_path / "go").write_text("go")
        reports = [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert len({tuple(report["chain"]) for report in reports}) == 1
    service = build_service(load_config(state_dir=state, env={}, data={}))
    try:
        assert service.list_tokens("default").total == 4
        assert service.ca_chain("default") == reports[0]["chain"]
    finally:
        service.close()
    for key in ("ca/root.key", "ca/default/intermediate.key", "frontdoor.db"):
        assert os.stat(os.path.join(state, key)).st_mode & 0o077 == 0, key
