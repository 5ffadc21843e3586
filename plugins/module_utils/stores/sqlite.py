# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite token store (stdlib sqlite3, WAL).

Check-and-set is ``UPDATE ... WHERE id = ? AND version = ?`` judged by its rowcount, and every
read-modify-write is one ``BEGIN IMMEDIATE`` transaction. SQLite's own locking serialises those
across threads and processes (a writer that finds the database locked waits in SQLite's busy
handler for up to ``busy_timeout``): that is what makes single use hold for two gateways sharing
one state directory. A database still locked after that is StoreUnavailable (503), and so is any
other SQLite error: the caller gets a code and a message, never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import FrontdoorError, StoreUnavailable
from ..model import NO_SANS, UTC, CertificateRecord, Page, Subject, SubjectAltNames, TokenRecord
from .acme_sqlite import SQLiteAcmeState
from .base import REDEMPTION_FIELDS, TokenStore

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    frontdoor_id TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    common_name TEXT,
    organization TEXT,
    organizational_unit TEXT,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL,
    certificate_ttl INTEGER,
    redeemed_at REAL,
    certificate_id TEXT,
    public_key_sha256 TEXT,
    claim_id TEXT,
    claim_until REAL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_fd_created ON tokens (frontdoor_id, created_at);
CREATE INDEX IF NOT EXISTS tokens_fd_name ON tokens (frontdoor_id, name);
-- Not on state: a redemption changes the state, and an index holding it cost two more page
-- writes per redemption (the entry moved between the 'active' and 'redeemed' ranges).
CREATE INDEX IF NOT EXISTS tokens_fd_expiry ON tokens (frontdoor_id, expires_at);
DROP INDEX IF EXISTS tokens_fd_expires;
CREATE TABLE IF NOT EXISTS certificates (
    id TEXT PRIMARY KEY,
    frontdoor_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    name TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    ca_chain TEXT NOT NULL,
    common_name TEXT,
    organization TEXT,
    organizational_unit TEXT,
    not_before REAL NOT NULL,
    not_after REAL NOT NULL,
    created_at REAL NOT NULL,
    public_key_sha256 TEXT NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS certificates_fd_created ON certificates (frontdoor_id, created_at);
CREATE INDEX IF NOT EXISTS certificates_token ON certificates (token_id);
-- CA chains, stored once: certificates.ca_chain holds either the chain as a JSON array (rows
-- written before version 2) or 'sha256:<hex of that JSON>', the id of a row here.
CREATE TABLE IF NOT EXISTS chains (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL
);
-- Renewal (renewal.py): renewal JWT ids already used (hashed and scoped by the caller), kept until their
-- JWT has expired, and the certificate lookup a renewal starts from (the serial in the JWT's x5c).
CREATE TABLE IF NOT EXISTS renewal_jtis (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS renewal_jtis_expiry ON renewal_jtis (expires_at);
CREATE INDEX IF NOT EXISTS certificates_fd_serial ON certificates (frontdoor_id, serial_number);
COMMIT;
"""

# Columns added to existing tables after version 2, each added once by ``_add_column_if_missing``
# (old databases keep working: a missing column reads as NULL in every old row). Append, never edit.
_ADDED_COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    # version 3: pre-approved Subject Alternative Names, SubjectAltNames.to_dict() as JSON; NULL: none
    ("tokens", "subject_alt_names", "TEXT"),
    ("certificates", "subject_alt_names", "TEXT"),
    # renewal with the current certificate: the link between a certificate and its renewal (both ways), and
    # the renewal's claim (check-and-set with a lease, like a token's: one renewal per certificate)
    ("certificates", "previous_certificate_id", "TEXT"),
    ("certificates", "renewed_by", "TEXT"),
    ("certificates", "renewal_claim", "TEXT"),
    ("certificates", "renewal_claim_until", "REAL"),
)
_USER_VERSION = 3


def _add_column_if_missing(conn: sqlite3.Connection, table: str, column: str, decl: str) -> bool:
    """``ALTER TABLE table ADD COLUMN column decl`` unless the table has it; True if it was added.

    Idempotent and safe when several processes open a fresh database at once: call it inside a
    ``BEGIN IMMEDIATE`` transaction (``_migrate`` does), so the look at PRAGMA table_info and the
    ALTER happen under SQLite's write lock; a "duplicate column" from a caller outside one still
    counts as present. ``table``, ``column`` and ``decl`` come from this module, never from input.
    """
    if any(row[1] == column for row in conn.execute("PRAGMA table_info(%s)" % table)):
        return False
    try:
        conn.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise
        return False
    return True


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the tables _SCHEMA created (or found) to the current version, in one write transaction."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= _USER_VERSION and all(
        any(row[1] == column for row in conn.execute("PRAGMA table_info(%s)" % table))
        for table, column, _decl in _ADDED_COLUMNS
    ):
        return  # the common case, a database already migrated: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, decl in _ADDED_COLUMNS:
            _add_column_if_missing(conn, table, column, decl)
        if conn.execute("PRAGMA user_version").fetchone()[0] < _USER_VERSION:
            conn.execute("PRAGMA user_version = %d" % _USER_VERSION)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _sans_json(sans: SubjectAltNames) -> Optional[str]:
    return json.dumps(sans.to_dict(), separators=(",", ":")) if sans else None


def _sans_from(text: Optional[str]) -> SubjectAltNames:
    return SubjectAltNames.from_dict(json.loads(text)) if text else NO_SANS


_TOKEN_FIELDS = (
    "id", "frontdoor_id", "name", "secret_hash", "common_name", "organization", "organizational_unit", "created_at",
    "created_by", "expires_at", "updated_at", "state", "certificate_ttl", "redeemed_at", "certificate_id",
    "public_key_sha256", "claim_id", "claim_until", "version", "subject_alt_names",
)
_TOKEN_COLUMNS = ", ".join(_TOKEN_FIELDS)
_TOKEN_INSERT = "INSERT INTO tokens (%s) VALUES (%s)" % (_TOKEN_COLUMNS, ", ".join(":" + f for f in _TOKEN_FIELDS))
# A check-and-set writes every field but the token's identity and creation facts.
_TOKEN_CAS = "UPDATE tokens SET %s WHERE id = :id AND frontdoor_id = :frontdoor_id AND version = :expected_version" % (
    ", ".join("%s = :%s" % (f, f) for f in _TOKEN_FIELDS if f not in ("id", "frontdoor_id", "created_at", "created_by"))
)
# What a redemption changes (REDEMPTION_FIELDS): the rest of the row is what the engine read at the expected
# version, so it is not written again, which also leaves the indexes on name, secret hash and expiry untouched.
_TOKEN_REDEEM_CAS = "UPDATE tokens SET %s WHERE id = :id AND frontdoor_id = :frontdoor_id AND version = :expected_version" % (
    ", ".join("%s = :%s" % (f, f) for f in REDEMPTION_FIELDS)
)
_CERT_FIELDS = (
    "id", "frontdoor_id", "token_id", "name", "serial_number", "certificate_pem", "ca_chain", "common_name",
    "organization", "organizational_unit", "not_before", "not_after", "created_at", "public_key_sha256", "revoked_at",
    "subject_alt_names", "previous_certificate_id", "renewed_by",
)
_CERT_INSERT = "INSERT INTO certificates (%s) VALUES (%s)" % (", ".join(_CERT_FIELDS), ", ".join("?" * len(_CERT_FIELDS)))
# The chain a certificate names comes with it: inline JSON in rows before version 2, else the chains row.
_CERT_SELECT = "SELECT %s, ch.chain FROM certificates c LEFT JOIN chains ch ON ch.id = c.ca_chain" % ", ".join(
    "c." + f for f in _CERT_FIELDS
)


def _ts(value: Optional[_dt.datetime]) -> Optional[float]:
    return None if value is None else value.timestamp()


def _dt_from(value: Optional[float]) -> Optional[_dt.datetime]:
    return None if value is None else _dt.datetime.fromtimestamp(value, UTC)


def _token_params(r: TokenRecord) -> dict:
    return {
        "id": r.id, "frontdoor_id": r.frontdoor_id, "name": r.name, "secret_hash": r.secret_hash,
        "common_name": r.subject.common_name, "organization": r.subject.organization,
        "organizational_unit": r.subject.organizational_unit, "created_at": _ts(r.created_at),
        "created_by": r.created_by, "expires_at": _ts(r.expires_at), "updated_at": _ts(r.updated_at), "state": r.state,
        "certificate_ttl": r.certificate_ttl, "redeemed_at": _ts(r.redeemed_at), "certificate_id": r.certificate_id,
        "public_key_sha256": r.public_key_sha256, "claim_id": r.claim_id, "claim_until": _ts(r.claim_until),
        "version": r.version, "subject_alt_names": _sans_json(r.subject_alt_names),
    }


def _token_from(row) -> TokenRecord:
    return TokenRecord(
        id=row[0], frontdoor_id=row[1], name=row[2], secret_hash=row[3], subject=Subject(row[4], row[5], row[6]),
        created_at=_dt_from(row[7]), created_by=row[8], expires_at=_dt_from(row[9]), updated_at=_dt_from(row[10]),
        state=row[11], certificate_ttl=row[12], redeemed_at=_dt_from(row[13]), certificate_id=row[14],
        public_key_sha256=row[15], claim_id=row[16], claim_until=_dt_from(row[17]), version=row[18],
        subject_alt_names=_sans_from(row[19]),
    )


def _chain_ref(chain: List[str]) -> Tuple[str, str]:
    """(JSON, id) of a CA chain. Why by reference: every certificate of a frontdoor has the same
    ~1.5 KB chain, and inline it made each certificate row too big to share a 4 KB page with
    another one (a new page per redemption, and more to write to the WAL and checkpoint)."""
    text = json.dumps(list(chain))
    return text, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cert_row(c: CertificateRecord, chain_ref: str) -> tuple:
    return (
        c.id, c.frontdoor_id, c.token_id, c.name, c.serial_number, c.certificate_pem, chain_ref,
        c.subject.common_name, c.subject.organization, c.subject.organizational_unit, _ts(c.not_before),
        _ts(c.not_after), _ts(c.created_at), c.public_key_sha256, _ts(c.revoked_at), _sans_json(c.subject_alt_names),
        c.previous_certificate_id, c.renewed_by,
    )


def _cert_from(row) -> CertificateRecord:
    stored, chain = row[6], row[len(_CERT_FIELDS)]
    if chain is None:
        if not stored.startswith("["):
            raise StoreUnavailable("The SQLite store names a CA chain it does not hold (%s)." % stored[:20])
        chain = stored
    return CertificateRecord(
        id=row[0], frontdoor_id=row[1], token_id=row[2], name=row[3], serial_number=row[4], certificate_pem=row[5],
        ca_chain=json.loads(chain), subject=Subject(row[7], row[8], row[9]), not_before=_dt_from(row[10]),
        not_after=_dt_from(row[11]), created_at=_dt_from(row[12]), public_key_sha256=row[13],
        revoked_at=_dt_from(row[14]), subject_alt_names=_sans_from(row[15]), previous_certificate_id=row[16],
        renewed_by=row[17],
    )


@contextlib.contextmanager
def _unavailable_on_error(path: str):
    """Any SQLite error becomes StoreUnavailable: "database is locked" is a writer that held the
    database past busy_timeout (retry later); anything else is a store the operator must fix."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreUnavailable("The SQLite store stayed locked; try again.", retry_after=1) from None
        raise StoreUnavailable("The SQLite store at %s failed: %s" % (path, exc)) from None
    except sqlite3.Error as exc:
        raise StoreUnavailable("The SQLite store at %s failed: %s" % (path, exc)) from None


# One writer at a time per process and database file, queued on a plain lock. SQLite admits one writer anyway, and
# a connection that finds the write lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 ... up to 100 ms a
# try) while a write here lasts ~0.1 ms: with a thread per request, concurrent redemptions slept while the lock
# sat free (p99 ~150 ms at 8 clients). Threads of one process now wait only as long as the write ahead of them;
# processes still meet in SQLite's own busy handler, bounded by busy_timeout.
_WRITE_LOCKS: Dict[Tuple[int, str], threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(real_path: str) -> threading.Lock:
    with _WRITE_LOCKS_GUARD:  # keyed by pid too: a forked child must not inherit a lock held at fork
        return _WRITE_LOCKS.setdefault((os.getpid(), real_path), threading.Lock())


# SQLite checkpoints the WAL into the database from inside the commit that crosses this many pages (default
# 1000, ~4 MiB): that commit then writes the pages back and fdatasyncs while its writer waits, and other writers
# queue behind it. Measured with 2 workers and 8 clients: checkpoints in the request path cost about a third of
# the embedded redemption rate at 1000 pages; at 10000 (WAL up to ~40 MiB between checkpoints) they are ten times
# rarer, and a page written many times in between (index pages) is written back once.
WAL_AUTOCHECKPOINT_PAGES = 10000


class SQLiteStore(SQLiteAcmeState, TokenStore):
    """Tokens and certificates in one SQLite file; one connection per thread and process."""

    kind = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 10.0, synchronous: str = "normal"):
        self.path = path
        self._real_path = os.path.realpath(path)
        self.busy_timeout = busy_timeout
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        # NORMAL: in WAL mode a commit is safe from a crashed process but not from power loss (the
        # last commits may be lost, and with them a recorded redemption). FULL fsyncs every commit.
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        with _unavailable_on_error(path):
            conn = self._conn()
            self._use_wal(conn)
            # Several processes may start at once on a fresh state dir; the schema is idempotent.
            conn.executescript(_SCHEMA)
            _migrate(conn)
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass

    # -- connections ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection. A forked child opens its own: a connection must never be
        used by two processes (SQLite's locks are per process and would not keep them apart)."""
        local = self._local
        if getattr(local, "conn", None) is None or local.pid != os.getpid():
            with _unavailable_on_error(self.path):
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA synchronous=%s" % self.synchronous)
                conn.execute("PRAGMA wal_autocheckpoint=%d" % WAL_AUTOCHECKPOINT_PAGES)
            local.conn, local.pid = conn, os.getpid()
        return local.conn

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> None:
        """WAL is a property of the file: one switch serves every connection afterwards.

        Processes opening a fresh state dir together all try it; SQLite refuses it at once
        ("locked", without waiting: waiting would deadlock) to a connection that meets another
        one switching, and that other one's switch serves both."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise

    @contextlib.contextmanager
    def _transaction(self):
        """One read-modify-write: BEGIN IMMEDIATE takes SQLite's write lock up front (waiting up to
        busy_timeout), so what is read inside cannot change before the COMMIT."""
        with _write_lock(self._real_path), _unavailable_on_error(self.path):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:  # an error, or a COMMIT that failed: leave nothing half done
                    conn.execute("ROLLBACK")

    def _execute(self, sql: str, args: Sequence = ()) -> sqlite3.Cursor:
        """One writing statement in its own (implicit) transaction."""
        with _write_lock(self._real_path), _unavailable_on_error(self.path):
            return self._conn().execute(sql, args)

    def _rows(self, sql: str, args: Sequence = ()) -> list:
        with _unavailable_on_error(self.path):
            return self._conn().execute(sql, args).fetchall()

    # -- tokens --------------------------------------------------------------
    def create_token(self, record: TokenRecord) -> None:
        with _unavailable_on_error(self.path):
            try:
                with _write_lock(self._real_path):
                    self._conn().execute(_TOKEN_INSERT, _token_params(record))
            except sqlite3.IntegrityError:
                raise FrontdoorError("conflict", "A token with this id already exists.") from None

    def get_token(self, frontdoor_id: str, token_id: str) -> Optional[TokenRecord]:
        rows = self._rows(
            "SELECT %s FROM tokens WHERE id = ? AND frontdoor_id = ?" % _TOKEN_COLUMNS, (token_id, frontdoor_id)
        )
        return _token_from(rows[0]) if rows else None

    def find_token_by_hash(self, secret_hash: str) -> Optional[TokenRecord]:
        rows = self._rows("SELECT %s FROM tokens WHERE secret_hash = ?" % _TOKEN_COLUMNS, (secret_hash,))
        return _token_from(rows[0]) if rows else None

    @staticmethod
    def _status_clause(statuses, now_ts) -> Tuple[str, list]:
        parts, args = [], []
        for status in statuses or ():
            if status == "redeemed":
                parts.append("state = 'redeemed'")
            elif status == "active":
                parts.append("(state = 'active' AND expires_at > ?)")
                args.append(now_ts)
            elif status == "expired":
                parts.append("(state = 'active' AND expires_at <= ?)")
                args.append(now_ts)
        return ("(" + " OR ".join(parts) + ")", args) if parts else ("", [])

    def list_tokens(self, frontdoor_id, *, now, statuses=None, name=None, page=0, size=20, sort=("created_at", "asc")):
        where, args = ["frontdoor_id = ?"], [frontdoor_id]
        clause, extra = self._status_clause(statuses, now.timestamp())
        if clause:
            where.append(clause)
            args.extend(extra)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        where_sql = " AND ".join(where)
        column, direction = sort  # column: from the TOKEN_SORT_FIELDS whitelist (service._sort)
        order = "%s %s, id ASC" % (column, "DESC" if direction == "desc" else "ASC")
        total = self._rows("SELECT COUNT(*) FROM tokens WHERE %s" % where_sql, args)[0][0]
        rows = self._rows(
            "SELECT %s FROM tokens WHERE %s ORDER BY %s LIMIT ? OFFSET ?" % (_TOKEN_COLUMNS, where_sql, order),
            args + [size, page * size],
        )
        return Page([_token_from(r) for r in rows], total, page, size)

    def replace_token(self, record: TokenRecord, expected_version: int) -> bool:
        # One UPDATE is its own transaction: SQLite takes the write lock for it as BEGIN IMMEDIATE would.
        return self._execute(_TOKEN_CAS, dict(_token_params(record), expected_version=expected_version)).rowcount == 1

    def record_redemption(self, record: TokenRecord, expected_version: int, certificate: CertificateRecord) -> bool:
        chain_text, chain_ref = _chain_ref(certificate.ca_chain)
        with self._transaction() as conn:
            if conn.execute(_TOKEN_REDEEM_CAS, dict(_token_params(record), expected_version=expected_version)).rowcount != 1:
                return False
            conn.execute("INSERT OR IGNORE INTO chains (id, chain) VALUES (?, ?)", (chain_ref, chain_text))
            conn.execute(_CERT_INSERT, _cert_row(certificate, chain_ref))
            return True

    def delete_token(self, frontdoor_id: str, token_id: str) -> bool:
        return self._execute(
            "DELETE FROM tokens WHERE id = ? AND frontdoor_id = ?", (token_id, frontdoor_id)
        ).rowcount == 1

    def purge_tokens(self, frontdoor_id, *, now, expired_before, redeemed_before, dry_run=False) -> List[str]:
        parts, args = [], []
        if expired_before is not None:
            parts.append("(state = 'active' AND expires_at <= ?)")
            args.append(min(expired_before, now).timestamp())
        if redeemed_before is not None:
            parts.append("(state = 'redeemed' AND redeemed_at <= ?)")
            args.append(redeemed_before.timestamp())
        if not parts:
            return []
        where = "(" + " OR ".join(parts) + ")"
        if frontdoor_id is not None:
            where += " AND frontdoor_id = ?"
            args.append(frontdoor_id)
        with self._transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM tokens WHERE %s ORDER BY expires_at" % where, args)]
            if not dry_run and ids:
                conn.execute("DELETE FROM tokens WHERE %s" % where, args)
        return ids

    # -- certificates --------------------------------------------------------
    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> Optional[CertificateRecord]:
        rows = self._rows(_CERT_SELECT + " WHERE c.id = ? AND c.frontdoor_id = ?", (certificate_id, frontdoor_id))
        return _cert_from(rows[0]) if rows else None

    def list_certificates(self, frontdoor_id, *, page=0, size=20, sort=("created_at", "asc"), token_id=None, revoked=None):
        where, args = ["c.frontdoor_id = ?"], [frontdoor_id]
        if token_id:
            where.append("c.token_id = ?")
            args.append(token_id)
        if revoked is True:
            where.append("c.revoked_at IS NOT NULL")
        elif revoked is False:
            where.append("c.revoked_at IS NULL")
        where_sql = " AND ".join(where)
        column, direction = sort  # column: from the CERTIFICATE_SORT_FIELDS whitelist (service._sort)
        order = "c.%s %s, c.id ASC" % (column, "DESC" if direction == "desc" else "ASC")
        total = self._rows("SELECT COUNT(*) FROM certificates c WHERE %s" % where_sql, args)[0][0]
        rows = self._rows(
            "%s WHERE %s ORDER BY %s LIMIT ? OFFSET ?" % (_CERT_SELECT, where_sql, order), args + [size, page * size]
        )
        return Page([_cert_from(r) for r in rows], total, page, size)

    def mark_revoked(self, frontdoor_id: str, certificate_id: str, revoked_at: _dt.datetime) -> bool:
        return self._execute(
            "UPDATE certificates SET revoked_at = ? WHERE id = ? AND frontdoor_id = ? AND revoked_at IS NULL",
            (revoked_at.timestamp(), certificate_id, frontdoor_id),
        ).rowcount == 1

    def revoked_serials(self, frontdoor_id: str) -> Iterable[Tuple[str, _dt.datetime]]:
        rows = self._rows(
            "SELECT serial_number, revoked_at FROM certificates WHERE frontdoor_id = ? AND revoked_at IS NOT NULL",
            (frontdoor_id,),
        )
        return [(r[0], _dt_from(r[1])) for r in rows]

    # -- renewal ---------------------------------------------------------------
    def find_certificate_by_serial(self, frontdoor_id, serial, not_before=None) -> Optional[CertificateRecord]:
        rows = self._rows(
            _CERT_SELECT + " WHERE c.frontdoor_id = ? AND c.serial_number = ? ORDER BY c.created_at LIMIT 1",
            (frontdoor_id, serial),
        )
        return _cert_from(rows[0]) if rows else None

    def use_renewal_jti(self, key: str, expires_at: _dt.datetime, now: _dt.datetime) -> bool:
        with self._transaction() as conn:
            # the expired ones go first, in the same write: the table holds at most ~6 minutes of renewals
            conn.execute("DELETE FROM renewal_jtis WHERE expires_at <= ?", (now.timestamp(),))
            return conn.execute(
                "INSERT OR IGNORE INTO renewal_jtis (key, expires_at) VALUES (?, ?)", (key, expires_at.timestamp())
            ).rowcount == 1

    def claim_renewal(self, frontdoor_id, certificate_id, claim_id, claim_until, now) -> bool:
        return self._execute(
            "UPDATE certificates SET renewal_claim = ?, renewal_claim_until = ? WHERE id = ? AND frontdoor_id = ? "
            "AND renewed_by IS NULL AND revoked_at IS NULL AND (renewal_claim IS NULL OR renewal_claim_until <= ?)",
            (claim_id, claim_until.timestamp(), certificate_id, frontdoor_id, now.timestamp()),
        ).rowcount == 1

    def release_renewal(self, frontdoor_id, certificate_id, claim_id) -> None:
        self._execute(
            "UPDATE certificates SET renewal_claim = NULL, renewal_claim_until = NULL "
            "WHERE id = ? AND frontdoor_id = ? AND renewal_claim = ?",
            (certificate_id, frontdoor_id, claim_id),
        )

    def record_renewal(self, frontdoor_id, previous_id, claim_id, certificate) -> bool:
        chain_text, chain_ref = _chain_ref(certificate.ca_chain)
        with self._transaction() as conn:
            if conn.execute(
                "UPDATE certificates SET renewed_by = ?, renewal_claim = NULL, renewal_claim_until = NULL "
                "WHERE id = ? AND frontdoor_id = ? AND renewal_claim = ? AND renewed_by IS NULL AND revoked_at IS NULL",
                (certificate.id, previous_id, frontdoor_id, claim_id),
            ).rowcount != 1:
                return False
            conn.execute("INSERT OR IGNORE INTO chains (id, chain) VALUES (?, ?)", (chain_ref, chain_text))
            conn.execute(_CERT_INSERT, _cert_row(certificate, chain_ref))
            return True

    def ping(self) -> None:
        self._rows("SELECT 1")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
