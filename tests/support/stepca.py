"""A real step-ca for tests: a CA written with ``cryptography``, served by ``.venv/bin/step-ca``.

No ``step`` CLI is needed: we write the root, the intermediate (unencrypted PKCS#8 key), a JWK
provisioner (public key in ca.json, private key as the encrypted JWE file the gateway reads, both
made with jwcrypto the way ``step crypto jwk create`` makes them) and ca.json ourselves, start step-ca on a free loopback port, wait for /health and stop it by
its PID. ``shared_stepca()`` gives one server per test session (stopped at exit); tests that
stop or restart the CA make their own with ``StepCA.create(...)``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from frontdoor_pki.signers.stepca import x509_template
from jwcrypto import jwa, jwe, jwk, jwt

from support.gateway import free_port

STEP_CA_BIN = os.path.join(os.path.dirname(sys.executable), "step-ca")
PROVISIONER = "frontdoor"
#: a second provisioner on the same CA without our template, to test the operator messages
PLAIN_PROVISIONER = "no-template"
#: long enough for the contract suite's 365-day default certificates
MAX_TLS_CERT_DURATION = "9000h"
#: what step 0.19 (go.step.sm/crypto/jose.PBKDF2Iterations) writes into encrypted key files
STEP_PBKDF2_ITERATIONS = 100_000


def stepca_available() -> bool:
    return os.access(STEP_CA_BIN, os.X_OK)


def _ca_cert(subject: x509.Name, issuer: x509.Name, public_key, signing_key, path_length: int, days: int,
             issuer_key=None) -> x509.Certificate:
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def provisioner_key(password: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """A new provisioner key as ``step crypto jwk create`` writes it: (public JWK for ca.json, key file).

    EC P-256, ``use``/``alg``/``kid`` (RFC 7638 thumbprint) set; the file is the private JWK as a compact
    PBES2-HS256+A128KW / A256GCM JWE when ``password`` is given, else plain JSON."""
    generated = jwk.JWK.generate(kty="EC", crv="P-256")
    key = jwk.JWK(**dict(generated.export_private(as_dict=True), use="sig", alg="ES256", kid=generated.thumbprint()))
    public = key.export_public(as_dict=True)
    if not password:
        return public, key.export_private()
    header = {"alg": "PBES2-HS256+A128KW", "enc": "A256GCM", "cty": "jwk+json", "p2c": STEP_PBKDF2_ITERATIONS}
    token = jwe.JWE(key.export_private().encode(), protected=header)
    cap = jwa.default_max_pbkdf2_iterations  # jwcrypto's guard (16384) is below step's count; restored below
    jwa.default_max_pbkdf2_iterations = STEP_PBKDF2_ITERATIONS
    try:
        token.add_recipient(jwk.JWK.from_password(password))
    finally:
        jwa.default_max_pbkdf2_iterations = cap
    return public, token.serialize(compact=True)


def verified_ott(ott: str, public: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(header, claims) of a one-time token once jwcrypto verified its signature with the provisioner's
    public JWK (what step-ca has in ca.json) and its exp/nbf; raises if either does not hold."""
    token = jwt.JWT(jwt=ott, key=jwk.JWK(**public))
    return json.loads(token.header), json.loads(token.claims)


def _write(path: str, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class StepCA:
    """One CA directory and (while running) its step-ca process."""

    def __init__(self, directory: str, port: int, password: str):
        self.dir = directory
        self.port = port
        self.password = password
        self.url = "https://127.0.0.1:%d" % port
        self.config_path = os.path.join(directory, "config", "ca.json")
        self.root_path = os.path.join(directory, "certs", "root_ca.crt")
        self.intermediate_path = os.path.join(directory, "certs", "intermediate_ca.crt")
        self.key_path = os.path.join(directory, "secrets", "provisioner.jwe")
        self.plain_key_path = os.path.join(directory, "secrets", "no-template.json")
        self.log_path = os.path.join(directory, "step-ca.log")
        self.process: Optional[subprocess.Popen] = None
        self.provisioner_jwk: Dict[str, Any] = {}

    # -- writing the CA ----------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Optional[str] = None, port: Optional[int] = None,
               template: Optional[Dict[str, Any]] = None, db: bool = True,
               extra_provisioner_options: Optional[Dict[str, Any]] = None,
               claims: Optional[Dict[str, str]] = None) -> StepCA:
        """Write a CA into ``directory`` (a new temp dir if None); ``claims`` override the JWK
        provisioners' lifetime claims, ``db=False`` leaves step-ca without a database."""
        directory = directory or tempfile.mkdtemp(prefix="stepca-")
        ca = cls(directory, port or free_port(), "pw-" + secrets.token_urlsafe(12))
        ca._write(template if template is not None else x509_template(), db, extra_provisioner_options or {},
                  claims or {})
        return ca

    def _write(self, template: Dict[str, Any], db: bool, extra_options: Dict[str, Any],
               claim_overrides: Dict[str, str]) -> None:
        for sub in ("certs", "secrets", "config", "db"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o700, exist_ok=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "frontdoor tests"),
                               x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor test step-ca Root CA")])
        root = _ca_cert(root_name, root_name, root_key.public_key(), root_key, 1, 3650)
        int_key = ec.generate_private_key(ec.SECP256R1())
        int_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "frontdoor tests"),
                              x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor test step-ca Intermediate CA")])
        inter = _ca_cert(int_name, root_name, int_key.public_key(), root_key, 0, 1825, issuer_key=root_key)
        self.root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
        self.intermediate_pem = inter.public_bytes(serialization.Encoding.PEM).decode()
        _write(self.root_path, self.root_pem.encode(), 0o644)
        _write(self.intermediate_path, self.intermediate_pem.encode(), 0o644)
        int_key_path = os.path.join(self.dir, "secrets", "intermediate_ca_key")
        _write(int_key_path, int_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))

        public, encrypted = provisioner_key(self.password)
        _write(self.key_path, encrypted.encode())
        self.provisioner_jwk = public
        plain_public, plain_private = provisioner_key(None)
        _write(self.plain_key_path, plain_private.encode())

        claims = {"minTLSCertDuration": "5m", "maxTLSCertDuration": MAX_TLS_CERT_DURATION,
                  "defaultTLSCertDuration": "24h"}
        claims.update(claim_overrides)
        options = dict(template)
        options.update(extra_options)
        config = {
            "root": self.root_path,
            "federatedRoots": None,
            "crt": self.intermediate_path,
            "key": int_key_path,
            "address": "127.0.0.1:%d" % self.port,
            "insecureAddress": "",
            "dnsNames": ["127.0.0.1", "localhost"],
            "logger": {"format": "text"},
            "db": {"type": "badgerv2", "dataSource": os.path.join(self.dir, "db")} if db else None,
            "authority": {
                "provisioners": [
                    {"type": "JWK", "name": PROVISIONER, "key": public, "claims": claims, "options": options},
                    {"type": "JWK", "name": PLAIN_PROVISIONER, "key": plain_public, "claims": claims},
                ],
            },
            "tls": {
                "cipherSuites": ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                                 "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                "minVersion": 1.2, "maxVersion": 1.3, "renegotiation": False,
            },
        }
        _write(self.config_path, json.dumps(config, indent=2).encode(), 0o600)

    # -- what the gateway needs ----------------------------------------------------------------
    def step_ca_options(self, provisioner: str = PROVISIONER) -> Dict[str, Any]:
        """The ``stepCa`` config mapping for this CA (a frontdoor's ``signer`` may override keys)."""
        if provisioner == PROVISIONER:
            return {"url": self.url, "root": self.root_path, "provisioner": PROVISIONER,
                    "provisionerKey": self.key_path, "provisionerPassword": self.password}
        return {"url": self.url, "root": self.root_path, "provisioner": provisioner,
                "provisionerKey": self.plain_key_path}

    def env(self) -> Dict[str, str]:
        """The environment for ``FRONTDOOR_SIGNER=step-ca frontdoor-gateway serve``."""
        return {"FRONTDOOR_SIGNER": "step-ca", "STEP_CA_URL": self.url, "STEP_ROOT": self.root_path,
                "STEP_PROVISIONER": PROVISIONER, "STEP_PROVISIONER_KEY": self.key_path,
                "STEP_PROVISIONER_PASSWORD": self.password}

    # -- process -----------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        if not stepca_available():
            raise RuntimeError("%s is missing: run `make step-ca` (builds it from Debian's packages)" % STEP_CA_BIN)
        if self.running:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEP")}
        env["STEPPATH"] = os.path.join(self.dir, ".step")  # never read the user's ~/.step
        self.process = subprocess.Popen([STEP_CA_BIN, self.config_path], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("step-ca exited with %s:\n%s" % (self.process.returncode, self.log()[-4000:]))
            try:
                if requests.get(self.url + "/health", verify=self.root_path, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("step-ca did not become healthy within %.0f s:\n%s" % (timeout, self.log()[-4000:]))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def post(self, path: str, body: Dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, verify=self.root_path, timeout=10)


@contextlib.contextmanager
def running_stepca(**kwargs) -> Iterator[StepCA]:
    ca = StepCA.create(**kwargs)
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()


def _stop_and_remove(ca: StepCA) -> None:
    ca.stop()
    shutil.rmtree(ca.dir, ignore_errors=True)


_SHARED: Optional[StepCA] = None
_SHARED_LOCK = threading.Lock()


def shared_stepca() -> StepCA:
    """One step-ca for the whole test session, started on first use and stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or not _SHARED.running:
            ca = _SHARED if _SHARED is not None else StepCA.create()
            ca.start()
            if _SHARED is None:
                atexit.register(_stop_and_remove, ca)
            _SHARED = ca
        return _SHARED
