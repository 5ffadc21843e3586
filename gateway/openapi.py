"""The API contract: how every route documents the errors it can answer with.

``GET /openapi.json`` is the contract a client is generated from, so every operation lists every status it can
return, each with the one error body ``{"error": {"code", "message", "details"?}}``. Use it on every route::

    from .openapi import ADMIN, errors

    @app.get("/metrics", responses=errors(*ADMIN, 503))
    def metrics(...): ...

``errors(*statuses)`` returns the ``responses=`` dict for FastAPI's route decorators. It always adds ``400``
(request validation: ``invalid_request``, never 422), ``413`` and ``429`` (``payload_too_large``: a body announced
over 64 KiB, and ``rate_limited``: an Authorization header from an address over the authentication-failure limit,
are both refused by middleware before routing, whatever the route; see gateway/ratelimit.py) and ``500``
(``internal_error``), because any route with a parameter can be sent garbage and any route can hit a bug. The
description of each status lists the codes that status carries, taken from ``frontdoor_pki.errors.ERROR_STATUS``.

The codes are that table, nothing else: ``ErrorCode`` is built from it, so a new code (``FrontdoorError`` refuses
one that is not in the table) is added in ``plugins/module_utils/errors.py`` only and appears here by itself.
``429`` (``rate_limited``) always documents the ``Retry-After`` header as required; ``409`` and ``503`` document it
as optional (a claim in flight, a locked store, a busy signer or an unwritable audit log send it).

``install(app)`` replaces ``app.openapi`` with one that post-processes FastAPI's generated document through the
public ``fastapi.openapi.utils.get_openapi``: it drops the ``422`` FastAPI adds on its own to every route with
parameters (this gateway answers ``400 invalid_request`` instead), drops the empty JSON body FastAPI adds beside
the content types a route declares (a CRL is not JSON), and puts ``400``/``413``/``429``/``500`` on any
operation that did not use ``errors()``, so a forgotten route is still truthful about validation errors, limits and
bugs. Success bodies are documented with the models of gateway/schemas.py.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Union

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from frontdoor_pki.errors import ERROR_STATUS
from pydantic import BaseModel, Field

# Codes only the Ansible modules' gateway client makes up (it could not reach the gateway): never on the wire.
CLIENT_ONLY_CODES = frozenset({"gateway_unavailable"})

ErrorCode = enum.Enum(  # type: ignore[misc]  # functional API: the members are the table's codes
    "ErrorCode", {code: code for code in ERROR_STATUS if code not in CLIENT_ONLY_CODES}, type=str
)
ErrorCode.__doc__ = "Machine-readable error code; the HTTP status follows from it (see the API docs' table)."

_ALWAYS = (400, 413, 429, 500)
# What every bearer-authenticated route can add: unauthorized, forbidden, and rate_limited (failed authentications
# are rate limited per client address). Use as errors(*ADMIN, 404, 503).
ADMIN = (401, 403, 429)
# Statuses whose answer may carry Retry-After; True = always does.
_RETRY_AFTER = {409: False, 429: True, 503: False}
_RETRY_AFTER_TEXT = {
    409: "Seconds until the claim of a request in flight lapses (redemption_in_progress, renewal_in_progress).",
    429: "Seconds until the rate-limit window lets this client try again.",
    503: "Seconds after which a retry may succeed, when the backend said so.",
}


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="What went wrong, for programs to branch on.")
    message: str = Field(description="What went wrong and what to do, for people. Never holds a secret.")
    details: Optional[Dict[str, Any]] = Field(
        None, description="Optional facts, e.g. expiresAt of an expired token, redeemedAt, a CSR's reason."
    )


class Error(BaseModel):
    """The body of every answer with a status of 400 or above."""

    error: ErrorBody


def codes_for(status: int) -> list:
    """The codes that leave with ``status`` (the wire ones only)."""
    return [code for code, value in ERROR_STATUS.items() if value == status and code not in CLIENT_ONLY_CODES]


def _response(status: int) -> Dict[str, Any]:
    codes = codes_for(status)
    if not codes:
        raise ValueError("no error code has HTTP status %d; add it to frontdoor_pki.errors.ERROR_STATUS" % status)
    entry: Dict[str, Any] = {"model": Error, "description": "Error: " + ", ".join("`%s`" % c for c in codes) + "."}
    if status in _RETRY_AFTER:
        entry["headers"] = {
            "Retry-After": {
                "description": _RETRY_AFTER_TEXT[status],
                "required": _RETRY_AFTER[status],
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return entry


def errors(*statuses: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """``responses=`` for a route: the error statuses it can return (400, 413, 429 and 500 are always added).

    Merge with success responses by ``{**errors(404), 200: {...}}``; a status without any code in the table
    is refused at import time so the document can never promise an error the gateway cannot send.
    """
    return {status: _response(status) for status in sorted(set(_ALWAYS) | set(statuses))}


def _error_ref() -> Dict[str, Any]:
    return {"$ref": "#/components/schemas/Error"}


def _post_process(document: Dict[str, Any]) -> Dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "Error" not in schemas:  # no route used errors(): add the models ourselves
        generated = Error.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas["Error"] = generated
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            for status, response in responses.items():
                content = response.get("content", {})
                # FastAPI adds its default JSON type with an empty schema beside the types a route declares
                # (CRL, metrics): that route never answers JSON.
                if str(status)[:1] in "123" and len(content) > 1 and content.get("application/json") == {"schema": {}}:
                    del content["application/json"]
            for status in _ALWAYS:
                if str(status) not in responses:
                    entry = _response(status)
                    entry.pop("model")
                    entry["content"] = {"application/json": {"schema": _error_ref()}}
                    responses[str(status)] = entry
    text = repr(document["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if "#/components/schemas/%s'" % name not in text:
            schemas.pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the post-processed document at ``app.openapi_url`` (built once, like FastAPI's own)."""

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = _post_process(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents this override
