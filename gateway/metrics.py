"""Prometheus metrics with the official ``prometheus_client``: what the gateway counts and how it is served.

Metrics (docs/operations.md, "Metrics", says what each one means):

- ``frontdoor_redemptions_total{frontdoor,outcome}``: outcome ``issued``, ``replayed`` or the error code;
- ``frontdoor_redemption_duration_seconds{frontdoor,result}``: histogram, result issued / replayed / refused;
- ``frontdoor_store_call_duration_seconds{backend,operation}`` and ``frontdoor_store_call_errors_total{...,error}``;
- ``frontdoor_signer_call_duration_seconds{backend,operation}`` and ``frontdoor_signer_call_errors_total``;
- ``frontdoor_renewals_total{frontdoor,outcome}``: renewals with the current certificate, outcome as above;
- ``frontdoor_rate_limit_rejections_total{limit}``;
- ``frontdoor_tokens{frontdoor,status}``: tokens by status, counted from the store at scrape time (cached).

The rules know nothing of this: the gateway wraps the service's store and signers in :class:`Instrumented`
proxies, and a small ASGI middleware (:class:`RedemptionMetrics`) observes each redemption's answer.

Several workers (``serve --workers N``) are separate processes, so ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
to a private directory under the state dir, emptied at start, before any worker imports ``prometheus_client``
(which picks its value class at import); a scrape then merges every worker's files through
``MultiProcessCollector``. With one worker, the process's own registry is used.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from frontdoor_pki.errors import ERROR_STATUS, FrontdoorError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("frontdoor.gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
TOKEN_STATUSES = ("active", "expired", "redeemed")
#: how long a scrape reuses the token counts: counting is a query per frontdoor and status
TOKENS_CACHE_SECONDS = 15.0
UNKNOWN_FRONTDOOR = "_unknown"

# No *_created series: the multi-process mode has none, and one worker or several should expose the same names.
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REDEMPTIONS = Counter(
    "frontdoor_redemptions", "Redemption attempts by frontdoor and outcome (issued, replayed, or the error code).",
    ["frontdoor", "outcome"],
)
REDEMPTION_SECONDS = Histogram(
    "frontdoor_redemption_duration_seconds",
    "Time from a redemption request's arrival to its answer (result: issued, replayed or refused).",
    ["frontdoor", "result"], buckets=_LATENCY_BUCKETS,
)
STORE_SECONDS = Histogram(
    "frontdoor_store_call_duration_seconds", "Token store calls by backend and operation.",
    ["backend", "operation"], buckets=_LATENCY_BUCKETS,
)
STORE_ERRORS = Counter(
    "frontdoor_store_call_errors", "Token store calls that raised, by backend, operation and error.",
    ["backend", "operation", "error"],
)
SIGNER_SECONDS = Histogram(
    "frontdoor_signer_call_duration_seconds", "Signer calls by backend and operation.",
    ["backend", "operation"], buckets=_LATENCY_BUCKETS,
)
SIGNER_ERRORS = Counter(
    "frontdoor_signer_call_errors", "Signer calls that raised, by backend, operation and error.",
    ["backend", "operation", "error"],
)
RENEWALS = Counter(
    "frontdoor_renewals",
    "Renewals with the current certificate by frontdoor and outcome (issued, replayed, or the error code).",
    ["frontdoor", "outcome"],
)
RATE_LIMIT_REJECTIONS = Counter(
    "frontdoor_rate_limit_rejections", "Requests answered 429 rate_limited, by the limit that was over.", ["limit"],
)


def rate_limited(limit_name: str) -> None:
    """``RateLimits.on_reject``."""
    RATE_LIMIT_REJECTIONS.labels(limit_name).inc()


# ---------------------------------------------------------------------- store and signer proxies
class Instrumented:
    """Wraps a store or signer: each public method call is timed, and each exception counted, by backend.

    Attributes that are not methods (``signer.kind``) pass through. The timed wrapper of a method is made on
    first use and kept in the proxy's ``__dict__``, so later calls cost one dict lookup, two clock reads and a
    histogram observation. ``ignore`` lists error codes that are answers, not failures (``not_supported``).
    """

    def __init__(self, target: Any, backend: str, duration: Histogram, failures: Counter,
                 ignore: Iterable[str] = ("not_supported",)) -> None:
        self._target = target
        self._backend = backend
        self._duration = duration
        self._failures = failures
        self._ignore = frozenset(ignore)

    def __getattr__(self, name: str) -> Any:
        if name == "_target":  # not set yet (copy, pickle): no recursion through __getattr__
            raise AttributeError(name)
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value
        timed = self._timed(name, value)
        self.__dict__[name] = timed
        return timed

    def _timed(self, operation: str, method: Callable) -> Callable:
        observe = self._duration.labels(self._backend, operation).observe
        failures, backend, ignore = self._failures, self._backend, self._ignore
        clock = time.perf_counter

        def call(*args, **kwargs):
            start = clock()
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                error = exc.code if isinstance(exc, FrontdoorError) else type(exc).__name__
                if error not in ignore:
                    failures.labels(backend, operation, error).inc()
                raise
            finally:
                observe(clock() - start)

        call.__name__ = operation
        call.__doc__ = method.__doc__
        return call

    def __repr__(self) -> str:
        return "Instrumented(%r)" % (self._target,)


def store_backend(store: Any) -> str:
    return {"SQLiteStore": "sqlite", "VaultKVStore": "vault-kv"}.get(type(store).__name__, type(store).__name__)


def instrument(service) -> Any:
    """Put the proxies around ``service.store`` and each of ``service.signers``; returns the raw store."""
    raw_store = service.store
    if not isinstance(raw_store, Instrumented):
        service.store = Instrumented(raw_store, store_backend(raw_store), STORE_SECONDS, STORE_ERRORS)
    else:
        raw_store = raw_store._target
    for frontdoor_id, signer in list(service.signers.items()):
        if not isinstance(signer, Instrumented):
            service.signers[frontdoor_id] = Instrumented(
                signer, getattr(signer, "kind", type(signer).__name__), SIGNER_SECONDS, SIGNER_ERRORS
            )
    return raw_store


# ---------------------------------------------------------------------- redemptions
_REDEEM_PATH = re.compile(r"^/frontdoor/([^/]+)/client-certificates/token/[^/]+$")
_RENEW_PATH = re.compile(r"^/frontdoor/([^/]+)/client-certificates/renew$")


class RedemptionMetrics:
    """ASGI middleware: counts each redemption by outcome and times it, from arrival to answer.

    The outcome is read from the answer, so every path counts the same way, including the ones the route never
    sees (a body over the limit, a validation error, a rate-limit 429): 201 is ``issued``, 200 ``replayed``, any
    other status the ``error.code`` of the body (only error bodies, a few hundred bytes, are kept and parsed).
    """

    def __init__(self, app, frontdoors: Iterable[str]) -> None:
        self.app = app
        self.frontdoors = frozenset(frontdoors)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = _REDEEM_PATH.match(scope["path"])
        renewal = match is None and _RENEW_PATH.match(scope["path"])
        if renewal:
            match = renewal
        if match is None:
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        error_body: List[bytes] = []

        async def observing_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status >= 400 and message["type"] == "http.response.body" and len(error_body) < 8:
                error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            frontdoor = match.group(1) if match.group(1) in self.frontdoors else UNKNOWN_FRONTDOOR
            outcome = _outcome(status, b"".join(error_body))
            result = outcome if outcome in ("issued", "replayed") else "refused"
            if renewal:  # renewals are counted apart, and not timed with redemptions
                RENEWALS.labels(frontdoor, outcome).inc()
            else:
                REDEMPTIONS.labels(frontdoor, outcome).inc()
                REDEMPTION_SECONDS.labels(frontdoor, result).observe(time.perf_counter() - start)


def _outcome(status: int, body: bytes) -> str:
    if status == 201:
        return "issued"
    if status == 200:
        return "replayed"
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return code if code in ERROR_STATUS else "internal_error"


# ---------------------------------------------------------------------- tokens by status
class TokenStatusCollector:
    """``frontdoor_tokens{frontdoor,status}`` counted from the store when scraped, at most every
    ``max_age`` seconds (a scrape in between gets the last counts). A store that fails leaves the gauge out of
    that scrape rather than failing it."""

    def __init__(self, store: Any, frontdoor_ids: Iterable[str], clock: Callable, max_age: float = TOKENS_CACHE_SECONDS):
        self.store = store
        self.frontdoor_ids = list(frontdoor_ids)
        self.clock = clock
        self.max_age = max_age
        self._lock = threading.Lock()
        self._counted_at = float("-inf")
        self._counts: Dict[Tuple[str, str], int] = {}

    def _count(self) -> Dict[Tuple[str, str], int]:
        now = self.clock()
        counts = {}
        for frontdoor_id in self.frontdoor_ids:
            for status in TOKEN_STATUSES:
                page = self.store.list_tokens(frontdoor_id, now=now, statuses=[status], page=0, size=1)
                counts[(frontdoor_id, status)] = page.total
        return counts

    def collect(self):
        with self._lock:
            if time.monotonic() - self._counted_at >= self.max_age:
                try:
                    self._counts = self._count()
                    self._counted_at = time.monotonic()
                except Exception:  # noqa: BLE001 - a scrape must not fail because the store is down
                    log.warning("counting tokens for metrics failed", exc_info=True)
                    return
            counts = dict(self._counts)
        family = GaugeMetricFamily("frontdoor_tokens", "Tokens by frontdoor and status (counted from the store).",
                                   labels=["frontdoor", "status"])
        for (frontdoor_id, status), value in sorted(counts.items()):
            family.add_metric([frontdoor_id, status], value)
        yield family


def multiprocess_dir() -> Optional[str]:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def registry_with(extra: Iterable[Any] = ()) -> CollectorRegistry:
    """The registry a scrape reads: every worker's files (multi-process mode) or this process's metrics,
    plus ``extra`` collectors."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = _ProcessRegistry()
    for collector in extra:
        registry.register(collector)
    return registry


class _ProcessRegistry(CollectorRegistry):
    """This process's default registry (process, GC and our metrics) plus collectors of its own."""

    def collect(self):
        yield from REGISTRY.collect()
        yield from super().collect()


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# ---------------------------------------------------------------------- multi-process bookkeeping
def prepare_multiprocess_dir(state_dir: str, host: str, port: int, pid: Optional[int] = None) -> str:
    """A new, empty, private directory for this server's workers: ``<state-dir>/metrics/<hostname>-<host>-<port>-<pid>``
    (``pid``: the serving process, this one by default).

    One per server process: two gateways may share a state dir, and a second ``serve`` started by mistake on a
    port in use must not empty the running one's files before it fails to bind. Directories of this host's
    earlier servers whose process is gone are removed, so counters begin at zero with each server and nothing
    piles up; other hosts' directories (a state dir on shared storage) are left alone."""
    hostname = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    pid = os.getpid() if pid is None else pid
    root = os.path.join(state_dir, "metrics")
    os.makedirs(root, mode=0o700, exist_ok=True)
    for name in os.listdir(root):
        owner = name.rsplit("-", 1)[-1]
        if name.startswith(hostname + "-") and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = os.path.join(root, "%s-%s-%d-%d" % (hostname, re.sub(r"[^A-Za-z0-9_.]", "_", host), port, pid))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def mark_dead_workers(path: Optional[str] = None) -> List[int]:
    """``multiprocess.mark_process_dead`` for every process that left files in ``path`` and is gone (a worker
    that was killed and replaced never ran its own shutdown). Returns those pids."""
    path = path or multiprocess_dir()
    if not path:
        return []
    from prometheus_client import multiprocess

    dead = []
    for pid in sorted({_pid_of(name) for name in glob.glob(os.path.join(path, "*.db"))} - {None}):
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)
            dead.append(pid)
    return dead


def _pid_of(filename: str) -> Optional[int]:
    stem = os.path.basename(filename)[:-3]
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def worker_started() -> None:
    mark_dead_workers()


def worker_stopping() -> None:
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path)


def start_metrics_server(address: str, registry: CollectorRegistry, tls_files: Optional[Tuple[str, str]] = None,
                         tls_minimum: str = "1.2") -> Tuple[str, int]:
    """``prometheus_client.start_http_server`` on HOST:PORT, HTTPS with ``tls_files`` (certificate, key) and
    ``tls_minimum`` ("1.2" or "1.3") as the floor, as the API port; returns the bound (host, port)."""
    from prometheus_client import start_http_server

    from .tls import MIN_VERSIONS

    host, port = parse_address(address)
    tls = {}
    if tls_files:
        tls = dict(certfile=tls_files[0], keyfile=tls_files[1], tls_min_version=MIN_VERSIONS[tls_minimum])
    server, _thread = start_http_server(port, addr=host, registry=registry, **tls)
    return host, server.server_port


def parse_address(address: str) -> Tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT."""
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("--metrics-address must be HOST:PORT (e.g. 127.0.0.1:9102), not %r" % (address,))
    return host, int(port)
