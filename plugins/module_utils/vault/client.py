# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One pooled Vault client per gateway process, and the mapping of Vault failures to our errors.

Why one client: the redemption path makes four Vault round trips (KV read, claim CAS,
pki/sign, record CAS); a fresh TCP (and TLS) handshake for each would cost more than the
requests themselves. The store and every Vault signer of a process share one client.

Why two transports: hvac on a ``requests.Session`` costs ~0.5 ms of Python CPU per Vault
request (request preparation, header merging, cookie extraction, hooks), as much as OpenBao
spends answering a KV read, and the gateway shares the machine's cores with everything else.
The redemption hot path (KV read, KV check-and-set write, ``pki/sign``) therefore goes over
:class:`_LeanTransport`: keep-alive sockets in a small pool and a minimal HTTP/1.1 reader
(~0.05 ms per request; ``http.client`` ~0.15 ms), with the *same* semantics as the requests path: same headers (token,
namespace, ``X-Vault-Request``), same TLS verification (``vault.verify`` / ``caCert``, else
requests' CA bundle), same timeout, failed connects retried twice (the request never left),
a read resent once on a keep-alive connection the server had just closed and a write never,
and HTTP errors raised as the very hvac exceptions hvac would raise, so callers' handling
(404, CAS mismatch, 403 re-login) is shared. The PKI signer's role creation and CA chain
read go the same way, so a gateway with that signer and a SQLite store never loads hvac or
requests at all (see ``_LazyModule``: ~5 MB per process). Everything else (admin paths,
AppRole login, listing, deletes, revocation, CRL) stays on hvac. The lean transport stands aside when a proxy
applies to the Vault URL (the lean transport does not do proxies) and when requests' stock
``HTTPAdapter.send`` has been replaced (a test double or instrumentation that must see every
request); a redirect answer is re-sent through requests, which follows it as before.

Why the mapping lives here: hvac raises its own exceptions (and requests its own for the
network); the service only understands ``FrontdoorError``. A store failure must become
``StoreUnavailable`` and a signer failure ``SignerUnavailable`` so that the service releases
the claim and the token stays redeemable. Messages name the Vault address and what to check,
never the Vault token or AppRole secret.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import select
import socket
import ssl
import sys
import threading
import time
import types
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from ..errors import FrontdoorError, SignerUnavailable, StoreUnavailable


class _LazyModule:
    """A module imported on first attribute access.

    Why: hvac and requests (with urllib3, idna, charset_normalizer) cost ~5 MB of memory in every
    gateway process, and a gateway whose Vault requests all go over the lean transport (the PKI
    signer beside a SQLite store: sign, role creation, CA chain) never needs them, unless a
    request fails or takes another path (AppRole login, revocation, CRL, a proxy, a test double
    on requests' transport). ``except hvac_exc.X`` clauses are only evaluated while an exception
    is being handled, so they import hvac then and not before. Importing here rather than at
    the top also keeps Ansible's import sanity test (module_utils without third-party packages)
    quiet; the modules report a missing hvac with missing_required_lib (ansible_common).
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return "<lazy module %s>" % self._name


hvac = _LazyModule("hvac")
hvac_exc = _LazyModule("hvac.exceptions")
hvac_utils = _LazyModule("hvac.utils")
hvac_adapters = _LazyModule("hvac.adapters")
requests = _LazyModule("requests")
urllib3_exc = _LazyModule("urllib3.exceptions")


def _requests_transport_is_stock() -> bool:
    """Whether requests' ``HTTPAdapter.send`` is still requests' own function: if something replaced
    it (``responses``, instrumentation), hot-path requests go through requests so that the
    replacement sees every request. Not imported at all means not replaced."""
    adapters = sys.modules.get("requests.adapters")
    if adapters is None:
        return True
    send = getattr(adapters.HTTPAdapter, "send", None)
    # a mock, or a wrapper (a wrapt proxy passes isinstance checks but has __wrapped__)
    if not isinstance(send, types.FunctionType) or hasattr(send, "__wrapped__"):
        return False
    code = send.__code__
    return code.co_name == "send" and code.co_filename.endswith(os.path.join("requests", "adapters.py"))


def _environ_proxies(url: str) -> Dict[str, str]:
    """requests' proxies for ``url`` from the environment; without any ``*_proxy`` variable that is
    nothing, and requests need not be imported to say so."""
    if not urllib.request.getproxies():
        return {}
    return dict(requests.utils.get_environ_proxies(url) or {})


DEFAULT_URL = "http://127.0.0.1:8200"
DEFAULT_TIMEOUT = 10.0
DEFAULT_KV_MOUNT = "secret"
DEFAULT_KV_PREFIX = "frontdoor"
DEFAULT_PKI_MOUNT = "pki"
POOL_MAXSIZE = 64  # connections kept per host: more than the gateway's worker threads (anyio: 40)

_CAS_MISMATCH = "check-and-set parameter did not match"
_CONNECT_RETRIES = 2  # as the requests path's Retry(connect=2): a failed connect never sent anything
_REDIRECTS = (301, 302, 303, 307, 308)

T = TypeVar("T")


class VaultSettings:
    """The ``vault`` config mapping, validated, with defaults applied."""

    def __init__(self, vault: Mapping[str, Any]):
        vault = dict(vault or {})
        known = {"url", "token", "authMethod", "roleId", "secretId", "namespace", "caCert", "verify", "timeout",
                 "kvMount", "kvPrefix", "pkiMount", "approleMount"}
        unknown = {k for k, v in vault.items() if k not in known and v is not None}
        if unknown:
            raise FrontdoorError(
                "invalid_request",
                "Unknown vault configuration key(s): %s (known: %s)." % (", ".join(sorted(unknown)), ", ".join(sorted(known))),
            )
        self.url = str(vault.get("url") or DEFAULT_URL).rstrip("/")
        self.token = vault.get("token") or None
        self.auth_method = str(vault.get("authMethod") or ("approle" if vault.get("roleId") else "token")).lower()
        if self.auth_method not in ("token", "approle"):
            raise FrontdoorError("invalid_request", "vault.authMethod must be 'token' or 'approle'.")
        self.role_id = vault.get("roleId") or None
        self.secret_id = vault.get("secretId") or None
        self.approle_mount = str(vault.get("approleMount") or "approle").strip("/")
        if self.auth_method == "approle" and not self.role_id:
            raise FrontdoorError("invalid_request", "vault.authMethod approle needs vault.roleId (and usually secretId).")
        if self.auth_method == "token" and not self.token:
            raise FrontdoorError(
                "invalid_request",
                "No Vault token: set VAULT_TOKEN (or BAO_TOKEN), vault.token in the config file, or use AppRole "
                "(vault.authMethod: approle with roleId/secretId).",
            )
        self.namespace = vault.get("namespace") or None
        verify = vault.get("verify", True)
        if isinstance(verify, str):
            verify = verify.strip().lower() not in ("0", "false", "no", "off")
        ca_cert = vault.get("caCert") or None
        self.verify: Any = ca_cert if (ca_cert and verify) else bool(verify)
        try:
            self.timeout = float(vault.get("timeout") or DEFAULT_TIMEOUT)
        except (TypeError, ValueError):
            raise FrontdoorError("invalid_request", "vault.timeout (FRONTDOOR_VAULT_TIMEOUT) must be a number of seconds.")
        if not 0 < self.timeout <= 600:
            raise FrontdoorError("invalid_request", "vault.timeout must be between 0 and 600 seconds.")
        self.kv_mount = str(vault.get("kvMount") or DEFAULT_KV_MOUNT).strip("/")
        self.kv_prefix = str(vault.get("kvPrefix") or DEFAULT_KV_PREFIX).strip("/")
        self.pki_mount = str(vault.get("pkiMount") or DEFAULT_PKI_MOUNT).strip("/")

    def identity(self) -> Tuple:
        """What makes two configs share a client: same server, same credentials (hashed), same TLS."""
        secret = "%s|%s|%s" % (self.token, self.role_id, self.secret_id)
        return (self.url, self.namespace, self.auth_method, hashlib.sha256(secret.encode()).hexdigest(),
                str(self.verify), self.timeout, self.approle_mount)


class _NetworkFailure(Exception):
    """A lean-transport request that got no HTTP answer (mapped like requests' exceptions)."""

    def __init__(self, name: str, timed_out: bool = False, tls: bool = False, dropped: bool = False):
        super().__init__(name)
        self.name = name  # shown in the message, like type(requests exception).__name__ today
        self.timed_out = timed_out
        self.tls = tls
        self.dropped = dropped  # the connection was closed without an answer


class _Redirected(Exception):
    """Vault answered with a redirect (e.g. a standby that does not forward): let requests follow it."""


class _Connection:
    """One keep-alive connection: the socket and a buffered reader over it (no pipelining)."""

    __slots__ = ("sock", "rfile")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def close(self) -> None:
        for closer in (self.rfile.close, self.sock.close):
            try:
                closer()
            except OSError:
                pass


class _LeanTransport:
    """Keep-alive HTTP/1.1 connections to one Vault, pooled across threads.

    A connection is taken from the pool for one request and put back afterwards, so any
    number of threads share a few connections (at most ``POOL_MAXSIZE`` idle ones are kept).
    Every failure closes the connection it happened on. The request goes out in one send
    (head and body together, TCP_NODELAY), and the answer is read with a small HTTP/1.1
    reader (status line, Content-Length or chunked body, Connection: close): ``http.client``
    parses every header block with the ``email`` package, ~0.1 ms per request.
    """

    def __init__(self, settings: VaultSettings):
        parts = urllib.parse.urlsplit(settings.url)
        self.settings = settings
        self.https = parts.scheme == "https"
        try:
            port = parts.port
        except ValueError:  # not a port number: requests reports it on the first request, as before
            port = None
            self.usable = False
        else:
            self.usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        self.host = parts.hostname or ""
        self.port = port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self._idle: List[_Connection] = []
        self._lock = threading.Lock()
        self._context: Optional[ssl.SSLContext] = None
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            verify = self.settings.verify
            if verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif isinstance(verify, str) and os.path.isdir(verify):
                context = ssl.create_default_context(capath=verify)
            else:
                # requests' default bundle (certifi) when verify is True, as the requests path uses
                context = ssl.create_default_context(
                    cafile=verify if isinstance(verify, str) else requests.certs.where())
            self._context = context
        return self._context

    def _take(self) -> Optional[_Connection]:
        """A pooled connection, or None. One the server has closed meanwhile is dropped here."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return None
            try:
                readable = select.select([conn.sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [conn.sock]
            if not readable:  # an idle keep-alive connection has nothing to read unless it was closed
                return conn
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < POOL_MAXSIZE:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Connection:
        """A new connection, retrying a failed connect as the requests path does (nothing was sent)."""
        timeout = self.settings.timeout
        if self.https:
            try:
                self._ssl_context()
            except (OSError, ssl.SSLError) as exc:  # e.g. vault.caCert names a file that is not there
                raise _NetworkFailure("SSLError", tls=True) from exc
        for attempt in range(_CONNECT_RETRIES + 1):
            sock = None
            try:
                sock = socket.create_connection((self.host, self.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.https:
                    sock = self._ssl_context().wrap_socket(sock, server_hostname=self.host)
                return _Connection(sock)
            except ssl.SSLError as exc:
                _close_quietly(sock)
                raise _NetworkFailure("SSLError", tls=True) from exc
            except (socket.timeout, TimeoutError) as exc:
                _close_quietly(sock)
                if attempt >= _CONNECT_RETRIES:
                    raise _NetworkFailure("ConnectTimeout", timed_out=True) from exc
            except OSError as exc:  # refused, unreachable, name resolution
                _close_quietly(sock)
                if attempt >= _CONNECT_RETRIES:
                    raise _NetworkFailure("ConnectionError") from exc
            if attempt:  # urllib3's backoff: none before the first retry, then 0.05 * 2 ** n
                time.sleep(0.05 * (2 ** attempt))
        raise _NetworkFailure("ConnectionError")  # pragma: no cover - the loop returns or raises

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]], headers: Dict[str, str]
                ) -> Tuple[int, Optional[str], bytes]:
        """(status, content type, body) of one request; raises _NetworkFailure when nothing came back."""
        lines = ["%s %s%s HTTP/1.1" % (method, self.base, path), "Host: " + self.host_header]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise _NetworkFailure("InvalidHeader")  # never put a line break of a token on the wire
            lines.append("%s: %s" % (name, value))
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            lines.append("Content-Type: application/json")
            lines.append("Content-Length: %d" % len(payload))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        conn = self._take() or self._connect()
        try:
            conn.sock.sendall(data)
            status, content_type, answer, close = _read_response(conn.rfile, method)
        except (socket.timeout, TimeoutError) as exc:
            conn.close()
            raise _NetworkFailure("ReadTimeout", timed_out=True) from exc
        except ssl.SSLError as exc:
            conn.close()
            raise _NetworkFailure("SSLError", tls=True) from exc
        except (OSError, ValueError, _ProtocolError) as exc:
            # closed without an answer, reset, broken pipe, a truncated or garbled answer (requests:
            # "Connection aborted"): a read may be resent once, a write never
            conn.close()
            raise _NetworkFailure("ConnectionError", dropped=True) from exc
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            self._give_back(conn)
        return status, content_type, answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as we know it (or it closed the connection midway)."""


_LINE_MAX = 65536
_HEADERS_MAX = 100
_BODY_MAX = 64 * 1024 * 1024  # far above any KV value or certificate; bounds what a broken peer can make us hold


def _readline(rfile) -> bytes:
    line = rfile.readline(_LINE_MAX + 1)
    if len(line) > _LINE_MAX:
        raise _ProtocolError("line too long")
    return line


def _read_response(rfile, method: str) -> Tuple[int, Optional[str], bytes, bool]:
    """(status, content type, body, server will close) of one HTTP/1.x answer."""
    for _informational in range(10):  # skip 1xx answers (we never ask for 100-continue)
        line = _readline(rfile)
        if not line:
            raise _ProtocolError("closed without an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise _ProtocolError("not an HTTP/1.x status line")
        status = int(parts[1])
        length: Optional[int] = None
        chunked = False
        connection = b""
        content_type: Optional[str] = None
        for _header in range(_HEADERS_MAX + 1):
            header = _readline(rfile)
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                raise _ProtocolError("closed inside the headers")
            name, sep, value = header.partition(b":")
            if not sep:
                raise _ProtocolError("malformed header line")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
                if length < 0:
                    raise _ProtocolError("negative Content-Length")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                connection = value.strip().lower()
            elif name == b"content-type":
                content_type = value.strip().decode("latin-1")
        else:
            raise _ProtocolError("too many headers")
        if 100 <= status < 200:
            continue
        close = connection == b"close" or (parts[0] == b"HTTP/1.0" and connection != b"keep-alive")
        if method == "HEAD" or status in (204, 304):
            return status, content_type, b"", close
        if chunked:
            return status, content_type, _read_chunked(rfile), close
        if length is None:  # delimited by the end of the connection
            body = rfile.read(_BODY_MAX + 1)
            if len(body) > _BODY_MAX:
                raise _ProtocolError("answer too large")
            return status, content_type, body, True
        if length > _BODY_MAX:
            raise _ProtocolError("answer too large")
        body = rfile.read(length)
        if len(body) != length:
            raise _ProtocolError("answer shorter than its Content-Length")
        return status, content_type, body, close
    raise _ProtocolError("too many informational answers")


def _read_chunked(rfile) -> bytes:
    parts: List[bytes] = []
    total = 0
    while True:
        line = _readline(rfile)
        if not line:
            raise _ProtocolError("closed inside a chunked answer")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            for _trailer in range(_HEADERS_MAX + 1):
                trailer = _readline(rfile)
                if trailer in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
            raise _ProtocolError("too many trailers")
        total += size
        if total > _BODY_MAX:
            raise _ProtocolError("answer too large")
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise _ProtocolError("closed inside a chunk")
        parts.append(chunk)
        if _readline(rfile) not in (b"\r\n", b"\n"):
            raise _ProtocolError("chunk without its line end")


def _close_quietly(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class VaultClient:
    """An hvac.Client on a pooled session, with AppRole re-login and a request counter."""

    def __init__(self, settings: VaultSettings, session: Optional[requests.Session] = None):
        self.settings = settings
        # requests re-reads proxy variables and ~/.netrc on *every* request when trust_env is on
        # (~0.7 ms here, as much as a KV read); read the proxies once instead. CA bundles come from
        # vault.caCert / VAULT_CACERT, not REQUESTS_CA_BUNDLE.
        self._proxies = _environ_proxies(settings.url)
        self._given_session = session
        self._session = None  # requests' session and hvac's client: made on first use (see _LazyModule)
        self._hvac = None
        self._make_lock = threading.Lock()
        self.requests = 0  # Vault requests sent by this client (round-trip accounting for the bench)
        self._count_lock = threading.Lock()
        self._login_lock = threading.Lock()
        self._refs = 0
        self._token = settings.token if settings.auth_method == "token" else None
        self._logged_in = settings.auth_method == "token"
        self._lean = _LeanTransport(settings)

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            with self._make_lock:
                if self._session is None:
                    self._session = self._make_session()
        return self._session

    def _make_session(self) -> requests.Session:
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        session = self._given_session or requests.Session()
        session.trust_env = False
        # hvac takes verify/proxies from a session it is given (and ignores its own arguments then)
        session.verify = self.settings.verify
        session.proxies = dict(self._proxies)
        # Retry only failed *connects* (the request never left): a retried write whose first
        # attempt reached Vault could turn our own successful CAS into a reported conflict.
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.05,
                      raise_on_status=False)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_MAXSIZE, max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks.setdefault("response", []).append(self._count)
        return session

    @property
    def hvac(self) -> hvac.Client:
        if self._hvac is None:
            session = self.session
            with self._make_lock:
                if self._hvac is None:
                    settings = self.settings
                    self._hvac = hvac.Client(
                        url=settings.url,
                        token=self._token,
                        verify=settings.verify,
                        timeout=settings.timeout,
                        session=session,
                        namespace=settings.namespace,
                        proxies=self._proxies or None,
                    )
        return self._hvac

    def _count(self, response, *args, **kwargs):
        with self._count_lock:
            self.requests += 1
        return response

    def lean_usable(self) -> bool:
        """Whether hot-path requests go over the lean transport (see the module docstring)."""
        return self._lean.usable and not self._proxies and _requests_transport_is_stock()

    def _fast(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> Any:
        """One request on the lean transport, answered as hvac's JSONAdapter would answer it."""
        headers = {"X-Vault-Request": "true"}
        token = self._hvac.token if self._hvac is not None else self._token
        if token:
            headers["X-Vault-Token"] = token
        if self.settings.namespace:
            headers["X-Vault-Namespace"] = self.settings.namespace
        status, content_type, data = self._lean.request(method, path, body, headers)
        self._count(None)
        if status in _REDIRECTS:
            raise _Redirected()
        if status >= 400:
            _raise_like_hvac(method, self.settings.url + path, status, content_type, data)
        if status == 200:
            try:
                return json.loads(data)
            except ValueError:
                return None
        return None

    # -- auth ------------------------------------------------------------------
    def _login(self, kind: Type[FrontdoorError]) -> None:
        with self._login_lock:
            try:
                self.hvac.auth.approle.login(
                    role_id=self.settings.role_id, secret_id=self.settings.secret_id,
                    mount_point=self.settings.approle_mount, use_token=True,
                )
            except hvac_exc.VaultError as exc:
                if isinstance(exc, (hvac_exc.InvalidRequest, hvac_exc.Forbidden, hvac_exc.Unauthorized)):
                    raise kind(
                        "The AppRole login to Vault at %s was refused (role %s); check vault.roleId/secretId and "
                        "that the secret id has not expired." % (self.settings.url, self.settings.approle_mount)
                    ) from None
                raise _mapped(exc, kind, self.settings.url, "logging in with AppRole") from None
            except requests.RequestException as exc:
                raise _network(exc, kind, self.settings, "logging in with AppRole") from None
            self._logged_in = True

    # -- calls -------------------------------------------------------------------
    def call(self, fn: Callable[[hvac.Client], T], kind: Type[FrontdoorError], what: str, idempotent: bool = False,
             fast: Optional[Tuple[str, str, Optional[Dict[str, Any]]]] = None) -> T:
        """Run ``fn(hvac_client)``, mapping failures to ``kind`` (StoreUnavailable or SignerUnavailable).

        hvac exceptions that callers handle themselves (CAS mismatch, 404) are re-raised untouched
        when the caller asks for them via :func:`is_cas_mismatch` / ``InvalidPath``.

        ``fast`` = (method, path, JSON body): the same request as ``fn`` makes, for the lean
        transport; when that is usable it is sent instead of ``fn`` and answers the same way
        (hvac's JSON dict, hvac's exceptions), so retries, re-login and mapping are shared.
        """
        if not self._logged_in:
            self._login(kind)
        dropped_retry = idempotent
        relogged = False
        lean = fast is not None and self.lean_usable()
        for _attempt in range(3):
            try:
                if lean:
                    try:
                        return self._fast(*fast)
                    except _Redirected:
                        lean = False  # requests follows redirects as it always did
                return fn(self.hvac)
            except (hvac_exc.InvalidPath, hvac_exc.InvalidRequest):
                raise  # the caller decides: missing key, CAS conflict, bad parameter
            except hvac_exc.Forbidden as exc:
                if self.settings.auth_method == "approle" and not relogged:
                    relogged = True
                    self._login(kind)  # the AppRole token expired: log in again once
                    continue
                raise _mapped(exc, kind, self.settings.url, what) from None
            except hvac_exc.VaultError as exc:
                raise _mapped(exc, kind, self.settings.url, what) from None
            except _NetworkFailure as exc:
                if dropped_retry and exc.dropped:
                    dropped_retry = False  # as below: a read may go again on a fresh connection, a write never
                    continue
                raise _network_message(kind, self.settings, what, exc.name, exc.timed_out, exc.tls) from None
            except requests.RequestException as exc:
                if dropped_retry and _dropped(exc):
                    # A pooled keep-alive connection the server had just closed: a read can safely go again
                    # (a write is never resent: it may have been applied).
                    dropped_retry = False
                    continue
                raise _network(exc, kind, self.settings, what) from None
        raise kind("Vault kept refusing while %s." % what)  # pragma: no cover - loop always returns/raises

    def raw(self, method: str, path: str, kind: Type[FrontdoorError], what: str, **kwargs) -> requests.Response:
        """A request hvac has no method for (e.g. the DER CRL), on the same pooled session."""
        def run(client: hvac.Client):
            return client.adapter.request(method, path, **kwargs)

        return self.call(run, kind, what)

    def acquire(self) -> VaultClient:
        self._refs += 1
        return self

    def close(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            _forget(self)
            self._lean.close()
            if self._session is not None:
                self._session.close()


def is_cas_mismatch(exc: BaseException) -> bool:
    return isinstance(exc, hvac_exc.InvalidRequest) and _CAS_MISMATCH in str(exc.args[0] if exc.args else "")


def _detail(exc: hvac_exc.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else ([exc.errors] if exc.errors else [])
    text = "; ".join(str(e) for e in errors)[:300]
    return text or type(exc).__name__


def _mapped(exc: hvac_exc.VaultError, kind: Type[FrontdoorError], url: str, what: str) -> FrontdoorError:
    if isinstance(exc, hvac_exc.Forbidden):
        return kind(
            "Vault at %s refused permission while %s (%s): the gateway's token lacks a capability or has expired. "
            "Compare its policy with `frontdoor-gateway vault-policy`." % (url, what, _detail(exc))
        )
    if isinstance(exc, hvac_exc.Unauthorized):
        return kind("Vault at %s did not accept the gateway's credentials while %s." % (url, what))
    if isinstance(exc, hvac_exc.VaultDown):
        return kind(
            "Vault at %s is sealed or in standby and cannot serve while %s (%s); unseal it or point the "
            "gateway at the active node." % (url, what, _detail(exc)), retry_after=5,
        )
    if isinstance(exc, hvac_exc.RateLimitExceeded):
        return kind("Vault at %s is rate limiting the gateway while %s; retry shortly." % (url, what), retry_after=1)
    if isinstance(exc, hvac_exc.VaultNotInitialized):
        return kind("Vault at %s is not initialized." % url)
    return kind("Vault at %s failed while %s: HTTP error (%s)." % (url, what, _detail(exc)), retry_after=1)


def _timed_out(exc: requests.RequestException) -> bool:
    """requests reports a read timeout as ConnectionError once urllib3's Retry gave up on it."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3_exc.NewConnectionError):  # a subclass of ConnectTimeoutError, but refused
        return False
    return isinstance(reason, (urllib3_exc.ReadTimeoutError, urllib3_exc.ConnectTimeoutError))


def _dropped(exc: requests.RequestException) -> bool:
    """The server closed the connection without answering (not a timeout, not a refused connect)."""
    if not isinstance(exc, requests.ConnectionError) or _timed_out(exc):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, urllib3_exc.ProtocolError) or "RemoteDisconnected" in repr(reason) or \
        "Connection aborted" in repr(reason)


def _raise_like_hvac(method: str, url: str, status: int, content_type: Optional[str], data: bytes) -> None:
    """Raise the exception hvac's adapter raises for this answer (same class, message and errors)."""
    text = data.decode("utf-8", "replace")
    parsed = errors = message = None
    if content_type == "application/json":
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        else:
            errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if errors is None:
        message = text
    hvac_utils.raise_for_error(method.lower(), url, status, message, errors=errors, text=text, json=parsed)


def _network(exc: requests.RequestException, kind: Type[FrontdoorError], settings: VaultSettings, what: str) -> FrontdoorError:
    return _network_message(kind, settings, what, type(exc).__name__, _timed_out(exc),
                            isinstance(exc, requests.exceptions.SSLError))


def _network_message(kind: Type[FrontdoorError], settings: VaultSettings, what: str, name: str, timed_out: bool,
                     tls: bool) -> FrontdoorError:
    """The error for a request that got no answer; the same words whichever transport sent it."""
    if timed_out:
        return kind(
            "Vault at %s did not answer within %g s while %s; check that it is running, unsealed and not "
            "overloaded (FRONTDOOR_VAULT_TIMEOUT sets the limit)." % (settings.url, settings.timeout, what),
            retry_after=5,
        )
    if tls:
        return kind(
            "TLS to Vault at %s failed while %s; check vault.caCert (VAULT_CACERT) and vault.verify." % (settings.url, what)
        )
    return kind(
        "Vault at %s could not be reached while %s (%s); check VAULT_ADDR and that Vault is running."
        % (settings.url, what, name), retry_after=5,
    )


# -- one client per process and configuration ------------------------------------
_CLIENTS: Dict[Tuple, VaultClient] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(vault_config: Mapping[str, Any]) -> VaultClient:
    """The process-wide client for this configuration (store and signers share its pool).

    Call ``close()`` once per ``shared_client`` call; the session closes with the last user.
    """
    settings = VaultSettings(vault_config)
    key = settings.identity()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = VaultClient(settings)
        return client.acquire()


def _forget(client: VaultClient) -> None:
    with _CLIENTS_LOCK:
        for key, value in list(_CLIENTS.items()):
            if value is client:
                del _CLIENTS[key]


__all__ = [
    "VaultClient", "VaultSettings", "shared_client", "is_cas_mismatch", "SignerUnavailable", "StoreUnavailable",
]
