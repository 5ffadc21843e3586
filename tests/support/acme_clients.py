"""Real ACME clients against a test gateway: certbot (from the test venv), lego (Debian's package), and the
``acme`` package's own ClientV2 for the refusals a command-line client only reports as text.

Each client gets its own temporary config/work/log directories, so two "machines" are two directories.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from typing import List, Optional

import josepy
from acme import client as acme_client
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CERTBOT = os.path.join(os.path.dirname(sys.executable), "certbot")


def directory_url(gateway_url: str, frontdoor: str = "default") -> str:
    return "%s/acme/%s/directory" % (gateway_url, frontdoor)


@dataclasses.dataclass
class Certbot:
    """certbot with its state in ``home`` (one ACME account per home)."""

    home: str
    server: str

    def run(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        command = [CERTBOT, *args, "--config-dir", os.path.join(self.home, "conf"),
                   "--work-dir", os.path.join(self.home, "work"), "--logs-dir", os.path.join(self.home, "logs"),
                   "--non-interactive"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REQUESTS_CA_BUNDLE", "SSL_CERT"))}
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    def certonly(self, eab: dict, *domains: str, extra: tuple = ()) -> subprocess.CompletedProcess:
        # "--eab-hmac-key=KEY": a base64url key starts with "-" once in 64, and argparse would take it for an option
        args = ["certonly", "--server", self.server, "--eab-kid", eab["keyId"], "--eab-hmac-key=" + eab["hmacKey"],
                "--agree-tos", "-m", "ops@example.com", "--no-eff-email", "--standalone"]
        for domain in domains:
            args += ["-d", domain]
        return self.run(*args, *extra)

    def register(self, eab: dict) -> subprocess.CompletedProcess:
        return self.run("register", "--server", self.server, "--eab-kid", eab["keyId"],
                        "--eab-hmac-key=" + eab["hmacKey"], "--agree-tos", "-m", "ops@example.com", "--no-eff-email")

    def live(self, name: str, what: str = "cert.pem") -> str:
        with open(os.path.join(self.home, "conf", "live", name, what), "r", encoding="ascii") as handle:
            return handle.read()

    def log(self) -> str:
        path = os.path.join(self.home, "logs", "letsencrypt.log")
        if not os.path.exists(path):
            return ""
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()


def lego_binary() -> Optional[str]:
    return shutil.which("lego")


def run_lego(home: str, server: str, eab: dict, domains: List[str], command: str = "run",
             timeout: int = 120) -> subprocess.CompletedProcess:
    """lego 4.x: EAB with --eab --kid --hmac; a challenge type must be named (--http) though none is solved,
    because the authorizations are valid already (lego logs 'authorization already valid; skipping challenge')."""
    args = [lego_binary() or "lego", "--server", server, "--email", "ops@example.com", "--accept-tos",
            "--eab", "--kid", eab["keyId"], "--hmac=" + eab["hmacKey"], "--path", home,
            "--http", "--http.port", "127.0.0.1:0"]
    for domain in domains:
        args += ["--domains", domain]
    args.append(command)
    if command == "renew":
        args += ["--days", "400", "--no-random-sleep"]  # renew now, whatever the remaining life, without a delay
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def account_key(kind: str = "es256") -> josepy.JWK:
    if kind == "rs256":
        return josepy.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    curve = {"es256": ec.SECP256R1(), "es384": ec.SECP384R1()}[kind]
    return josepy.JWKEC(key=ec.generate_private_key(curve))


def library_client(server: str, key: josepy.JWK) -> acme_client.ClientV2:
    """The acme package's ClientV2 (what certbot is built on) with ``key`` as the account key."""
    alg = {"JWKRSA": josepy.RS256}.get(type(key).__name__)
    if alg is None:
        alg = josepy.ES256 if key.key.curve.name == "secp256r1" else josepy.ES384
    network = acme_client.ClientNetwork(key, alg=alg, user_agent="frontdoor-tests")
    directory = messages.Directory.from_json(network.get(server).json())
    return acme_client.ClientV2(directory, network)


def register(client: acme_client.ClientV2, key: josepy.JWK, eab: Optional[dict]) -> messages.RegistrationResource:
    binding = None
    if eab is not None:
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=eab["keyId"], hmac_key=eab["hmacKey"], directory=client.directory,
        )
    registration = messages.NewRegistration.from_data(
        email="ops@example.com", terms_of_service_agreed=True, external_account_binding=binding,
    )
    return client.new_account(registration)
