"""The library floor: what the chosen stack alone does for one redemption-shaped request.

A FastAPI app on the same uvicorn (same workers, httptools + uvloop, access log on) whose one route
takes the redemption body, parses and verifies the CSR and signs a client certificate with a P-256 CA
through cryptography's ``CertificateBuilder``, and answers with the certificate and chain. It has no
token, no store, no rules and no audit: it is the ceiling of the libraries on this machine, so that
``embedded / floor`` in the report is the share of the stack's capacity that the product keeps.
Run by ``python -m bench`` beside the other rows; not part of the product.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import subprocess
import sys
import time
from typing import List

import anyio.to_thread
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .openbao import free_port

_KEY = ec.generate_private_key(ec.SECP256R1())
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench floor CA")])
_NOW = _dt.datetime.now(_dt.timezone.utc)
_CA = (
    x509.CertificateBuilder().subject_name(_NAME).issuer_name(_NAME).public_key(_KEY.public_key())
    .serial_number(x509.random_serial_number()).not_valid_before(_NOW).not_valid_after(_NOW + _dt.timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(_KEY, hashes.SHA256())
)
_CA_PEM = _CA.public_bytes(serialization.Encoding.PEM).decode("ascii")


class _Body(BaseModel):
    type: str
    value: str


@contextlib.asynccontextmanager
async def _lifespan(_app):
    # the same thread limit as `frontdoor-gateway serve --threads auto` on the embedded default: both rows are
    # CPU work per request, so they compare at the same setting
    anyio.to_thread.current_default_thread_limiter().total_tokens = 2
    yield


app = FastAPI(lifespan=_lifespan)


@app.post("/frontdoor/{frontdoor_id}/client-certificates/token/{token}", status_code=201)
def _sign(frontdoor_id: str, token: str, body: _Body):
    csr = x509.load_pem_x509_csr(body.value.encode("ascii"))
    if not csr.is_signature_valid:
        return JSONResponse({"error": {"code": "invalid_csr", "message": "bad signature"}}, status_code=400)
    now = _dt.datetime.now(_dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floor-" + token[:16]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(_NAME).public_key(csr.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + _dt.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(_KEY, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return JSONResponse({"id": token[:16], "certificate": pem, "caChain": [_CA_PEM]}, status_code=201)


class Floor:
    def __init__(self, url: str, process: subprocess.Popen):
        self.url = url
        self.process = process

    def pids(self) -> List[int]:
        """The supervisor and its workers (their CPU counts as server CPU)."""
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=5)


def start_floor(workers: int, log_path: str, timeout: float = 60.0) -> Floor:
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.floor:app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--no-server-header"],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    floor = Floor("http://127.0.0.1:%d" % port, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(floor.url + "/docs", timeout=1)
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                floor.stop()
                raise RuntimeError("the floor app did not start (see %s)" % log_path) from None
            time.sleep(0.1)
    # every worker up: uvicorn logs "Application startup complete" once per worker
    while time.monotonic() < deadline:
        with open(log_path, "r", encoding="utf-8", errors="replace") as handle:
            if handle.read().count("Application startup complete") >= workers:
                break
        time.sleep(0.1)
    return floor
