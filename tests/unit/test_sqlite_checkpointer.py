"""The SQLite store checkpoints its WAL from a background thread, not inside a writer's COMMIT."""

from __future__ import annotations

import os
import threading
import time

import frontdoor_pki.stores.sqlite as store_sqlite
from frontdoor_pki.stores.sqlite import SQLiteStore
from test_sqlite_store import token


def checkpointers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "frontdoor-sqlite-checkpoint")


def write_many(store: SQLiteStore, count: int) -> None:
    for i in range(count):
        store.create_token(token(name="t%d" % i))
        if i % 200 == 0:
            time.sleep(0.05)  # give the checkpointer its turns, as real traffic does


def test_wal_stays_bounded_by_the_background_checkpointer(tmp_path, monkeypatch):
    monkeypatch.setattr(store_sqlite, "CHECKPOINT_INTERVAL", 0.02)
    monkeypatch.setattr(store_sqlite, "_AUTOCHECKPOINT_PAGES", 0)  # no backstop: only the thread checkpoints
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    before = checkpointers()
    write_many(store, 3000)
    assert checkpointers() == before + 1  # one per process, however many writes
    wal = os.path.getsize(path + "-wal")
    store.close()
    assert wal < 8 * 1024 * 1024, wal


def test_without_the_thread_the_wal_would_grow(tmp_path, monkeypatch):
    """The control for the test above: same writes, checkpointer never runs, no backstop."""
    monkeypatch.setattr(store_sqlite, "CHECKPOINT_INTERVAL", 3600)
    monkeypatch.setattr(store_sqlite, "_AUTOCHECKPOINT_PAGES", 0)
    path = str(tmp_path / "frontdoor.db")
    store = SQLiteStore(path)
    write_many(store, 3000)
    wal = os.path.getsize(path + "-wal")
    store.close()
    assert wal > 8 * 1024 * 1024, wal


def test_the_checkpointer_stops_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr(store_sqlite, "CHECKPOINT_INTERVAL", 0.02)
    before = checkpointers()
    store = SQLiteStore(str(tmp_path / "frontdoor.db"))
    store.create_token(token())
    assert checkpointers() == before + 1
    store.close()
    deadline = time.monotonic() + 5
    while checkpointers() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checkpointers() == before
