"""The redemption hot path, served without the framework's per-request machinery.

Why: a redemption is ~0.5 ms of engine work (parse and verify the CSR, sign, two SQLite
commits), but going through FastAPI added about 1 ms more: routing, dependency solving,
pydantic validation, four layers of exception middleware and a thread-pool hop. Redemption
is the one endpoint called at volume (every device enrolling), so it gets a lean ASGI path.

What stays the same: the engine call (``service.redeem`` with the same arguments), the
response bodies, status codes and headers (errors through the app's ``_error``; a
certificate as the exact headers and bytes ``JSONResponse`` produced, which the unit tests
pin), the body limit, and the access line (``AccessLog``). This path serves only the
well-formed request, a JSON object with exactly the string fields ``type`` and ``value``;
anything else (bad JSON, wrong types, extra fields, another content type, an unusual
Content-Length) is handed, body and all, to the full stack and the FastAPI route, so request
validation and its error messages keep a single implementation.

Per request outside the engine this costs ~85 us of server CPU with httptools and uvloop,
access line included, where uvicorn serving a fixed 3 KB JSON body costs ~50 us
(docs/performance.md).

Where it runs: with the SQLite store and the local CA the work is pure CPU and finishes well
under a millisecond, so it runs on the event loop (a thread-pool hop costs about as much as
the SQLite part of the work). A frontdoor whose signer or store talks to the network
(Vault, step-ca) runs in the thread pool, as FastAPI would, so a slow server never blocks
the loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import socket
import time
from typing import Dict, Optional, Tuple
from urllib.parse import quote

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

# The same bytes Starlette's JSONResponse renders (compact, UTF-8, NaN refused), from one
# encoder made once: json.dumps with keyword arguments builds a new JSONEncoder per call.
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def dump_json(content) -> bytes:
    """Response body bytes, identical to ``JSONResponse(content).body``."""
    return _encode_json(content).encode("utf-8")


_decode_json = json.loads

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

if orjson is not None:
    _orjson_dumps, _orjson_loads = orjson.dumps, orjson.loads

    def dump_json(content) -> bytes:  # noqa: F811 - the same bytes, from orjson when installed
        """Response body bytes, identical to ``JSONResponse(content).body``."""
        try:
            return _orjson_dumps(content)
        except TypeError:  # what orjson refuses (e.g. a lone surrogate) fails the same way as before
            return _encode_json(content).encode("utf-8")

    def _decode_json(body: bytes):  # noqa: F811
        """orjson accepts a subset of what json.loads accepts, with the same result; the rest falls back."""
        try:
            return _orjson_loads(body)
        except ValueError:
            return json.loads(body)

_HEADERS_201 = [(b"cache-control", b"no-store")]
_HEADERS_200 = [(b"cache-control", b"no-store"), (b"x-frontdoor-replayed", b"true")]
_JSON_TYPE = (b"content-type", b"application/json")


def _strict_body(body: bytes) -> Optional[Tuple[str, str]]:
    """(type, value) when the body is exactly {"type": str, "value": str}; else None (FastAPI decides)."""
    try:
        data = _decode_json(body)
    except (ValueError, UnicodeError, RecursionError):
        return None
    if type(data) is not dict or len(data) != 2:
        return None
    kind, value = data.get("type"), data.get("value")
    if type(kind) is not str or type(value) is not str:
        return None
    return kind, value


class AccessLog:
    """uvicorn's access line, written without the logging module.

    Why: uvicorn's access log goes through ``logging`` (record, filter, formatter, handler
    lock) and our redaction filter; per redemption that was ~40-50 us of server CPU, more
    than everything else in our ASGI code. The line is the same as before, in the same place:
    ``<asctime> INFO access: <client> - "<METHOD> <path> HTTP/<v>" <status>``, with the
    asctime format of ``logging`` (local time, milliseconds) and token secrets redacted
    from the whole message, exactly as ``logs.RedactFilter`` did.

    Where it writes: the stream of the ``frontdoor.access`` logger's handler (stderr with
    ``logs.log_config``); with no handler there (``--no-access-log``) there is no AccessLog.
    """

    def __init__(self, stream):
        self.stream = stream
        self._second = -1
        self._prefix = ""

    @classmethod
    def from_logging(cls, name: str = "frontdoor.access") -> Optional[AccessLog]:
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None:
                return cls(stream)
        return None

    def write(self, scope, status: int) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        client = scope.get("client")
        path = scope["path"]
        if not _PLAIN_PATH.match(path):
            path = quote(path)
        query = scope.get("query_string")
        if query:
            path = "%s?%s" % (path, query.decode("ascii"))
        message = '%s - "%s %s HTTP/%s" %d' % (
            "%s:%d" % tuple(client) if client else "", scope["method"], path, scope["http_version"], status,
        )
        try:
            self.stream.write("%s,%03d INFO access: %s\n" % (self._prefix, int((now - second) * 1000), redact(message)))
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full log must not fail the request (logging ignores it too)
            pass


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.\-~/]*\Z")  # what urllib.parse.quote leaves unchanged


class AccessLogMiddleware:
    """The access line for every request the fast path does not serve (status when the response starts)."""

    def __init__(self, app, access: AccessLog):
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def logged_send(message):
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                self.access.write(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except BaseException:
            if not started:  # uvicorn answers 500 (and logged it, before our own access line)
                self.access.write(scope, 500)
            raise


class RedeemFastPath:
    """ASGI entry: serve ``POST /frontdoor/{id}/client-certificates/token/{token}`` directly.

    Everything else, and any redemption that is not plainly well-formed (another content
    type, a Content-Length that is missing a number or over the body limit, bad JSON, other
    fields), goes to ``app``: the access log, body limit and FastAPI stack, with the body
    replayed when it was already read.
    """

    def __init__(self, app, service: FrontdoorService, error_response, access: Optional[AccessLog] = None,
                 limit: int = 64 * 1024):
        self.app = app
        self.service = service
        self.error_response = error_response  # app._error: one definition of the error body
        self.access = access
        self.limit = limit
        self._inline_cache: Dict[str, bool] = {}

    def _inline(self, frontdoor_id: str) -> bool:
        inline = self._inline_cache.get(frontdoor_id)
        if inline is None:
            signer = self.service.signers.get(frontdoor_id)
            inline = getattr(self.service.store, "kind", None) == "sqlite" and (
                signer is None or getattr(signer, "kind", None) == "local"
            )
            if frontdoor_id in self.service.signers:  # unknown ids are not remembered (bounded cache)
                self._inline_cache[frontdoor_id] = inline
        return inline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        match = REDEEM_PATH.match(scope["path"])
        if match is None:
            return await self.app(scope, receive, send)
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                if content_type is None:  # the first one counts, as for FastAPI
                    content_type = value
            elif key == b"content-length":
                # not a number, or over the limit: the body-limit middleware answers as before
                if not value.isdigit() or int(value) > self.limit:
                    return await self.app(scope, receive, send)
        if content_type is not None and content_type != b"application/json" and \
                content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            return await self.app(scope, receive, send)  # FastAPI parses JSON only for no type or JSON
        message = await receive()
        if message["type"] != "http.request":
            return
        body = message.get("body", b"")
        if message.get("more_body", False):
            chunks, size = [body], len(body)
            while message.get("more_body", False) and size <= self.limit:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
            body = b"".join(chunks)
            if size > self.limit:  # streamed past the limit: 413 from the body-limit middleware
                return await self.app(scope, replay_body(body, receive), send)
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
            status, headers, content = response.status_code, response.raw_headers, response.body
        except Exception as exc:  # noqa: BLE001 - same contract as the app's catch-all handler
            log.error("unexpected error on POST %s", redact(scope["path"]), exc_info=exc)
            response = self.error_response("internal_error", UNEXPECTED)
            status, headers, content = response.status_code, response.raw_headers, response.body
        else:
            # The headers JSONResponse(view, headers={"Cache-Control": "no-store", ...}) would send, in its order.
            content = dump_json(certificate_view(result.certificate))
            status = 200 if result.replayed else 201
            headers = (_HEADERS_200 if result.replayed else _HEADERS_201) + [
                (b"content-length", b"%d" % len(content)), _JSON_TYPE]
        if self.access is not None:
            self.access.write(scope, status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class _CoalescingTransport:
    """The connection's transport, with the writes of one event-loop turn sent as one.

    Why: uvicorn writes the status line and headers, then the body, as two ``transport.write``
    calls; with TCP_NODELAY each became its own system call and TCP segment (and the client
    woke up twice). Writes are collected and sent together from a ``call_soon`` callback, so
    nothing waits longer than the current turn of the loop. ``close`` sends what is pending
    first; ``abort`` drops it, as the real transport's ``abort`` drops its buffer. Everything
    else is the real transport's.
    """

    __slots__ = ("_transport", "_loop", "_pending", "_size")

    #: past this many pending bytes a write goes out at once: a response streamed without
    #: yielding to the loop must reach the real transport (and its flow control) as it grows
    LIMIT = 64 * 1024

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending = None
        self._size = 0

    def write(self, data) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._size = len(data)
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)
            self._size += len(data)
        if self._size > self.LIMIT:
            self._flush()

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (self._size if self._pending else 0)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def _coalescing(transport):
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - uvicorn always calls connection_made from the loop
        return transport
    return _CoalescingTransport(transport, loop)


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
        super().connection_made(_coalescing(transport))


if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """The same for uvicorn's faster parser, used when httptools is installed."""

        def connection_made(self, transport):
            _set_no_delay(transport)
            super().connection_made(_coalescing(transport))


def no_delay_protocol():
    """The HTTP protocol class for ``uvicorn.run(http=...)``: httptools when installed, else h11."""
    return NoDelayHttpToolsProtocol if HttpToolsProtocol is not None else NoDelayH11Protocol
