"""FastAPI routes over the engine.

Routes parse and shape; the engine decides. Every failure leaves as
``{"error": {"code", "message"}}`` with the status from ``frontdoor_pki.errors``;
request validation never echoes input back (the redemption URL holds a secret).
Routes are plain ``def`` on purpose: the engine blocks (SQLite, signing, Vault HTTP),
so Starlette runs each call in its thread pool and the event loop keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Annotated, Any, Dict, List, Optional, Union

import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from frontdoor_pki.acme.protocol import with_eab
from frontdoor_pki.config import Config, ConfigError, build_service, load_config
from frontdoor_pki.errors import ERROR_STATUS, FrontdoorError
from frontdoor_pki.model import STATUSES
from frontdoor_pki.service import FrontdoorService
from frontdoor_pki.stores.base import CERTIFICATE_SORT_FIELDS, TOKEN_SORT_FIELDS
from frontdoor_pki.tokens import (
    DURATION_MAX,
    DURATION_TEXT_MAX,
    NAME_MAX,
    SUBJECT_FIELD_MAX,
    TIMESTAMP_TEXT_MAX,
    redact,
)
from frontdoor_pki.views import certificate_view, page_view, token_view
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, WithJsonSchema
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match

from . import __version__
from .acme import acme_router
from .auth import Authenticator, load_admin_token
from .client_cert import ProxyClientCertificate
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import RedemptionMetrics, TokenStatusCollector, exposition, instrument, registry_with
from .metrics import rate_limited as count_rate_limited
from .metrics import worker_started as metrics_worker_started
from .metrics import worker_stopping as metrics_worker_stopping
from .net import client_address
from .openapi import ADMIN, errors, install
from .ratelimit import AuthFailureLimit, RateLimits, RedemptionLimit
from .schemas import (
    CERTIFICATE_LINKS,
    TOKEN_LINKS,
    CaChain,
    Certificate,
    CertificatePage,
    CleanupResult,
    Frontdoor,
    Health,
    Token,
    TokenCreated,
    TokenPage,
    model,
)

log = logging.getLogger("frontdoor.gateway")
MAX_BODY = 64 * 1024
MAX_PAGE = 10**9  # page * size stays far inside SQLite's 64-bit OFFSET
NO_STORE = {"Cache-Control": "no-store"}
_REPLAYED = {"X-Frontdoor-Replayed": {"description": "true: a retry, answered with the earlier certificate.",
                                      "required": True, "schema": {"type": "string", "enum": ["true"]}}}
_CA_CHAIN = {"description": "The CA chain: PEM (format=pem) or JSON (format=json).", "model": CaChain, "content": {
    "application/pem-certificate-chain": {"schema": {"type": "string"}},
}}
_CRL = {"description": "The CRL: DER (format=der) or PEM (format=pem).", "content": {
    "application/pkix-crl": {"schema": {"type": "string", "format": "binary"}},
    "application/x-pem-file": {"schema": {"type": "string"}},
}}

def _whole(value: float) -> int:
    """JSON Schema's integer includes 768.0: a whole float is that integer, any other float is refused."""
    if not value.is_integer():
        raise ValueError("must be a whole number of seconds")
    return int(value)


# What frontdoor_pki.tokens.parse_duration reads (seconds, or numbers with units), for the document and validation
_DURATION_PATTERN = r"^\s*([0-9]+w *)?([0-9]+d *)?([0-9]+h *)?([0-9]+m *)?([0-9]+s?)?\s*$"
# The request fields as the document shows them: what JSON Schema can state of the engine's rules
# (frontdoor_pki.tokens). The engine still checks every rule, also those no schema can state: printable text
# (str.isprintable), a time in the future, a lifetime within the frontdoor's maximum.
Duration = Annotated[Union[StrictInt, Annotated[StrictFloat, AfterValidator(_whole)], StrictStr], WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": DURATION_MAX},
    {"type": "string", "minLength": 1, "maxLength": DURATION_TEXT_MAX, "pattern": _DURATION_PATTERN},
]})]
# Patterns leave out only what the engine refuses in every case: control characters (in a subject field, those
# that are not white space, since a field of white space only is accepted as "not locked").
Name = Annotated[StrictStr, WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"}
)]
SubjectText = Annotated[StrictStr, WithJsonSchema(
    {"type": "string", "maxLength": SUBJECT_FIELD_MAX, "pattern": r"^[^\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]*$"}
)]
Timestamp = Annotated[StrictStr, WithJsonSchema(
    {"type": "string", "format": "date-time", "maxLength": TIMESTAMP_TEXT_MAX}
)]


_BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="An API token: the admin token or one configured under apiTokens (see new-api-token).",
)


def _authorization(
    authorization: Optional[str] = Header(None, include_in_schema=False),
    _documented: Optional[HTTPAuthorizationCredentials] = Security(_BEARER),
) -> Optional[str]:
    """The raw Authorization header, for Authenticator to judge (it says why a header is refused).

    The HTTPBearer dependency refuses nothing (auto_error=False); it is here so that /openapi.json declares the
    bearer security scheme on every admin operation, which is how clients and fuzzers learn to send the token.
    """
    return authorization


AUTHORIZATION = Depends(_authorization)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubjectAltNamesBody(_Strict):
    """Pre-approved SANs, locked into the certificate like the subject. The engine's rules apply (sans.py):
    fully qualified host names (no wildcard), IPv4/IPv6, absolute URIs (SPIFFE IDs), emails; 100 at most."""

    dns: Optional[List[StrictStr]] = Field(None, description="DNS names, e.g. api.example.com (A-labels, no wildcard).")
    ip: Optional[List[StrictStr]] = Field(None, description="IPv4 or IPv6 addresses, e.g. 10.0.0.1, 2001:db8::1.")
    uri: Optional[List[StrictStr]] = Field(None, description="Absolute URIs, e.g. spiffe://example.org/ns/prod/sa/api.")
    email: Optional[List[StrictStr]] = Field(None, description="Email addresses, e.g. ops@example.com.")


def _sans(body: Optional[SubjectAltNamesBody]) -> Optional[Dict[str, Any]]:
    return body.model_dump(exclude_none=True) if body is not None else None


class TokenCreate(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "api-service-cert", "commonName": "api.example.com", "organization": "Example Corp",
        "organizationalUnit": "API Services", "ttl": "24h",
    }]})

    name: Name = Field(description="Required. Becomes the name of the client certificate. 1-128 printable characters.")
    commonName: Optional[SubjectText] = Field(None, description="Locked into the certificate when set; else from the CSR.")
    organization: Optional[SubjectText] = Field(None, description="Locked into the certificate when set; else from the CSR.")
    organizationalUnit: Optional[SubjectText] = Field(None, description="Locked when set; else from the CSR.")
    expiresAt: Optional[Timestamp] = Field(None, description="RFC 3339 time in the future. Or use ttl.")
    ttl: Optional[Duration] = Field(None, description="Lifetime: seconds, or 90s / 15m / 24h / 7d. Default 24h.")
    certificateTtl: Optional[Duration] = Field(None, description="Certificate lifetime, at most the frontdoor's.")
    subjectAltNames: Optional[SubjectAltNamesBody] = Field(
        None, description="SANs the certificate carries, exactly (whatever the CSR asks). None: no SANs."
    )


class TokenUpdate(_Strict):
    name: Optional[Name] = None
    commonName: Optional[SubjectText] = None
    organization: Optional[SubjectText] = None
    organizationalUnit: Optional[SubjectText] = None
    expiresAt: Optional[Timestamp] = None
    ttl: Optional[Duration] = None
    certificateTtl: Optional[Duration] = None
    subjectAltNames: Optional[SubjectAltNamesBody] = Field(
        None, description="Replaces the token's SANs as a whole; null or {} removes them."
    )


class TokenRefresh(_Strict):
    expiresAt: Optional[Timestamp] = None
    ttl: Optional[Duration] = None


class RedeemRequest(_Strict):
    type: StrictStr = Field(description='Must be "CSR".', json_schema_extra={"enum": ["CSR"]})
    value: StrictStr = Field(description="The PEM certificate signing request.")


_UPDATE_FIELDS = {
    "name": "name", "commonName": "common_name", "organization": "organization",
    "organizationalUnit": "organizational_unit", "expiresAt": "expires_at", "ttl": "ttl",
    "certificateTtl": "certificate_ttl", "subjectAltNames": "subject_alt_names",
}


def _error(code: str, message: str, retry_after: Optional[int] = None, details=None) -> JSONResponse:
    body: Dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": body}, status_code=ERROR_STATUS[code], headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        kind = err.get("type", "")
        if kind == "json_invalid":
            parts.append("the body is not valid JSON")
        elif kind == "missing":
            parts.append("%s is required" % where)
        elif kind == "extra_forbidden":
            parts.append("unknown field %r" % where)
        elif kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append("the body must be a JSON object (send Content-Type: application/json)")
        else:
            parts.append("%s: %s" % (where, err.get("msg", "invalid")))
    return redact("Invalid request: " + "; ".join(parts) + ".")


def _list_pattern(words, empty: bool = True) -> str:
    """A query parameter's pattern: comma-separated words (the document tells clients and fuzzers what parses)."""
    word = "(%s)" % "|".join(words)
    return ("^(%s(,%s)*)?$" if empty else "^%s(,%s)*$") % (word, word)


def _sort_pattern(fields) -> str:
    return "^((%s)(,(asc|desc|ASC|DESC))?)?$" % "|".join(sorted(fields))


def _allowed_methods(request: Request) -> str:
    """The Allow header of a 405: the methods of every route of this path. Starlette's own names only the first
    route it met, but GET, POST and DELETE of one path are separate routes here. Where templates overlap
    (``.../client-certificates/renew`` also fits ``.../client-certificates/{certificateId}``) the most literal
    template is the resource, as documented."""
    by_template: Dict[str, set] = {}
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] != Match.NONE:
            by_template.setdefault(getattr(route, "path", ""), set()).update(methods)
    if not by_template:
        return ""
    literal = min(by_template, key=lambda template: template.count("{"))
    return ", ".join(sorted(by_template[literal]))


def _too_large(limit: int) -> JSONResponse:
    return _error("payload_too_large", "The request body is larger than %d bytes (%d KiB)." % (limit, limit // 1024))


class BodyLimitMiddleware:
    """413 ``payload_too_large`` for a body over ``limit`` bytes, announced or streamed.

    Why not FastAPI's ``max_body_size`` (Starlette's RequestBodyLimitMiddleware): when the
    Content-Length is over the limit it replaces whatever response leaves with its own
    plain-text 413, not the error body every client of this API parses. A body streamed past
    the limit raises HTTPException(413) from ``receive``; FastAPI re-raises it from the body
    read and the app's handler answers ``payload_too_large``.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        announced = Headers(scope=scope).get("content-length", "")
        # ASCII digits only ('²'.isdigit() is true), and a length past 9 digits is over any limit without int()
        if announced.isascii() and announced.isdigit() and (len(announced) > 9 or int(announced) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413)
            return message

        return await self.app(scope, receive_within_limit, send)


class _Sweeper:
    """Removes expired tokens every ``interval`` seconds (reference: "regularly clean up expired tokens")."""

    def __init__(self, service: FrontdoorService, interval: float, older_than):
        self.service, self.interval, self.older_than = service, interval, older_than
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frontdoor-cleanup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.service.cleanup(None, statuses=["expired"], older_than=self.older_than, actor="gateway:sweeper")
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.warning("periodic cleanup failed", exc_info=True)


def create_app(
    service: FrontdoorService,
    authenticator: Authenticator,
    cleanup_interval: Optional[float] = None,
    cleanup_older_than="0s",
    *,
    rate_limits: Optional[RateLimits] = None,
    metrics: bool = True,
    metrics_route: bool = True,
    client_certificate_header: Optional[Dict[str, Any]] = None,
    threads: Optional[int] = None,
) -> FastAPI:
    """``rate_limits``: the limiter (None: no limits). ``metrics``: instrument the store and signers and count
    redemptions; ``metrics_route``: serve them at ``GET /metrics`` (off when ``serve --metrics-address`` serves
    them on their own address). ``threads``: how many requests of this process run their blocking work (store,
    signer, audit) at once, the size of anyio's default thread limiter (None: anyio's default, 40)."""
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if threads is not None:
            # the limiter Starlette's sync routes and run_in_threadpool take their thread from
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
            log.info("blocking work: %d threads in this worker (serve --threads)", threads)
        sweeper = _Sweeper(service, cleanup_interval, cleanup_older_than) if cleanup_interval else None
        if sweeper:
            sweeper.start()
        if metrics:
            metrics_worker_started()
        try:
            yield
        finally:
            if sweeper:
                sweeper.stop()
            if metrics:
                metrics_worker_stopping()
            if rate_limits is not None:
                rate_limits.close()
            service.close()

    app = FastAPI(
        lifespan=lifespan,
        title="frontdoor.pki gateway",
        version=__version__,
        description="Certificate request tokens: create single-use tokens carrying subject metadata; "
        "redeem them with a CSR for a client certificate. Errors are {\"error\": {\"code\", \"message\"}}.",
        docs_url="/docs",
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,  # operationId = the route's name: get_token, redeem
    )
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY)
    if rate_limits is not None:  # admin authentication failures, per address (gateway/ratelimit.py)
        app.add_middleware(AuthFailureLimit, limits=rate_limits,
                           address_of=lambda scope: client_address(HTTPConnection(scope)))
        # unknown secrets, per address and frontdoor: refused before the body is read; the route counts failures
        app.add_middleware(RedemptionLimit, limits=rate_limits,
                           address_of=lambda scope: client_address(HTTPConnection(scope)))
    if metrics:  # outermost: it sees every redemption's answer, 413 and 429 included (gateway/metrics.py)
        raw_store = instrument(service)
        metrics_registry = registry_with([TokenStatusCollector(raw_store, service.frontdoors, service.clock)])
        app.add_middleware(RedemptionMetrics, frontdoors=service.frontdoors)
    install(app)  # /openapi.json: no 422 anywhere, 400/500 on every operation (gateway/openapi.py)
    app.state.service = service
    # renewal behind a proxy doing mTLS: the certificate it verified, from its header (gateway/client_cert.py)
    proxy_certificates = ProxyClientCertificate(client_certificate_header) if client_certificate_header else None

    @app.exception_handler(FrontdoorError)
    async def _frontdoor_error(request: Request, exc: FrontdoorError):
        return _error(exc.code, redact(exc.message), exc.retry_after, exc.details or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error("invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return _error("not_found", "No such endpoint: %s %s." % (request.method, redact(request.url.path)))
        if exc.status_code == 405:
            answer = _error("method_not_allowed", "%s is not allowed on %s." % (request.method, redact(request.url.path)))
            answer.headers["Allow"] = _allowed_methods(request)  # RFC 9110: every method the path has
            return answer
        if exc.status_code == 413:
            return _too_large(MAX_BODY)
        code = "invalid_request" if 400 <= exc.status_code < 500 else "internal_error"
        return _error(code, redact(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, redact(request.url.path), exc_info=exc)
        return _error("internal_error", "An internal error occurred; it was logged on the gateway. Nothing was changed "
                      "that a retry cannot fix.")

    def principal(authorization: Optional[str], frontdoor_id: str, permission: str):
        who = authenticator.authenticate(authorization)
        authenticator.require(who, frontdoor_id, permission)
        return who

    @app.get("/healthz", tags=["health"], responses={**errors(503), 200: model(Health)})
    def healthz():
        service.store.ping()
        return {"status": "ok", "version": __version__, "frontdoors": sorted(service.frontdoors)}

    @app.get("/frontdoor/{frontdoorId}", tags=["frontdoors"], responses={**errors(*ADMIN, 404), 200: model(Frontdoor)})
    def get_frontdoor(frontdoorId: str, authorization: Optional[str] = AUTHORIZATION):
        principal(authorization, frontdoorId, "tokens:read")
        settings = service.frontdoor(frontdoorId)
        return {
            "id": settings.id,
            "tcpSharesEnabled": settings.tcp_shares_enabled,
            "defaultTokenTtl": settings.default_token_ttl,
            "maxTokenTtl": settings.max_token_ttl,
            "certificateTtl": settings.certificate_ttl,
            "signer": service.signers[settings.id].kind,
            "renewalEnabled": settings.renewal_enabled,
            "renewalWindow": settings.renewal_window,
            "renewalGrace": settings.renewal_grace,
        }

    base = "/frontdoor/{frontdoorId}/certificate-request-tokens"

    @app.post(base, status_code=201, tags=["tokens"], responses={**errors(*ADMIN, 404, 413, 503), 201: model(TokenCreated, links=TOKEN_LINKS)})
    def create_token(
        frontdoorId: str, body: TokenCreate, request: Request, authorization: Optional[str] = AUTHORIZATION
    ):
        who = principal(authorization, frontdoorId, "tokens:create")
        record, secret = service.create_token(
            frontdoorId, name=body.name, common_name=body.commonName, organization=body.organization,
            organizational_unit=body.organizationalUnit, ttl=body.ttl, expires_at=body.expiresAt,
            certificate_ttl=body.certificateTtl, subject_alt_names=_sans(body.subjectAltNames), actor=who.name,
        )
        headers = dict(NO_STORE, Location="/frontdoor/%s/certificate-request-tokens/%s" % (frontdoorId, record.id))
        view = with_eab(token_view(record, secret=secret), service.store, record)  # acmeEab: docs/acme.md
        return JSONResponse(view, status_code=201, headers=headers)

    @app.get(base, tags=["tokens"], responses={**errors(*ADMIN, 404, 503), 200: model(TokenPage)})
    def list_tokens(
        frontdoorId: str,
        page: int = Query(0, ge=0, le=MAX_PAGE),
        size: int = Query(20, ge=1, le=1000),
        sort: Optional[str] = Query(None, pattern=_sort_pattern(TOKEN_SORT_FIELDS), description="field[,asc|desc]"),
        status: Optional[str] = Query(
            None, pattern=_list_pattern(STATUSES), description="active, expired or redeemed (comma-separated)"
        ),
        name: Optional[str] = Query(None),
        authorization: Optional[str] = AUTHORIZATION,
    ):
        principal(authorization, frontdoorId, "tokens:read")
        result = service.list_tokens(frontdoorId, status=status, name=name, page=page, size=size, sort=sort)
        now = service.clock()
        return page_view(result, [token_view(r, now) for r in result.items])

    @app.delete(base, tags=["tokens"], responses={**errors(*ADMIN, 404, 503), 200: model(CleanupResult)})
    def cleanup_tokens(
        frontdoorId: str,
        status: str = Query(
            ..., pattern=_list_pattern(("expired", "redeemed"), empty=False),
            description="expired and/or redeemed, comma-separated. Active tokens are deleted one by one.",
        ),
        olderThan: Optional[str] = Query(
            None, max_length=DURATION_TEXT_MAX, pattern=_DURATION_PATTERN,
            description="only tokens expired/redeemed longer ago than this: seconds or 90s, 15m, 24h, 7d, 2w, 1h30m",
        ),
        dryRun: bool = Query(False),
        authorization: Optional[str] = AUTHORIZATION,
    ):
        who = principal(authorization, frontdoorId, "tokens:delete")
        ids = service.cleanup(
            frontdoorId, statuses=status, older_than=olderThan or 0, dry_run=dryRun, actor=who.name
        )
        return {"deleted": 0 if dryRun else len(ids), "wouldDelete": len(ids) if dryRun else None, "ids": ids}

    @app.get(base + "/{tokenId}", tags=["tokens"], responses={**errors(*ADMIN, 404, 503), 200: model(Token)})
    def get_token(frontdoorId: str, tokenId: str, authorization: Optional[str] = AUTHORIZATION):
        principal(authorization, frontdoorId, "tokens:read")
        return token_view(service.get_token(frontdoorId, tokenId), service.clock())

    @app.patch(base + "/{tokenId}", tags=["tokens"], responses={**errors(*ADMIN, 404, 409, 413, 503), 200: model(Token)})
    def update_token(
        frontdoorId: str, tokenId: str, body: TokenUpdate, authorization: Optional[str] = AUTHORIZATION
    ):
        who = principal(authorization, frontdoorId, "tokens:create")
        changes = {_UPDATE_FIELDS[k]: getattr(body, k) for k in body.model_fields_set}
        if "subject_alt_names" in changes:
            changes["subject_alt_names"] = _sans(changes["subject_alt_names"])
        record = service.update_token(frontdoorId, tokenId, changes, actor=who.name)
        return token_view(record, service.clock())

    @app.post(
        base + "/{tokenId}/refresh", tags=["tokens"],
        responses={**errors(*ADMIN, 404, 409, 413, 503), 200: model(TokenCreated, links=TOKEN_LINKS)},
    )
    def refresh_token(
        frontdoorId: str,
        tokenId: str,
        body: Optional[TokenRefresh] = Body(None),
        authorization: Optional[str] = AUTHORIZATION,
    ):
        who = principal(authorization, frontdoorId, "tokens:create")
        record, secret = service.refresh_token(
            frontdoorId, tokenId, ttl=body.ttl if body else None, expires_at=body.expiresAt if body else None,
            actor=who.name,
        )
        view = with_eab(token_view(record, service.clock(), secret=secret), service.store, record)
        return JSONResponse(view, headers=NO_STORE)

    @app.delete(base + "/{tokenId}", status_code=204, tags=["tokens"], responses=errors(*ADMIN, 404, 409, 503))
    def delete_token(frontdoorId: str, tokenId: str, authorization: Optional[str] = AUTHORIZATION):
        who = principal(authorization, frontdoorId, "tokens:delete")
        service.delete_token(frontdoorId, tokenId, actor=who.name)
        return Response(status_code=204)

    certs = "/frontdoor/{frontdoorId}/client-certificates"

    @app.post(
        certs + "/token/{token}", status_code=201, tags=["redemption"],
        responses={
            **errors(403, 404, 409, 410, 413, 429, 502, 503),
            201: model(Certificate, "Issued.", links=CERTIFICATE_LINKS),
            200: model(Certificate, "The certificate issued before to the same key (a retry).", headers=_REPLAYED, links=CERTIFICATE_LINKS),
        },
    )
    def redeem(frontdoorId: str, token: str, body: RedeemRequest, request: Request):
        """No Authorization header: the token in the path is the credential. A retry with the same key after a
        success returns the same certificate (200, header X-Frontdoor-Replayed: true)."""
        source = client_address(request)
        if rate_limits is None:
            result = service.redeem(frontdoorId, token, body.value, body.type, source=source)
        else:
            try:  # over the limit, RedemptionLimit (gateway/ratelimit.py) already answered 429
                result = service.redeem(frontdoorId, token, body.value, body.type, source=source)
            except FrontdoorError as exc:
                if exc.code == "token_not_found":  # only unknown secrets count
                    rate_limits.redemption_failed(frontdoorId, source)
                raise
        headers = dict(NO_STORE)
        if result.replayed:
            headers["X-Frontdoor-Replayed"] = "true"
        return JSONResponse(
            certificate_view(result.certificate), status_code=200 if result.replayed else 201, headers=headers
        )

    @app.post(
        certs + "/renew", status_code=201, tags=["renewal"],
        responses={
            **errors(401, 403, 404, 409, 413, 429, 502, 503),
            201: model(Certificate, "Renewed: the new certificate, with the current one's subject and SANs."),
            200: model(Certificate, "The certificate this one was renewed into before, for the same key (a retry).",
                       headers=_REPLAYED),
        },
    )
    def renew(frontdoorId: str, body: RedeemRequest, request: Request, authorization: Optional[str] = AUTHORIZATION):
        """Renewal with the current certificate: `Authorization: Bearer <JWT>` signed by the current certificate's
        key, the certificate in the JWT's x5c header, aud = this path, exp at most 5 minutes after iat, a jti used
        once (docs/api.md, Renewal). The body is the usual CSR (same key or a new one). Behind a proxy that verifies
        client certificates, its header may stand for the JWT (clientCertificateHeader)."""
        try:
            proxied = proxy_certificates.certificate(request, authorization) if proxy_certificates else None
        except FrontdoorError as exc:
            service.audit.emit("renewal.refused", frontdoor=str(frontdoorId)[:64], code=exc.code,
                               reason=exc.details.get("reason"), message=exc.message, source=client_address(request))
            raise
        result = service.renew(frontdoorId, authorization, body.value, body.type, source=client_address(request),
                               client_certificate=proxied)
        headers = dict(NO_STORE)
        if result.replayed:
            headers["X-Frontdoor-Replayed"] = "true"
        return JSONResponse(
            certificate_view(result.certificate), status_code=200 if result.replayed else 201, headers=headers
        )

    @app.get(certs, tags=["certificates"], responses={**errors(*ADMIN, 404, 503), 200: model(CertificatePage)})
    def list_certificates(
        frontdoorId: str,
        page: int = Query(0, ge=0, le=MAX_PAGE),
        size: int = Query(20, ge=1, le=1000),
        sort: Optional[str] = Query(None, pattern=_sort_pattern(CERTIFICATE_SORT_FIELDS), description="field[,asc|desc]"),
        tokenId: Optional[str] = Query(None),
        revoked: Optional[bool] = Query(None),
        authorization: Optional[str] = AUTHORIZATION,
    ):
        principal(authorization, frontdoorId, "certificates:read")
        result = service.list_certificates(
            frontdoorId, page=page, size=size, sort=sort, token_id=tokenId, revoked=revoked
        )
        return page_view(result, [certificate_view(c) for c in result.items])

    @app.get(certs + "/{certificateId}", tags=["certificates"], responses={**errors(*ADMIN, 404, 503), 200: model(Certificate)})
    def get_certificate(frontdoorId: str, certificateId: str, authorization: Optional[str] = AUTHORIZATION):
        principal(authorization, frontdoorId, "certificates:read")
        return certificate_view(service.get_certificate(frontdoorId, certificateId))

    @app.delete(
        certs + "/{certificateId}", tags=["certificates"],
        responses={**errors(*ADMIN, 404, 501, 502, 503), 200: model(Certificate)},
    )
    def revoke_certificate(frontdoorId: str, certificateId: str, authorization: Optional[str] = AUTHORIZATION):
        who = principal(authorization, frontdoorId, "certificates:revoke")
        return certificate_view(service.revoke_certificate(frontdoorId, certificateId, actor=who.name))

    @app.get("/frontdoor/{frontdoorId}/ca", tags=["ca"], responses={**errors(404, 501, 503), 200: _CA_CHAIN})
    def ca_chain(frontdoorId: str, format: str = Query("pem", pattern="^(pem|json)$")):
        chain: List[str] = service.ca_chain(frontdoorId)
        if format == "json":
            return {"caChain": chain}
        return Response("".join(chain), media_type="application/pem-certificate-chain")

    @app.get("/frontdoor/{frontdoorId}/crl", tags=["ca"], responses={**errors(404, 501, 503), 200: _CRL})
    def crl(frontdoorId: str, format: str = Query("der", pattern="^(der|pem)$")):
        der = service.crl(frontdoorId)
        if format == "pem":
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            pem = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
            return Response(pem, media_type="application/x-pem-file")
        return Response(der, media_type="application/pkix-crl")

    if metrics and metrics_route:
        @app.get(
            "/metrics", tags=["metrics"],
            responses={**errors(*ADMIN), 200: {"description": "Prometheus text exposition (docs/operations.md).",
                                               "content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
        def prometheus_metrics(authorization: Optional[str] = AUTHORIZATION):
            """Needs the metrics:read permission (grant it on frontdoor '*'), or serve --metrics-address."""
            principal(authorization, "*", "metrics:read")
            return Response(exposition(metrics_registry), media_type=METRICS_CONTENT_TYPE)

    app.include_router(acme_router(service))  # RFC 8555 front, outside the OpenAPI schema (docs/acme.md)
    return app


def build_from_env(env=os.environ) -> tuple:
    """(config, service, authenticator) from FRONTDOOR_STATE_DIR / FRONTDOOR_CONFIG / FRONTDOOR_ADMIN_TOKEN."""
    config: Config = load_config(env.get("FRONTDOOR_CONFIG") or None, env.get("FRONTDOOR_STATE_DIR") or None, env)
    admin_token, _path, _created = load_admin_token(config.state_dir, env)
    authenticator = Authenticator.from_config(admin_token, config.api_tokens)
    service = build_service(config)
    return config, service, authenticator


#: threads per worker when every redemption is CPU work in this process (SQLite store, local CA): one and two
#: measured alike and better than more, which only hand the GIL around (docs/performance.md, "Threads per worker
#: and workers per core"); two keep one slow request from holding up the worker's redemptions
CPU_BOUND_THREADS = 2
#: anyio's own default, kept when a store or signer is a network round trip (OpenBao, step-ca): a thread then
#: mostly waits, and fewer threads would queue requests behind one slow answer
NETWORK_THREADS = 40


def parse_threads(value: Optional[str]) -> Optional[int]:
    """``serve --threads``: None for ``auto`` (or nothing), else a number from 1 to 1000."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 1000:
        raise ConfigError("--threads must be auto or a number from 1 to 1000, not %r" % value[:40])
    return number


def threads_for(config: Config, value: Optional[str]) -> int:
    """``auto``: CPU_BOUND_THREADS for the embedded default, NETWORK_THREADS as soon as the store or any
    frontdoor's signer is remote."""
    number = parse_threads(value)
    if number is not None:
        return number
    remote = config.backend != "local" or any(
        config.signers.get(f.id, {"type": "local"}).get("type") != "local" for f in config.frontdoors
    )
    return NETWORK_THREADS if remote else CPU_BOUND_THREADS


def app_factory():
    """uvicorn --factory entry point (one per worker process)."""
    from frontdoor_pki.tokens import parse_duration

    config, service, authenticator = build_from_env()
    interval = os.environ.get("FRONTDOOR_CLEANUP_INTERVAL")
    seconds = parse_duration(interval, "cleanup interval") if interval and interval not in ("0", "0s") else None
    older = os.environ.get("FRONTDOOR_CLEANUP_OLDER_THAN") or "0s"
    return create_app(
        service, authenticator, cleanup_interval=seconds, cleanup_older_than=older,
        rate_limits=RateLimits.from_config(config, on_reject=count_rate_limited),
        # FRONTDOOR_METRICS=off: no instrumentation at all (measuring its cost: docs/operations.md, "Metrics")
        metrics=os.environ.get("FRONTDOOR_METRICS", "on").strip().lower() not in ("off", "false", "0", "no"),
        metrics_route=not os.environ.get("FRONTDOOR_METRICS_ADDRESS"),  # serve --metrics-address serves them
        client_certificate_header=config.client_certificate_header,
        threads=threads_for(config, os.environ.get("FRONTDOOR_THREADS")),
    )
