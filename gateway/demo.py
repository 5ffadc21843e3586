"""`make demo`: the reference workflow against a real gateway on the embedded default.

Starts `frontdoor-gateway serve --tls-self localhost 127.0.0.1` in a temporary state dir (HTTPS
with a server certificate from the embedded local CA; every request verifies it against the CA file
the gateway names, as `curl --cacert` does), creates a token with the reference curl command, makes a key and CSR (the key stays here), redeems the token,
prints the certificate, shows that the token is single-use, and stops the gateway.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _step(text: str) -> None:
    print("\n%s== %s%s" % (BOLD, text, RESET))


def _post(url: str, body: dict, headers: dict, shown_headers: list, ca_file: str) -> tuple:
    """POST with curl when it is installed (as the reference does), else with requests; both verify the
    gateway's certificate against ``ca_file``."""
    data = json.dumps(body, indent=1)
    shown = " \\\n  ".join(["curl --cacert $CA -X POST"] + ['-H "%s"' % h for h in shown_headers] + ["-d '%s'" % data.replace("\n", ""), '"%s"' % url])
    print(DIM + shown + RESET)
    if shutil.which("curl"):
        args = ["curl", "-sS", "--cacert", ca_file, "-X", "POST", "-w", "\n%{http_code}"]
        for key, value in headers.items():
            args += ["-H", "%s: %s" % (key, value)]
        args += ["-d", data, url]
        out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text)
    response = requests.post(url, data=data, headers=headers, timeout=30, verify=ca_file)
    return response.status_code, response.json()


def main() -> int:
    state_dir = tempfile.mkdtemp(prefix="frontdoor-demo-")
    port = _port()
    admin = "fdk_demo_" + secrets.token_urlsafe(16)
    base = "https://127.0.0.1:%d" % port
    ca_file = os.path.join(state_dir, "tls", "ca.pem")  # written by --tls-self before the gateway listens
    gateway_bin = os.path.join(os.path.dirname(sys.executable), "frontdoor-gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    env["FRONTDOOR_ADMIN_TOKEN"] = admin
    log_path = os.path.join(state_dir, "gateway.log")
    _step("Starting frontdoor-gateway on %s (embedded default: SQLite + local CA in %s; HTTPS with a server "
          "certificate from that CA)" % (base, state_dir))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [gateway_bin, "serve", "--port", str(port), "--state-dir", state_dir, "--tls-self", "localhost", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1, verify=ca_file).ok:
                    break
            except (requests.RequestException, OSError):  # OSError: the CA file is not there yet
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print(open(log_path).read(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        with open(os.path.join(state_dir, "tls", "server.pem"), "rb") as handle:
            server = x509.load_pem_x509_certificates(handle.read())[0]
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        print("HTTPS: server certificate for %s, issued by %s, valid until %s"
              % (", ".join(str(n.value) for n in names), server.issuer.rfc4514_string(),
                 server.not_valid_after_utc.date()))
        print("CA=%s   # every request below verifies the gateway against it (curl --cacert $CA)" % ca_file)

        _step("Step 1: an administrator creates a token with certificate metadata")
        status, created = _post(
            base + "/frontdoor/default/certificate-request-tokens",
            {"name": "api-service-cert", "commonName": "api.example.com", "organization": "Example Corp",
             "organizationalUnit": "API Services"},
            {"Authorization": "Bearer " + admin, "Content-Type": "application/json"},
            ["Authorization: Bearer $TOKEN", "Content-Type: application/json"], ca_file,
        )
        print("-> %d %s" % (status, json.dumps(created, indent=2)))
        if status != 201:
            return 1
        token = created["token"]

        _step("Step 2: the token is shared; the recipient makes its own key and CSR (the key never leaves)")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever-the-device-says")]))
            .sign(key, hashes.SHA256())
        )
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        key_path = os.path.join(state_dir, "client.key")
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        print(DIM + "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key "
              "-subj '/CN=whatever-the-device-says' -out client.csr" + RESET)
        print("key: %s (0600); CSR subject: CN=whatever-the-device-says" % key_path)

        _step("Step 3: the recipient redeems the token with the CSR (no Authorization header)")
        status, cert = _post(
            base + "/frontdoor/default/client-certificates/token/" + token,
            {"type": "CSR", "value": csr_pem}, {"Content-Type": "application/json"},
            ["Content-Type: application/json"], ca_file,
        )
        if status != 201:
            print("-> %d %s" % (status, json.dumps(cert, indent=2)))
            return 1
        print("-> %d {id: %s, tokenId: %s, serialNumber: %s, ...}" % (status, cert["id"], cert["tokenId"], cert["serialNumber"]))

        _step("Step 4: the client certificate carries the token's metadata")
        issued = x509.load_pem_x509_certificate(cert["certificate"].encode())
        eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        print("subject:     %s" % issued.subject.rfc4514_string())
        print("issuer:      %s" % issued.issuer.rfc4514_string())
        print("serial:      %x" % issued.serial_number)
        print("valid from:  %s" % issued.not_valid_before_utc.isoformat())
        print("valid until: %s (%d days)" % (issued.not_valid_after_utc.isoformat(),
                                            (issued.not_valid_after_utc - issued.not_valid_before_utc).days))
        print("key usage:   %s" % ", ".join("clientAuth" if u == ExtendedKeyUsageOID.CLIENT_AUTH else u.dotted_string
                                            for u in eku))
        same_key = issued.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        print("public key:  %s" % ("the recipient's own (from the CSR)" if same_key else "MISMATCH"))
        print("chain:       %d CA certificate(s) up to the root" % len(cert["caChain"]))

        _step("Single use: a second redemption with another key is refused")
        other = ec.generate_private_key(ec.SECP256R1())
        other_csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thief")]))
            .sign(other, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode()
        )
        response = requests.post(base + "/frontdoor/default/client-certificates/token/" + token,
                                 json={"type": "CSR", "value": other_csr}, timeout=30, verify=ca_file)
        print("-> %d %s" % (response.status_code, response.json()["error"]["code"]))
        ok = same_key and response.status_code == 409
        print("\n%sdemo %s%s (gateway log: %s)" % (BOLD, "passed" if ok else "FAILED", RESET, log_path))
        return 0 if ok else 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
