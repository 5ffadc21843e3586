# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""From configuration (file, environment, module options) to a running service.

The gateway and the Ansible modules both come through here, which is how a module
with ``state_dir`` works on exactly the state a gateway serves.

Config file (YAML; every key optional)::

    backend: local            # token store: local (SQLite in the state dir) or vault
    claimLeaseSeconds: 30
    audit: {path: <state-dir>/audit.jsonl, stderr: false}
    vault: {url, token, authMethod, roleId, secretId, namespace, caCert, verify, timeout,
            kvMount, kvPrefix, pkiMount}
    stepCa: {url, root, provisioner, provisionerKey, provisionerPassword}
    frontdoors:
      - id: default
        tcpSharesEnabled: true
        defaultTokenTtl: 24h
        maxTokenTtl: 30d
        certificateTtl: 365d
        signer: local         # or vault / step-ca, or a mapping {type: vault, pkiMount: ...}
        renewalEnabled: true  # renewal with the current certificate (POST .../client-certificates/renew)
        renewalWindow: null   # e.g. 30d: renewable only in the last 30 days of a certificate; null: any time
        renewalGrace: 0s      # an expired certificate may still renew itself this long after notAfter
    apiTokens: [...]          # read by the gateway only
    forwardedAllowIps: []     # gateway: reverse proxies trusted for X-Forwarded-For/-Proto (none by default)
    clientCertificateHeader:  # renewal behind a proxy doing mTLS (docs/api.md, Renewal); none by default
      {header: X-SSL-Client-Cert, format: nginx, proxies: [10.0.0.5]}   # or format envoy (X-Forwarded-Client-Cert)
    rateLimits:               # gateway; FRONTDOOR_RATE_LIMITS=off turns them all off (test beds)
      enabled: true
      storage: null           # null: SQLite file <state-dir>/ratelimits.db (workers and gateways on one state dir);
                              # or a limits storage URI: redis://, valkey://, memcached://, mongodb://, memory://
      unknownTokenPerAddress: 30/minute     # redemptions with an unknown secret, per client address (IPv6: /64)
      unknownTokenPerFrontdoor: 600/minute  # the same, all addresses together, per frontdoor
      authFailuresPerAddress: 30/minute     # admin API 401s (a bearer token that is not valid), per address
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional

from .audit import AuditLog
from .errors import FrontdoorError
from .service import FrontdoorService, FrontdoorSettings
from .signers.local import FRONTDOOR_ID_RE, LocalCASigner
from .tokens import parse_duration

DEFAULT_STATE_DIR = "~/.frontdoor"
CONFIG_FILE_NAME = "config.yaml"


class ConfigError(ValueError):
    """A configuration a person must fix; the message says where."""


@dataclasses.dataclass(frozen=True)
class RateLimitPolicy:
    """What the gateway limits and how much; it applies them (``limits`` library), the numbers live here.

    Each limit is a ``limits`` rate string ("30/minute", "100 per hour") or None when turned off. Only
    failures count (an unknown secret, an invalid bearer token); once an address or frontdoor is over, every
    attempt of that kind gets ``429 rate_limited`` until the window ends.
    """

    enabled: bool = True
    #: None: SQLite in the state dir (shared by the workers and gateways on that state dir); else a storage URI
    storage: Optional[str] = None
    unknown_token_per_address: Optional[str] = "30/minute"
    unknown_token_per_frontdoor: Optional[str] = "600/minute"
    auth_failures_per_address: Optional[str] = "30/minute"


@dataclasses.dataclass
class Config:
    state_dir: str
    backend: str = "local"
    claim_lease: float = 30.0
    audit_path: Optional[str] = None
    audit_stderr: bool = False
    vault: Dict[str, Any] = dataclasses.field(default_factory=dict)
    step_ca: Dict[str, Any] = dataclasses.field(default_factory=dict)
    frontdoors: List[FrontdoorSettings] = dataclasses.field(default_factory=list)
    signers: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)  # frontdoor id -> signer options
    api_tokens: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    #: SQLite's ``synchronous`` for the local store: "normal" (WAL; survives a crashed process, may lose the
    #: last commits on power loss) or "full" (an fsync per commit; ~35 % fewer redemptions/s here)
    sqlite_synchronous: str = "normal"
    source: Optional[str] = None  # the file it came from
    #: proxies trusted for X-Forwarded-For / X-Forwarded-Proto (IPs or CIDR networks); empty: none, the TCP peer is
    #: the client. Checked and applied by the gateway (`serve --forwarded-allow-ips` overrides it)
    forwarded_allow_ips: List[str] = dataclasses.field(default_factory=list)
    rate_limits: RateLimitPolicy = dataclasses.field(default_factory=RateLimitPolicy)
    #: renewal behind a TLS-terminating proxy that verifies client certificates: None, or {"header": name,
    #: "format": "nginx"|"envoy", "proxies": [IPs/CIDRs]} (the header is believed only from those addresses)
    client_certificate_header: Optional[Dict[str, Any]] = None


_RATE_LIMIT_KEYS = {
    "unknownTokenPerAddress": "unknown_token_per_address",
    "unknownTokenPerFrontdoor": "unknown_token_per_frontdoor",
    "authFailuresPerAddress": "auth_failures_per_address",
}


def _rate(value, where: str, default: Optional[str]) -> Optional[str]:
    """A rate string the ``limits`` library parses, or None for off (``off``, ``false``, ``null`` is the default)."""
    if value is None:
        return default
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "false", "no", "none")):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("%s must be a rate such as '30/minute' or 'off', not %r" % (where, value))
    try:
        import limits  # the gateway's dependency; a module host without it keeps the string unchecked
    except ImportError:
        return value.strip()
    try:
        items = limits.parse_many(value)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ConfigError("%s must be one rate such as '30/minute' or '100 per hour', not %r" % (where, value))
    return value.strip()


def _rate_limits(data: Mapping[str, Any], env: Mapping[str, str]) -> RateLimitPolicy:
    section = _mapping(data, "rateLimits")
    unknown = set(section) - {"enabled", "storage"} - set(_RATE_LIMIT_KEYS)
    if unknown:
        raise ConfigError("rateLimits: unknown key(s) %s (known: enabled, storage, %s)"
                          % (", ".join(sorted(unknown)), ", ".join(sorted(_RATE_LIMIT_KEYS))))
    enabled = _flag(section.get("enabled"), "rateLimits.enabled", True)
    if env.get("FRONTDOOR_RATE_LIMITS"):
        enabled = _flag(env["FRONTDOOR_RATE_LIMITS"], "FRONTDOOR_RATE_LIMITS", True)
    storage = section.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise ConfigError("rateLimits.storage must be a storage URI such as redis://host:6379, not %r" % (storage,))
    defaults = RateLimitPolicy()
    rates = {attr: _rate(section.get(key), "rateLimits." + key, getattr(defaults, attr))
             for key, attr in _RATE_LIMIT_KEYS.items()}
    return RateLimitPolicy(enabled=enabled, storage=storage, **rates)


def resolve_state_dir(state_dir: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    return os.path.abspath(os.path.expanduser(state_dir or env.get("FRONTDOOR_STATE_DIR") or DEFAULT_STATE_DIR))


def read_config_file(path: str) -> Any:
    """The YAML document in ``path`` (``{}`` when empty); a ConfigError saying why it cannot be read."""
    import yaml  # only needed with a file; modules pass data

    try:
        with open(path, "r", encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("config file %s is not valid YAML: %s" % (path, exc)) from None


def _duration(value, where: str, default: int) -> int:
    if value is None:
        return default
    try:
        return parse_duration(value, where)
    except FrontdoorError as exc:
        raise ConfigError(exc.message) from None


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("%s must be a mapping, not %s" % (key, type(value).__name__))
    return value


def _flag(value, where: str, default: bool) -> bool:
    """A real boolean: bool('false') is True, which would silently enable what a file disabled."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ConfigError("%s must be true or false, not %r" % (where, value))


def _lease(value) -> float:
    """A claim lease that is not a positive number would let every redeemer claim at once."""
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = float("nan")
    if isinstance(value, bool) or not 0 < lease <= 3600:
        raise ConfigError("claimLeaseSeconds must be a number of seconds between 0 and 3600, not %r" % (value,))
    return lease


def _first_env(env: Mapping[str, str], *names: str) -> Optional[str]:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def load_config(
    path: Optional[str] = None,
    state_dir: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    data: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Read the config file (``path``, $FRONTDOOR_CONFIG or <state-dir>/config.yaml if present) or ``data``."""
    env = os.environ if env is None else env
    state = resolve_state_dir(state_dir, env)
    source = None
    if data is None:
        path = path or env.get("FRONTDOOR_CONFIG")
        if not path and os.path.exists(os.path.join(state, CONFIG_FILE_NAME)):
            path = os.path.join(state, CONFIG_FILE_NAME)
        if path:
            data = read_config_file(path)
            source = path
        else:
            data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("the configuration must be a mapping at the top level")
    known = {"backend", "stateDir", "claimLeaseSeconds", "audit", "vault", "stepCa", "frontdoors", "apiTokens", "sqlite"}
    known.add("forwardedAllowIps")
    known.add("rateLimits")
    known.add("clientCertificateHeader")
    unknown = set(data) - known
    if unknown:
        raise ConfigError("unknown configuration key(s): %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(known))))
    if data.get("stateDir") and not state_dir and not env.get("FRONTDOOR_STATE_DIR"):
        state = resolve_state_dir(data["stateDir"], {})

    backend = str(env.get("FRONTDOOR_BACKEND") or data.get("backend") or "local").lower()
    if backend not in ("local", "vault"):
        raise ConfigError("backend must be 'local' or 'vault', not %r" % backend)
    audit = _mapping(data, "audit")
    vault = dict(_mapping(data, "vault"))
    vault.setdefault("url", _first_env(env, "VAULT_ADDR", "BAO_ADDR"))
    vault.setdefault("token", _first_env(env, "VAULT_TOKEN", "BAO_TOKEN"))
    vault.setdefault("namespace", _first_env(env, "VAULT_NAMESPACE", "BAO_NAMESPACE"))
    vault.setdefault("caCert", _first_env(env, "VAULT_CACERT", "BAO_CACERT"))
    if env.get("FRONTDOOR_VAULT_TIMEOUT"):
        vault.setdefault("timeout", env["FRONTDOOR_VAULT_TIMEOUT"])
    step_ca = dict(_mapping(data, "stepCa"))
    for key, name in (("url", "STEP_CA_URL"), ("root", "STEP_ROOT"), ("provisioner", "STEP_PROVISIONER"),
                      ("provisionerKey", "STEP_PROVISIONER_KEY"), ("provisionerPassword", "STEP_PROVISIONER_PASSWORD")):
        if env.get(name):
            step_ca.setdefault(key, env[name])

    sqlite = _mapping(data, "sqlite")
    if set(sqlite) - {"synchronous"}:
        raise ConfigError("sqlite: unknown key(s) %s (known: synchronous)" % ", ".join(sorted(set(sqlite) - {"synchronous"})))
    synchronous = str(sqlite.get("synchronous", "normal")).lower()
    if synchronous not in ("normal", "full"):
        raise ConfigError("sqlite.synchronous must be 'normal' or 'full', not %r" % sqlite.get("synchronous"))

    default_signer = str(env.get("FRONTDOOR_SIGNER") or ("vault" if backend == "vault" else "local")).lower()
    config = Config(
        state_dir=state,
        backend=backend,
        claim_lease=_lease(data.get("claimLeaseSeconds", 30)),
        audit_path=os.path.expanduser(audit["path"]) if audit.get("path") else os.path.join(state, "audit.jsonl"),
        audit_stderr=_flag(audit.get("stderr"), "audit.stderr", False),
        vault=vault,
        step_ca=step_ca,
        api_tokens=list(data.get("apiTokens") or []),
        sqlite_synchronous=synchronous,
        source=source,
        forwarded_allow_ips=_address_list(data.get("forwardedAllowIps"), "forwardedAllowIps"),
        rate_limits=_rate_limits(data, env),
        client_certificate_header=_client_certificate_header(data),
    )
    if not isinstance(data.get("apiTokens") or [], list):
        raise ConfigError("apiTokens must be a list")
    frontdoors = data.get("frontdoors")
    if frontdoors is None:
        frontdoors = [{"id": "default"}]
    if not isinstance(frontdoors, list) or not frontdoors:
        raise ConfigError("frontdoors must be a non-empty list")
    for index, entry in enumerate(frontdoors):
        where = "frontdoors[%d]" % index
        if not isinstance(entry, Mapping) or not entry.get("id"):
            raise ConfigError("%s needs an id" % where)
        fid = str(entry["id"])
        if not FRONTDOOR_ID_RE.match(fid):
            raise ConfigError("%s: id %r must be letters, digits, '.', '_' or '-' (at most 64)" % (where, fid))
        if any(f.id == fid for f in config.frontdoors):
            raise ConfigError("%s: duplicate frontdoor id %r" % (where, fid))
        allowed = {"id", "tcpSharesEnabled", "defaultTokenTtl", "maxTokenTtl", "certificateTtl", "signer",
                   "renewalEnabled", "renewalWindow", "renewalGrace"}
        extra = set(entry) - allowed
        if extra:
            raise ConfigError("%s: unknown key(s) %s" % (where, ", ".join(sorted(extra))))
        try:
            settings = FrontdoorSettings(
                id=fid,
                tcp_shares_enabled=_flag(entry.get("tcpSharesEnabled"), where + ".tcpSharesEnabled", True),
                default_token_ttl=_duration(entry.get("defaultTokenTtl"), where + ".defaultTokenTtl", 86400),
                max_token_ttl=_duration(entry.get("maxTokenTtl"), where + ".maxTokenTtl", 30 * 86400),
                certificate_ttl=_duration(entry.get("certificateTtl"), where + ".certificateTtl", 365 * 86400),
                renewal_enabled=_flag(entry.get("renewalEnabled"), where + ".renewalEnabled", True),
                renewal_window=_duration(entry.get("renewalWindow"), where + ".renewalWindow", None),
                renewal_grace=0 if entry.get("renewalGrace") in (0, "0", "0s")
                else _duration(entry.get("renewalGrace"), where + ".renewalGrace", 0),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        signer = entry.get("signer") or default_signer
        if isinstance(signer, str):
            signer = {"type": signer}
        if not isinstance(signer, Mapping) or signer.get("type") not in ("local", "vault", "step-ca"):
            raise ConfigError("%s.signer must be local, vault or step-ca" % where)
        config.frontdoors.append(settings)
        config.signers[fid] = dict(signer)
    return config


def build_store(config: Config):
    if config.backend == "vault":
        from .stores.vault_kv import build_vault_store

        return build_vault_store(config)
    from .stores.sqlite import SQLiteStore

    return SQLiteStore(os.path.join(config.state_dir, "frontdoor.db"), synchronous=config.sqlite_synchronous)


def build_signer(config: Config, frontdoor_id: str):
    options = config.signers.get(frontdoor_id, {"type": "local"})
    kind = options.get("type", "local")
    if kind == "vault":
        from .signers.vault_pki import build_vault_signer

        return build_vault_signer(config, frontdoor_id, options)
    if kind == "step-ca":
        from .signers.stepca import build_stepca_signer

        return build_stepca_signer(config, frontdoor_id, options)
    return LocalCASigner(config.state_dir, frontdoor_id)


def _client_certificate_header(data: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """``clientCertificateHeader: {header: X-SSL-Client-Cert, format: nginx, proxies: [10.0.0.5]}`` checked.

    The proxies must not also be in forwardedAllowIps: uvicorn replaces a trusted proxy's address with the client's
    from X-Forwarded-For before the gateway sees the request, and the header is only believed from a proxy's own
    address (such requests would be refused, never wrongly believed, but the configuration would not work)."""
    import ipaddress

    section = _mapping(data, "clientCertificateHeader")
    if not section:
        return None
    unknown = set(section) - {"header", "format", "proxies"}
    if unknown:
        raise ConfigError("clientCertificateHeader: unknown key(s) %s (known: header, format, proxies)"
                          % ", ".join(sorted(unknown)))
    header = section.get("header")
    fmt = str(section.get("format") or "nginx").lower()
    if not isinstance(header, str) or not header.strip() or any(c in header for c in " :\r\n"):
        raise ConfigError("clientCertificateHeader.header must be a header name, e.g. X-SSL-Client-Cert")
    if fmt not in ("nginx", "envoy"):
        raise ConfigError("clientCertificateHeader.format must be nginx ($ssl_client_escaped_cert) or envoy "
                          "(X-Forwarded-Client-Cert), not %r" % fmt)
    proxies = _address_list(section.get("proxies"), "clientCertificateHeader.proxies")
    if not proxies:
        raise ConfigError("clientCertificateHeader.proxies must list the proxies' addresses: the header is believed "
                          "only from them")
    networks = []
    for item in proxies:
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ConfigError("clientCertificateHeader.proxies: %r is not an IP address or network" % item) from None
    for item in _address_list(data.get("forwardedAllowIps"), "forwardedAllowIps"):
        try:
            trusted = ipaddress.ip_network(item, strict=False)
        except ValueError:
            continue
        if any(n.version == trusted.version and n.overlaps(trusted) for n in networks):
            raise ConfigError("clientCertificateHeader.proxies overlaps forwardedAllowIps (%s): the gateway only sees "
                              "a proxy's own address when that proxy is not trusted for X-Forwarded-For" % item)
    return {"header": header.strip(), "format": fmt, "proxies": [str(n) for n in networks]}


def _address_list(value, where: str) -> List[str]:
    """A list of strings from a YAML list or a comma-separated string (addresses are checked by their user)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("%s must be a list of IP addresses or networks (or a comma-separated string)" % where)
    return [v.strip() for v in value if v.strip()]


def build_service(config: Config, audit: Optional[AuditLog] = None) -> FrontdoorService:
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    if audit is None:
        import sys

        audit = AuditLog(config.audit_path, sys.stderr if config.audit_stderr else None)
    store = build_store(config)
    signers = {f.id: build_signer(config, f.id) for f in config.frontdoors}
    return FrontdoorService(
        store, {f.id: f for f in config.frontdoors}, signers, audit=audit, claim_lease=config.claim_lease
    )
