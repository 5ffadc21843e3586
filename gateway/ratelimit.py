"""Rate limits on failures: unknown token secrets and invalid admin bearer tokens.

The limiter is the ``limits`` library (fixed windows: a window opens at an address's first failure, and once
the count reaches the limit every attempt of that kind from that address gets ``429 rate_limited`` with
``Retry-After`` until the window ends). The policy numbers come from ``frontdoor_pki.config``
(``rateLimits``); this module only applies them.

Only failures are counted: a redemption or an admin request that succeeds never writes to the limiter. What
every attempt pays is a read of the counters (``limiter.test``: for the default storage a primary-key ``SELECT``
on a small SQLite table in WAL mode, no write lock taken), and with the default storage not even that while no
counter is over its limit (:class:`OverLimitFlag`: one ``stat``).

Storage: counters must be shared by every worker (``serve --workers``) and every gateway, so the in-memory
storage of ``limits`` (per process) is not the default. Without ``rateLimits.storage`` the counters live in
``<state-dir>/ratelimits.db`` through :class:`SQLiteStorage`, a storage registered with ``limits`` through its
public extension point (subclass ``limits.storage.Storage`` and name a ``STORAGE_SCHEME``), so every process and
gateway on one state dir shares them. It is a separate file from ``frontdoor.db`` on purpose: a burst of failures
writes counters without queueing on the token store's write lock, which bounds redemption throughput. Gateways
on different hosts (e.g. the Vault backend) point ``rateLimits.storage`` at a shared server (``redis://``,
``valkey://``, ``memcached://``, ``mongodb://`` — the storages ``limits`` ships; their client libraries are not
in this project's lock, so install the one you use).

A storage that fails (a Redis that is down) does not take redemptions down with it: the check lets the request
through and logs a warning at most once a minute. Guessing a 160-bit secret is not what the limit protects
against in the first place; it stops noise and keeps a broken client from hammering the gateway.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from typing import Callable, Iterable, List, Optional, Tuple

from frontdoor_pki.config import ConfigError, RateLimitPolicy
from frontdoor_pki.errors import FrontdoorError
from limits import RateLimitItem, parse
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger("frontdoor.gateway.ratelimit")

STATE_FILE = "ratelimits.db"
SQLITE_SCHEME = "frontdoor+sqlite"
_NAMESPACE = "frontdoor"

# limit names: the label of frontdoor_rate_limit_rejections_total and what the 429 message names
UNKNOWN_TOKEN_ADDRESS = "unknown_token_per_address"
UNKNOWN_TOKEN_FRONTDOOR = "unknown_token_per_frontdoor"
AUTH_FAILURES_ADDRESS = "auth_failures_per_address"


class SQLiteStorage(Storage):
    """A ``limits`` storage in one SQLite file: counters shared by every process that opens the file.

    URI: ``frontdoor+sqlite:///absolute/path/ratelimits.db``. One table of (key, count, expires_at); a window's
    counter is reset by the first ``incr`` after it expired, in the same statement (an UPSERT), so two processes
    incrementing at once never lose a count or open two windows. Each thread keeps its own connection (sqlite3
    connections are not shared between threads); WAL lets the reads of every attempt run beside a writer.
    Losing the last counts on a power cut is harmless, so commits are not fsynced (``synchronous=NORMAL``).
    """

    STORAGE_SCHEME = [SQLITE_SCHEME]
    _PURGE_EVERY = 256  # increments between removals of expired windows (increments happen only on failures)

    def __init__(self, uri: Optional[str] = None, wrap_exceptions: bool = False, **options) -> None:
        parsed = urllib.parse.urlparse(uri or "")
        if parsed.scheme != SQLITE_SCHEME or not parsed.path:
            raise ValueError("expected %s:///path/to/file.db, not %r" % (SQLITE_SCHEME, uri))
        self.path = urllib.parse.unquote(parsed.path)
        self.timeout = float(options.get("timeout", 5.0))
        self._local = threading.local()
        self._increments = 0
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, count INTEGER NOT NULL, "
                "expires_at REAL NOT NULL)"
            )
            self._local.conn = conn
        return conn

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        conn = self._conn()
        row = conn.execute(
            "INSERT INTO windows (key, count, expires_at) VALUES (:key, :amount, :now + :expiry) "
            "ON CONFLICT(key) DO UPDATE SET "
            "count = CASE WHEN expires_at <= :now THEN :amount ELSE count + :amount END, "
            "expires_at = CASE WHEN expires_at <= :now THEN :now + :expiry ELSE expires_at END "
            "RETURNING count",
            {"key": key, "amount": amount, "now": now, "expiry": expiry},
        ).fetchall()[0]
        self._increments += 1
        if self._increments % self._PURGE_EVERY == 0:
            conn.execute("DELETE FROM windows WHERE expires_at <= ?", (now,))
        return int(row[0])

    def get(self, key: str) -> int:
        row = self._conn().execute(
            "SELECT count FROM windows WHERE key = ? AND expires_at > ?", (key, time.time())
        ).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        row = self._conn().execute(
            "SELECT expires_at FROM windows WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return float(row[0]) if row else now

    def check(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> Optional[int]:
        return self._conn().execute("DELETE FROM windows").rowcount

    def clear(self, key: str) -> None:
        self._conn().execute("DELETE FROM windows WHERE key = ?", (key,))

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()


class OverLimitFlag:
    """A file whose modification time says when a counter last reached its limit.

    Why: reading the counters of every redemption attempt costs two SQLite reads, ~90 us of server CPU per
    redemption measured here (~6 %), almost always to learn that nothing is over. A key that reaches its limit
    stays over for at most its window, so while no key reached a limit within the longest window (``horizon``
    seconds) no check can fail, and one ``stat`` (~2 us) says so. Every process on the host sees a touch at
    once, so the checks stay exact across workers and gateways on the state dir; the only slack is the few
    microseconds between a counter reaching its limit and the touch. It only ever causes more checks, never
    fewer: if the file cannot be read, counters are read.
    """

    def __init__(self, path: str, horizon: float) -> None:
        self.path = path
        self.horizon = horizon
        self.broken = False

    def raised(self) -> bool:
        if self.broken:
            return True
        try:
            touched = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return time.time() - touched < self.horizon

    def raise_(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.utime(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the counters are still right; only the shortcut is lost
            log.warning("cannot touch %s (%s): rate limits are checked without the shortcut", self.path, exc)
            self.broken = True  # raised() now answers True: always check


def _without_password(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    if parsed.password:
        return uri.replace(parsed.password, "***")
    return uri


def address_key(address: Optional[str]) -> Optional[str]:
    """The identity an address is limited under: an IPv4 address, or the /64 of an IPv6 one (a single host
    usually holds a whole /64, so limiting single IPv6 addresses would limit nothing)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an IP (e.g. a test client's name): limit it as given
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


class RateLimits:
    """The gateway's limits on failed redemptions and failed admin authentications.

    ``check_*`` run before the work and raise ``FrontdoorError('rate_limited')`` with ``retry_after``;
    ``*_failed`` count one failure. ``on_reject(limit_name)`` is called for each 429 (metrics).
    """

    def __init__(
        self,
        policy: RateLimitPolicy,
        state_dir: str,
        frontdoor_ids: Iterable[str],
        on_reject: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.policy = policy
        uri = policy.storage or "%s://%s" % (SQLITE_SCHEME, urllib.parse.quote(os.path.join(state_dir, STATE_FILE)))
        try:
            self.storage = storage_from_string(uri, wrap_exceptions=True)
        except (ConfigurationError, ValueError) as exc:  # unknown scheme, client library not installed, bad URI
            password = urllib.parse.urlparse(uri).password
            why = str(exc).replace(password, "***") if password else str(exc)  # limits' message repeats the URI
            raise ConfigError("rateLimits.storage %s: %s" % (_without_password(uri), why)) from None
        self.uri = uri
        #: the storage answers from this machine (SQLite file, memory): cheap enough to ask from the event loop
        self.local = isinstance(self.storage, SQLiteStorage) or uri.startswith("memory://")
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.frontdoors = frozenset(frontdoor_ids)
        self.on_reject = on_reject
        self._per_address = parse(policy.unknown_token_per_address) if policy.unknown_token_per_address else None
        self._per_frontdoor = parse(policy.unknown_token_per_frontdoor) if policy.unknown_token_per_frontdoor else None
        self._auth = parse(policy.auth_failures_per_address) if policy.auth_failures_per_address else None
        self._warned_at = 0.0
        items = [i for i in (self._per_address, self._per_frontdoor, self._auth) if i is not None]
        #: with the state dir's SQLite storage, a flag file says whether any key went over within the longest
        #: window; while it does not, checks read no counter (network storages are always read)
        self._flag = None
        if isinstance(self.storage, SQLiteStorage) and items:
            self._flag = OverLimitFlag(self.storage.path + ".over", max(i.get_expiry() for i in items) + 1)

    @classmethod
    def from_config(cls, config, on_reject: Optional[Callable[[str], None]] = None) -> Optional[RateLimits]:
        """None when ``rateLimits.enabled`` is false or FRONTDOOR_RATE_LIMITS=off."""
        policy: RateLimitPolicy = config.rate_limits
        if not policy.enabled:
            return None
        return cls(policy, config.state_dir, [f.id for f in config.frontdoors], on_reject)

    # ------------------------------------------------------------------ redemptions
    def _redemption_limits(self, frontdoor_id: str, address: Optional[str]) -> List[Tuple[str, RateLimitItem, str]]:
        found = []
        key = address_key(address)
        if self._per_address is not None and key is not None:
            found.append((UNKNOWN_TOKEN_ADDRESS, self._per_address, "redeem-address:" + key))
        if self._per_frontdoor is not None and frontdoor_id in self.frontdoors:
            found.append((UNKNOWN_TOKEN_FRONTDOOR, self._per_frontdoor, "redeem-frontdoor:" + frontdoor_id))
        return found

    def check_redemption(self, frontdoor_id: str, address: Optional[str]) -> None:
        if self._flag is not None and not self._flag.raised():
            return  # nothing is over any limit: no counter to read
        for name, item, ident in self._redemption_limits(frontdoor_id, address):
            self._check(name, item, ident)

    def redemption_failed(self, frontdoor_id: str, address: Optional[str]) -> None:
        """An unknown secret (``token_not_found``): count it against the address and the frontdoor."""
        for _name, item, ident in self._redemption_limits(frontdoor_id, address):
            self._hit(item, ident)

    # ------------------------------------------------------------------ admin authentication
    def check_auth(self, address: Optional[str]) -> None:
        if self._flag is not None and not self._flag.raised():
            return
        key = address_key(address)
        if self._auth is not None and key is not None:
            self._check(AUTH_FAILURES_ADDRESS, self._auth, "auth-address:" + key)

    def auth_failed(self, address: Optional[str]) -> None:
        key = address_key(address)
        if self._auth is not None and key is not None:
            self._hit(self._auth, "auth-address:" + key)

    # ------------------------------------------------------------------ the library
    def _check(self, name: str, item: RateLimitItem, ident: str) -> None:
        try:
            if self.limiter.test(item, _NAMESPACE, ident):
                return
            reset_at = self.limiter.get_window_stats(item, _NAMESPACE, ident).reset_time
        except StorageError as exc:
            self._storage_failed(exc)
            return
        if self.on_reject is not None:
            self.on_reject(name)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        what = "unknown token secrets" if name != AUTH_FAILURES_ADDRESS else "invalid bearer tokens"
        scope = "all addresses on this frontdoor" if name == UNKNOWN_TOKEN_FRONTDOOR else "your address"
        raise FrontdoorError(
            "rate_limited",
            "Too many attempts with %s from %s (at most %s); try again in %d s." % (what, scope, item, retry_after),
            retry_after=retry_after,
        )

    def _hit(self, item: RateLimitItem, ident: str) -> None:
        try:
            self.limiter.hit(item, _NAMESPACE, ident)
            if self._flag is not None and not self.limiter.test(item, _NAMESPACE, ident):
                self._flag.raise_()  # this key is now over: every process checks counters again
        except StorageError as exc:
            self._storage_failed(exc)

    def _storage_failed(self, exc: StorageError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("rate-limit storage failed (%s); requests are let through unlimited until it answers",
                        type(getattr(exc, "storage_error", exc)).__name__)

    def close(self) -> None:
        if isinstance(self.storage, SQLiteStorage):
            self.storage.close()


REDEEM_PATH = re.compile(r"^/frontdoor/([^/]+)/client-certificates/token/[^/]+$")
# Endpoints that authenticate nobody: a header sent there is ignored, so it is neither checked nor counted (and
# the OpenAPI document promises no 429 for them). Redemption has its own limit.
PUBLIC_PATH = re.compile(r"^/frontdoor/[^/]+/(ca|crl|client-certificates/token/[^/]+)$")


async def _storage_call(limits: RateLimits, fn: Callable, *args) -> None:
    """Local storages (a SQLite primary-key read) answer on the event loop; network ones in a worker thread."""
    if limits.local:
        fn(*args)
    else:
        import anyio

        await anyio.to_thread.run_sync(fn, *args)


async def _refuse(exc: FrontdoorError, scope, receive, send) -> None:
    from starlette.responses import JSONResponse

    answer = JSONResponse(exc.to_dict(), status_code=exc.status, headers={"Retry-After": str(exc.retry_after)})
    await answer(scope, receive, send)


def _authenticated_path(path: str) -> bool:
    """The admin API, renewal and /metrics: where a bearer credential is judged (ACME has its own JWS)."""
    return (path.startswith("/frontdoor/") or path == "/metrics") and not PUBLIC_PATH.match(path)


class RedemptionLimit:
    """ASGI middleware: an address (or frontdoor) over its unknown-secret limit gets ``429 rate_limited`` for
    every redemption attempt, before the body is read or validated, so no kind of attempt gets through.
    The failures themselves are counted by the route, which knows the engine's answer (``token_not_found``)."""

    def __init__(self, app, limits: RateLimits, address_of: Callable) -> None:
        self.app = app
        self.limits = limits
        self.address_of = address_of

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = REDEEM_PATH.match(scope["path"])
            if match is not None:
                try:
                    await _storage_call(self.limits, self.limits.check_redemption, match.group(1),
                                        self.address_of(scope))
                except FrontdoorError as exc:
                    return await _refuse(exc, scope, receive, send)
        return await self.app(scope, receive, send)


class AuthFailureLimit:
    """ASGI middleware: limits admin authentication failures per client address.

    A request carrying an ``Authorization`` header from an address over the limit gets ``429 rate_limited``
    without reaching the routes; a ``401`` answer to a request that carried one counts a failure. Requests
    without the header are neither checked nor counted: they cannot guess a token (and get 401 anyway), and
    only the paths that judge a bearer credential are limited (``_authenticated_path``: the admin API, renewal,
    /metrics); the public ones (redemption, CA chain, CRL, health, the API document, ACME) ignore the header.
    """

    def __init__(self, app, limits: RateLimits, address_of: Callable) -> None:
        self.app = app
        self.limits = limits
        self.address_of = address_of

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or not _authenticated_path(scope["path"])
                or not any(name == b"authorization" for name, _ in scope.get("headers", ()))):
            return await self.app(scope, receive, send)
        address = self.address_of(scope)
        try:
            await _storage_call(self.limits, self.limits.check_auth, address)
        except FrontdoorError as exc:
            return await _refuse(exc, scope, receive, send)
        async def counting_send(message) -> None:
            # counted before the 401 leaves: a client that retries at once must find the count already there
            if message["type"] == "http.response.start" and message["status"] == 401:
                await _storage_call(self.limits, self.limits.auth_failed, address)
            await send(message)

        await self.app(scope, receive, counting_send)
