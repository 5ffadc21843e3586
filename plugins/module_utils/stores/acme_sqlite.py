# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACME front's state in the SQLite store: one table of small JSON documents with a version.

A mixin of ``SQLiteStore`` (it uses the store's connection, write lock and error mapping), kept in its
own file so the token tables' code does not grow. Check-and-set is the same as for tokens: an UPDATE
judged by its rowcount, an INSERT judged by the primary key. The table is created on first use with
CREATE TABLE IF NOT EXISTS: old databases keep working and gain it when the ACME front first runs.

The server key (EAB HMAC keys and nonce MACs are derived from it) is a file next to the database,
``acme-server.key`` (0600), created once with an atomic link so that processes starting together
on a fresh state dir agree on one key: the same care as the local CA's key.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import sqlite3
from typing import List, Optional, Set, Tuple

_ACME_SCHEMA = """
CREATE TABLE IF NOT EXISTS acme_objects (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS acme_objects_expiry ON acme_objects (kind, expires_at);
"""
SERVER_KEY_FILE = "acme-server.key"
SERVER_KEY_BYTES = 32


class SQLiteAcmeState:
    """ACME documents for ``SQLiteStore`` (see stores/base.py for the contract)."""

    _acme_ready = False
    _acme_key: Optional[bytes] = None

    def _acme_schema(self) -> None:
        if not self._acme_ready:
            from .sqlite import _unavailable_on_error, _write_lock

            with _write_lock(self._real_path), _unavailable_on_error(self.path):
                self._conn().executescript(_ACME_SCHEMA)
            self._acme_ready = True

    def acme_get(self, kind: str, key: str) -> Optional[Tuple[dict, int]]:
        self._acme_schema()
        rows = self._rows("SELECT doc, version FROM acme_objects WHERE kind = ? AND key = ?", (kind, key))
        return (json.loads(rows[0][0]), int(rows[0][1])) if rows else None

    def acme_put(
        self, kind: str, key: str, doc: dict, expected_version: int, expires_at: Optional[_dt.datetime] = None
    ) -> bool:
        from .sqlite import _unavailable_on_error, _write_lock

        self._acme_schema()
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        expiry = None if expires_at is None else expires_at.timestamp()
        if expected_version == 0:
            with _unavailable_on_error(self.path):
                try:
                    with _write_lock(self._real_path):
                        self._conn().execute(
                            "INSERT INTO acme_objects (kind, key, doc, version, expires_at) VALUES (?, ?, ?, 1, ?)",
                            (kind, key, text, expiry),
                        )
                except sqlite3.IntegrityError:
                    return False
            return True
        return self._execute(
            "UPDATE acme_objects SET doc = ?, version = version + 1, expires_at = ? "
            "WHERE kind = ? AND key = ? AND version = ?",
            (text, expiry, kind, key, expected_version),
        ).rowcount == 1

    def acme_delete(self, kind: str, key: str) -> None:
        self._acme_schema()
        self._execute("DELETE FROM acme_objects WHERE kind = ? AND key = ?", (kind, key))

    def acme_purge(self, kind: str, before: _dt.datetime) -> int:
        self._acme_schema()
        return self._execute(
            "DELETE FROM acme_objects WHERE kind = ? AND expires_at IS NOT NULL AND expires_at < ?",
            (kind, before.timestamp()),
        ).rowcount

    def acme_list(self, kind: str, folder: str) -> List[str]:
        self._acme_schema()
        prefix = folder + "/"
        # a range on the primary key: "<folder>/" <= key < "<folder>0" ("0" follows "/")
        rows = self._rows(
            "SELECT key FROM acme_objects WHERE kind = ? AND key >= ? AND key < ?", (kind, prefix, folder + "0")
        )
        names = (row[0][len(prefix):] for row in rows)
        return sorted(name for name in names if name and "/" not in name)

    def acme_token_ids(self, frontdoor_id: str) -> Set[str]:
        return {row[0] for row in self._rows("SELECT id FROM tokens WHERE frontdoor_id = ?", (frontdoor_id,))}

    def acme_server_key(self) -> bytes:
        if self._acme_key is None:
            from ..errors import StoreUnavailable

            path = os.path.join(os.path.dirname(os.path.abspath(self.path)), SERVER_KEY_FILE)
            try:
                self._acme_key = _server_key_file(path)
            except OSError as exc:
                raise StoreUnavailable("The ACME server key %s cannot be read or made: %s" % (path, exc)) from None
        return self._acme_key


def _server_key_file(path: str) -> bytes:
    """The key in ``path``, made first if absent. Written to a private temporary file, then linked into place:
    a link fails if the name exists, so of two processes racing on a fresh state dir exactly one key wins and
    neither ever reads a half-written file."""
    for _attempt in range(3):
        try:
            with open(path, "rb") as handle:
                key = handle.read()
            if len(key) == SERVER_KEY_BYTES:
                return key
            raise OSError("%s holds %d bytes, not %d: remove it to make a new ACME server key "
                          "(EAB credentials given out so far stop working)" % (path, len(key), SERVER_KEY_BYTES))
        except FileNotFoundError:
            pass
        tmp = "%s.%s.tmp" % (path, secrets.token_hex(8))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(SERVER_KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    raise OSError("could not create the ACME server key %s" % path)
