"""Unit tests of the gateway's redemption fast path (frontdoor_gateway.fastpath).

The fast path replaces framework pieces with cheaper code; these tests pin that the
replacements say exactly what the originals said: the access line (uvicorn's format through
the logging module and the redaction filter), the JSON body (Starlette's JSONResponse), the
response headers, and which requests are left to the full stack.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re

import pytest
from fastapi.responses import JSONResponse
from frontdoor_gateway.app import MAX_BODY, _error
from frontdoor_gateway.fastpath import AccessLog, RedeemFastPath, dump_json
from frontdoor_gateway.logs import RedactFilter
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.views import certificate_view
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

SECRET = "crt_" + "A1b2" * 8 + "x"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _scope(path, query=b"", client=("127.0.0.1", 50123), method="POST", headers=()):
    return {"type": "http", "method": method, "path": path, "query_string": query, "client": client,
            "http_version": "1.1", "headers": list(headers), "root_path": ""}


def _old_access_line(scope, status) -> str:
    """What uvicorn's access logger printed with logs.log_config (formatter + RedactFilter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s access: %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("test.fastpath.old-access")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],
                get_path_with_query_string(scope), scope["http_version"], status)
    return stream.getvalue()


@pytest.mark.parametrize("scope,status", [
    (_scope("/frontdoor/default/client-certificates/token/" + SECRET), 201),
    (_scope("/frontdoor/default/client-certificates/token/" + SECRET, query=b"x=" + SECRET.encode()), 400),
    (_scope("/healthz", query=b"a=b%20c", method="GET"), 200),
    (_scope("/fr\u00e9/x y", method="GET"), 404),
    (_scope("/frontdoor/default/ca", client=None, method="GET"), 200),
])
def test_access_line_is_the_line_uvicorn_logged(scope, status):
    stream = io.StringIO()
    AccessLog(stream).write(scope, status)
    new, old = stream.getvalue(), _old_access_line(scope, status)
    assert SECRET not in new and new.endswith("\n") and new.count("\n") == 1
    assert TIMESTAMP.match(new) and TIMESTAMP.match(old)
    assert new[24:] == old[24:]  # everything after the timestamp, byte for byte


def test_access_log_follows_the_logging_config():
    logger = logging.getLogger("test.fastpath.access-config")
    logger.handlers = []
    assert AccessLog.from_logging(logger.name) is None  # --no-access-log: no handler, no line
    stream = io.StringIO()
    logger.handlers = [logging.StreamHandler(stream)]
    access = AccessLog.from_logging(logger.name)
    access.write(_scope("/healthz", method="GET"), 200)
    assert stream.getvalue().endswith('access: 127.0.0.1:50123 - "GET /healthz HTTP/1.1" 200\n')
    logger.handlers = []


@pytest.mark.parametrize("content", [
    {"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "caChain": ["a\nb", "c"],
     "name": "caf\u00e9 \u2603 \U0001f600 \"quoted\" back\\slash\ttab\x01", "revokedAt": None, "n": 3},
    {"error": {"code": "invalid_request", "message": "x", "details": {"a": [1, 2.5, True, None]}}},
])
def test_body_is_the_body_jsonresponse_rendered(content):
    assert dump_json(content) == JSONResponse(content).body


class _Inner:
    """Stands for the full stack (access log, body limit, FastAPI): records what it was handed."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.calls.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _run(app, scope, chunks):
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.fixture
def fastpath(tmp_path):
    service = build_service(load_config(None, str(tmp_path), env={}))
    inner = _Inner()
    stream = io.StringIO()
    yield RedeemFastPath(inner, service, _error, AccessLog(stream), MAX_BODY), service, inner, stream
    service.close()


def test_well_formed_redemption_is_served_with_jsonresponse_headers(fastpath, csr_for):
    app, service, inner, stream = fastpath
    _record, secret = service.create_token("default", name="fp", common_name="fp.example")
    body = b'{"type": "CSR", "value": %s}' % dump_json(csr_for(cn="x"))
    scope = _scope("/frontdoor/default/client-certificates/token/" + secret,
                   headers=[(b"content-type", b"application/json; charset=utf-8")])
    start, answer = _run(app, scope, [body[:100], body[100:]])  # a body in two parts is still served here
    assert inner.calls == []
    view = certificate_view(service.get_certificate("default", service.list_certificates("default").items[0].id))
    expected = JSONResponse(view, status_code=201, headers={"Cache-Control": "no-store"})
    assert (start["status"], start["headers"], answer["body"]) == (201, expected.raw_headers, expected.body)
    again = _run(app, scope, [body])
    replayed = JSONResponse(view, status_code=200, headers={"Cache-Control": "no-store", "X-Frontdoor-Replayed": "true"})
    assert (again[0]["status"], again[0]["headers"], again[1]["body"]) == (200, replayed.raw_headers, replayed.body)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith(" 201") and lines[1].endswith(" 200") and secret not in stream.getvalue()


def test_engine_errors_keep_the_error_body(fastpath, csr_for):
    app, _service, inner, stream = fastpath
    scope = _scope("/frontdoor/default/client-certificates/token/" + SECRET)
    start, answer = _run(app, scope, [b'{"type": "CSR", "value": %s}' % dump_json(csr_for(cn="x"))])
    assert inner.calls == []
    assert start["status"] == 404 and b'"code":"token_not_found"' in answer["body"]
    assert SECRET.encode() not in answer["body"]
    assert answer["body"] == _error("token_not_found", _message(answer["body"]), None, {"reason": "checksum"}).body
    assert stream.getvalue().rstrip().endswith(" 404")


def _message(body: bytes) -> str:
    import json

    return json.loads(body)["error"]["message"]


@pytest.mark.parametrize("headers,chunks", [
    ([(b"content-type", b"text/plain")], [b'{"type": "CSR", "value": "x"}']),  # FastAPI decides (422/400)
    ([(b"content-length", b"12x")], [b"{}"]),  # body limit middleware: not a number
    ([(b"content-length", b"%d" % (MAX_BODY + 1))], [b"{}"]),  # body limit middleware: 413 unread
    ([], [b"x" * 40000, b"x" * 40000]),  # streamed past the limit: 413 from the body limit middleware
    ([], [b'{"type": "CSR", "value": "x", "extra": 1}']),  # strict fields only
    ([], [b'{"type": "CSR", "value": 1}']),
    ([], [b"not json"]),
])
def test_anything_else_goes_to_the_full_stack(fastpath, headers, chunks):
    app, _service, inner, _stream = fastpath
    scope = _scope("/frontdoor/default/client-certificates/token/" + SECRET, headers=headers)
    start, _answer = _run(app, scope, chunks)
    assert start["status"] == 299 and len(inner.calls) == 1
    received = inner.calls[0]
    if headers and headers[0][0] == b"content-length":
        assert received == chunks[0]  # nothing was read before handing over
    else:
        assert received == b"".join(chunks)[:len(received)] and len(received) >= min(len(b"".join(chunks)), MAX_BODY)


@pytest.mark.parametrize("body", [
    b'{"type": "CSR", "value": "v"}', b'{"type": "CSR", "type": "X", "value": "v"}', b'\xef\xbb\xbf{"type": "a", "value": "b"}',
    b'{"type": "\\ud800", "value": "v"}', b'{"type": NaN, "value": "v"}', b'{"type": "a", "value": "caf\xc3\xa9"}',
    b'{"type": "a", "value": "\xe9"}', b' {"type": "a", "value": "b"}\n', b"[1]", b"", b'"x"', b"{}",
])
def test_strict_body_reads_json_as_json_loads_does(body):
    import json

    from frontdoor_gateway.fastpath import _strict_body

    try:
        data = json.loads(body)
    except ValueError:
        expected = None
    else:
        ok = type(data) is dict and len(data) == 2 and all(type(data.get(k)) is str for k in ("type", "value"))
        expected = (data["type"], data["value"]) if ok else None
    assert _strict_body(body) == expected
