"""Schema version 2 of the SQLite store: CA chains stored once, and no token index on state.

A database written by version 1 (chains inline in every certificate row, the old index) must
keep working when the new code opens it: old rows read as before, new rows use the chains table.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from frontdoor_pki.errors import StoreUnavailable
from frontdoor_pki.stores.sqlite import SQLiteStore
from test_sqlite_store import NOW, certificate, redeemed, token

CHAIN = ["-----BEGIN CERTIFICATE-----\nintermediate\n", "-----BEGIN CERTIFICATE-----\nroot\n"]


def redeem(store, name, chain=CHAIN):
    record = token(name=name)
    store.create_token(record)
    cert = dataclasses.replace(certificate(record), ca_chain=list(chain))
    assert store.record_redemption(redeemed(record, cert), 1, cert)
    return cert


def indexes(path) -> set:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_chain_is_stored_once_and_read_back_whole(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    certs = [redeem(store, "t%d" % n) for n in range(3)]
    other = redeem(store, "other", chain=["-----BEGIN CERTIFICATE-----\nanother CA\n"])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chains").fetchone()[0] == 2
        stored = {r[0] for r in conn.execute("SELECT ca_chain FROM certificates")}
        assert len(stored) == 2 and all(s.startswith("sha256:") for s in stored)
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2  # later versions add columns
    fresh = SQLiteStore(path)  # another store: reads the chains table (chains are cached by content id)
    for cert in certs:
        assert fresh.get_certificate("default", cert.id).ca_chain == CHAIN
    assert fresh.get_certificate("default", other.id).ca_chain == other.ca_chain
    listed = fresh.list_certificates("default", size=10)
    assert sorted(tuple(c.ca_chain) for c in listed.items) == sorted([tuple(CHAIN)] * 3 + [tuple(other.ca_chain)])
    got = fresh.get_certificate("default", certs[0].id)
    got.ca_chain.append("changed by the caller")  # a copy, not the cached chain
    assert fresh.get_certificate("default", certs[0].id).ca_chain == CHAIN
    assert "tokens_fd_expiry" in indexes(path) and "tokens_fd_expires" not in indexes(path)
    store.close()
    fresh.close()


def test_a_version_1_database_keeps_working(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    old = redeem(store, "written-by-v1")
    store.close()
    # make it what version 1 wrote: the chain inline, the old index, no chains table
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE certificates SET ca_chain = ?", (json.dumps(CHAIN),))
        conn.execute("DROP TABLE chains")
        conn.execute("DROP INDEX tokens_fd_expiry")
        conn.execute("CREATE INDEX tokens_fd_expires ON tokens (frontdoor_id, state, expires_at)")
        conn.execute("PRAGMA user_version = 1")
    store = SQLiteStore(path)
    assert store.get_certificate("default", old.id).ca_chain == CHAIN
    new = redeem(store, "written-by-v2")
    assert store.get_certificate("default", new.id).ca_chain == CHAIN
    assert [c.ca_chain for c in store.list_certificates("default").items] == [CHAIN, CHAIN]
    assert "tokens_fd_expiry" in indexes(path) and "tokens_fd_expires" not in indexes(path)
    page = store.list_tokens("default", now=NOW, statuses=["redeemed"])
    assert page.total == 2
    store.close()


def test_a_missing_chain_row_is_a_store_error_not_a_wrong_answer(tmp_path):
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    cert = redeem(store, "t", chain=["-----BEGIN CERTIFICATE-----\nonly here\n"])
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM chains")
    fresh = SQLiteStore(path)
    with pytest.raises(StoreUnavailable):
        fresh.get_certificate("default", cert.id)
    store.close()
    fresh.close()
