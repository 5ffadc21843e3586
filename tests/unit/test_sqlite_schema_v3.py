"""Schema version 3 of the SQLite store: subject_alt_names columns added by _add_column_if_missing.

A database written by version 2 (no such columns) must keep working when the new code opens it, the
columns are added once however many processes open it at the same time, and SANs round-trip.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import time

from frontdoor_pki.model import NO_SANS, SubjectAltNames
from frontdoor_pki.stores.sqlite import SQLiteStore, _add_column_if_missing
from test_sqlite_store import certificate, redeemed, token

SANS = SubjectAltNames(
    dns=("api.example.com",), ip=("10.0.0.1", "2001:db8::1"), uri=("spiffe://example.org/ns/prod/sa/api",),
    email=("ops@example.com",),
)


def columns(path, table) -> list:
    with sqlite3.connect(path) as conn:
        return [r[1] for r in conn.execute("PRAGMA table_info(%s)" % table)]


def test_sans_round_trip_on_tokens_and_certificates(tmp_path):
    store = SQLiteStore(str(tmp_path / "frontdoor.db"))
    record = token(subject_alt_names=SANS)
    plain = token(name="plain")
    store.create_token(record)
    store.create_token(plain)
    assert store.get_token("default", record.id).subject_alt_names == SANS
    assert store.find_token_by_hash(plain.secret_hash).subject_alt_names == NO_SANS
    cert = dataclasses.replace(certificate(record), subject_alt_names=SANS)
    assert store.record_redemption(redeemed(record, cert), 1, cert)
    assert store.get_certificate("default", cert.id).subject_alt_names == SANS
    assert store.list_certificates("default").items[0].subject_alt_names == SANS
    assert store.list_tokens("default", now=record.created_at, name="t").items[0].subject_alt_names == SANS
    store.close()


def test_a_version_2_database_keeps_working(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    old = token(name="written-by-v2")
    store.create_token(old)
    store.close()
    with sqlite3.connect(path) as conn:  # make it what version 2 wrote: no SAN columns
        conn.execute("ALTER TABLE tokens DROP COLUMN subject_alt_names")
        conn.execute("ALTER TABLE certificates DROP COLUMN subject_alt_names")
        conn.execute("PRAGMA user_version = 2")
    assert "subject_alt_names" not in columns(path, "tokens")
    store = SQLiteStore(path)
    assert "subject_alt_names" in columns(path, "tokens") and "subject_alt_names" in columns(path, "certificates")
    assert store.get_token("default", old.id).subject_alt_names == NO_SANS
    new = token(name="written-by-v3", subject_alt_names=SANS)
    store.create_token(new)
    assert store.get_token("default", new.id).subject_alt_names == SANS
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    store.close()


def test_add_column_if_missing_is_idempotent(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "x.db"))
    conn.execute("CREATE TABLE t (id TEXT)")
    assert _add_column_if_missing(conn, "t", "extra", "TEXT") is True
    assert _add_column_if_missing(conn, "t", "extra", "TEXT") is False
    assert [r[1] for r in conn.execute("PRAGMA table_info(t)")] == ["id", "extra"]
    conn.close()


def test_a_version_2_database_opened_by_processes_at_once_gets_each_column_once(tmp_path):
    """Six processes open one version-2 file together (the fresh-file race is in test_sqlite_store): each ends
    with a working store, and each column is added once."""
    path = str(tmp_path / "v2.db")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE tokens DROP COLUMN subject_alt_names")
        conn.execute("ALTER TABLE certificates DROP COLUMN subject_alt_names")
        conn.execute("PRAGMA user_version = 2")
    go = str(tmp_path / "go")
    code = (
        "import os, sys, time\n"
        "from frontdoor_pki.stores.sqlite import SQLiteStore\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "s = SQLiteStore(sys.argv[1]); s.ping(); s.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, path, go], stderr=subprocess.PIPE) for _ in range(6)]
    time.sleep(0.3)
    open(go, "w").close()
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert columns(path, "tokens").count("subject_alt_names") == 1
    assert columns(path, "certificates").count("subject_alt_names") == 1
