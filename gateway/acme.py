"""The ACME front's HTTP face (RFC 8555) at ``/acme/{frontdoorId}/...``; the rules are in frontdoor_pki.acme.

Thin on purpose: read the bytes, call ``AcmeServer``, shape the answer. Every answer carries a fresh
``Replay-Nonce``, ``Link: <directory>;rel="index"`` and ``Cache-Control: no-store``; every refusal is
``application/problem+json`` with an ``urn:ietf:params:acme:error:*`` type. The routes are left out of
the OpenAPI schema: RFC 8555 specifies them (docs/acme.md shows how clients use them).
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response
from frontdoor_pki.acme.problems import PROBLEM_CONTENT_TYPE, AcmeProblem, from_engine
from frontdoor_pki.acme.server import AcmeServer, Reply, Urls
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.service import FrontdoorService
from frontdoor_pki.tokens import redact
from starlette.concurrency import run_in_threadpool

from .net import client_address

log = logging.getLogger("frontdoor.gateway.acme")
JOSE_CONTENT_TYPE = "application/jose+json"


def _urls(request: Request, frontdoor_id: str) -> Urls:
    return Urls(str(request.base_url).rstrip("/") + "/acme/" + frontdoor_id)


def acme_router(service: FrontdoorService) -> APIRouter:
    """The routes of every frontdoor's ACME directory, over one ``AcmeServer``."""
    server = AcmeServer(service)
    router = APIRouter(include_in_schema=False)

    def headers(urls: Urls, extra: Optional[dict] = None) -> dict:
        result = {"Cache-Control": "no-store", "Link": '<%s>;rel="index"' % urls.directory}
        try:
            result["Replay-Nonce"] = server.new_nonce()
        except Exception:  # noqa: BLE001 - the store cannot give its key now: answer without a nonce
            log.warning("ACME: no nonce for this answer (store unavailable)")
        result.update({k: v for k, v in (extra or {}).items() if v})
        return result

    def problem(urls: Urls, exc: AcmeProblem) -> Response:
        extra = dict(exc.headers)
        if exc.retry_after:
            extra["Retry-After"] = str(exc.retry_after)
        return Response(json.dumps(exc.body()), status_code=exc.status, media_type=PROBLEM_CONTENT_TYPE,
                        headers=headers(urls, extra))

    def reply(urls: Urls, result: Reply) -> Response:
        extra = {"Location": result.location} if result.location else None
        if result.body is None:
            return Response(status_code=result.status, headers=headers(urls, extra))
        content = result.body if isinstance(result.body, str) else json.dumps(result.body)
        return Response(content, status_code=result.status, media_type=result.content_type,
                        headers=headers(urls, extra))

    async def answer(request: Request, frontdoor_id: str, call: Callable[[Urls], Reply]) -> Response:
        urls = _urls(request, frontdoor_id)
        try:
            return reply(urls, await run_in_threadpool(call, urls))
        except AcmeProblem as exc:
            return problem(urls, exc)
        except FrontdoorError as exc:
            return problem(urls, from_engine(exc))
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the client gets a problem
            log.exception("ACME: unexpected error on %s %s", request.method, redact(request.url.path))
            return problem(urls, AcmeProblem("serverInternal", "An internal error occurred; it was logged.", 500))

    @router.get("/acme/{frontdoorId}/directory")
    async def directory(frontdoorId: str, request: Request):
        urls = _urls(request, frontdoorId)
        try:
            body = await run_in_threadpool(server.directory, frontdoorId, urls)
        except AcmeProblem as exc:
            return problem(urls, exc)
        return Response(json.dumps(body), media_type="application/json", headers=headers(urls))

    @router.api_route("/acme/{frontdoorId}/new-nonce", methods=["GET", "HEAD"])
    async def new_nonce(frontdoorId: str, request: Request):
        def call(_urls: Urls) -> Reply:
            server.check_frontdoor(frontdoorId)
            return Reply(200 if request.method == "HEAD" else 204, None)

        return await answer(request, frontdoorId, call)

    async def signed(request: Request, frontdoor_id: str, route: str, arg: str = "") -> Response:
        body = await request.body()
        source = client_address(request)
        url = str(request.url)

        def call(urls: Urls) -> Reply:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != JOSE_CONTENT_TYPE:
                raise AcmeProblem("malformed", "ACME requests must be sent as %s." % JOSE_CONTENT_TYPE, status=415)
            return server.post(frontdoor_id, urls, url, body, route, arg, source=source)

        return await answer(request, frontdoor_id, call)

    @router.post("/acme/{frontdoorId}/new-account")
    async def new_account(frontdoorId: str, request: Request):
        return await signed(request, frontdoorId, "new-account")

    @router.post("/acme/{frontdoorId}/new-order")
    async def new_order(frontdoorId: str, request: Request):
        return await signed(request, frontdoorId, "new-order")

    @router.post("/acme/{frontdoorId}/revoke-cert")
    async def revoke_cert(frontdoorId: str, request: Request):
        return await signed(request, frontdoorId, "revoke-cert")

    @router.post("/acme/{frontdoorId}/key-change")
    async def key_change(frontdoorId: str, request: Request):
        return await signed(request, frontdoorId, "key-change")

    @router.post("/acme/{frontdoorId}/acct/{accountId}")
    async def account(frontdoorId: str, accountId: str, request: Request):
        return await signed(request, frontdoorId, "account", accountId)

    @router.post("/acme/{frontdoorId}/acct/{accountId}/orders")
    async def orders(frontdoorId: str, accountId: str, request: Request):
        return await signed(request, frontdoorId, "orders", accountId)

    @router.post("/acme/{frontdoorId}/order/{orderId}")
    async def order(frontdoorId: str, orderId: str, request: Request):
        return await signed(request, frontdoorId, "order", orderId)

    @router.post("/acme/{frontdoorId}/order/{orderId}/finalize")
    async def finalize(frontdoorId: str, orderId: str, request: Request):
        return await signed(request, frontdoorId, "finalize", orderId)

    @router.post("/acme/{frontdoorId}/authz/{orderId}/{index}")
    async def authz(frontdoorId: str, orderId: str, index: str, request: Request):
        return await signed(request, frontdoorId, "authz", "%s/%s" % (orderId, index))

    @router.post("/acme/{frontdoorId}/cert/{certificateId}")
    async def cert(frontdoorId: str, certificateId: str, request: Request):
        return await signed(request, frontdoorId, "cert", certificateId)

    # Last, so it only sees what no route above took: an ACME problem (with a nonce) instead of the API's error body.
    @router.api_route("/acme/{frontdoorId}/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    async def elsewhere(frontdoorId: str, rest: str, request: Request):
        def call(_urls: Urls) -> Reply:
            server.check_frontdoor(frontdoorId)
            first = rest.split("/", 1)[0]
            if first in _RESOURCES:
                raise AcmeProblem("malformed", "%s is not allowed here: ACME resources take POST (RFC 8555)."
                                  % request.method, status=405)
            raise AcmeProblem("malformed", "No such ACME resource; start from the directory.", status=404)

        return await answer(request, frontdoorId, call)

    return router


_RESOURCES = {"directory", "new-nonce", "new-account", "new-order", "revoke-cert", "key-change", "acct", "order",
              "authz", "cert"}
