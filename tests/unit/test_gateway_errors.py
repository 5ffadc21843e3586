"""An unexpected exception in a route: 500 internal_error, no traceback to the client, logged redacted.

In process (the real app and a real embedded service) because nothing a client can send makes the
engine raise something unexpected; the engine's redeem is replaced by one that does.
"""

from __future__ import annotations

import asyncio
import io
import logging

import httpx
from frontdoor_gateway.app import create_app
from frontdoor_gateway.auth import Authenticator
from frontdoor_gateway.logs import RedactFilter
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.tokens import new_secret


async def _post(app, path: str, body: dict) -> httpx.Response:
    # raise_app_exceptions=False: the response the client gets, not Starlette's re-raise after sending it
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post(path, json=body)


def test_unexpected_error_is_a_500_body_and_a_redacted_log(tmp_path, monkeypatch):
    service = build_service(load_config(state_dir=str(tmp_path), env={}))
    secret = new_secret()

    def broken_redeem(*_args, **_kwargs):
        raise RuntimeError("engine bug while handling %s" % secret)

    monkeypatch.setattr(service, "redeem", broken_redeem)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())  # as logs.log_config puts it on every handler
    logger = logging.getLogger("frontdoor.gateway")
    logger.addHandler(handler)
    try:
        app = create_app(service, Authenticator.from_config("fdk_x" * 8, []))
        response = asyncio.run(_post(app, "/frontdoor/default/client-certificates/token/" + secret,
                                     {"type": "CSR", "value": "x"}))
    finally:
        logger.removeHandler(handler)
        service.close()
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in response.text and "engine bug" not in response.text and secret not in response.text
    logged = stream.getvalue()
    assert "Traceback" in logged and "RuntimeError: engine bug" in logged
    assert secret not in logged and "crt_[REDACTED]" in logged


def _call_with_content_length(value: bytes):
    """Drive BodyLimitMiddleware as an ASGI server would, with a Content-Length header the HTTP parser let through."""
    from frontdoor_gateway.app import BodyLimitMiddleware

    reached, sent = [], []

    async def inner(scope, receive, send):
        reached.append(True)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", value)]}
    asyncio.run(BodyLimitMiddleware(inner, 65536)(scope, receive, send))
    return reached, sent[0]["status"]


def test_body_limit_reads_only_plain_ascii_content_lengths():
    assert _call_with_content_length(b"5" * 5000)[1] == 413  # a huge number: over the limit, no int() of it
    assert _call_with_content_length(b"65537")[1] == 413
    assert _call_with_content_length(b"2") == ([True], 204)
    # '\u00b2' ('²') is a digit to str.isdigit() but not to int(): not a length, left to the body's own count
    assert _call_with_content_length("\u00b2".encode("latin-1")) == ([True], 204)
