"""`frontdoor-gateway`: serve the API and administer tokens on the same state.

Admin subcommands run the engine in-process on the state dir / config the gateway
uses, so they work with the gateway stopped (and safely while it runs: the stores
serialise writes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from frontdoor_pki.acme.protocol import with_eab
from frontdoor_pki.config import ConfigError, build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.views import certificate_view, token_view

from . import __version__
from .tls import MIN_VERSIONS as MIN_TLS_VERSIONS

EPILOG = """environment:
  FRONTDOOR_STATE_DIR        state directory (default ~/.frontdoor)
  FRONTDOOR_CONFIG           config file (default <state-dir>/config.yaml if it exists)
  FRONTDOOR_ADMIN_TOKEN      admin bearer token (default: generated into <state-dir>/admin-token)
  FRONTDOOR_BACKEND          token store: local (SQLite, default) or vault
  FRONTDOOR_SIGNER           default signer: local (default), vault or step-ca
  VAULT_ADDR, VAULT_TOKEN    Vault/OpenBao (also BAO_ADDR, BAO_TOKEN, VAULT_NAMESPACE, VAULT_CACERT)
  FRONTDOOR_VAULT_TIMEOUT    Vault HTTP timeout in seconds
  FRONTDOOR_RATE_LIMITS      off: no rate limits (test beds; default on, see rateLimits in docs/operations.md)
  FRONTDOOR_METRICS          off: no metrics instrumentation and no /metrics (default on)
  STEP_CA_URL, STEP_ROOT, STEP_PROVISIONER, STEP_PROVISIONER_KEY, STEP_PROVISIONER_PASSWORD   step-ca signer

docs: README.md, docs/api.md, docs/operations.md (HTTPS, reverse proxies), docs/vault.md, docs/step-ca.md, docs/ansible.md
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="state directory (default $FRONTDOOR_STATE_DIR or ~/.frontdoor)")
    parser.add_argument("--config", help="YAML config file (default $FRONTDOOR_CONFIG or <state-dir>/config.yaml)")


def _frontdoor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frontdoor", default="default", help="frontdoor id (default: default)")


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frontdoor-gateway",
        description="HTTP gateway and admin tool for frontdoor.pki certificate request tokens.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="frontdoor-gateway " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("serve", help="run the HTTP API", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=1, help="worker processes under uvicorn's supervisor, which replaces one that dies "
                   "(default 1; single use holds across them)")
    p.add_argument("--threads", default="auto", metavar="N|auto",
                   help="requests per worker whose blocking work (store, signer, audit) runs at once (default auto: "
                   "2 when the store is SQLite and every frontdoor signs with the local CA, which is CPU work; 40, "
                   "anyio's default, when OpenBao or step-ca is involved and a thread mostly waits)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="do not log each request (secrets are redacted anyway)")
    p.add_argument("--cleanup-interval", help="remove expired tokens every INTERVAL (e.g. 1h; default: never, "
                   "use `frontdoor-gateway cleanup` from cron instead)")
    p.add_argument("--cleanup-older-than", default="0s", help="with --cleanup-interval: keep tokens expired less "
                   "than this long (default 0s), so their status can still be seen")
    p.add_argument("--metrics-address", metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics "
                   "without authentication, and not on the API port (default: GET /metrics on the API port, for a "
                   "bearer token with metrics:read)")
    tls = p.add_argument_group("HTTPS (required on any address but loopback; TLS 1.2 minimum)")
    tls.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (followed by its "
                     "intermediates); needs --tls-key")
    tls.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    tls.add_argument("--tls-self", nargs="+", action="extend", metavar="HOSTNAME",
                     help="serve HTTPS with a server certificate for these host names / IP addresses, issued by the "
                     "state dir's local CA into <state-dir>/tls/ (reused while valid; clients trust "
                     "<state-dir>/tls/ca.pem, e.g. curl --cacert)")
    tls.add_argument("--tls-min-version", choices=sorted(MIN_TLS_VERSIONS), default="1.2",
                     help="oldest TLS version accepted (default 1.2)")
    tls.add_argument("--insecure-http", action="store_true", help="allow plain HTTP on an address other than "
                     "loopback (only on a network you trust end to end; token secrets travel in the URL)")
    p.add_argument("--forwarded-allow-ips", metavar="ADDRESSES", help="reverse proxies (IPs or CIDR networks, "
                   "comma-separated) whose X-Forwarded-For / X-Forwarded-Proto are trusted for the client address "
                   "and scheme; default: config forwardedAllowIps, else none (the TCP peer is the client)")

    p = sub.add_parser("init", help="create the state dir, local CA and admin token; print where they are")
    _common(p)

    p = sub.add_parser("admin-token", help="print the admin token file path (and the token with --show)")
    _common(p)
    p.add_argument("--show", action="store_true", help="print the token itself")

    p = sub.add_parser("new-api-token", help="make an API token and print its config entry (the token is shown once)")
    p.add_argument("--name", required=True, help="who the token is for (appears in the audit log)")
    p.add_argument(
        "--grant", action="append", default=[], metavar="FRONTDOOR:PERMISSION",
        help="e.g. default:tokens:create, '*:tokens:read', default:* (repeatable). Permissions: tokens:create, "
        "tokens:read, tokens:delete, certificates:read, certificates:revoke",
    )

    p = sub.add_parser("create-token", help="create a certificate request token (the secret is shown once)")
    _common(p)
    _frontdoor(p)
    _json(p)
    p.add_argument("--name", required=True)
    p.add_argument("--common-name")
    p.add_argument("--organization")
    p.add_argument("--organizational-unit")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ttl", help="lifetime: seconds or 90s/15m/24h/7d (default: the frontdoor's, 24h)")
    group.add_argument("--expires-at", help="RFC 3339 expiry, e.g. 2030-01-31T12:00:00Z")
    p.add_argument("--certificate-ttl", help="certificate lifetime (at most the frontdoor's)")
    # pre-approved SANs: the certificate carries exactly these (none given: none)
    p.add_argument("--dns", action="append", metavar="NAME", help="DNS name SAN, e.g. api.example.com (repeatable)")
    p.add_argument("--ip", action="append", metavar="ADDRESS", help="IP address SAN, IPv4 or IPv6 (repeatable)")
    p.add_argument("--uri", action="append", metavar="URI",
                   help="URI SAN, e.g. spiffe://example.org/ns/prod/sa/api (repeatable)")
    p.add_argument("--email", action="append", metavar="ADDRESS", help="email SAN (repeatable)")

    p = sub.add_parser("list-tokens", help="list tokens (never their secrets)")
    _common(p)
    _frontdoor(p)
    _json(p)
    p.add_argument("--status", help="active, expired, redeemed (comma-separated)")
    p.add_argument("--name")
    p.add_argument("--size", type=int, default=1000)

    p = sub.add_parser("delete-token", help="delete a token by id")
    _common(p)
    _frontdoor(p)
    p.add_argument("token_id")

    p = sub.add_parser("refresh-token", help="new secret and expiry for an unredeemed token (old secret stops working)")
    _common(p)
    _frontdoor(p)
    _json(p)
    p.add_argument("token_id")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ttl")
    group.add_argument("--expires-at")

    p = sub.add_parser("cleanup", help="remove expired (and with --include-redeemed, redeemed) tokens")
    _common(p)
    p.add_argument("--frontdoor", help="one frontdoor (default: all)")
    p.add_argument("--include-redeemed", action="store_true", help="also remove redeemed tokens")
    p.add_argument("--older-than", default="0s", help="only tokens expired/redeemed longer ago than this (default 0s)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    _json(p)

    p = sub.add_parser("list-certificates", help="list issued client certificates")
    _common(p)
    _frontdoor(p)
    _json(p)

    p = sub.add_parser("revoke-certificate", help="revoke an issued client certificate by id")
    _common(p)
    _frontdoor(p)
    p.add_argument("certificate_id")

    p = sub.add_parser("check-config", help="validate the configuration and show what it resolves to")
    _common(p)

    p = sub.add_parser("vault-policy", help="print the least-privilege Vault/OpenBao policy (HCL) for this config")
    _common(p)

    sub.add_parser("step-ca-template", help="print the x509 template (JSON) to install on the step-ca JWK provisioner")

    p = sub.add_parser("rotate-intermediate", help="give a frontdoor's local CA a new intermediate key and certificate "
                       "under the same root (issued certificates keep their chain; restart gateways afterwards)")
    _common(p)
    _frontdoor(p)

    from .renew_cli import add_parser as add_renew_parser

    add_renew_parser(sub)  # client side: `renew --url URL --cert FILE --key FILE [--new-key] [--ca FILE]`
    return parser


def _config(args):
    return load_config(getattr(args, "config", None), getattr(args, "state_dir", None))


def _print_tokens(records, now) -> None:
    print("%-43s %-24s %-9s %-24s %s" % ("ID", "NAME", "STATUS", "EXPIRES", "SUBJECT"))
    for r in records:
        view = token_view(r, now)
        subject = "/".join(
            "%s=%s" % (k, v) for k, v in (("CN", r.subject.common_name), ("O", r.subject.organization),
                                          ("OU", r.subject.organizational_unit)) if v
        )
        print("%-43s %-24s %-9s %-24s %s" % (r.id, r.name[:24], view["status"], view["expiresAt"], subject or "-"))


def cmd_serve(args) -> int:
    # Before prometheus_client is first imported (it picks in-process or multi-process values at import): this
    # process (the only worker with --workers 1, else the supervisor) keeps its metrics in memory; the workers'
    # directory is set further down, for the workers alone.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.pop("prometheus_multiproc_dir", None)
    import uvicorn

    from .app import build_from_env, parse_threads, threads_for
    from .logs import log_config
    from .net import parse_forwarded_allow_ips
    from .tls import check_files, context_factory, is_loopback

    if args.tls_self and (args.tls_cert or args.tls_key):
        raise ConfigError("give either --tls-self or --tls-cert/--tls-key, not both")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    https = bool(args.tls_self or args.tls_cert)
    if not https and not is_loopback(args.host) and not args.insecure_http:
        raise ConfigError(
            "refusing plain HTTP on %s: token secrets and admin tokens would cross the network in clear. Serve "
            "HTTPS (--tls-cert/--tls-key, or --tls-self HOSTNAME), or pass --insecure-http if every hop is trusted"
            % args.host
        )
    try:  # the operator's files and proxies, checked before anything is created in the state dir
        if args.tls_cert:
            check_files(args.tls_cert, args.tls_key)
        if args.forwarded_allow_ips is not None:
            parse_forwarded_allow_ips(args.forwarded_allow_ips)
        parse_threads(args.threads)
        if args.tls_self:
            from frontdoor_pki.signers.local_tls import normalize_names

            normalize_names(args.tls_self)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    env = dict(os.environ)
    if args.state_dir:
        env["FRONTDOOR_STATE_DIR"] = os.path.abspath(os.path.expanduser(args.state_dir))
    if args.config:
        env["FRONTDOOR_CONFIG"] = os.path.abspath(os.path.expanduser(args.config))
    if args.cleanup_interval:
        from frontdoor_pki.tokens import parse_duration

        parse_duration(args.cleanup_interval, "--cleanup-interval")
        if args.cleanup_older_than not in ("0", "0s"):
            parse_duration(args.cleanup_older_than, "--cleanup-older-than")
        env["FRONTDOOR_CLEANUP_INTERVAL"] = args.cleanup_interval
        env["FRONTDOOR_CLEANUP_OLDER_THAN"] = args.cleanup_older_than
    if args.metrics_address:
        from .metrics import parse_address

        try:
            metrics_host, _port = parse_address(args.metrics_address)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not https and not is_loopback(metrics_host) and not args.insecure_http:
            raise ConfigError(
                "refusing plain HTTP metrics on %s: serve the gateway with HTTPS (its certificate then serves the "
                "metrics too), use a loopback --metrics-address, or pass --insecure-http" % metrics_host
            )
        env["FRONTDOOR_METRICS_ADDRESS"] = args.metrics_address
    # Validate everything (and create the CA and admin token) once, before any worker starts.
    config, service, _auth = build_from_env(env)
    service.close()
    env["FRONTDOOR_THREADS"] = str(threads_for(config, args.threads))
    from .ratelimit import RateLimits

    limits = RateLimits.from_config(config)  # a storage URI that cannot work is a ConfigError now, not per worker
    if limits is not None:
        limits.close()
    from .auth import load_admin_token

    _token, path, created = load_admin_token(config.state_dir, env)
    env["FRONTDOOR_STATE_DIR"] = config.state_dir
    os.environ.update({k: v for k, v in env.items() if k.startswith("FRONTDOOR_")})
    if path:
        print("frontdoor-gateway: admin token %s %s" % ("written to" if created else "in", path), file=sys.stderr)
    else:
        print("frontdoor-gateway: admin token from FRONTDOOR_ADMIN_TOKEN", file=sys.stderr)
    try:
        trusted = parse_forwarded_allow_ips(
            args.forwarded_allow_ips if args.forwarded_allow_ips is not None else config.forwarded_allow_ips
        )
        cert_path, key_path = args.tls_cert, args.tls_key
        if args.tls_self:
            from frontdoor_pki.signers.local_tls import ensure_server_certificate

            server = ensure_server_certificate(config.state_dir, args.tls_self)
            cert_path, key_path = server.cert_path, server.key_path
            print("frontdoor-gateway: server certificate for %s %s %s, valid until %s; clients trust the CA in %s "
                  "(curl --cacert %s)" % (", ".join(server.names), "issued to" if server.issued else "reused from",
                                          cert_path, server.not_after.isoformat(), server.ca_path, server.ca_path),
                  file=sys.stderr)
            check_files(cert_path, key_path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(
        "frontdoor-gateway: state %s, store %s, frontdoors %s, listening on %s://%s:%d%s"
        % (config.state_dir, config.backend, ", ".join(f.id for f in config.frontdoors),
           "https" if https else "http", args.host, args.port,
           ", trusting X-Forwarded-For/-Proto from %s" % ", ".join(trusted) if trusted else ""),
        file=sys.stderr,
    )
    _serve_metrics(args, config, (cert_path, key_path) if https else None)
    tls_options = dict(
        ssl_certfile=cert_path, ssl_keyfile=key_path,
        ssl_context_factory=context_factory(args.tls_min_version, config.state_dir if args.tls_self else None,
                                            args.tls_self),
    ) if https else {}
    # uvicorn's own supervisor for --workers N: it binds once, spawns the workers on that socket and
    # replaces a worker that dies. Every worker builds its own service from the environment set above.
    uvicorn.run(
        "frontdoor_gateway.app:app_factory",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_config=log_config(args.log_level),
        access_log=not args.no_access_log,
        server_header=False,
        timeout_graceful_shutdown=10,
        # no proxy trusted unless configured: uvicorn's own default would trust loopback (or $FORWARDED_ALLOW_IPS)
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        **tls_options,
    )
    return 0


def _serve_metrics(args, config, tls_files=None) -> None:
    """Workers > 1: a private PROMETHEUS_MULTIPROC_DIR for them (emptied now). --metrics-address: serve the
    metrics from this process with prometheus_client's own HTTP server, not from the workers.

    Why here: this process lives as long as the gateway and serves no requests; it reads every worker's
    files (multi-process mode), or with one worker it is that worker. A listener in each worker could not share
    one port, and a second uvicorn server would be a second supervisor to run. With ``tls_files`` (the gateway's
    own certificate and key) that server speaks HTTPS with the gateway's TLS minimum."""
    from .metrics import (
        MULTIPROC_ENV,
        TokenStatusCollector,
        prepare_multiprocess_dir,
        registry_with,
        start_metrics_server,
    )

    if args.workers > 1:
        os.environ[MULTIPROC_ENV] = prepare_multiprocess_dir(config.state_dir, args.host, args.port)
    if not args.metrics_address:
        return
    from frontdoor_pki.config import build_store
    from frontdoor_pki.model import utcnow

    collector = TokenStatusCollector(build_store(config), [f.id for f in config.frontdoors], utcnow)
    try:
        host, port = start_metrics_server(args.metrics_address, registry_with([collector]), tls_files,
                                          args.tls_min_version)
    except OSError as exc:
        raise ConfigError("--metrics-address %s: %s" % (args.metrics_address, exc.strerror or exc)) from None
    print("frontdoor-gateway: metrics on %s://%s:%d/metrics (no authentication: keep this address private)"
          % ("https" if tls_files else "http", host, port), file=sys.stderr)


def cmd_init(args) -> int:
    from .auth import load_admin_token

    config = _config(args)
    service = build_service(config)
    service.close()
    _token, path, created = load_admin_token(config.state_dir)
    print("state dir:   %s" % config.state_dir)
    print("admin token: %s%s" % (path or "from FRONTDOOR_ADMIN_TOKEN", " (new)" if created else ""))
    print("frontdoors:  %s" % ", ".join(f.id for f in config.frontdoors))
    if config.backend == "local":
        print("database:    %s" % os.path.join(config.state_dir, "frontdoor.db"))
    return 0


def cmd_admin_token(args) -> int:
    from .auth import load_admin_token

    config = _config(args)
    token, path, _created = load_admin_token(config.state_dir)
    print(token if args.show else (path or "FRONTDOOR_ADMIN_TOKEN is set in the environment"))
    return 0


def cmd_new_api_token(args) -> int:
    from .auth import PERMISSIONS, new_api_token, token_hash

    grants: dict = {}
    for grant in args.grant:
        frontdoor, _, permission = grant.partition(":")
        if not frontdoor or (permission != "*" and permission not in PERMISSIONS):
            print("frontdoor-gateway: --grant %r: use FRONTDOOR:PERMISSION with one of %s or *"
                  % (grant, ", ".join(PERMISSIONS)), file=sys.stderr)
            return 2
        grants.setdefault(frontdoor, []).append(permission)
    token = new_api_token()
    print("# API token for %s (shown once; give it to its holder):" % args.name)
    print("#   %s" % token)
    print("# add to the gateway config under apiTokens:")
    print("- name: %s" % json.dumps(args.name))
    print("  sha256: %s" % token_hash(token))
    print("  permissions:")
    for frontdoor, perms in grants.items():
        print("    %s: [%s]" % (json.dumps(frontdoor), ", ".join(json.dumps(p) for p in perms)))
    if not grants:
        print("    {}  # no permissions yet: add --grant")
    return 0


def _actor() -> str:
    return "cli:%s" % (os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown")


def cmd_create_token(args) -> int:
    service = build_service(_config(args))
    record, secret = service.create_token(
        args.frontdoor, name=args.name, common_name=args.common_name, organization=args.organization,
        organizational_unit=args.organizational_unit, ttl=args.ttl, expires_at=args.expires_at,
        certificate_ttl=args.certificate_ttl, actor=_actor(),
        subject_alt_names={kind: getattr(args, kind) for kind in ("dns", "ip", "uri", "email") if getattr(args, kind)},
    )
    view = with_eab(token_view(record, secret=secret), service.store, record)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print("id:      %s\nname:    %s\ntoken:   %s   (shown once)\nexpires: %s"
              % (record.id, record.name, secret, view["expiresAt"]))
        if record.subject_alt_names:
            print("sans:    %s" % ", ".join(
                "%s:%s" % (kind, value) for kind, values in view["subjectAltNames"].items() for value in values))
        _print_eab(view)
    return 0


def cmd_list_tokens(args) -> int:
    service = build_service(_config(args))
    page = service.list_tokens(args.frontdoor, status=args.status, name=args.name, size=args.size)
    now = service.clock()
    if args.json:
        print(json.dumps([token_view(r, now) for r in page.items], indent=2))
    else:
        _print_tokens(page.items, now)
        if page.total > len(page.items):
            print("(%d of %d shown)" % (len(page.items), page.total))
    return 0


def cmd_delete_token(args) -> int:
    service = build_service(_config(args))
    service.delete_token(args.frontdoor, args.token_id, actor=_actor())
    print("deleted %s" % args.token_id)
    return 0


def cmd_refresh_token(args) -> int:
    service = build_service(_config(args))
    record, secret = service.refresh_token(
        args.frontdoor, args.token_id, ttl=args.ttl, expires_at=args.expires_at, actor=_actor()
    )
    view = with_eab(token_view(record, secret=secret), service.store, record)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print("id:      %s\ntoken:   %s   (shown once; the old one no longer works)\nexpires: %s"
              % (record.id, secret, view["expiresAt"]))
        _print_eab(view)
    return 0


def _print_eab(view: dict) -> None:
    """ACME External Account Binding of the token (docs/acme.md): shown once, like the secret."""
    eab = view.get("acmeEab")
    if eab:
        # "--eab-hmac-key=KEY": a base64url key starts with "-" once in 64, which option parsers take for an option
        print("acme:    --eab-kid %s --eab-hmac-key=%s   (shown once)" % (eab["keyId"], eab["hmacKey"]))


def cmd_cleanup(args) -> int:
    service = build_service(_config(args))
    statuses = ["expired", "redeemed"] if args.include_redeemed else ["expired"]
    ids = service.cleanup(
        args.frontdoor, statuses=statuses, older_than=args.older_than, dry_run=args.dry_run, actor=_actor()
    )
    if args.json:
        print(json.dumps({"deleted": 0 if args.dry_run else len(ids), "ids": ids, "dryRun": args.dry_run}))
    else:
        print("%s %d token(s)" % ("would remove" if args.dry_run else "removed", len(ids)))
        for token_id in ids:
            print("  %s" % token_id)
    return 0


def cmd_list_certificates(args) -> int:
    service = build_service(_config(args))
    page = service.list_certificates(args.frontdoor, size=1000)
    views = [certificate_view(c) for c in page.items]
    if args.json:
        print(json.dumps(views, indent=2))
    else:
        print("%-42s %-24s %-24s %-24s %s" % ("ID", "NAME", "COMMON NAME", "NOT AFTER", "REVOKED"))
        for v in views:
            print("%-42s %-24s %-24s %-24s %s" % (v["id"], v["name"][:24], (v["commonName"] or "")[:24], v["notAfter"],
                                                  v["revokedAt"] or "-"))
    return 0


def cmd_revoke_certificate(args) -> int:
    service = build_service(_config(args))
    record = service.revoke_certificate(args.frontdoor, args.certificate_id, actor=_actor())
    print("revoked %s (serial %s)" % (record.id, record.serial_number))
    return 0


def cmd_check_config(args) -> int:
    config = _config(args)
    print("config file: %s" % (config.source or "(none: embedded default)"))
    print("state dir:   %s" % config.state_dir)
    print("store:       %s" % config.backend)
    for f in config.frontdoors:
        print("frontdoor %s: signer %s, tcpSharesEnabled %s, token ttl %ds (max %ds), certificate ttl %ds"
              % (f.id, config.signers[f.id].get("type"), f.tcp_shares_enabled, f.default_token_ttl, f.max_token_ttl,
                 f.certificate_ttl))
    print("api tokens:  %d" % len(config.api_tokens))
    from .net import parse_forwarded_allow_ips

    try:
        trusted = parse_forwarded_allow_ips(config.forwarded_allow_ips)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print("proxies trusted for X-Forwarded-For/-Proto: %s" % (", ".join(trusted) or "none"))
    limits = config.rate_limits
    if limits.enabled:
        print("rate limits: unknown secrets %s per address, %s per frontdoor; auth failures %s per address; "
              "storage %s" % (limits.unknown_token_per_address or "off", limits.unknown_token_per_frontdoor or "off",
                              limits.auth_failures_per_address or "off",
                              limits.storage or os.path.join(config.state_dir, "ratelimits.db")))
    else:
        print("rate limits: off")
    return 0


def cmd_vault_policy(args) -> int:
    from frontdoor_pki.vault.policy import render_policy

    print(render_policy(_config(args)))
    return 0


def cmd_renew(args) -> int:
    from .renew_cli import cmd_renew as renew

    return renew(args)


def cmd_rotate_intermediate(args) -> int:
    from frontdoor_pki.signers.local_rotation import rotate_intermediate

    config = _config(args)
    if args.frontdoor not in config.signers:
        raise ConfigError("frontdoor %r is not configured (known: %s)" % (args.frontdoor, ", ".join(config.signers)))
    kind = config.signers[args.frontdoor].get("type", "local")
    if kind != "local":
        raise ConfigError("frontdoor %r signs with %s: rotate its intermediate there, not here" % (args.frontdoor, kind))
    rotation = rotate_intermediate(config.state_dir, args.frontdoor)
    if rotation.retired_serial:
        print("retired:     intermediate %s (kept in %s)" % (rotation.retired_serial, rotation.retired_path))
    print("new:         intermediate %s, %s, valid until %s" % (rotation.serial, rotation.subject, rotation.not_after))
    print("certificate: %s" % rotation.path)
    print("next:        restart every gateway on this state dir; issued certificates keep the chain recorded with them")
    return 0


def cmd_step_ca_template(args) -> int:
    from frontdoor_pki.signers.stepca import x509_template

    print(json.dumps(x509_template(), indent=2))
    return 0


COMMANDS = {
    "serve": cmd_serve, "init": cmd_init, "admin-token": cmd_admin_token, "new-api-token": cmd_new_api_token,
    "create-token": cmd_create_token, "list-tokens": cmd_list_tokens, "delete-token": cmd_delete_token,
    "refresh-token": cmd_refresh_token, "cleanup": cmd_cleanup, "list-certificates": cmd_list_certificates,
    "revoke-certificate": cmd_revoke_certificate, "check-config": cmd_check_config, "vault-policy": cmd_vault_policy,
    "step-ca-template": cmd_step_ca_template, "renew": cmd_renew, "rotate-intermediate": cmd_rotate_intermediate,
}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except ConfigError as exc:
        print("frontdoor-gateway: configuration error: %s" % exc, file=sys.stderr)
        return 2
    except FrontdoorError as exc:
        print("frontdoor-gateway: %s: %s" % (exc.code, exc.message), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
