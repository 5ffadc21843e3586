"""One load generator for every row of the benchmark.

Why a hand-written HTTP/1.1 client: on a 2-core machine the client shares the CPU with the
server it measures. ``requests`` costs ~0.3-0.5 ms of CPU per call, which would eat a third of
a core at the rates we measure and blur the comparison. This driver is one asyncio process
with N keep-alive connections (N = "clients"), each sending pre-built requests back to back
(closed loop: a client sends its next request when the previous answer is complete). It costs
~30-60 us of CPU per request, and it reports its own CPU time so the table shows that the
client was not the bottleneck.

The same code drives OpenBao's ``pki/sign`` and the gateway's redemption endpoint, so the
ratios compare servers, not clients. Connections are opened before the clock starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Request = bytes  # a complete raw HTTP/1.1 request (head + body)


def build_request(method: str, host: str, path: str, body: Optional[object] = None,
                  headers: Optional[Dict[str, str]] = None) -> Request:
    """Pre-build the bytes of one request so that the timed loop only writes them."""
    payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Connection: keep-alive",
             "User-Agent: frontdoor-bench", "Accept: */*"]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines.append("Content-Length: %d" % len(payload))
    for key, value in (headers or {}).items():
        lines.append("%s: %s" % (key, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _parse_response(buf: bytearray) -> Optional[Tuple[int, bytes, int, bool]]:
    """(status, body, bytes consumed, connection close) if buf holds one whole response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = None
    chunked = False
    close = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    pos = end + 4
    if chunked:
        parts = []
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
            pos = line_end + 2
            if size == 0:
                # trailers (none expected) end with an empty line
                trailer_end = buf.find(b"\r\n", pos)
                if trailer_end < 0:
                    return None
                pos = trailer_end + 2
                return status, b"".join(parts), pos, close
            if len(buf) < pos + size + 2:
                return None
            parts.append(bytes(buf[pos:pos + size]))
            pos += size + 2
    if length is None:
        length = 0 if status in (204, 304) or 100 <= status < 200 else None
        if length is None:
            raise ValueError("response without Content-Length or chunked encoding")
    if len(buf) < pos + length:
        return None
    return status, bytes(buf[pos:pos + length]), pos + length, close


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self):
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.waiter: Optional[asyncio.Future] = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            parsed = _parse_response(self.buf)
        except Exception as exc:  # a malformed answer is an error of that request
            self.waiter.set_exception(exc)
            return
        if parsed is not None:
            status, body, used, close = parsed
            del self.buf[:used]
            self.waiter.set_result((status, body, close))

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by server"))

    async def send(self, request: Request, timeout: float) -> Tuple[int, bytes, bool]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, timeout)


@dataclasses.dataclass
class LoadResult:
    """What one run measured. Latencies in seconds, in completion order."""

    clients: int
    sent: int
    ok: int
    errors: int
    wall: float
    client_cpu: float
    latencies: List[float]
    statuses: Dict[int, int]
    error_samples: List[str]
    bodies: List[bytes]

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)

    def summary(self) -> dict:
        return {
            "clients": self.clients, "sent": self.sent, "ok": self.ok, "errors": self.errors,
            "wall_s": round(self.wall, 4), "rate_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(50) * 1000, 3), "p99_ms": round(self.percentile(99) * 1000, 3),
            "client_cpu_s": round(self.client_cpu, 4),
            "client_cpu_us_per_req": round(self.client_cpu / self.sent * 1e6, 1) if self.sent else None,
            "client_cpu_share_of_one_core": round(self.client_cpu / self.wall, 3) if self.wall else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "error_samples": self.error_samples[:5],
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 100 samples is the 99th value)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


async def _run(host: str, port: int, requests: Sequence[Request], clients: int, duration: Optional[float],
               expect: Tuple[int, ...], keep_bodies: int, timeout: float,
               check: Optional[Callable[[int, bytes], Optional[str]]]) -> LoadResult:
    loop = asyncio.get_running_loop()
    conns: List[_Connection] = []
    for _ in range(clients):
        _transport, proto = await loop.create_connection(_Connection, host, port)
        conns.append(proto)
    latencies: List[float] = []
    statuses: Dict[int, int] = {}
    error_samples: List[str] = []
    bodies: List[bytes] = []
    counters = {"next": 0, "ok": 0, "errors": 0, "sent": 0}
    total = len(requests)

    async def worker(conn: _Connection):
        while True:
            index = counters["next"]
            if index >= total or (deadline is not None and time.perf_counter() >= deadline):
                return
            counters["next"] = index + 1
            if conn.closed:
                _t, conn = await loop.create_connection(_Connection, host, port)
            counters["sent"] += 1
            started = time.perf_counter()
            try:
                status, body, close = await conn.send(requests[index], timeout)
            except Exception as exc:
                counters["errors"] += 1
                if len(error_samples) < 20:
                    error_samples.append("request %d: %s: %s" % (index, type(exc).__name__, exc))
                if conn.transport is not None:
                    conn.transport.close()
                conn.closed = True
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            problem = None if status in expect else "HTTP %d: %s" % (status, body[:300].decode("utf-8", "replace"))
            if problem is None and check is not None:
                problem = check(status, body)
            if problem is None:
                counters["ok"] += 1
                if len(bodies) < keep_bodies:
                    bodies.append(body)
            else:
                counters["errors"] += 1
                if len(error_samples) < 20:
                    error_samples.append("request %d: %s" % (index, problem))
            if close:
                conn.transport.close()
                conn.closed = True

    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + duration if duration else None
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return LoadResult(clients, counters["sent"], counters["ok"], counters["errors"], wall, cpu, latencies, statuses,
                      error_samples, bodies)


def run_load(url: str, requests: Sequence[Request], clients: int, duration: Optional[float] = None,
             expect: Tuple[int, ...] = (200, 201), keep_bodies: int = 0, timeout: float = 30.0,
             check: Optional[Callable[[int, bytes], Optional[str]]] = None) -> LoadResult:
    """Send ``requests`` (each at most once, in order) over ``clients`` connections.

    Stops when every request was sent or after ``duration`` seconds, whichever comes first.
    ``check(status, body)`` may return a problem string to count an answer as an error.
    """
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return asyncio.run(_run(host, int(port), requests, clients, duration, expect, keep_bodies, timeout, check))
