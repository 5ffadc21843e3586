"""Unit tests of the SQLite store: check-and-set, atomic recording, listing, purging, persistence."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest
from frontdoor_pki.errors import FrontdoorError, StoreUnavailable
from frontdoor_pki.model import STATE_REDEEMED, CertificateRecord, Subject, TokenRecord, utcnow
from frontdoor_pki.stores.sqlite import WAL_AUTOCHECKPOINT_PAGES, SQLiteStore
from frontdoor_pki.tokens import hash_secret, new_certificate_id, new_secret, new_token_id

NOW = utcnow().replace(microsecond=0)


def token(frontdoor="default", name="t", created=0, expires=3600, **changes) -> TokenRecord:
    record = TokenRecord(
        id=new_token_id(), frontdoor_id=frontdoor, name=name, secret_hash=hash_secret(new_secret()),
        subject=Subject("cn", None, "ou"), created_at=NOW + _dt.timedelta(seconds=created), created_by="tester",
        expires_at=NOW + _dt.timedelta(seconds=expires), updated_at=NOW, certificate_ttl=86400,
    )
    return dataclasses.replace(record, **changes)


def certificate(record: TokenRecord, serial="0abc") -> CertificateRecord:
    return CertificateRecord(
        id=new_certificate_id(), frontdoor_id=record.frontdoor_id, token_id=record.id, name=record.name,
        serial_number=serial, certificate_pem="PEM", ca_chain=["A", "B"], subject=Subject("cn", "o", None),
        not_before=NOW, not_after=NOW + _dt.timedelta(days=365), created_at=NOW, public_key_sha256="ff" * 32,
    )


def redeemed(record: TokenRecord, cert: CertificateRecord, at=NOW) -> TokenRecord:
    return dataclasses.replace(record, state=STATE_REDEEMED, redeemed_at=at, certificate_id=cert.id,
                               public_key_sha256=cert.public_key_sha256, version=record.version + 1)


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "db" / "frontdoor.db"))
    yield store
    store.close()


def test_round_trip(store):
    record = token(claim_id="c1", claim_until=NOW + _dt.timedelta(seconds=5))
    store.create_token(record)
    assert store.get_token("default", record.id) == record
    assert store.find_token_by_hash(record.secret_hash) == record
    assert store.get_token("other", record.id) is None  # frontdoors are separate
    assert store.find_token_by_hash(hash_secret(new_secret())) is None
    assert store.get_token("default", new_token_id()) is None


def test_duplicates_are_conflicts(store):
    record = token()
    store.create_token(record)
    for duplicate in (dataclasses.replace(record, secret_hash="x" * 64), dataclasses.replace(record, id=new_token_id())):
        with pytest.raises(FrontdoorError) as info:
            store.create_token(duplicate)
        assert info.value.code == "conflict"


def test_check_and_set(store):
    record = token()
    store.create_token(record)
    changed = dataclasses.replace(record, name="renamed", version=2)
    assert store.replace_token(changed, expected_version=1) is True
    stale = dataclasses.replace(record, name="stale", version=2)
    assert store.replace_token(stale, expected_version=1) is False
    assert store.get_token("default", record.id).name == "renamed"
    assert store.delete_token("default", record.id) is True
    assert store.replace_token(dataclasses.replace(changed, version=3), expected_version=2) is False
    assert store.delete_token("default", record.id) is False


def test_record_redemption_is_atomic(store):
    record = token()
    store.create_token(record)
    cert = certificate(record)
    # the CAS fails (someone else changed the token): no certificate may be kept
    assert store.record_redemption(redeemed(record, cert), expected_version=7, certificate=cert) is False
    assert store.get_certificate("default", cert.id) is None
    assert store.list_certificates("default").total == 0
    assert store.record_redemption(redeemed(record, cert), expected_version=1, certificate=cert) is True
    assert store.get_certificate("default", cert.id) == cert
    assert store.get_token("default", record.id).certificate_id == cert.id


def test_threads_racing_one_cas_have_one_winner(store):
    record = token()
    store.create_token(record)
    barrier = threading.Barrier(16)
    wins, errors = [], []

    def race(n):
        try:
            barrier.wait(timeout=10)
            if store.replace_token(dataclasses.replace(record, claim_id="c%d" % n, version=2), 1):
                wins.append(n)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(wins) == 1
    assert store.get_token("default", record.id).claim_id == "c%d" % wins[0]


def test_listing(store):
    active = [token(name=n, created=i) for i, n in enumerate(["b", "a", "c"])]
    expired = token(name="e", created=10, expires=-1)
    used = token(name="r", created=11)
    elsewhere = token(frontdoor="other", name="a")
    for record in active + [expired, used, elsewhere]:
        store.create_token(record)
    cert = certificate(used)
    assert store.record_redemption(redeemed(used, cert), 1, cert)

    def names(**kwargs):
        kwargs.setdefault("now", NOW)
        page = store.list_tokens("default", **kwargs)
        return [r.name for r in page.items], page.total

    assert names() == (["b", "a", "c", "e", "r"], 5)
    assert names(sort=("name", "asc")) == (["a", "b", "c", "e", "r"], 5)
    assert names(sort=("name", "desc"), size=2, page=1) == (["c", "b"], 5)
    assert names(statuses=["active"]) == (["b", "a", "c"], 3)
    assert names(statuses=["expired"]) == (["e"], 1)
    assert names(statuses=["redeemed"]) == (["r"], 1)
    assert names(statuses=["expired", "redeemed"]) == (["e", "r"], 2)
    assert names(name="a") == (["a"], 1)
    assert names(page=9) == ([], 5)
    # status is derived from the time asked about, not stored
    assert names(statuses=["expired"], now=NOW + _dt.timedelta(hours=2)) == (["b", "a", "c", "e"], 4)


def test_purge(store):
    old_expired = token(name="old", expires=-7200)
    new_expired = token(name="new", expires=-10)
    active = token(name="active")
    used = token(name="used")
    elsewhere = token(frontdoor="other", expires=-7200)
    for record in (old_expired, new_expired, active, used, elsewhere):
        store.create_token(record)
    cert = certificate(used)
    store.record_redemption(redeemed(used, cert, at=NOW - _dt.timedelta(hours=3)), 1, cert)
    hour_ago = NOW - _dt.timedelta(hours=1)

    assert store.purge_tokens("default", now=NOW, expired_before=hour_ago, redeemed_before=None,
                              dry_run=True) == [old_expired.id]
    assert store.get_token("default", old_expired.id) is not None
    assert store.purge_tokens("default", now=NOW, expired_before=hour_ago, redeemed_before=None) == [old_expired.id]
    assert store.get_token("default", old_expired.id) is None
    assert store.purge_tokens("default", now=NOW, expired_before=None, redeemed_before=None) == []
    # a bound in the future never removes an active token
    removed = store.purge_tokens("default", now=NOW, expired_before=NOW + _dt.timedelta(days=9),
                                 redeemed_before=hour_ago)
    assert sorted(removed) == sorted([new_expired.id, used.id])
    assert store.get_token("default", active.id) is not None
    assert store.get_certificate("default", cert.id) is not None  # certificates stay on record
    assert store.purge_tokens(None, now=NOW, expired_before=NOW, redeemed_before=None) == [elsewhere.id]


def test_certificates_listing_and_revocation(store):
    certs = []
    for i in range(3):
        record = token(name="t%d" % i)
        store.create_token(record)
        cert = dataclasses.replace(certificate(record, serial="%x" % (1000 + i)),
                                   created_at=NOW + _dt.timedelta(seconds=i))
        store.record_redemption(redeemed(record, cert), 1, cert)
        certs.append(cert)
    page = store.list_certificates("default", size=2, sort=("created_at", "desc"))
    assert [c.id for c in page.items] == [certs[2].id, certs[1].id] and page.total == 3
    assert [c.id for c in store.list_certificates("default", token_id=certs[0].token_id).items] == [certs[0].id]
    assert store.mark_revoked("default", certs[1].id, NOW) is True
    assert store.mark_revoked("default", certs[1].id, NOW) is False  # already revoked
    assert store.mark_revoked("default", "cert-unknown", NOW) is False
    assert store.get_certificate("default", certs[1].id).revoked_at == NOW
    assert [c.id for c in store.list_certificates("default", revoked=True).items] == [certs[1].id]
    assert store.list_certificates("default", revoked=False).total == 2
    assert list(store.revoked_serials("default")) == [(certs[1].serial_number, NOW)]
    assert list(store.revoked_serials("other")) == []


def test_persistence_file_mode_and_wal(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    first = SQLiteStore(path)
    record = token()
    first.create_token(record)
    first.close()
    second = SQLiteStore(path)
    assert second.get_token("default", record.id) == record
    second.ping()
    second.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # only the hash is stored
        assert conn.execute("SELECT secret_hash FROM tokens").fetchone()[0] == record.secret_hash


def test_waits_for_another_writer(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    record = token()
    store.create_token(record)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.3, blocker.execute, args=("COMMIT",))
    released.start()
    started = time.monotonic()
    try:
        assert store.replace_token(dataclasses.replace(record, name="after-wait", version=2), 1) is True
    finally:
        released.join()
        blocker.close()
    assert time.monotonic() - started >= 0.25
    assert store.get_token("default", record.id).name == "after-wait"
    store.close()


def test_a_writer_that_never_lets_go_gives_store_unavailable_in_bounded_time(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path, busy_timeout=0.5)
    record = token()
    store.create_token(record)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as info:
            store.replace_token(dataclasses.replace(record, name="never", version=2), 1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert time.monotonic() - started < 3  # about busy_timeout, not attempts x busy_timeout
    assert info.value.retry_after == 1
    assert store.get_token("default", record.id).name == "t"  # readers are not blocked by a writer
    store.close()


def test_unusable_path_is_store_unavailable(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable) as info:
        SQLiteStore(str(tmp_path / "dir.db"))
    assert info.value.code == "store_unavailable"


def test_cas_after_another_store_changed_the_row(tmp_path):
    """Two stores on one file (two gateways): a CAS on a version the other already replaced fails,
    and one on the real version writes every field."""
    path = str(tmp_path / "frontdoor.db")
    mine, theirs = SQLiteStore(path), SQLiteStore(path)
    record = token()
    mine.create_token(record)
    seen = mine.find_token_by_hash(record.secret_hash)
    assert theirs.replace_token(dataclasses.replace(record, name="theirs", version=2), 1)
    assert not mine.replace_token(dataclasses.replace(seen, name="mine", version=2), 1)
    current = mine.get_token("default", record.id)
    assert current.version == 2 and current.name == "theirs"
    cert = certificate(current)
    assert mine.record_redemption(dataclasses.replace(redeemed(current, cert), version=3), 2, cert)
    stored = theirs.get_token("default", record.id)
    assert (stored.name, stored.state, stored.version, stored.certificate_id) == ("theirs", "redeemed", 3, cert.id)
    mine.close()
    theirs.close()


def test_a_failed_record_rolls_back_the_token_too(store):
    """The token CAS and the certificate insert are one transaction: when the insert fails (here a
    duplicate certificate id) the token is as it was, and the store error is store_unavailable."""
    first, second = token(name="a"), token(name="b")
    store.create_token(first)
    store.create_token(second)
    cert = certificate(first)
    assert store.record_redemption(redeemed(first, cert), 1, cert)
    clash = dataclasses.replace(certificate(second), id=cert.id)
    with pytest.raises(StoreUnavailable):
        store.record_redemption(redeemed(second, clash), 1, clash)
    stored = store.get_token("default", second.id)
    assert stored.version == 1 and stored.state == "active" and stored.certificate_id is None
    assert store.replace_token(dataclasses.replace(stored, name="b2", version=2), 1)  # the connection is usable


def test_wal_is_checkpointed_by_sqlite_itself(tmp_path):
    """No checkpoint thread: SQLite's automatic checkpoint (wal_autocheckpoint, WAL_AUTOCHECKPOINT_PAGES)
    keeps the WAL bounded however many commits there are: past one checkpoint interval it stops growing."""
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    conn = store._conn()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT_PAGES
    # one interval of frames, plus slack for the commit that crosses it: without checkpoints 9000 tokens
    # would need about three intervals
    bound = int(WAL_AUTOCHECKPOINT_PAGES * 1.5) * conn.execute("PRAGMA page_size").fetchone()[0]
    sizes = []
    for batch in range(3):
        for n in range(3000):
            store.create_token(token(name="t%d-%d" % (batch, n)))
        sizes.append(os.path.getsize(path + "-wal"))
    assert max(sizes) < bound, sizes
    assert store.list_tokens("default", now=NOW).total == 9000
    store.close()


def test_a_forked_child_opens_its_own_connection(store):
    record = token()
    store.create_token(record)
    parent_conn = store._conn()
    pid = os.fork()
    if pid == 0:  # the child: exit status says whether it wrote through a connection of its own
        try:
            ok = store._conn() is not parent_conn and store.replace_token(
                dataclasses.replace(record, name="from-child", version=2), 1)
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get_token("default", record.id).name == "from-child"
    assert store._conn() is parent_conn


def test_processes_opening_a_fresh_database_together_all_get_wal(tmp_path):
    path = str(tmp_path / "fresh.db")
    go = str(tmp_path / "go")
    child = (
        "import os, sys, time\n"
        "from frontdoor_pki.stores.sqlite import SQLiteStore\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "SQLiteStore(sys.argv[1]).ping()\n"
    )
    children = [subprocess.Popen([sys.executable, "-c", child, path, go], stderr=subprocess.PIPE) for _ in range(8)]
    time.sleep(0.3)
    open(go, "w").close()
    for process in children:
        assert process.wait(60) == 0, process.stderr.read()
        process.stderr.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert [r[1] for r in conn.execute("PRAGMA table_info(tokens)")].count("subject_alt_names") == 1


def test_threads_of_one_process_queue_for_writes_instead_of_sleeping_in_sqlite(tmp_path):
    """16 threads, each writing as fast as it can with a 30 ms busy timeout. Queued on the store's write lock, each
    waits only for the writes ahead of it; meeting in SQLite's busy handler instead (sleeps of 1, 2, 5, 10, 15 ms,
    no fairness) some would give up with 'database is locked' (store_unavailable) long before 30 ms of real work."""
    path = str(tmp_path / "frontdoor.db")
    stores = [SQLiteStore(path, busy_timeout=0.03) for _ in range(2)]  # two stores on one file share the queue
    records = [token(name="w%d" % n) for n in range(16)]
    for record in records:
        stores[0].create_token(record)
    barrier = threading.Barrier(16)
    errors, writes = [], []

    def writer(n):
        store, record = stores[n % 2], records[n]
        try:
            barrier.wait(timeout=10)
            for version in range(1, 61):
                assert store.replace_token(dataclasses.replace(record, claim_id="c%d" % version,
                                                               version=version + 1), version)
                writes.append(n)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert errors == [] and len(writes) == 16 * 60


def test_record_redemption_writes_the_redemption_fields_and_leaves_the_rest_as_stored(store):
    """A redemption changes only REDEMPTION_FIELDS (stores/base.py), so the store writes only those: the row's
    name, secret hash and expiry (and their indexes) stay as stored, whatever else the record carries."""
    from frontdoor_pki.stores.base import REDEMPTION_FIELDS

    record = token(claim_id="c1", claim_until=NOW + _dt.timedelta(seconds=30))
    store.create_token(record)
    cert = certificate(record)
    done = dataclasses.replace(
        redeemed(record, cert), claim_id=None, claim_until=None, updated_at=NOW + _dt.timedelta(seconds=1),
    )
    changed = {f.name for f in dataclasses.fields(TokenRecord)
               if getattr(done, f.name) != getattr(record, f.name)}
    assert changed <= set(REDEMPTION_FIELDS) and {"state", "certificate_id", "version", "claim_id"} <= changed
    outside = dataclasses.replace(done, name="renamed", expires_at=NOW + _dt.timedelta(days=9))
    assert store.record_redemption(outside, record.version, cert)
    assert store.get_token("default", record.id) == done
    assert store.find_token_by_hash(record.secret_hash) == done
