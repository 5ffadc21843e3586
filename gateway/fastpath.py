"""The redemption hot path, served without the framework's per-request machinery.

Why: a redemption is ~0.5 ms of engine work (parse and verify the CSR, sign, two SQLite
commits), but going through FastAPI added about 1 ms more: routing, dependency solving,
pydantic validation, four layers of exception middleware and a thread-pool hop. Redemption
is the one endpoint called at volume (every device enrolling), so it gets a lean ASGI path.

What stays the same: the engine call (``service.redeem`` with the same arguments), the
response bodies, status codes and headers (the same ``JSONResponse`` and ``_error``). This
path serves only the well-formed request, a JSON object with exactly the string fields
``type`` and ``value``; anything else (bad JSON, wrong types, extra fields, another content
type) is handed, body and all, to the FastAPI route, so request validation and its error
messages keep a single implementation.

Where it runs: with the SQLite store and the local CA the work is pure CPU and finishes well
under a millisecond, so it runs on the event loop (a thread-pool hop costs about as much as
the SQLite part of the work). A frontdoor whose signer or store talks to the network
(Vault, step-ca) runs in the thread pool, as FastAPI would, so a slow server never blocks
the loop.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import socket
from typing import Optional, Tuple

from fastapi.responses import JSONResponse
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.service import FrontdoorService
from frontdoor_pki.tokens import redact
from frontdoor_pki.views import certificate_view
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import replay_body

try:
    import httptools  # noqa: F401 - uvicorn's C parser: used when installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the environment
    HttpToolsProtocol = None

log = logging.getLogger("frontdoor.gateway")

REDEEM_PATH = re.compile(r"^/frontdoor/([^/]+)/client-certificates/token/([^/]+)$")
UNEXPECTED = ("An internal error occurred; it was logged on the gateway. Nothing was changed "
              "that a retry cannot fix.")


def _json_content_type(headers) -> bool:
    """True when FastAPI would parse this body as JSON: no Content-Type, or application/json."""
    for key, value in headers:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return True


def _strict_body(body: bytes) -> Optional[Tuple[str, str]]:
    """(type, value) when the body is exactly {"type": str, "value": str}; else None (FastAPI decides)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeError, RecursionError):
        return None
    if type(data) is not dict or len(data) != 2:
        return None
    kind, value = data.get("type"), data.get("value")
    if type(kind) is not str or type(value) is not str:
        return None
    return kind, value


class RedeemFastPath:
    """ASGI middleware: serve ``POST /frontdoor/{id}/client-certificates/token/{token}`` directly."""

    def __init__(self, app, service: FrontdoorService, error_response):
        self.app = app
        self.service = service
        self.error_response = error_response  # app._error: one definition of the error body

    def _inline(self, frontdoor_id: str) -> bool:
        signer = self.service.signers.get(frontdoor_id)
        return getattr(self.service.store, "kind", None) == "sqlite" and (
            signer is None or getattr(signer, "kind", None) == "local"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        match = REDEEM_PATH.match(scope["path"])
        if match is None or not _json_content_type(scope.get("headers", ())):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        parsed = _strict_body(body)
        if parsed is None:
            return await self.app(scope, replay_body(body, receive), send)
        csr_type, csr_pem = parsed
        frontdoor_id, token = match.group(1), match.group(2)
        client = scope.get("client")
        call = functools.partial(
            self.service.redeem, frontdoor_id, token, csr_pem, csr_type, source=client[0] if client else None
        )
        try:
            result = call() if self._inline(frontdoor_id) else await run_in_threadpool(call)
        except FrontdoorError as exc:
            response = self.error_response(exc.code, redact(exc.message), exc.retry_after, exc.details or None)
        except Exception as exc:  # noqa: BLE001 - same contract as the app's catch-all handler
            log.error("unexpected error on POST %s", redact(scope["path"]), exc_info=exc)
            response = self.error_response("internal_error", UNEXPECTED)
        else:
            headers = {"Cache-Control": "no-store"}
            if result.replayed:
                headers["X-Frontdoor-Replayed"] = "true"
            response = JSONResponse(
                certificate_view(result.certificate), status_code=200 if result.replayed else 201, headers=headers
            )
        await response(scope, receive, send)




def _set_no_delay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY on every connection.

    With ``--workers`` uvicorn creates the listening socket itself as ``socket(AF_INET)``
    (protocol 0), and asyncio only sets TCP_NODELAY on sockets whose protocol is
    IPPROTO_TCP. uvicorn writes the status line and the body separately, so Nagle's
    algorithm held every response body until the client's delayed ACK: 40 ms per request.
    """

    def connection_made(self, transport):
        _set_no_delay(transport)
        super().connection_made(transport)


if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """The same for uvicorn's faster parser, used when httptools is installed."""

        def connection_made(self, transport):
            _set_no_delay(transport)
            super().connection_made(transport)


def no_delay_protocol():
    """The HTTP protocol class for ``uvicorn.run(http=...)``: httptools when installed, else h11."""
    return NoDelayHttpToolsProtocol if HttpToolsProtocol is not None else NoDelayH11Protocol
