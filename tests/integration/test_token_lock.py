"""Redemptions with the local CA hold the token's lock instead of writing a claim.

With a signer that signs in process (``Signer.in_process``: the local CA) the service holds
``store.exclusive(<secret hash>)`` from reading the token to recording its certificate and writes
no claim (see ``FrontdoorService._token_lock``). These tests hold that path to the same rules as
the claim path (tests/contract, which wraps the signer and so exercises claims): one certificate
per token across threads and processes, no signature for a loser, failures leave the token as it
was, an administrator's change lands before or after a redemption and never in its middle, and a
process that dies holding the lock leaves nothing behind.

The signer here is the real ``LocalCASigner``; where a test needs a fault or a pause, it replaces
the instance's ``sign`` with a function around the real one, so the signer still says
``in_process`` and the service still takes the lock path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable
from frontdoor_pki.signers.local import LocalCASigner
from frontdoor_pki.stores.base import LockTimeout
from frontdoor_pki.stores.sqlite import SQLiteStore
from frontdoor_pki.tokens import hash_secret
from support.crypto import make_csr, make_key
from support.helpers import csr, error_of, redeem_through_a_store_fault
from support.processes import TESTS_DIR, db_counts, finish, spawn, wait_for


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def service(state):
    service = build_service(load_config(state_dir=state, env={}, data={}))
    assert isinstance(service.signers["default"], LocalCASigner) and service.signers["default"].in_process
    yield service
    service.close()


def around_sign(service, before=None):
    """Replace the signer's ``sign`` by a counting wrapper (``before(number)`` runs first)."""
    signer = service.signers["default"]
    real = signer.sign
    calls = []
    lock = threading.Lock()

    def sign(request):
        with lock:
            calls.append(request.token_id)
            number = len(calls)
        if before is not None:
            before(number)
        return real(request)

    signer.sign = sign
    return calls


# ------------------------------------------------------------------ the store's lock
def test_exclusive_excludes_threads_and_other_stores_on_the_same_file(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    first, second = SQLiteStore(path, busy_timeout=0.3), SQLiteStore(path, busy_timeout=0.3)
    key, other_key = hash_secret("a"), hash_secret("b")
    outcome = {}
    with first.exclusive(key):

        def try_second():
            started = time.monotonic()
            try:
                with second.exclusive(key):
                    outcome["second"] = "taken"
            except LockTimeout:
                outcome["second"] = "timeout after %.2f s" % (time.monotonic() - started)

        thread = threading.Thread(target=try_second)
        thread.start()
        thread.join(5)
        assert outcome["second"].startswith("timeout"), outcome
        assert float(outcome["second"].split()[2]) >= 0.25  # it waited its bound first
    with second.exclusive(key):  # released on leaving the block
        pass
    first.close()
    second.close()
    assert other_key != key


def test_exclusive_is_released_when_an_exception_leaves_the_block(tmp_path):
    store = SQLiteStore(str(tmp_path / "frontdoor.db"), busy_timeout=0.2)
    key = hash_secret("x")
    with pytest.raises(RuntimeError):
        with store.exclusive(key):
            raise RuntimeError("boom")
    with store.exclusive(key):
        pass
    store.close()


HOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from frontdoor_pki.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[2])
with store.exclusive(sys.argv[3]):
    open(sys.argv[4], "w").write("held")
    time.sleep(120)
"""


def test_exclusive_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path, busy_timeout=0.3)
    key, other_key = hash_secret("held"), hash_secret("free")
    marker = str(tmp_path / "held")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, TESTS_DIR, path, key, marker], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(marker):
            assert child.poll() is None, child.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(LockTimeout):
            with store.exclusive(key):
                pass
        with store.exclusive(other_key):  # another key is not held
            pass
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        started = time.monotonic()
        with store.exclusive(key):  # the kernel dropped the dead process's lock
            assert time.monotonic() - started < 0.2
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stderr.close()
    store.close()


# ------------------------------------------------------------------ redemptions on the lock path
def test_a_locked_redemption_writes_no_claim(service):
    record, secret = service.create_token("default", name="one-write", common_name="one-write")
    store = service.store
    real_replace = store.replace_token
    replaced = []
    store.replace_token = lambda *a: replaced.append(a) or real_replace(*a)
    try:
        result = service.redeem("default", secret, csr())
    finally:
        store.replace_token = real_replace
    assert replaced == []
    stored = service.get_token("default", record.id)
    assert stored.status() == "redeemed" and stored.version == record.version + 1
    assert stored.certificate_id == result.certificate.id and stored.claim_id is None


@pytest.mark.parametrize(
    "exc_factory", [lambda: RuntimeError("boom"), lambda: SignerUnavailable("CA key unreadable")],
    ids=["runtime-error", "signer-unavailable"],
)
def test_signer_failing_under_the_lock_leaves_the_token_untouched(service, exc_factory):
    def fail_first(number):
        if number == 1:
            raise exc_factory()

    calls = around_sign(service, fail_first)
    record, secret = service.create_token("default", name="flaky", common_name="flaky")
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "signer_unavailable" and "Traceback" not in error.message
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.version == record.version and stored.claim_id is None
    assert service.list_certificates("default").total == 0
    assert service.redeem("default", secret, csr()).replayed is False  # at once: nothing held
    assert len(calls) == 2


@pytest.mark.parametrize("write_lands", [False, True], ids=["write-lost", "response-lost"])
def test_store_failing_while_recording_under_the_lock(service, write_lands):
    """As the contract test of the same name: a lost write leaves the token as it was (here: not
    even a released claim, its version unchanged); a lost answer is a success."""
    record, stored, _result = redeem_through_a_store_fault(service, write_lands)
    if stored is not None:
        assert stored.version == record.version


def test_threads_racing_wait_for_the_lock_and_never_sign_twice(state, service):
    """Racers of one token wait for the holder instead of being turned away: the same key gets
    the certificate again, another key token_already_used, and only one of them is signed."""
    services = [service] + [build_service(load_config(state_dir=state, env={}, data={})) for _ in range(3)]
    calls = []
    for each in services:
        calls.append(around_sign(each, lambda number: time.sleep(0.002)))
    tokens = [service.create_token("default", name="race-%d" % i, common_name="race-%d" % i) for i in range(6)]
    same_key = csr(0)
    outcomes = {i: [] for i in range(len(tokens))}
    barrier = threading.Barrier(8)

    def run(n):
        mine = services[n % len(services)]
        request = same_key if n % 2 == 0 else make_csr(make_key("p256"), cn="t%d" % n)
        barrier.wait()
        for i, (_, secret) in enumerate(tokens):
            try:
                result = mine.redeem("default", secret, request)
                outcomes[i].append(("ok", result.replayed, result.certificate.id, n % 2 == 0))
            except FrontdoorError as exc:
                outcomes[i].append(("error", exc.code, None, n % 2 == 0))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert sum(len(c) for c in calls) == len(tokens)  # no loser reached the signer
        for i, (record, _) in enumerate(tokens):
            fresh = [o for o in outcomes[i] if o[0] == "ok" and o[1] is False]
            assert len(fresh) == 1, outcomes[i]
            for outcome in outcomes[i]:
                if outcome[0] == "error":
                    assert outcome[1] == "token_already_used", outcomes[i]  # waited, then saw it used
                elif outcome[1] is True:
                    assert outcome[2] == fresh[0][2] and outcome[3] and fresh[0][3]  # replay: same key
            page = service.list_certificates("default", token_id=record.id)
            assert page.total == 1 and page.items[0].id == fresh[0][2]
    finally:
        for each in services[1:]:
            each.close()


def test_a_lock_held_past_the_bound_is_redemption_in_progress(service):
    record, secret = service.create_token("default", name="held", common_name="held")
    service.store.busy_timeout = 0.2
    held = threading.Event()
    release = threading.Event()

    def holder():
        with service.store.exclusive(hash_secret(secret)):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        error = error_of(service.redeem, "default", secret, csr())
        assert error.code == "redemption_in_progress" and error.retry_after == 1
        update = error_of(service.update_token, "default", record.id, {"name": "renamed"})
        assert update.code == "redemption_in_progress"
    finally:
        release.set()
        thread.join(10)
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.version == record.version
    assert service.redeem("default", secret, csr()).replayed is False


@pytest.mark.parametrize("change", ["refresh", "update", "delete"])
def test_an_administrator_change_waits_for_a_locked_redemption(state, service, change):
    """Started while the redemption is signing, the change lands after it: the redemption is
    whole (one certificate, recorded), and the change then sees a redeemed token (refresh and
    update refuse it; delete removes it). Nothing is signed twice or discarded."""
    admin = build_service(load_config(state_dir=state, env={}, data={}))
    record, secret = service.create_token("default", name="admin-race", common_name="admin-race")
    signing, result = threading.Event(), {}

    def slow(number):
        signing.set()
        time.sleep(0.3)

    calls = around_sign(service, slow)

    def administrator():
        signing.wait(10)
        try:
            if change == "refresh":
                result["admin"] = admin.refresh_token("default", record.id, ttl="1h")
            elif change == "update":
                result["admin"] = admin.update_token("default", record.id, {"name": "renamed"})
            else:
                result["admin"] = admin.delete_token("default", record.id)
        except FrontdoorError as exc:
            result["admin"] = exc
        result["admin_done"] = time.monotonic()

    thread = threading.Thread(target=administrator)
    thread.start()
    redeemed = service.redeem("default", secret, csr())
    redeemed_at = time.monotonic()
    thread.join(10)
    admin.close()
    assert redeemed.replayed is False and len(calls) == 1
    assert result["admin_done"] >= redeemed_at - 0.05  # it waited for the redemption
    if change == "delete":
        assert result["admin"].id == record.id
        assert service.store.get_token("default", record.id) is None
    else:
        assert isinstance(result["admin"], FrontdoorError) and result["admin"].code == "token_already_used"
        stored = service.get_token("default", record.id)
        assert stored.certificate_id == redeemed.certificate.id and stored.name == "admin-race"
    page = service.list_certificates("default")
    assert page.total == 1 and page.items[0].id == redeemed.certificate.id and page.items[0].revoked_at is None


def test_refresh_racing_a_locked_redemption_never_lets_the_old_secret_in(state, service):
    """The lock path's form of the contract test: the refresh starts right after the redemption
    looked the old secret up. It cannot land before the certificate is recorded, so the old
    secret either redeemed a token that was still valid, whole, or finds nothing."""
    admin = build_service(load_config(state_dir=state, env={}, data={}))
    record, old_secret = service.create_token("default", name="race", common_name="race")
    store = service.store
    real_find = store.find_token_by_hash
    fired, threads = [], []

    def find_then_refresh(secret_hash):
        found = real_find(secret_hash)
        if not fired:
            fired.append(True)

            def refresh():
                try:
                    fired.append(admin.refresh_token("default", record.id, ttl="1h"))
                except FrontdoorError as exc:
                    fired.append(exc)

            threads.append(threading.Thread(target=refresh))
            threads[0].start()
            time.sleep(0.2)  # the refresh has read the token and waits for the lock
            assert threads[0].is_alive()
        return found

    store.find_token_by_hash = find_then_refresh
    try:
        result = service.redeem("default", old_secret, csr())
    finally:
        store.find_token_by_hash = real_find
    threads[0].join(10)
    admin.close()
    assert result.replayed is False
    assert isinstance(fired[1], FrontdoorError) and fired[1].code == "token_already_used"
    stored = service.get_token("default", record.id)
    assert stored.secret_hash == hash_secret(old_secret) and stored.certificate_id == result.certificate.id
    assert service.list_certificates("default").total == 1


# ------------------------------------------------------------------ processes
def test_processes_racing_on_the_lock_path_sign_once_per_token(tmp_path, state, service):
    tokens = [service.create_token("default", name="proc-%d" % i, common_name="p%d" % i) for i in range(12)]
    children = [spawn(tmp_path, state, {}, "p%d" % n, [s for _, s in tokens], signer="in-process") for n in range(4)]
    processes = [process for process, _ in children]
    try:
        for _, ready in children:
            wait_for(ready, processes)
        (tmp_path / "go").write_text("go")
        reports = [finish(process, timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert sum(report["calls"] for report in reports) == len(tokens)  # one signature per token, in all
    for index, (record, _) in enumerate(tokens):
        outcomes = [report["results"][index] for report in reports]
        won = [o for o in outcomes if o["ok"]]
        assert len(won) == 1 and won[0]["replayed"] is False, outcomes
        assert {o["code"] for o in outcomes if not o["ok"]} <= {"token_already_used"}, outcomes
        page = service.list_certificates("default", token_id=record.id)
        assert page.total == 1 and page.items[0].id == won[0]["certificate"]
    assert db_counts(state) == {record.id: 1 for record, _ in tokens}


def test_a_process_killed_while_signing_under_the_lock_leaves_the_token_redeemable_at_once(tmp_path, state, service):
    record, secret = service.create_token("default", name="crash", common_name="crash")
    marker, release = str(tmp_path / "signing"), str(tmp_path / "never-created")
    process, ready = spawn(tmp_path, state, {}, "crash", [secret], signer="in-process",
                           block={"marker": marker, "release": release})
    try:
        wait_for(ready, [process])
        (tmp_path / "go").write_text("go")
        wait_for(marker, [process])  # the child holds the lock and sits in its signer
        service.store.busy_timeout = 0.3
        assert error_of(service.redeem, "default", secret, csr()).code == "redemption_in_progress"
        stored = service.get_token("default", record.id)
        assert stored.status() == "active" and stored.claim_id is None and stored.version == record.version
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    result = service.redeem("default", secret, csr())  # no lease to wait for: the lock died with it
    assert result.replayed is False
    assert db_counts(state) == {record.id: 1}
    assert not os.path.exists(release)


def test_a_lock_the_kernel_refuses_is_store_unavailable_and_burns_nothing(service, monkeypatch):
    """Out of record locks (ENOLCK) or any other failure to lock: a 503-class error, never a
    traceback, and the token is as it was."""
    import errno

    import frontdoor_pki.stores.sqlite as store_module

    record, secret = service.create_token("default", name="no-locks", common_name="no-locks")
    real_lockf = store_module.fcntl.lockf

    def refuse(fd, cmd, *args):
        if cmd & store_module.fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")
        return real_lockf(fd, cmd, *args)

    monkeypatch.setattr(store_module.fcntl, "lockf", refuse)
    error = error_of(service.redeem, "default", secret, csr())
    assert error.code == "store_unavailable" and "No locks available" in error.message
    monkeypatch.setattr(store_module.fcntl, "lockf", real_lockf)
    stored = service.get_token("default", record.id)
    assert stored.status() == "active" and stored.version == record.version
    assert service.redeem("default", secret, csr()).replayed is False


def test_without_a_lock_file_the_redemption_claims_instead(state, monkeypatch):
    """If ``<db>-keys.lock`` cannot be opened (here: refused), other processes could not be kept
    out by it, so the store offers no lock and the service writes a claim as for a remote CA."""
    import frontdoor_pki.stores.sqlite as store_module

    real_open = store_module.os.open

    def refuse_keys_lock(path, *args, **kwargs):
        if str(path).endswith("-keys.lock"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "open", refuse_keys_lock)
    service = build_service(load_config(state_dir=state, env={}, data={}))
    try:
        record, secret = service.create_token("default", name="no-lock-file", common_name="no-lock-file")
        assert service.store.exclusive(hash_secret(secret)) is None
        store = service.store
        real_replace = store.replace_token
        claims = []
        store.replace_token = lambda candidate, version: claims.append(candidate.claim_id) or real_replace(
            candidate, version)
        result = service.redeem("default", secret, csr())
        assert result.replayed is False and len(claims) == 1 and claims[0]  # the claim path
        assert service.get_token("default", record.id).version == record.version + 2  # claim, then record
    finally:
        service.close()
