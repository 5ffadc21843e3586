"""The urls-based gateway client's error paths, against a tiny local HTTP server that answers what a proxy or a
wrong URL would (the happy paths run against real gateways in tests/ansible)."""

from __future__ import annotations

import importlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def host_client(collection_path):
    return importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.host_client")


@pytest.fixture
def errors(collection_path):
    return importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.errors")


class Stub:
    """One canned answer (status, headers, body) for every request; the requests are recorded."""

    def __init__(self):
        self.status, self.headers, self.body, self.delay = 200, {}, b"{}", 0.0
        self.seen = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                stub.seen.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                time.sleep(stub.delay)
                self.send_response(stub.status)
                for key, value in stub.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            do_GET = do_POST = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.close()


def test_gateway_error_body_keeps_code_message_and_retry_after(host_client, stub):
    stub.status, stub.headers = 409, {"Retry-After": "3", "Content-Type": "application/json"}
    stub.body = json.dumps({"error": {"code": "redemption_in_progress", "message": "held", "details": {"a": 1}}}).encode()
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url).redeem("default", "crt_secretvalue", "csr")
    exc = info.value
    assert exc.code == "redemption_in_progress" and exc.message == "held" and exc.retry_after == 3
    assert exc.details == {"a": 1, "httpStatus": 409}
    method, path, headers, body = stub.seen[0]
    assert method == "POST" and "Authorization" not in headers
    assert json.loads(body) == {"type": "CSR", "value": "csr"}


def test_a_proxy_page_gets_a_code_from_the_status_and_no_secret(host_client, stub):
    stub.status, stub.body = 502, b"<html>bad gateway</html>"
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url).redeem("default", "crt_secretvalue", "csr")
    assert info.value.code == "gateway_unavailable"
    assert "HTTP 502" in info.value.message and "crt_secretvalue" not in info.value.message
    assert "crt_[REDACTED]" in info.value.message


def test_an_unknown_code_from_a_newer_gateway_is_kept_in_details(host_client, stub):
    stub.status, stub.body = 403, json.dumps({"error": {"code": "brand_new", "message": "new rule"}}).encode()
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url, api_token="fdk_x").list_tokens("default")
    assert info.value.code == "forbidden" and info.value.message == "new rule"
    assert info.value.details["gatewayCode"] == "brand_new"
    assert stub.seen[0][2]["Authorization"] == "Bearer fdk_x"


def test_not_json_and_redirects_are_not_the_gateway(host_client, stub):
    stub.body = b"hello"
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url).ca_chain("default")
    assert info.value.code == "gateway_unavailable" and "not JSON" in info.value.message
    stub.status, stub.headers, stub.body = 302, {"Location": "http://example.invalid/"}, b""
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url).ca_chain("default")
    assert len(stub.seen) == 2, "a redirect is not followed (it would carry the token elsewhere)"


def test_replayed_header_and_renewal_bearer(host_client, stub):
    stub.status, stub.headers = 200, {"X-Frontdoor-Replayed": "true"}
    stub.body = json.dumps({"id": "cert-1", "certificate": "PEM", "caChain": []}).encode()
    record = host_client.UrlsGatewayClient(stub.url).renew("default", "csr", "jwt.value.sig")
    assert record["replayed"] is True and record["id"] == "cert-1"
    method, path, headers, _body = stub.seen[0]
    assert path == "/frontdoor/default/client-certificates/renew"
    assert headers["Authorization"] == "Bearer jwt.value.sig"


def test_timeout_and_refused_messages_are_whole(host_client, stub):
    stub.delay = 2.0
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(stub.url, timeout=0.5).ca_chain("default")
    assert info.value.code == "gateway_unavailable" and "within 0 seconds" not in info.value.message
    assert "timeout" in info.value.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % sock.getsockname()[1]
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient(dead).ca_chain("default")
    message = info.value.message
    assert "[Errno 111] Connection refused" in message and message.endswith("that the gateway is running.")


def test_bad_url_is_refused_before_any_call(host_client):
    with pytest.raises(Exception) as info:
        host_client.UrlsGatewayClient("127.0.0.1:8080")
    assert info.value.code == "invalid_request"
