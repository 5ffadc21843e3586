"""HTTPS and reverse proxies against real `frontdoor-gateway serve` processes.

- the reference curl workflow over HTTPS against ``serve --tls-cert/--tls-key`` (a certificate an operator
  brings, from its own CA), with the real curl when the machine has it;
- TLS 1.1 and 1.0 refused, TLS 1.2 and 1.3 accepted (a control server shows the old-TLS client really offers
  its version, so the refusal is the gateway's);
- ``--tls-self`` with ``--workers 2``: both workers serve the certificate from the local CA, verified with the
  CA file the gateway names;
- plain HTTP off loopback refused without ``--insecure-http``;
- X-Forwarded-For / X-Forwarded-Proto honoured only from the proxy address given with --forwarded-allow-ips.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, make_key
from support.gateway import GATEWAY_BIN, free_port, run_gateway

CURL = shutil.which("curl")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def operator_tls(tmp_path_factory):
    """What an operator brings: a CA of its own and a server certificate for 127.0.0.1 / localhost."""
    directory = tmp_path_factory.mktemp("operator-tls")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("operator test CA")).issuer_name(_name("operator test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key")}
    with open(paths["ca.pem"], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(paths["server.key"], os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def https_gateway(tmp_path_factory, operator_tls):
    args = ("--tls-cert", operator_tls["server.pem"], "--tls-key", operator_tls["server.key"])
    with run_gateway(str(tmp_path_factory.mktemp("gw-https")), extra_args=args, ca_file=operator_tls["ca.pem"]) as gw:
        yield gw


def _curl_post(url: str, body: dict, headers: dict, ca_file: str) -> tuple:
    """POST as the reference walkthrough does: the real curl with --cacert, else requests verifying the same CA."""
    data = json.dumps(body)
    if CURL:
        args = [CURL, "-sS", "--cacert", ca_file, "-X", "POST", "-w", "\n%{http_code}", "-d", data, url]
        for key, value in headers.items():
            args[1:1] = ["-H", "%s: %s" % (key, value)]
        out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text)
    response = requests.post(url, data=data, headers=headers, verify=ca_file, timeout=60)
    return response.status_code, response.json()


def test_reference_workflow_over_https(https_gateway, operator_tls):
    gw, ca = https_gateway, operator_tls["ca.pem"]
    assert gw.url.startswith("https://")
    status, created = _curl_post(
        gw.url + "/frontdoor/default/certificate-request-tokens",
        {"name": "api-service-cert", "commonName": "api.example.com", "organization": "Example Corp",
         "organizationalUnit": "API Services"},
        {"Authorization": "Bearer " + gw.admin_token, "Content-Type": "application/json"}, ca,
    )
    assert status == 201, created
    key = make_key("p256")
    status, issued = _curl_post(
        gw.url + "/frontdoor/default/client-certificates/token/" + created["token"],
        {"type": "CSR", "value": make_csr(key, cn="me")}, {"Content-Type": "application/json"}, ca,
    )
    assert status == 201, issued
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=api.example.com,OU=API Services,O=Example Corp"
    status, again = _curl_post(
        gw.url + "/frontdoor/default/client-certificates/token/" + created["token"],
        {"type": "CSR", "value": make_csr(make_key("p256"), cn="thief")}, {"Content-Type": "application/json"}, ca,
    )
    assert status == 409 and again["error"]["code"] == "token_already_used"


def test_the_certificate_is_verified_and_plain_http_is_not_spoken(https_gateway):
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the operator's CA
        requests.get(https_gateway.url + "/healthz", timeout=10, verify=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(https_gateway.url.replace("https://", "http://") + "/healthz", timeout=10)


def _client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers exactly ``version``. SECLEVEL=0: OpenSSL 3 refuses to even offer TLS < 1.2 at its
    default level, and then the gateway would never be asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1/TLSv1_1 are deprecated: the point
        context.minimum_version = version
        context.maximum_version = version
    return context


def _handshake(port: int, version: ssl.TLSVersion) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with _client_context(version).wrap_socket(sock) as tls:
            return tls.version()


def _old_tls_control_server(tmp_path, operator_tls) -> int:
    """A one-shot TLS server that accepts TLS 1.0+: proves the old-version client really offers its version."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(operator_tls["server.pem"], operator_tls["server.key"])
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = ssl.TLSVersion.TLSv1
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        with listener:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("old", ["TLSv1_1", "TLSv1"])
def test_tls_older_than_1_2_is_refused(https_gateway, operator_tls, tmp_path, old):
    version = getattr(ssl.TLSVersion, old)
    assert _handshake(_old_tls_control_server(tmp_path, operator_tls), version) in ("TLSv1.1", "TLSv1")
    port = int(https_gateway.url.rsplit(":", 1)[1])
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(port, version)
    assert _handshake(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert requests.get(https_gateway.url + "/healthz", timeout=10, verify=operator_tls["ca.pem"]).ok


def _near_end_copy(state: str) -> x509.Certificate:
    """Replace <state>/tls/server.pem by the same certificate re-signed by the TLS intermediate with 10 days left."""
    with open(os.path.join(state, "ca", "_gateway-tls", "intermediate.key"), "rb") as handle:
        issuer_key = serialization.load_pem_private_key(handle.read(), None)
    path = os.path.join(state, "tls", "server.pem")
    with open(path, "rb") as handle:
        old, intermediate = x509.load_pem_x509_certificates(handle.read())[:2]
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(old.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=80))
               .not_valid_after(now + dt.timedelta(days=10)))
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    near_end = builder.sign(issuer_key, hashes.SHA256())
    with open(path, "wb") as handle:
        handle.write(near_end.public_bytes(serialization.Encoding.PEM) + intermediate.public_bytes(serialization.Encoding.PEM))
    return near_end


def test_tls_self_with_two_workers(tmp_path):
    state = str(tmp_path / "state")
    ca_file = os.path.join(state, "tls", "ca.pem")
    args = ("--tls-self", "localhost", "127.0.0.1", "--tls-min-version", "1.3")
    with run_gateway(state, workers=2, extra_args=args, ca_file=ca_file) as gw:
        deadline = time.monotonic() + 30
        while gw.log().count("Application startup complete") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.log().count("Application startup complete") == 2  # both workers loaded the TLS context
        # fresh connections, so both workers' listeners are exercised; each verifies against the named CA
        for _ in range(12):
            response = requests.get(gw.url + "/healthz", timeout=10, verify=ca_file)
            assert response.status_code == 200
        created = gw.create_token(name="self-tls", commonName="self.example").json()
        assert gw.redeem(created["token"], make_csr(make_key("p256"), cn="x")).status_code == 201
        localhost = gw.url.replace("127.0.0.1", "localhost")
        assert requests.get(localhost + "/healthz", timeout=10, verify=ca_file).ok  # the DNS SAN
        port = int(gw.url.rsplit(":", 1)[1])
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(port, ssl.TLSVersion.TLSv1_2)  # --tls-min-version 1.3

        # Renewal without a restart: the certificate on disk is swapped for one 10 days from its end (as if the
        # gateway had run for 80 days); SIGHUP makes uvicorn replace each worker, and each new worker's TLS
        # context asks the local CA again, which renews it.
        near_end = _near_end_copy(state)
        gw.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while gw.log().count("Application startup complete") < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gw.log().count("Application startup complete") == 4, gw.log()
        while gw.log().count("Finished server process") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the old workers are gone: every connection reaches a new one
        for _ in range(6):
            served = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())
            assert served.serial_number != near_end.serial_number
            assert served.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=80)
        assert requests.get(gw.url + "/healthz", timeout=10, verify=ca_file).ok
        log = gw.log()
    assert "curl --cacert %s" % ca_file in log
    served = x509.load_pem_x509_certificates(open(os.path.join(state, "tls", "server.pem"), "rb").read())
    assert ExtendedKeyUsageOID.SERVER_AUTH in served[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert oct(os.stat(os.path.join(state, "tls", "server.key")).st_mode & 0o777) == "0o600"


def test_plain_http_off_loopback_is_refused_by_the_command(tmp_path):
    result = subprocess.run(
        [GATEWAY_BIN, "serve", "--state-dir", str(tmp_path / "s"), "--port", str(free_port()), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("FRONTDOOR_")},
    )
    assert result.returncode == 2
    assert "refusing plain HTTP on 0.0.0.0" in result.stderr and "--insecure-http" in result.stderr
    assert not os.path.exists(tmp_path / "s")  # refused before anything was created


def _serve_in_process(args, tmp_path, monkeypatch, capsys) -> tuple:
    """`frontdoor-gateway serve ARGS` in this process: every case here stops before uvicorn would start."""
    from frontdoor_gateway.cli import main

    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):  # serve drops them; restored after
        monkeypatch.delenv(name, raising=False)
    code = main(["serve", "--state-dir", str(tmp_path / "s"), "--port", str(free_port())] + args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--host", "::"], "refusing plain HTTP on ::"),
    (["--host", "192.0.2.10"], "refusing plain HTTP on 192.0.2.10"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "/nonexistent.pem: no such file"),
    (["--tls-cert", "{junk}"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "{junk}", "--tls-key", "{junk}"], "not a PEM certificate and its matching"),
    (["--tls-self", "localhost", "--tls-cert", "a", "--tls-key", "b"], "either --tls-self or --tls-cert"),
    (["--tls-self", "bad_name!"], "neither an IP address nor a DNS host name"),
    (["--forwarded-allow-ips", "*"], "'*' would let any client set its own address"),
    (["--forwarded-allow-ips", "proxy.example"], "is not an IP address or network"),
    (["--metrics-address", "192.0.2.10:9102"], "refusing plain HTTP metrics on 192.0.2.10"),
])
def test_bad_tls_and_proxy_options_are_a_clear_error(tmp_path, monkeypatch, capsys, args, message):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    code, err = _serve_in_process([a.replace("{junk}", str(junk)) for a in args], tmp_path, monkeypatch, capsys)
    assert code == 2 and message in err, err
    assert not os.path.exists(tmp_path / "s")  # refused before anything was created


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path, monkeypatch, capsys, operator_tls):
    with open(operator_tls["server.key"], "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    code, err = _serve_in_process(["--tls-cert", operator_tls["server.pem"], "--tls-key", str(encrypted)],
                                  tmp_path, monkeypatch, capsys)
    assert code == 2 and "the key is encrypted" in err, err


def _get_from(source: str, port: int, path: str, headers: dict) -> http.client.HTTPResponse:
    """A request whose TCP peer address is ``source`` (any 127/8 address is this machine's loopback)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0), timeout=10)
    connection.request("POST" if "token/" in path else "GET", path,
                       body=json.dumps({"type": "CSR", "value": make_csr(make_key("p256"), cn="x")}) if "token/" in path else None,
                       headers=dict(headers, **{"Content-Type": "application/json"}))
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _refusal_sources(state_dir: str) -> list:
    with open(os.path.join(state_dir, "audit.jsonl"), encoding="utf-8") as handle:
        return [e.get("source") for e in map(json.loads, handle) if e["event"] == "redemption.refused"]


def test_forwarded_headers_are_honoured_only_from_the_trusted_proxy(tmp_path):
    """The proxy (127.0.0.2) terminates TLS and forwards plain HTTP on loopback; the client address the audit
    (and the rate limits, through net.client_address) see is the proxy's X-Forwarded-For only from it."""
    unknown = "/frontdoor/default/client-certificates/token/crt_" + "A" * 32
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    state = str(tmp_path / "proxied")
    # the flag wins over the config key: 127.0.0.9 (config) is not trusted here
    with run_gateway(state, config={"forwardedAllowIps": ["127.0.0.9"]},
                     extra_args=("--forwarded-allow-ips", "127.0.0.2")) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        assert _get_from("127.0.0.2", port, unknown, forwarded).status in (400, 404)
        assert _get_from("127.0.0.1", port, unknown, forwarded).status in (400, 404)  # not the proxy: ignored
        assert _get_from("127.0.0.9", port, unknown, forwarded).status in (400, 404)
        # the scheme: a redirect the app builds from the request URL
        assert _get_from("127.0.0.2", port, "/healthz/", forwarded).getheader("Location").startswith("https://")
        assert _get_from("127.0.0.1", port, "/healthz/", forwarded).getheader("Location").startswith("http://")
    assert _refusal_sources(state) == ["203.0.113.9", "127.0.0.1", "127.0.0.9"]

    state = str(tmp_path / "configured")
    with run_gateway(state, config={"forwardedAllowIps": "127.0.0.0/30"}) as gw:  # the config key alone, a network
        port = int(gw.url.rsplit(":", 1)[1])
        _get_from("127.0.0.2", port, unknown, forwarded)
        _get_from("127.0.0.9", port, unknown, forwarded)
    assert _refusal_sources(state) == ["203.0.113.9", "127.0.0.9"]

    state = str(tmp_path / "default")
    with run_gateway(state) as gw:  # the default trusts no proxy, loopback included
        port = int(gw.url.rsplit(":", 1)[1])
        _get_from("127.0.0.1", port, unknown, forwarded)
        assert _get_from("127.0.0.1", port, "/healthz/", forwarded).getheader("Location").startswith("http://")
    assert _refusal_sources(state) == ["127.0.0.1"]


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_modules_gateway_client_verifies_with_ca_path_whatever_the_environment(
        https_gateway, operator_tls, monkeypatch, variable):
    """The Ansible modules' client (host_client, ansible-core's urls): ca_path must win over a CA bundle named in
    the environment, validate_certs=false must stay false, and without either the error names ca_path."""
    from frontdoor_pki.host_client import UrlsGatewayClient

    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, requests.certs.where())  # a bundle without the operator's CA
    assert UrlsGatewayClient(https_gateway.url, https_gateway.admin_token,
                             ca_path=operator_tls["ca.pem"]).ca_chain("default")
    assert UrlsGatewayClient(https_gateway.url, https_gateway.admin_token, validate_certs=False).ca_chain("default")
    with pytest.raises(FrontdoorError) as info:
        UrlsGatewayClient(https_gateway.url, https_gateway.admin_token).ca_chain("default")
    assert info.value.code == "gateway_unavailable" and "ca_path" in info.value.message


def test_metrics_address_speaks_https_with_the_gateways_certificate(tmp_path):
    """--metrics-address beside HTTPS serves the metrics with the same certificate and TLS floor."""
    state = str(tmp_path / "state")
    ca_file = os.path.join(state, "tls", "ca.pem")
    metrics_port = free_port()
    args = ("--tls-self", "localhost", "127.0.0.1", "--metrics-address", "127.0.0.1:%d" % metrics_port)
    with run_gateway(state, extra_args=args, ca_file=ca_file) as gw:
        created = gw.create_token(name="m-tls", commonName="m.example").json()
        assert gw.redeem(created["token"], make_csr(make_key("p256"), cn="x")).status_code == 201
        answer = requests.get("https://127.0.0.1:%d/metrics" % metrics_port, timeout=10, verify=ca_file)
        assert answer.status_code == 200
        assert 'frontdoor_redemptions_total{frontdoor="default",outcome="issued"} 1.0' in answer.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(metrics_port, ssl.TLSVersion.TLSv1_1)
