# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite token store (stdlib sqlite3, WAL).

Check-and-set is an ``UPDATE ... WHERE version = ?`` inside ``BEGIN IMMEDIATE``, which
SQLite serialises across threads and processes alike: that is what makes single use
hold for two gateways sharing one state directory.

Writers queue before they ask SQLite: a thread lock inside the process and an ``flock`` on
``<db>-lock`` across processes. SQLite alone would make a writer that finds the database
locked sleep 1, 2, 5, 10 ... ms in its busy handler although write transactions here last
tens of microseconds; under 8 concurrent redemptions that turned into most of the latency.
The queue only orders writers; correctness still comes from SQLite's transaction and the
version check, so a process that does not take the lock is still safe, only slower.

``exclusive(key)`` is a second, unrelated lock: one byte per key in ``<db>-keys.lock`` (POSIX
record locks, which the kernel drops when their process dies), which a redemption with the local
CA holds from reading its token to recording the certificate instead of writing a claim.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import FrontdoorError, StoreUnavailable
from ..model import UTC, CertificateRecord, Page, Subject, TokenRecord
from ..process import PID as _PID  # the pid without a system call per use (refreshed after fork)
from .base import LockTimeout, TokenStore

_SCHEMA = """
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
PRAGMA user_version = 2;
"""

_TOKEN_COLUMNS = (
    "id, frontdoor_id, name, secret_hash, common_name, organization, organizational_unit, created_at, created_by, "
    "expires_at, updated_at, state, certificate_ttl, redeemed_at, certificate_id, public_key_sha256, claim_id, "
    "claim_until, version"
)
# Every token column but the identity (id, frontdoor_id) and creation facts; order as in _TOKEN_COLUMNS.
_MUTABLE = (
    "name", "secret_hash", "common_name", "organization", "organizational_unit", "expires_at", "updated_at", "state",
    "certificate_ttl", "redeemed_at", "certificate_id", "public_key_sha256", "claim_id", "claim_until", "version",
)
_MUTABLE_INDEXES = tuple([c.strip() for c in _TOKEN_COLUMNS.split(",")].index(c) for c in _MUTABLE)
_MUTABLE_SQL = ", ".join(_MUTABLE)
_CERT_COLUMNS = (
    "id, frontdoor_id, token_id, name, serial_number, certificate_pem, ca_chain, common_name, organization, "
    "organizational_unit, not_before, not_after, created_at, public_key_sha256, revoked_at"
)


_OPEN_LOCK = threading.Lock()
_KEY_STRIPES = 64  # thread locks per file and process for exclusive(): keys share one by their offset
_KEY_HEX = 15  # hex digits of a key that make its lock offset (60 bits: fits a 64-bit off_t)
_STRIPES_LOCK = threading.Lock()
_STRIPES_BY_FILE = {}  # (pid, real path of the database) -> its stripe locks, shared by every store on it

_AUTOCHECKPOINT_PAGES = 16000  # SQLite's in-COMMIT checkpoint: a backstop only
CHECKPOINT_INTERVAL = 0.25  # seconds between background PASSIVE checkpoints in a writing process


def _key_stripes(path: str) -> tuple:
    """One set of stripe locks per database file and process: POSIX record locks do not exclude
    each other within a process, so two stores on the same file in one process (an admin service
    beside a gateway's, tests) must meet on the same thread locks."""
    key = (_PID[0], os.path.realpath(path))
    with _STRIPES_LOCK:
        stripes = _STRIPES_BY_FILE.get(key)
        if stripes is None:
            stripes = _STRIPES_BY_FILE[key] = tuple(threading.Lock() for _stripe in range(_KEY_STRIPES))
        return stripes


def _ts(value: Optional[_dt.datetime]) -> Optional[float]:
    return None if value is None else value.timestamp()


def _dt_from(value: Optional[float]) -> Optional[_dt.datetime]:
    return None if value is None else _dt.datetime.fromtimestamp(value, UTC)


def _token_row(r: TokenRecord) -> tuple:
    return (
        r.id, r.frontdoor_id, r.name, r.secret_hash, r.subject.common_name, r.subject.organization,
        r.subject.organizational_unit, _ts(r.created_at), r.created_by, _ts(r.expires_at), _ts(r.updated_at), r.state,
        r.certificate_ttl, _ts(r.redeemed_at), r.certificate_id, r.public_key_sha256, r.claim_id, _ts(r.claim_until),
        r.version,
    )


def _token_from(row) -> TokenRecord:
    return TokenRecord(
        id=row[0], frontdoor_id=row[1], name=row[2], secret_hash=row[3], subject=Subject(row[4], row[5], row[6]),
        created_at=_dt_from(row[7]), created_by=row[8], expires_at=_dt_from(row[9]), updated_at=_dt_from(row[10]),
        state=row[11], certificate_ttl=row[12], redeemed_at=_dt_from(row[13]), certificate_id=row[14],
        public_key_sha256=row[15], claim_id=row[16], claim_until=_dt_from(row[17]), version=row[18],
    )


_CHAIN_REFS: dict = {}  # tuple(chain) -> (JSON text, 'sha256:<hex>')
_CHAIN_LISTS: dict = {}  # 'sha256:<hex>' -> tuple(chain), as read back


def _chain_ref(chain: List[str]) -> Tuple[str, str]:
    """(JSON, id) of a CA chain. Why by reference: every certificate of a frontdoor has the same
    ~1.5 KB chain, and inline it made each certificate row too big to share a 4 KB page with
    another one (a new page per redemption, and more to write to the WAL and checkpoint)."""
    key = tuple(chain)
    known = _CHAIN_REFS.get(key)
    if known is None:
        if len(_CHAIN_REFS) > 64:
            _CHAIN_REFS.clear()
        text = json.dumps(list(chain))
        known = _CHAIN_REFS[key] = (text, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest())
    return known


def _cert_row(c: CertificateRecord, chain_ref: str) -> tuple:
    return (
        c.id, c.frontdoor_id, c.token_id, c.name, c.serial_number, c.certificate_pem, chain_ref,
        c.subject.common_name, c.subject.organization, c.subject.organizational_unit, _ts(c.not_before),
        _ts(c.not_after), _ts(c.created_at), c.public_key_sha256, _ts(c.revoked_at),
    )


def _cert_from(row, chain: List[str]) -> CertificateRecord:
    return CertificateRecord(
        id=row[0], frontdoor_id=row[1], token_id=row[2], name=row[3], serial_number=row[4], certificate_pem=row[5],
        ca_chain=chain, subject=Subject(row[7], row[8], row[9]), not_before=_dt_from(row[10]),
        not_after=_dt_from(row[11]), created_at=_dt_from(row[12]), public_key_sha256=row[13],
        revoked_at=_dt_from(row[14]),
    )


def _checkpoint_loop(path: str, closing: threading.Event, pid: int, store: weakref.ref) -> None:
    """PASSIVE checkpoints every CHECKPOINT_INTERVAL, outside the writer queue.

    Why: SQLite's automatic checkpoint runs inside the COMMIT that crosses its limit, and that
    COMMIT holds the writer queue, so with two workers the other one waited (idle) for the whole
    copy, and so did that redemption's answer: p99 at 8 clients ~31 ms, ~11 ms with this thread.
    PASSIVE never blocks writers or readers; if another process is checkpointing, this one skips a
    turn. Stops on close(), when the store is gone, in a forked child, or when the file is removed.
    """
    conn = None
    try:
        while not closing.wait(CHECKPOINT_INTERVAL):
            if _PID[0] != pid or store() is None or not os.path.exists(path):
                return
            try:
                if conn is None:
                    conn = sqlite3.connect(path, timeout=0.05, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                continue  # busy or unavailable: the next turn (or SQLite's backstop) catches up
    finally:
        if conn is not None:
            conn.close()


class SQLiteStore(TokenStore):
    """Tokens and certificates in one SQLite file; one connection per thread and process."""

    kind = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 10.0, synchronous: str = "normal"):
        self.path = path
        self.busy_timeout = busy_timeout
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        # NORMAL: in WAL mode a commit is safe from a crashed process but not from power loss (the
        # last commits may be lost, and with them a recorded redemption). FULL fsyncs every commit.
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._lock_pid = None
        self._lock_fd = None
        self._key_lock_fd = None
        self._thread_lock = threading.Lock()
        self._key_stripes = ()  # set with the lock files, per process (_process_lock_fd)
        self._checkpointer_pid = None
        self._closing = threading.Event()
        # (id -> (version, mutable columns)) of rows this process read or wrote last; see _cas
        self._seen = {}
        self._stored_chains = set()  # chain ids known to be in the chains table (rows are never deleted)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        conn = self._conn()
        # Several processes may start at once on a fresh state dir; schema creation is idempotent.
        self._retry(lambda: conn.executescript(_SCHEMA))
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass

    # -- connections ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != _PID[0]:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
                # Processes starting together on a fresh state dir all switch it to WAL; the switch
                # needs an exclusive lock and SQLite may refuse it at once ("database is locked")
                # instead of waiting, so it is retried like any locked write (bounded).
                self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                conn.execute("PRAGMA synchronous=%s" % self.synchronous)
                # Checkpoints run in a background thread (_checkpoint_loop). SQLite's own, which
                # copies the WAL into the database inside the COMMIT that crosses the limit while
                # this process holds the writer queue (every other writer waits), stays only as a
                # backstop for processes without that thread and for a WAL that outgrows it.
                conn.execute("PRAGMA wal_autocheckpoint=%d" % _AUTOCHECKPOINT_PAGES)
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreUnavailable("The SQLite store at %s cannot be opened: %s" % (self.path, exc)) from None
            self._local.conn = conn
            self._local.pid = _PID[0]
        return conn

    def _retry(self, fn, attempts: int = 50):
        # Bounded in time as well as count: each attempt may itself wait busy_timeout in SQLite,
        # and 50 of those would hold a request for minutes behind a stuck writer.
        deadline = time.monotonic() + self.busy_timeout
        for attempt in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StoreUnavailable("The SQLite store failed: %s" % exc) from None
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise _stayed_locked()

    def _process_lock_fd(self) -> Optional[int]:
        """The fd of ``<db>-lock`` for this process (reopened after a fork: flock is per open file)."""
        if self._lock_pid != _PID[0]:
            with _OPEN_LOCK:
                if self._lock_pid != _PID[0]:
                    self._thread_lock = threading.Lock()
                    self._key_stripes = _key_stripes(self.path)
                    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                    try:
                        self._lock_fd = os.open(self.path + "-lock", flags, 0o600)
                    except OSError:
                        # e.g. a read-only directory: SQLite's own locking still applies
                        self._lock_fd = None
                    try:
                        # POSIX record locks belong to the process and every close() of any fd
                        # of the file drops them all: this file is opened once per process and
                        # only closed by close().
                        self._key_lock_fd = os.open(self.path + "-keys.lock", flags, 0o600)
                    except OSError:
                        self._key_lock_fd = None  # exclusive() offers no lock: redemptions claim
                    self._lock_pid = _PID[0]
        return self._lock_fd

    def exclusive(self, key: str) -> Optional[_KeyLock]:
        """Hold ``key`` (a hex digest) across threads and processes: a striped thread lock, then
        a one-byte POSIX record lock at an offset taken from the key in ``<db>-keys.lock``.

        The kernel drops a record lock when its process dies, so a crash never leaves a key held.
        None when the lock file cannot be opened (other processes could not be kept out): the
        service then claims the token with a write instead."""
        self._process_lock_fd()
        if self._key_lock_fd is None:
            return None
        offset = int(key[:_KEY_HEX], 16)
        return _KeyLock(self, self._key_stripes[offset % _KEY_STRIPES], offset)

    @contextlib.contextmanager
    def _writer(self):
        """Hold the writer queue: first the thread lock, then the cross-process flock (both bounded)."""
        fd = self._process_lock_fd()
        lock = self._thread_lock
        if not lock.acquire(timeout=self.busy_timeout):
            raise _stayed_locked()
        try:
            if fd is not None:
                self._flock(fd)
            try:
                yield
            finally:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    except OSError:
                        pass  # closed meanwhile by close(): closing released the lock
        finally:
            lock.release()

    def _flock(self, fd: int) -> None:
        """Take the cross-process writer lock, bounded by busy_timeout."""
        self._wait(lambda: _try_flock(fd), _stayed_locked)

    def _wait(self, attempt, deadline_error) -> None:
        """Take a lock that ``attempt()`` tries without blocking (True when taken), bounded by
        busy_timeout; ``deadline_error()`` is raised past it.

        Another process holds these locks for one short transaction or signature (~50-300 us),
        so a waiter first yields the CPU and retries for up to ~300 us: the smallest
        ``time.sleep`` oversleeps by Linux's 50 us timer slack and more, and under 8 concurrent
        redemptions on two workers those oversleeps left a core idle while the lock was already
        free. Only then does it back off with sleeps (up to 2 ms) until the deadline.
        """
        if attempt():
            return
        now = time.monotonic()
        spin_until, deadline = now + 0.0003, now + self.busy_timeout
        pause = 0.00005
        while not attempt():
            now = time.monotonic()
            if now > deadline:
                raise deadline_error()
            if now < spin_until:
                os.sched_yield()
            else:
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def _start_checkpointer(self) -> None:
        """One background checkpointer per writing process (started again in a forked child)."""
        if self._checkpointer_pid == _PID[0]:
            return
        with _OPEN_LOCK:
            if self._checkpointer_pid == _PID[0]:
                return
            self._checkpointer_pid = _PID[0]
            threading.Thread(target=_checkpoint_loop, args=(self.path, self._closing, _PID[0], weakref.ref(self)),
                             name="frontdoor-sqlite-checkpoint", daemon=True).start()

    def _write(self, fn):
        """Run fn(conn) in one IMMEDIATE transaction (one writer at a time, across processes)."""
        def run():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        self._start_checkpointer()
        with self._writer():
            return self._retry(run)

    def _read(self, sql: str, args: Sequence = ()):
        return self._retry(lambda: self._conn().execute(sql, args).fetchall())

    # -- tokens --------------------------------------------------------------
    def create_token(self, record: TokenRecord) -> None:
        def insert(conn):
            try:
                conn.execute("INSERT INTO tokens (%s) VALUES (%s)" % (_TOKEN_COLUMNS, ",".join("?" * 19)), _token_row(record))
            except sqlite3.IntegrityError:
                raise FrontdoorError("conflict", "A token with this id already exists.") from None

        self._write(insert)

    def get_token(self, frontdoor_id: str, token_id: str) -> Optional[TokenRecord]:
        rows = self._read(
            "SELECT %s, rowid FROM tokens WHERE id = ? AND frontdoor_id = ?" % _TOKEN_COLUMNS, (token_id, frontdoor_id)
        )
        return self._remember(rows[0]) if rows else None

    def find_token_by_hash(self, secret_hash: str) -> Optional[TokenRecord]:
        rows = self._read("SELECT %s, rowid FROM tokens WHERE secret_hash = ?" % _TOKEN_COLUMNS, (secret_hash,))
        return self._remember(rows[0]) if rows else None

    def _remember(self, row) -> TokenRecord:
        """Keep the row's mutable columns and rowid by (id, version): a CAS on that version then
        needs no SELECT and finds the row by rowid, not through the id index (fewer pages to read
        again after another process's commit has emptied this connection's page cache)."""
        seen = self._seen
        if len(seen) > 1024:
            seen.clear()
        seen[row[0]] = (row[18], tuple(row[i] for i in _MUTABLE_INDEXES), row[19])
        return _token_from(row)

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
        column, direction = sort
        order = "%s %s, id ASC" % (column, "DESC" if direction == "desc" else "ASC")
        total = self._read("SELECT COUNT(*) FROM tokens WHERE %s" % where_sql, args)[0][0]
        rows = self._read(
            "SELECT %s FROM tokens WHERE %s ORDER BY %s LIMIT ? OFFSET ?" % (_TOKEN_COLUMNS, where_sql, order),
            args + [size, page * size],
        )
        return Page([_token_from(r) for r in rows], total, page, size)

    def replace_token(self, record: TokenRecord, expected_version: int) -> bool:
        known = self._seen.get(record.id)
        if known is not None and known[0] == expected_version:
            # One UPDATE and nothing else (a claim): SQLite's implicit transaction around a single
            # statement is the same as BEGIN IMMEDIATE ... COMMIT, without two more statements.
            self._start_checkpointer()
            with self._writer():
                return self._retry(lambda: self._cas(self._conn(), record, expected_version))
        return self._write(lambda conn: self._cas(conn, record, expected_version))

    def _cas(self, conn, record: TokenRecord, expected_version: int, use_seen: bool = True) -> bool:
        """Compare-and-set on the version, writing only the columns that differ.

        SQLite rewrites every index that contains a column named in SET, even when the value
        is unchanged: setting all columns turned a claim (two columns change) into five page
        writes in the WAL instead of one, ~3x the cost of the commit. So the columns are
        compared with the row as it is at ``expected_version``: taken from ``_seen`` when this
        process read or wrote exactly that version (every change to a token goes through this
        method and bumps the version, so (id, version) names one content), otherwise read inside
        the same IMMEDIATE transaction. Either way the UPDATE still checks the version.
        """
        known = self._seen.get(record.id) if use_seen else None
        if known is not None and known[0] == expected_version:
            current, rowid = known[1], known[2]
        else:
            found = conn.execute(
                "SELECT %s, rowid FROM tokens WHERE id=? AND frontdoor_id=? AND version=?" % _MUTABLE_SQL,
                (record.id, record.frontdoor_id, expected_version),
            ).fetchone()
            if found is None:
                return False
            current, rowid = found[:-1], found[-1]
        row = _token_row(record)
        wanted = tuple(row[i] for i in _MUTABLE_INDEXES)
        changed = [i for i, (old, new) in enumerate(zip(current, wanted)) if old != new or type(old) is not type(new)]
        columns = [_MUTABLE[i] for i in changed if _MUTABLE[i] != "version"] + ["version"]
        values = [wanted[i] for i in changed if _MUTABLE[i] != "version"] + [record.version]
        # rowid finds the row; id, frontdoor and version decide whether it is still the one we mean
        cursor = conn.execute(
            "UPDATE tokens SET %s WHERE rowid=? AND id=? AND frontdoor_id=? AND version=?"
            % ", ".join("%s=?" % c for c in columns),
            values + [rowid, record.id, record.frontdoor_id, expected_version],
        )
        if cursor.rowcount != 1:
            self._seen.pop(record.id, None)
            if known is not None and known[0] == expected_version:
                # not at that rowid any more (a VACUUM renumbers rowids) or not at that version:
                # decide by id, as without the remembered row
                return self._cas(conn, record, expected_version, use_seen=False)
            return False
        # Remembered before COMMIT: if the COMMIT fails, the row is still at expected_version and
        # the next CAS names that version, which misses this entry and reads the row.
        self._seen[record.id] = (record.version, wanted, rowid)
        return True

    def record_redemption(self, record: TokenRecord, expected_version: int, certificate: CertificateRecord) -> bool:
        chain_text, chain_ref = _chain_ref(certificate.ca_chain)

        def run(conn):
            if not self._cas(conn, record, expected_version):
                return False
            if chain_ref not in self._stored_chains:
                conn.execute("INSERT OR IGNORE INTO chains (id, chain) VALUES (?, ?)", (chain_ref, chain_text))
            conn.execute(
                "INSERT INTO certificates (%s) VALUES (%s)" % (_CERT_COLUMNS, ",".join("?" * 15)),
                _cert_row(certificate, chain_ref),
            )
            return True

        recorded = self._write(run)
        if recorded:
            self._stored_chains.add(chain_ref)
        return recorded

    def delete_token(self, frontdoor_id: str, token_id: str) -> bool:
        return self._write(
            lambda conn: conn.execute(
                "DELETE FROM tokens WHERE id = ? AND frontdoor_id = ?", (token_id, frontdoor_id)
            ).rowcount == 1
        )

    def purge_tokens(self, frontdoor_id, *, now, expired_before, redeemed_before, dry_run=False) -> List[str]:
        parts, args = [], []
        if expired_before is not None:
            bound = min(expired_before, now).timestamp()
            parts.append("(state = 'active' AND expires_at <= ?)")
            args.append(bound)
        if redeemed_before is not None:
            parts.append("(state = 'redeemed' AND redeemed_at <= ?)")
            args.append(redeemed_before.timestamp())
        if not parts:
            return []
        where = "(" + " OR ".join(parts) + ")"
        if frontdoor_id is not None:
            where += " AND frontdoor_id = ?"
            args.append(frontdoor_id)

        def run(conn):
            ids = [r[0] for r in conn.execute("SELECT id FROM tokens WHERE %s ORDER BY expires_at" % where, args)]
            if not dry_run and ids:
                conn.execute("DELETE FROM tokens WHERE %s" % where, args)
            return ids

        return self._write(run)

    # -- certificates --------------------------------------------------------
    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> Optional[CertificateRecord]:
        rows = self._read(
            "SELECT %s FROM certificates WHERE id = ? AND frontdoor_id = ?" % _CERT_COLUMNS, (certificate_id, frontdoor_id)
        )
        return _cert_from(rows[0], self._chain(rows[0][6])) if rows else None

    def list_certificates(self, frontdoor_id, *, page=0, size=20, sort=("created_at", "asc"), token_id=None, revoked=None):
        where, args = ["frontdoor_id = ?"], [frontdoor_id]
        if token_id:
            where.append("token_id = ?")
            args.append(token_id)
        if revoked is True:
            where.append("revoked_at IS NOT NULL")
        elif revoked is False:
            where.append("revoked_at IS NULL")
        where_sql = " AND ".join(where)
        column, direction = sort
        order = "%s %s, id ASC" % (column, "DESC" if direction == "desc" else "ASC")
        total = self._read("SELECT COUNT(*) FROM certificates WHERE %s" % where_sql, args)[0][0]
        rows = self._read(
            "SELECT %s FROM certificates WHERE %s ORDER BY %s LIMIT ? OFFSET ?" % (_CERT_COLUMNS, where_sql, order),
            args + [size, page * size],
        )
        return Page([_cert_from(r, self._chain(r[6])) for r in rows], total, page, size)

    def _chain(self, stored: str) -> List[str]:
        """The chain a certificate row names: inline JSON (rows before version 2) or a chains id."""
        if stored.startswith("["):
            return json.loads(stored)
        chain = _CHAIN_LISTS.get(stored)
        if chain is None:
            rows = self._read("SELECT chain FROM chains WHERE id = ?", (stored,))
            if not rows:
                raise StoreUnavailable("The SQLite store names a CA chain it does not hold (%s)." % stored[:20])
            chain = tuple(json.loads(rows[0][0]))
            if len(_CHAIN_LISTS) > 64:
                _CHAIN_LISTS.clear()
            _CHAIN_LISTS[stored] = chain
        return list(chain)

    def mark_revoked(self, frontdoor_id: str, certificate_id: str, revoked_at: _dt.datetime) -> bool:
        return self._write(
            lambda conn: conn.execute(
                "UPDATE certificates SET revoked_at = ? WHERE id = ? AND frontdoor_id = ? AND revoked_at IS NULL",
                (revoked_at.timestamp(), certificate_id, frontdoor_id),
            ).rowcount == 1
        )

    def revoked_serials(self, frontdoor_id: str) -> Iterable[Tuple[str, _dt.datetime]]:
        rows = self._read(
            "SELECT serial_number, revoked_at FROM certificates WHERE frontdoor_id = ? AND revoked_at IS NOT NULL",
            (frontdoor_id,),
        )
        return [(r[0], _dt_from(r[1])) for r in rows]

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        self._closing.set()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._lock_pid == _PID[0]:
            for fd in (self._lock_fd, self._key_lock_fd):
                if fd is not None:
                    os.close(fd)
            self._lock_fd = self._key_lock_fd = None
            self._lock_pid = None


class _KeyLock:
    """``SQLiteStore.exclusive(key)``: the key's stripe lock, then its byte in ``<db>-keys.lock``."""

    __slots__ = ("store", "stripe", "offset")

    def __init__(self, store: SQLiteStore, stripe: threading.Lock, offset: int):
        self.store, self.stripe, self.offset = store, stripe, offset

    def _timeout(self) -> LockTimeout:
        return LockTimeout("key held for longer than %g s" % self.store.busy_timeout)

    def __enter__(self) -> None:
        store = self.store
        if not self.stripe.acquire(timeout=store.busy_timeout):
            raise self._timeout()
        fd = store._key_lock_fd
        if fd is None:  # close() ran since exclusive() was called
            self.stripe.release()
            raise StoreUnavailable("The SQLite store was closed; try again.", retry_after=1)
        try:
            store._wait(lambda: _try_lockf(fd, self.offset), self._timeout)
        except BaseException:
            self.stripe.release()
            raise

    def __exit__(self, *exc) -> None:
        fd = self.store._key_lock_fd
        try:
            if fd is not None:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, self.offset)
                except OSError:
                    pass  # closed meanwhile by close(): closing released the lock
        finally:
            self.stripe.release()


def _stayed_locked() -> StoreUnavailable:
    return StoreUnavailable("The SQLite store stayed locked; try again.", retry_after=1)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _try_lockf(fd: int, offset: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        return True
    except (BlockingIOError, PermissionError):  # held elsewhere: EAGAIN or EACCES, by platform
        return False
    except OSError as exc:  # e.g. ENOLCK (no locks left), EBADF after close()
        raise StoreUnavailable("The SQLite store could not lock a token (%s); try again." % exc, retry_after=1) from None
