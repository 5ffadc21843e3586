"""The Vault client's lean hot-path transport (keep-alive socket pool) against a scripted local server.

`responses` only intercepts requests' transport, so the hot path's own transport is tested here
with a real HTTP server on 127.0.0.1 that can answer, refuse, stall and drop connections on cue:
same errors, same retry rules (a read resent once on a dropped keep-alive connection, a write
never), same headers and bodies as the hvac path, connections reused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from frontdoor_pki.errors import StoreUnavailable
from frontdoor_pki.model import Subject, TokenRecord, utcnow
from frontdoor_pki.stores.vault_kv import VaultKVStore, token_to_dict
from frontdoor_pki.vault.client import VaultClient, VaultSettings

TOKEN = "hvs.LEAN-UNIT-TOKEN-never-shown"
CAS_ERROR = {"errors": ["check-and-set parameter did not match the current version"]}

Action = Tuple  # ("json"|"close_after", status, body) | ("drop",) | ("sleep", s) | ("redirect", url) | ("raw", bytes[, close])


class ScriptedVault:
    """A tiny HTTP/1.1 keep-alive server; ``handler(method, path, headers, body) -> Action``."""

    def __init__(self, handler: Callable[[str, str, Dict[str, str], bytes], Action], tls: Optional[ssl.SSLContext] = None):
        self.handler = handler
        self.requests: List[Tuple[int, str, str, Dict[str, str], bytes]] = []  # (conn no, method, path, headers, body)
        self.connections = 0
        self.tls = tls
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self.live: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn, self.connections), daemon=True).start()

    def _connection(self, conn: socket.socket, number: int) -> None:
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.live.append(conn)
            conn.settimeout(10)
            buf = b""
            for _ in range(100):  # bounded: requests per connection
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.requests.append((number, method, path, headers, body))
                action = self.handler(method, path, headers, body)
                if action[0] == "drop":
                    return
                if action[0] == "sleep":
                    time.sleep(action[1])
                    return
                if action[0] == "raw":  # arbitrary bytes, then the connection stays open unless told
                    conn.sendall(action[1])
                    if len(action) > 2 and action[2]:
                        return
                    continue
                if action[0] == "redirect":
                    conn.sendall(("HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n" % action[1]).encode())
                    return
                status, payload = action[1], json.dumps(action[2]).encode()
                extra = "Connection: close\r\n" if action[0] == "close_after" else ""
                conn.sendall(("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                              % (status, len(payload), extra)).encode() + payload)
                if action[0] == "close_after":
                    return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close_idle_connections(self) -> None:
        """What a server does to idle keep-alive connections: close them."""
        for conn in list(self.live):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self.close_idle_connections()
        self.sock.close()
        self._thread.join(timeout=2)


@pytest.fixture
def scripted():
    made = []

    def factory(handler, tls=None) -> ScriptedVault:
        server = ScriptedVault(handler, tls)
        made.append(server)
        return server

    yield factory
    for server in made:
        server.stop()


def _client(url: str, **vault) -> VaultClient:
    return VaultClient(VaultSettings(dict({"url": url, "token": TOKEN}, **vault)))


def _record() -> TokenRecord:
    now = utcnow().replace(microsecond=0)
    return TokenRecord(id="tok_" + "a" * 24, frontdoor_id="default", name="n", secret_hash="f" * 64,
                       subject=Subject("cn", None, None), created_at=now, created_by="t",
                       expires_at=now + _dt.timedelta(days=1), updated_at=now, version=1)


def _kv_answer(record: TokenRecord, kv_version: int = 1) -> dict:
    return {"data": {"data": dict(token_to_dict(record), base=record.version - kv_version),
                     "metadata": {"version": kv_version}}}


def test_hot_path_uses_the_lean_transport_and_keeps_connections(scripted):
    record = _record()
    server = scripted(lambda m, p, h, b: ("json", 200, _kv_answer(record)))
    client = _client(server.url, namespace="team-a")
    assert client.lean_usable()
    store = VaultKVStore(client, "secret", "fd")
    for _ in range(5):
        assert store.find_token_by_hash(record.secret_hash).id == record.id
    assert server.connections == 1 and len(server.requests) == 5
    assert client.requests == 5
    _, method, path, headers, _ = server.requests[0]
    assert (method, path) == ("GET", "/v1/secret/data/fd/t/" + record.secret_hash)
    assert headers["x-vault-token"] == TOKEN and headers["x-vault-namespace"] == "team-a"
    assert headers["x-vault-request"] == "true" and headers["host"] == "127.0.0.1:%d" % server.port


def test_lean_write_sends_hvacs_body_and_reports_a_lost_race(scripted):
    record = _record()
    answers = iter([("json", 200, _kv_answer(record)), ("json", 200, {"data": {"version": 2}}),
                    ("json", 400, CAS_ERROR)])
    server = scripted(lambda m, p, h, b: next(answers))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    current = store.find_token_by_hash(record.secret_hash)
    claimed = dataclasses.replace(current, claim_id="c" * 32, version=2)
    assert store.replace_token(claimed, 1) is True
    body = json.loads(server.requests[1][4])
    assert server.requests[1][1:3] == ("POST", "/v1/secret/data/fd/t/" + record.secret_hash)
    assert body["options"] == {"cas": 1} and body["data"]["claimId"] == "c" * 32
    assert server.requests[1][3]["content-type"] == "application/json"
    assert store.replace_token(dataclasses.replace(claimed, version=3), 2) is False  # CAS mismatch -> False


@pytest.mark.parametrize("status, payload, expected", [
    (503, {"errors": ["Vault is sealed"]}, "sealed"),
    (403, {"errors": ["permission denied"]}, "vault-policy"),
    (500, {"errors": ["internal error"]}, "failed"),
    (429, {"errors": ["rate limited"]}, "rate limiting"),
])
def test_lean_http_failures_map_as_before(scripted, status, payload, expected):
    server = scripted(lambda m, p, h, b: ("json", status, payload))
    with pytest.raises(StoreUnavailable) as info:
        VaultKVStore(_client(server.url), "secret", "frontdoor").find_token_by_hash("a" * 64)
    assert info.value.status == 503 and expected in info.value.message
    assert TOKEN not in info.value.message and server.url in info.value.message


def test_lean_missing_key_is_none(scripted):
    server = scripted(lambda m, p, h, b: ("json", 404, {"errors": []}))
    assert VaultKVStore(_client(server.url), "secret", "fd").find_token_by_hash("c" * 64) is None


def test_idle_connection_closed_by_the_server_is_not_used_again(scripted):
    record = _record()
    server = scripted(lambda m, p, h, b: ("json", 200, _kv_answer(record) if m == "GET" else {"data": {}}))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    store.find_token_by_hash(record.secret_hash)
    server.close_idle_connections()
    # a write on the next request must not be lost to the stale connection
    assert store._write("fd/x", {"v": 1}, cas=None) is True
    assert server.connections == 2 and [r[1] for r in server.requests] == ["GET", "POST"]


def test_read_dropped_without_answer_is_resent_once_write_never(scripted):
    record = _record()
    state = {"drops": 0}

    def handler(method, path, headers, body):
        if state["drops"] < state.get("limit", 1):
            state["drops"] += 1
            return ("drop",)
        return ("json", 200, _kv_answer(record))

    server = scripted(handler)
    store = VaultKVStore(_client(server.url), "secret", "fd")
    assert store.find_token_by_hash(record.secret_hash).id == record.id  # dropped once, resent once
    assert len(server.requests) == 2

    state.update(drops=0, limit=2)
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        store.find_token_by_hash(record.secret_hash)  # dropped twice: only one resend
    assert len(server.requests) == 4

    state.update(drops=0, limit=1)
    with pytest.raises(StoreUnavailable, match="could not be reached") as info:
        store._write("fd/t/" + record.secret_hash, {"v": 1}, cas=1)
    assert len(server.requests) == 5  # the write was sent once and not again: it may have been applied
    assert TOKEN not in info.value.message


def test_read_timeout_is_reported_within_the_limit(scripted):
    server = scripted(lambda m, p, h, b: ("sleep", 3))
    store = VaultKVStore(_client(server.url, timeout=0.5), "secret", "fd")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="did not answer within 0.5 s"):
        store.find_token_by_hash("d" * 64)
    assert time.monotonic() - started < 2.5
    assert len(server.requests) == 1  # a timed-out request is not resent


def test_refused_connection_is_clear():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        store = VaultKVStore(_client("http://127.0.0.1:%d" % port), "secret", "fd")
        with pytest.raises(StoreUnavailable, match="could not be reached") as info:
            store.find_token_by_hash("e" * 64)
    assert "VAULT_ADDR" in info.value.message and info.value.retry_after


def test_approle_relogin_on_403_over_the_lean_transport(scripted):
    logins = iter(["tok-1", "tok-2"])
    record = _record()
    reads = iter([("json", 403, {"errors": ["permission denied"]}), ("json", 200, _kv_answer(record))])

    def handler(method, path, headers, body):
        if path == "/v1/auth/approle/login":
            return ("json", 200, {"auth": {"client_token": next(logins)}})
        return next(reads)

    server = scripted(handler)
    client = VaultClient(VaultSettings({"url": server.url, "authMethod": "approle", "roleId": "rid",
                                        "secretId": "sid"}))
    assert VaultKVStore(client, "secret", "fd").find_token_by_hash(record.secret_hash).id == record.id
    login, kv = "/v1/auth/approle/login", "/v1/secret/data/fd/t/" + record.secret_hash
    assert [r[2] for r in server.requests] == [login, kv, login, kv]
    assert json.loads(server.requests[0][4]) == {"role_id": "rid", "secret_id": "sid"}
    assert [r[3].get("x-vault-token") for r in server.requests if r[2] == kv] == ["tok-1", "tok-2"]


def test_connection_close_answer_is_honoured(scripted):
    record = _record()
    server = scripted(lambda m, p, h, b: ("close_after", 200, _kv_answer(record)))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    for _ in range(3):
        assert store.find_token_by_hash(record.secret_hash) is not None
    assert server.connections == 3 and len(server.requests) == 3


def test_redirect_is_followed_through_requests(scripted):
    record = _record()
    active = scripted(lambda m, p, h, b: ("json", 200, _kv_answer(record)))
    # a standby that does not forward answers 307 with the active node's address
    standby = scripted(lambda m, p, h, b: ("redirect", active.url + p))
    store = VaultKVStore(_client(standby.url), "secret", "fd")
    assert store.find_token_by_hash(record.secret_hash).id == record.id
    assert len(active.requests) == 1 and active.requests[0][3].get("x-vault-token") == TOKEN


def test_replaced_requests_transport_takes_the_hot_path():
    """With requests' transport replaced (here by `responses`), hot-path requests go through it."""
    client = _client("http://vault.test:8200")
    assert client.lean_usable()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.GET, "http://vault.test:8200/v1/secret/data/fd/t/" + "b" * 64, json={"errors": []},
                   status=404)
        assert not client.lean_usable()
        assert VaultKVStore(client, "secret", "fd").find_token_by_hash("b" * 64) is None
        assert len(mocked.calls) == 1
    assert client.lean_usable()


def test_proxy_for_the_vault_url_keeps_requests(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert not _client("http://vault.test:8200").lean_usable()


def _tls_material(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lean test CA")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=1))
            .not_valid_after(now + _dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    return str(cert_path), context


def test_tls_verifies_against_the_configured_ca(scripted, tmp_path):
    ca_path, context = _tls_material(tmp_path)
    record = _record()
    server = scripted(lambda m, p, h, b: ("json", 200, _kv_answer(record)), tls=context)
    store = VaultKVStore(_client(server.url, caCert=ca_path), "secret", "fd")
    assert store.find_token_by_hash(record.secret_hash).id == record.id
    # the default CA bundle does not know this CA: a TLS error, with the hint where to configure it
    with pytest.raises(StoreUnavailable, match="VAULT_CACERT"):
        VaultKVStore(_client(server.url), "secret", "fd").find_token_by_hash(record.secret_hash)
    # verify: false is honoured (lab only)
    assert VaultKVStore(_client(server.url, verify=False), "secret", "fd").find_token_by_hash(
        record.secret_hash).id == record.id


def test_chunked_answer_and_informational_lines_are_read(scripted):
    record = _record()
    payload = json.dumps(_kv_answer(record)).encode()
    half = len(payload) // 2
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n"
               % (half, payload[:half], len(payload) - half, payload[half:]))
    server = scripted(lambda m, p, h, b: ("raw", chunked))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    for _ in range(2):
        assert store.find_token_by_hash(record.secret_hash).id == record.id
    assert server.connections == 1  # the connection stayed usable after a chunked answer


def test_http10_answer_without_length_reads_to_the_end(scripted):
    record = _record()
    payload = json.dumps(_kv_answer(record)).encode()
    server = scripted(lambda m, p, h, b: ("raw", b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + payload,
                                          True))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    for _ in range(2):
        assert store.find_token_by_hash(record.secret_hash).id == record.id
    assert server.connections == 2


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # shorter than announced, then closed
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
])
def test_garbled_answer_is_a_network_failure_and_a_write_is_not_resent(scripted, garbage):
    server = scripted(lambda m, p, h, b: ("raw", garbage, True))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        store._write("fd/x", {"v": 1}, cas=1)
    assert len(server.requests) == 1


def test_request_goes_out_in_one_piece_with_its_body(scripted):
    server = scripted(lambda m, p, h, b: ("json", 200, {"data": {"version": 1}}))
    store = VaultKVStore(_client(server.url), "secret", "fd")
    assert store._write("fd/x", {"v": "é"}, cas=0) is True
    _, method, path, headers, body = server.requests[0]
    assert (method, path) == ("POST", "/v1/secret/data/fd/x")
    assert json.loads(body) == {"options": {"cas": 0}, "data": {"v": "é"}}
    assert int(headers["content-length"]) == len(body)


def test_line_break_in_the_token_never_reaches_the_wire(scripted):
    server = scripted(lambda m, p, h, b: ("json", 200, {}))
    store = VaultKVStore(_client(server.url, token="hvs.abc\r\nX-Evil: 1"), "secret", "fd")
    with pytest.raises(StoreUnavailable) as info:
        store.find_token_by_hash("a" * 64)
    assert "hvs.abc" not in info.value.message and not server.requests


def test_missing_ca_file_is_a_tls_error_with_the_hint(scripted, tmp_path):
    _, context = _tls_material(tmp_path)
    server = scripted(lambda m, p, h, b: ("json", 200, {}), tls=context)
    store = VaultKVStore(_client(server.url, caCert=str(tmp_path / "missing.pem")), "secret", "fd")
    with pytest.raises(StoreUnavailable, match="VAULT_CACERT"):
        store.find_token_by_hash("a" * 64)
    assert not server.requests


def test_a_url_with_a_bad_port_leaves_the_lean_transport_aside():
    assert not _client("http://vault.test:notaport").lean_usable()


def test_a_wrapped_or_mocked_requests_transport_is_not_taken_for_requests_own(monkeypatch):
    """Instrumentation that wraps ``HTTPAdapter.send`` (an object, or a function defined elsewhere)
    must see every request: the lean transport stands aside for both."""
    import functools

    from requests.adapters import HTTPAdapter

    client = _client("http://vault.test:8200")
    real_send = HTTPAdapter.send
    assert client.lean_usable()

    @functools.wraps(real_send)
    def wrapped(*args, **kwargs):
        return real_send(*args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", wrapped)
    assert not client.lean_usable()  # a function, but not requests' own (its code lives here)

    class Proxy:  # as wrapt's ObjectProxy: passes isinstance checks for what it wraps
        def __init__(self, fn):
            self.__wrapped__ = fn

        @property
        def __class__(self):
            return type(self.__wrapped__)

        def __call__(self, *args, **kwargs):
            return self.__wrapped__(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.__wrapped__, name)

    proxy = Proxy(real_send)
    assert isinstance(proxy, type(real_send))
    monkeypatch.setattr(HTTPAdapter, "send", proxy)
    assert not client.lean_usable()  # looks like requests' function (class, __code__), but wraps it
    monkeypatch.setattr(HTTPAdapter, "send", real_send)
    assert client.lean_usable()
