# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One pooled Vault client per gateway process, and the mapping of Vault failures to our errors.

Why one client: the redemption path makes several Vault round trips (KV read, claim CAS,
pki/sign, record CAS); a fresh TCP (and TLS) handshake for each would cost more than the
requests themselves. The store and every Vault signer of a process share one ``hvac.Client``
on one ``requests.Session`` whose ``HTTPAdapter`` pools keep-alive connections.

Why these retries (urllib3's ``Retry`` on that adapter, see :func:`retry_policy`): a failed
connect sent nothing, so it is retried for every method; a request that was sent but got no
answer (dropped connection, read timeout) is retried only for reads (GET, LIST) and metadata
deletes, which cannot change anything twice. A write (KV check-and-set, ``pki/sign``, role
writes, revocation) is never sent again once it may have reached Vault: a resent CAS whose first
attempt landed would report our own success as a lost race, and a resent sign would issue a second
certificate. HTTP answers (403, 429, 503 ...) are never retried here: callers map them.

Why the mapping lives here: hvac raises its own exceptions (and requests its own for the
network); the service only understands ``FrontdoorError``. A store failure must become
``StoreUnavailable`` and a signer failure ``SignerUnavailable`` so that the service releases
the claim and the token stays redeemable. Messages name the Vault address and what to check,
never the Vault token or AppRole secret.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Callable, Dict, Mapping, Tuple, Type, TypeVar

from ..errors import FrontdoorError, SignerUnavailable, StoreUnavailable

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report a missing hvac with missing_required_lib (ansible_common).
try:
    import hvac
    import requests
    from hvac import exceptions as hvac_exc
    from requests.adapters import HTTPAdapter
    from urllib3 import exceptions as urllib3_exc
    from urllib3.util.retry import Retry
except ImportError:  # pragma: no cover
    hvac = requests = hvac_exc = HTTPAdapter = urllib3_exc = Retry = None

DEFAULT_URL = "http://127.0.0.1:8200"
DEFAULT_TIMEOUT = 10.0
DEFAULT_KV_MOUNT = "secret"
DEFAULT_KV_PREFIX = "frontdoor"
DEFAULT_PKI_MOUNT = "pki"
POOL_MAXSIZE = 64  # connections kept per host: more than the gateway's worker threads (anyio: 40)
CONNECT_RETRIES = 2
READ_RETRIES = 1
# Methods that may be sent again after they reached Vault: reads, and the metadata delete (deleting
# what is gone is a no-op). hvac sends LIST as its own method; requests upper-cases it.
RESENDABLE_METHODS = frozenset({"GET", "HEAD", "LIST", "DELETE"})

_CAS_MISMATCH = "check-and-set parameter did not match"

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


def retry_policy() -> Retry:
    """The adapter's retries (why: module docstring). ``other=0``: a TLS failure is not retried;
    ``status=0`` and no Retry-After: HTTP answers reach the callers' mapping at once."""
    return Retry(total=None, connect=CONNECT_RETRIES, read=READ_RETRIES, other=0, status=0,
                 allowed_methods=RESENDABLE_METHODS, backoff_factor=0.05, raise_on_status=False,
                 respect_retry_after_header=False)


class VaultClient:
    """An hvac.Client on a pooled, retrying session, with AppRole re-login and a request counter."""

    def __init__(self, settings: VaultSettings):
        if hvac is None:
            raise FrontdoorError("invalid_request", "The Vault backend and signer need the Python package hvac.")
        self.settings = settings
        self.requests = 0  # Vault answers received by this client (round-trip accounting for tests and the bench)
        self._count_lock = threading.Lock()
        self._login_lock = threading.Lock()
        self._refs = 0
        self.session = requests.Session()
        # No per-request environment lookups: the CA comes from vault.caCert / VAULT_CACERT (never
        # REQUESTS_CA_BUNDLE), no ~/.netrc credentials; proxies are read from the environment once.
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(settings.url)
        self.session.verify = settings.verify  # hvac prefers a given session's verify to its own argument
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_MAXSIZE, max_retries=retry_policy())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.hooks["response"].append(self._count)
        self.hvac = hvac.Client(
            url=settings.url,
            token=settings.token if settings.auth_method == "token" else None,
            verify=settings.verify,
            timeout=settings.timeout,
            session=self.session,
            namespace=settings.namespace,
        )
        self._logged_in = settings.auth_method == "token"

    def _count(self, response, *args, **kwargs):
        with self._count_lock:
            self.requests += 1
        return response

    def _login(self, kind: Type[FrontdoorError]) -> None:
        with self._login_lock:
            try:
                self.hvac.auth.approle.login(
                    role_id=self.settings.role_id, secret_id=self.settings.secret_id,
                    mount_point=self.settings.approle_mount, use_token=True,
                )
            except (hvac_exc.InvalidRequest, hvac_exc.Forbidden, hvac_exc.Unauthorized):
                raise kind(
                    "The AppRole login to Vault at %s was refused (role %s); check vault.roleId/secretId and "
                    "that the secret id has not expired." % (self.settings.url, self.settings.approle_mount)
                ) from None
            except hvac_exc.VaultError as exc:
                raise _mapped(exc, kind, self.settings.url, "logging in with AppRole") from None
            except OSError as exc:  # requests' exceptions, and its OSError for a CA file that is not there
                raise _network(exc, kind, self.settings, "logging in with AppRole") from None
            self._logged_in = True

    def call(self, fn: Callable[[Any], T], kind: Type[FrontdoorError], what: str) -> T:
        """Run ``fn(hvac_client)``, mapping failures to ``kind`` (StoreUnavailable or SignerUnavailable).

        ``InvalidPath`` (404) and ``InvalidRequest`` (400: a CAS mismatch, a bad parameter) are
        re-raised untouched: only the caller knows whether they mean "missing", "lost the race" or
        "refused". A 403 with AppRole means the login token expired: log in again, once.
        """
        if not self._logged_in:
            self._login(kind)
        try:
            return self._mapping_failures(fn, kind, what)
        except hvac_exc.Forbidden as exc:
            if self.settings.auth_method != "approle":
                raise _mapped(exc, kind, self.settings.url, what) from None
        self._login(kind)  # the AppRole token expired
        try:
            return self._mapping_failures(fn, kind, what)
        except hvac_exc.Forbidden as exc:
            raise _mapped(exc, kind, self.settings.url, what) from None

    def _mapping_failures(self, fn: Callable[[Any], T], kind: Type[FrontdoorError], what: str) -> T:
        """``fn(hvac_client)`` with every failure but 400/403/404 turned into ``kind``."""
        try:
            return fn(self.hvac)
        except (hvac_exc.InvalidPath, hvac_exc.InvalidRequest, hvac_exc.Forbidden):
            raise
        except hvac_exc.VaultError as exc:
            raise _mapped(exc, kind, self.settings.url, what) from None
        except OSError as exc:  # requests' exceptions, and its OSError for a CA file that is not there
            raise _network(exc, kind, self.settings, what) from None

    def acquire(self) -> VaultClient:
        self._refs += 1
        return self

    def close(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            _forget(self)
            self.session.close()


def is_cas_mismatch(exc: BaseException) -> bool:
    return isinstance(exc, hvac_exc.InvalidRequest) and _CAS_MISMATCH in str(exc.args[0] if exc.args else "")


def whole_errors(errors, limit: int = 300) -> str:
    """Vault's error strings joined, bounded by dropping whole errors (counted), never by cutting one in the
    middle: a message that stops mid-word or mid-errno tells nobody anything."""
    texts = [str(e) for e in errors]
    kept: list = []
    for text in texts:
        if kept and len("; ".join(kept + [text])) > limit:
            break
        kept.append(text)
    joined = "; ".join(kept)
    if len(kept) < len(texts):
        joined += " (and %d more)" % (len(texts) - len(kept))
    return joined


def _detail(exc: hvac_exc.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else ([exc.errors] if exc.errors else [])
    text = whole_errors(errors)
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


def _timed_out(exc: OSError) -> bool:
    """requests reports a read timeout as ConnectionError once urllib3's Retry gave up on it."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3_exc.NewConnectionError):  # a subclass of ConnectTimeoutError, but refused
        return False
    return isinstance(reason, (urllib3_exc.ReadTimeoutError, urllib3_exc.ConnectTimeoutError))


def _network(exc: OSError, kind: Type[FrontdoorError], settings: VaultSettings, what: str) -> FrontdoorError:
    """The error for a request that got no answer (after the retries of :func:`retry_policy`)."""
    if _timed_out(exc):
        return kind(
            "Vault at %s did not answer within %g s while %s; check that it is running, unsealed and not "
            "overloaded (FRONTDOOR_VAULT_TIMEOUT sets the limit)." % (settings.url, settings.timeout, what),
            retry_after=5,
        )
    if isinstance(exc, requests.exceptions.SSLError) or not isinstance(exc, requests.RequestException):
        return kind(
            "TLS to Vault at %s failed while %s; check vault.caCert (VAULT_CACERT) and vault.verify." % (settings.url, what)
        )
    return kind(
        "Vault at %s could not be reached while %s (%s); check VAULT_ADDR and that Vault is running."
        % (settings.url, what, type(exc).__name__), retry_after=5,
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
    "VaultClient", "VaultSettings", "shared_client", "is_cas_mismatch", "retry_policy", "hvac_exc", "whole_errors",
    "SignerUnavailable", "StoreUnavailable",
]
