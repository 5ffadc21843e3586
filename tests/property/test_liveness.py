"""A real gateway process stays responsive while it is fed hostile input.

One thread sends the inputs that used to stall or crash a worker (durations of spaces, numbers
with thousands of digits, deep JSON, out-of-range timestamps, CSRs with odd ASN.1 in the
subject) over and over; another asks /healthz meanwhile. Every hostile request must get a 4xx
and /healthz must stay fast: one slow regex or a 500 in the event loop shows up here.
"""

from __future__ import annotations

import json
import threading
import time

import requests
from support.crypto import make_csr, shared_key
from support.gateway import run_gateway
from support.odd_der import BMP, INTEGER, UTF8, odd_csr

TOKENS = "/frontdoor/default/certificate-request-tokens"
CERTS = "/frontdoor/default/client-certificates"
HOSTILE_SECONDS = 4.0
HEALTH_P99 = 0.5  # seconds
JSON = {"Content-Type": "application/json"}


def hostile_requests(secret: str):
    """(label, method, path, body bytes, needs admin auth)."""
    key = shared_key("p256", 11)

    def create(raw_ttl_or_field: str) -> bytes:
        return ('{"name": "hostile", %s}' % raw_ttl_or_field).encode()

    def redeem(csr_pem: str) -> bytes:
        return json.dumps({"type": "CSR", "value": csr_pem}).encode()

    odd = {
        "INTEGER CN": odd_csr([[("2.5.4.3", INTEGER, b"\x01")]], key),
        "odd-length BMPString CN": odd_csr([[("2.5.4.3", BMP, b"\x00")]], key),
        "UTF8String CN not UTF-8": odd_csr([[("2.5.4.3", UTF8, b"\xff\xfe")]], key),
        "empty CN": odd_csr([[("2.5.4.3", UTF8, b"")]], key),
    }
    yield "ttl of 20000 spaces + x", "POST", TOKENS, create('"ttl": "%sx"' % (" " * 20000)), True
    yield "ttl of 80 spaces + x", "POST", TOKENS, create('"ttl": "%sx"' % (" " * 80)), True
    yield "certificateTtl of 30 spaces + x", "POST", TOKENS, create('"certificateTtl": "%sx"' % (" " * 30)), True
    yield "ttl of 5000 digits (number)", "POST", TOKENS, create('"ttl": %s' % ("9" * 5000)), True
    yield "ttl of 5000 digits (string)", "POST", TOKENS, create('"ttl": "%s"' % ("9" * 5000)), True
    yield "expiresAt before year 1 in UTC", "POST", TOKENS, create('"expiresAt": "0001-01-01T00:00:00+01:00"'), True
    yield "JSON nested 30000 deep", "POST", TOKENS, b"[" * 30000 + b"]" * 30000, True
    yield "object nested 10000 deep", "POST", TOKENS, b'{"a":' * 10000 + b"1" + b"}" * 10000, True
    yield "olderThan of 80 spaces + x", "DELETE", TOKENS + "?status=expired&olderThan=%sx" % ("%20" * 80), None, True
    yield "CSR value a lone surrogate", "POST", CERTS + "/token/" + secret, b'{"type":"CSR","value":"\\ud800"}', False
    for label, csr_pem in odd.items():
        yield "redeem, %s" % label, "POST", CERTS + "/token/" + secret, redeem(csr_pem), False


def test_health_stays_fast_under_hostile_input(tmp_path):
    with run_gateway(str(tmp_path / "gw")) as gateway:
        created = gateway.create_token(name="liveness")  # no locked CN: the CSR must supply one
        assert created.status_code == 201, created.text
        secret = created.json()["token"]
        requests_list = list(hostile_requests(secret))
        stop = threading.Event()
        latencies, wrong = [], []

        def attack():
            session = requests.Session()
            while not stop.is_set():
                for label, method, path, body, admin in requests_list:
                    headers = dict(JSON, **(gateway.headers() if admin else {}))
                    try:
                        response = session.request(method, gateway.url + path, data=body, headers=headers, timeout=10)
                        status, text = response.status_code, response.text[:200]
                    except requests.RequestException as exc:
                        status, text = None, repr(exc)
                    if status is None or not 400 <= status < 500:
                        wrong.append((label, status, text))

        def probe():
            session = requests.Session()
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = session.get(gateway.url + "/healthz", timeout=5).status_code == 200
                except requests.RequestException:
                    ok = False
                latencies.append(time.perf_counter() - started if ok else 5.0)
                time.sleep(0.02)

        threads = [threading.Thread(target=attack), threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        time.sleep(HOSTILE_SECONDS)
        stop.set()
        for thread in threads:
            thread.join(30)

        assert not wrong, "hostile inputs not answered with a 4xx: %s" % sorted(set(wrong))[:10]
        latencies.sort()
        assert len(latencies) >= 20, "only %d health answers in %.0f s" % (len(latencies), HOSTILE_SECONDS)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < HEALTH_P99, "/healthz p99 %.3f s (max %.3f s) under hostile input" % (p99, latencies[-1])
        # the token was never burned by the refusals: a good CSR still redeems it
        good = gateway.redeem(secret, make_csr(shared_key("p256", 12), cn="x"))
        assert good.status_code == 201, good.text
