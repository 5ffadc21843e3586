"""Rate limits and metrics against real gateway processes.

Two gateways share one state dir: A with two workers (uvicorn's supervisor) and /metrics on its API port behind
a bearer token with metrics:read; B with one worker and its metrics on a separate address (--metrics-address).
They share the rate-limit counters through the state dir's SQLite storage, so failures spread over A's workers
and B add up. Distinct loopback addresses (127.0.0.x, all routed to lo on Linux) stand for distinct clients.
C runs with FRONTDOOR_RATE_LIMITS=off.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import secrets
import signal
import time
from typing import Dict, Optional, Tuple

import pytest
from frontdoor_gateway.auth import token_hash
from frontdoor_pki.tokens import new_secret
from prometheus_client.parser import text_string_to_metric_families
from support.crypto import make_csr, make_key
from support.gateway import free_port, run_gateway

REDEEM = "/frontdoor/default/client-certificates/token/"
ON = {"FRONTDOOR_RATE_LIMITS": "on"}
PROM_TOKEN = "fdk_prom_" + secrets.token_urlsafe(16)
READER_TOKEN = "fdk_reader_" + secrets.token_urlsafe(16)
CONFIG = {"apiTokens": [
    {"name": "prometheus", "sha256": token_hash(PROM_TOKEN), "permissions": {"*": ["metrics:read"]}},
    {"name": "reader", "sha256": token_hash(READER_TOKEN), "permissions": {"default": ["tokens:read"]}},
]}


def call(url: str, method: str, path: str, source: str, body: Optional[dict] = None,
         token: Optional[str] = None) -> Tuple[int, Dict[str, str], str]:
    """One request on a new connection from ``source`` (so A's two workers both get some)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def redeem(url: str, secret: str, source: str, csr: str) -> Tuple[int, Dict[str, str], str]:
    return call(url, "POST", REDEEM + secret, source, {"type": "CSR", "value": csr})


def code(body: str) -> str:
    return json.loads(body)["error"]["code"]


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def csr():
    return make_csr(make_key("p256"), cn="rl.example")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("shared"))
    metrics_port = free_port()
    with run_gateway(state, config=CONFIG, env=ON, workers=2) as a, run_gateway(
        state, config=CONFIG, env=ON, admin_token=a.admin_token,
        extra_args=("--metrics-address", "127.0.0.1:%d" % metrics_port),
    ) as b:
        b.metrics_url = "http://127.0.0.1:%d/metrics" % metrics_port
        yield a, b


def new_token(gw) -> str:
    created = gw.create_token(commonName="rl.example")
    assert created.status_code == 201, created.text
    return created.json()["token"]


def test_31st_unknown_secret_is_429_across_workers_and_gateways(gateways, csr):
    a, b = gateways
    attacker, other = "127.0.0.2", "127.0.0.3"
    for n in range(30):  # 20 on A's two workers, 10 on B: one count
        status, _h, body = redeem(a.url if n < 20 else b.url, new_secret(), attacker, csr)
        assert (status, code(body)) == (404, "token_not_found"), (n, body)

    for gw in (b, a):  # the 31st, on either gateway
        status, headers, body = redeem(gw.url, new_secret(), attacker, csr)
        assert (status, code(body)) == (429, "rate_limited"), body
        assert 1 <= int(headers["retry-after"]) <= 60
    # every redemption attempt from that address, a valid secret too, until the window passes
    secret = new_token(a)
    status, headers, body = redeem(a.url, secret, attacker, csr)
    assert (status, code(body)) == (429, "rate_limited") and "retry-after" in headers
    status, _h, body = call(a.url, "POST", REDEEM + new_secret(), attacker, {"type": "not a CSR"})
    assert (status, code(body)) == (429, "rate_limited"), "refused before the body is validated"
    # another address is not affected, and the token was not touched
    status, _h, body = redeem(a.url, secret, other, csr)
    assert status == 201, body

    scraped = samples(b.session.get(b.metrics_url, timeout=30).text)  # B answered one 429 itself
    assert value(scraped, "frontdoor_rate_limit_rejections_total", limit="unknown_token_per_address") == 1
    assert value(scraped, "frontdoor_redemptions_total", frontdoor="default", outcome="rate_limited") == 1


def test_admin_authentication_failures_are_limited_per_address(gateways):
    a, b = gateways
    guesser, other = "127.0.0.4", "127.0.0.5"
    for n in range(30):
        status, _h, body = call((a, b)[n % 2].url, "GET", "/frontdoor/default", guesser, token="fdk_guess%d" % n)
        assert (status, code(body)) == (401, "unauthorized"), body
    status, headers, body = call(a.url, "GET", "/frontdoor/default", guesser, token="fdk_guess31")
    assert (status, code(body)) == (429, "rate_limited") and 1 <= int(headers["retry-after"]) <= 60
    status, _h, body = call(b.url, "GET", "/frontdoor/default", guesser, token=a.admin_token)
    assert (status, code(body)) == (429, "rate_limited"), "the right token is refused too until the window passes"
    assert call(a.url, "GET", "/frontdoor/default", other, token=a.admin_token)[0] == 200
    # public endpoints ignore the header and are not limited by it; without a header nothing is checked
    assert call(a.url, "GET", "/frontdoor/default/ca", guesser, token="fdk_guess32")[0] == 200
    assert call(a.url, "GET", "/healthz", guesser, token="fdk_guess33")[0] == 200
    assert call(a.url, "GET", "/frontdoor/default", guesser)[0] == 401


def test_metrics_show_issued_and_refused_with_two_workers(gateways, csr):
    a, _b = gateways
    client = "127.0.0.7"
    before = samples(call(a.url, "GET", "/metrics", client, token=PROM_TOKEN)[2])
    issued = 4
    for _ in range(issued):  # new connections: spread over A's workers; the scrape must add both up
        status, _h, body = redeem(a.url, new_token(a), client, csr)
        assert status == 201, body
    used = new_token(a)
    assert redeem(a.url, used, client, csr)[0] == 201
    issued += 1
    status, _h, body = redeem(a.url, used, client, make_csr(make_key("p256"), cn="rl.example"))
    assert (status, code(body)) == (409, "token_already_used")

    assert call(a.url, "GET", "/metrics", client)[0] == 401
    status, _h, body = call(a.url, "GET", "/metrics", client, token=READER_TOKEN)
    assert (status, code(body)) == (403, "forbidden")
    status, headers, text = call(a.url, "GET", "/metrics", client, token=PROM_TOKEN)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    found = samples(text)

    def delta(name: str, **labels) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    assert delta("frontdoor_redemptions_total", frontdoor="default", outcome="issued") == issued
    assert delta("frontdoor_redemptions_total", frontdoor="default", outcome="token_already_used") == 1
    assert delta("frontdoor_redemption_duration_seconds_count", frontdoor="default", result="issued") == issued
    assert delta("frontdoor_redemption_duration_seconds_count", frontdoor="default", result="refused") == 1
    assert delta("frontdoor_signer_call_duration_seconds_count", backend="local", operation="sign") == issued
    assert delta("frontdoor_store_call_duration_seconds_count", backend="sqlite",
                 operation="record_redemption") == issued
    # counted from the store, reused for 15 s per worker (exact counting and caching: tests/unit)
    assert value(found, "frontdoor_tokens", frontdoor="default", status="redeemed") >= 1
    assert ("frontdoor_tokens", (("frontdoor", "default"), ("status", "active"))) in found


def test_metrics_on_a_separate_address_single_worker(gateways, csr):
    _a, b = gateways
    client = "127.0.0.8"
    assert redeem(b.url, new_token(b), client, csr)[0] == 201
    assert redeem(b.url, "crt_not-even-well-formed", client, csr)[0] == 404
    found = samples(b.session.get(b.metrics_url, timeout=30).text)
    assert value(found, "frontdoor_redemptions_total", frontdoor="default", outcome="issued") >= 1
    assert value(found, "frontdoor_redemptions_total", frontdoor="default", outcome="token_not_found") >= 1
    # with --metrics-address the API port does not serve them, to anyone
    assert call(b.url, "GET", "/metrics", client, token=b.admin_token)[0] == 404


def test_rate_limits_off_lets_every_attempt_through(tmp_path, csr):
    with run_gateway(str(tmp_path / "off"), env={"FRONTDOOR_RATE_LIMITS": "off"}) as c:
        for _ in range(35):
            status, _h, body = redeem(c.url, new_secret(), "127.0.0.6", csr)
            assert (status, code(body)) == (404, "token_not_found"), body
            assert call(c.url, "GET", "/frontdoor/default", "127.0.0.6", token="fdk_wrong")[0] == 401
        assert redeem(c.url, new_token(c), "127.0.0.6", csr)[0] == 201


def _workers(supervisor: int) -> list:
    """uvicorn's workers: the supervisor's children started by multiprocessing's spawn."""
    found = []
    for task in os.listdir("/proc/%d/task" % supervisor):
        with open("/proc/%d/task/%s/children" % (supervisor, task), encoding="ascii") as handle:
            for pid in handle.read().split():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            found.append(int(pid))
                except FileNotFoundError:
                    continue
    return sorted(found)


def test_counts_of_a_killed_worker_stay_in_the_sum(tmp_path, csr):
    with run_gateway(str(tmp_path / "kill"), workers=2) as gw:
        before = _workers(gw.process.pid)
        assert len(before) == 2
        issued = 0
        # until both workers have counted a redemption (each keeps a counter_<pid>.db in the multi-process dir)
        while issued < 40 and not all(glob.glob(os.path.join(gw.state_dir, "metrics", "*", "counter_%d.db" % pid))
                                      for pid in before):
            assert redeem(gw.url, new_token(gw), "127.0.0.9", csr)[0] == 201
            issued += 1
        # a redemption is counted once its answer has gone out: wait until every one is in the files, so the kill
        # below tests that counts survive their worker, not whether the last one was written yet
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = samples(call(gw.url, "GET", "/metrics", "127.0.0.9", token=gw.admin_token)[2])
            if value(found, "frontdoor_redemptions_total", frontdoor="default", outcome="issued") == issued:
                break
            time.sleep(0.05)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers(gw.process.pid)
            if len(now) == 2 and before[0] not in now and "Started server process [%d]" % max(now) in gw.log():
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed worker was not replaced")
        assert redeem(gw.url, new_token(gw), "127.0.0.9", csr)[0] == 201
        found = samples(call(gw.url, "GET", "/metrics", "127.0.0.9", token=gw.admin_token)[2])
        assert value(found, "frontdoor_redemptions_total", frontdoor="default", outcome="issued") == issued + 1
