"""The SQLite store remembers the last row version it read or wrote (to skip a SELECT and find the
row by rowid in a CAS). These tests hold it to the CAS contract when what it remembers is stale."""

from __future__ import annotations

import dataclasses
import sqlite3

from frontdoor_pki.model import CertificateRecord, utcnow
from frontdoor_pki.stores.sqlite import SQLiteStore
from frontdoor_pki.tokens import new_certificate_id
from test_sqlite_store import certificate, redeemed, token


def test_cas_when_the_remembered_rowid_names_another_row(tmp_path):
    """Rowids of a table without INTEGER PRIMARY KEY may change (VACUUM is allowed to renumber
    them); here they are swapped by hand so the remembered rowid names another token."""
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    second, third = token(name="b"), token(name="c")
    for record in (second, third):
        store.create_token(record)
    found = store.find_token_by_hash(third.secret_hash)  # remembers third's rowid
    other = sqlite3.connect(path, isolation_level=None)
    old = other.execute("SELECT rowid FROM tokens WHERE id=?", (third.id,)).fetchone()[0]
    other.execute("UPDATE tokens SET rowid=1000 WHERE id=?", (third.id,))
    other.execute("UPDATE tokens SET rowid=? WHERE id=?", (old, second.id))
    other.close()
    assert store.replace_token(dataclasses.replace(found, name="c2", version=2), 1)
    assert store.get_token("default", third.id).name == "c2"
    untouched = store.get_token("default", second.id)
    assert (untouched.name, untouched.version) == ("b", 1)
    store.close()


def test_cas_after_another_process_changed_the_row(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    mine, theirs = SQLiteStore(path), SQLiteStore(path)
    record = token()
    mine.create_token(record)
    seen = mine.find_token_by_hash(record.secret_hash)  # remembers version 1
    assert theirs.replace_token(dataclasses.replace(record, name="theirs", version=2), 1)
    # a CAS on the remembered version must fail, and a CAS on the real version must write every change
    assert not mine.replace_token(dataclasses.replace(seen, name="mine", version=2), 1)
    current = mine.get_token("default", record.id)
    assert current.version == 2 and current.name == "theirs"
    done = redeemed(current, certificate(current))
    assert mine.record_redemption(dataclasses.replace(done, version=3), 2, certificate(current))
    stored = theirs.get_token("default", record.id)
    assert (stored.name, stored.state, stored.version) == ("theirs", "redeemed", 3)
    mine.close()
    theirs.close()


def test_failed_record_leaves_the_row_and_the_next_cas_correct(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    record = token()
    store.create_token(record)
    claimed = dataclasses.replace(store.find_token_by_hash(record.secret_hash), claim_id="c", version=2)
    assert store.replace_token(claimed, 1)
    cert = certificate(claimed)
    assert store.record_redemption(dataclasses.replace(redeemed(claimed, cert), version=3), 2, cert)
    # the same certificate id again: the INSERT fails, the transaction rolls back, the token stays redeemed
    other = dataclasses.replace(claimed, claim_id=None, version=3)
    again = CertificateRecord(**{**cert.__dict__, "created_at": utcnow()})
    try:
        store.record_redemption(dataclasses.replace(redeemed(other, again), version=4), 3, again)
    except Exception:  # noqa: BLE001 - whatever the store raises, the row must be as before
        pass
    stored = store.get_token("default", record.id)
    assert stored.version == 3 and stored.certificate_id == cert.id
    assert store.get_certificate("default", cert.id) is not None
    assert new_certificate_id() != cert.id
    store.close()
