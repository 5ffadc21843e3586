"""The role frontdoor.pki.gateway, deployed by a real ansible-playbook into a scratch "host root".

systemd does not run here, so the test does what systemd would: it reads the rendered unit, starts the gateway
with the unit's own ExecStart (and Environment/EnvironmentFile), and runs the reference workflow over HTTPS
against it with curl, trusting only the CA the gateway's --tls-self wrote. Then it stops the process by its PID
and checks that a second run changes nothing and that check mode fails on nothing.

The virtual environment is installed the way an offline host would: from a wheelhouse archive (pip download of
the runtime lock, served from pip's cache) and a wheel of this checkout, through the role's own options.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from typing import Dict, Iterator, List, Tuple

import pytest
import requests
import yaml
from ansible_helpers import BIN, ROOT, ansible_env
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.gateway import free_port

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
API_TOKEN = "fdk_role_test_" + "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
#: survives the EnvironmentFile's quoting: systemd keeps a backslash before ", \\, $ and ` out of the value
ENV_ODD_VALUE = 'a "quoted" $HOME `x` back\\slash %p'
#: `systemd-analyze security --offline` exposure (0 = fully confined, 10 = unconfined); 1.7 when written
MAX_EXPOSURE = 2.5


def _run(cmd: List[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (cmd, proc.returncode, proc.stdout[-4000:],
                                                               proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Dict[str, str]:
    """A wheel of this checkout and a wheelhouse archive of the runtime lock, as an operator would make them."""
    base = tmp_path_factory.mktemp("role-artifacts")
    src = base / "src"
    # built from a copy: setuptools leaves build/ and *.egg-info next to the sources it builds
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for tree in ("gateway", os.path.join("plugins", "module_utils")):
        shutil.copytree(os.path.join(ROOT, tree), src / tree, ignore=shutil.ignore_patterns("__pycache__"))
    _run(PIP + ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)])
    (wheel,) = os.listdir(base / "dist")
    _run(PIP + ["download", "--quiet", "-r", os.path.join(ROOT, "requirements.txt"), "-d", str(base / "wheels")])
    archive = base / "wheelhouse.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(base / "wheels")):
            tar.add(base / "wheels" / name, arcname=name)
    return {"wheel": str(base / "dist" / wheel), "wheelhouse": str(archive)}


class Deployment:
    """One scratch host root and the playbook that applies the role to it."""

    def __init__(self, collections_dir: str, workdir: str, artifacts: Dict[str, str]):
        self.workdir = workdir
        self.root = os.path.join(workdir, "host")
        self.collections_dir = collections_dir
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        self.vars = {
            "gateway_root": self.root,
            # no systemd and (maybe) no root here: the current user stands in for the service user
            "gateway_manage_user": False,
            "gateway_manage_service": False,
            "gateway_user": user,
            "gateway_group": group,
            "gateway_owner": user,
            "gateway_python": os.path.realpath(sys.executable),
            "gateway_package_file": artifacts["wheel"],
            "gateway_wheelhouse_archive": artifacts["wheelhouse"],
            "gateway_listen_host": "127.0.0.1",
            "gateway_port": free_port(),
            "gateway_tls": "self",
            "gateway_tls_self_hosts": ["localhost"],
            "gateway_api_tokens": [
                {"name": "deployer", "token": API_TOKEN, "permissions": {"*": ["*"]}},
                {"name": "reader", "sha256": "ab" * 32, "permissions": {"default": ["tokens:read"]}},
            ],
            "gateway_environment": {"FRONTDOOR_RATE_LIMITS": "off", "FRONTDOOR_ROLE_TEST": ENV_ODD_VALUE},
            "gateway_config": {
                "frontdoors": [{"id": "default", "defaultTokenTtl": "1h", "certificateTtl": "30d"}],
            },
        }
        self.playbook = os.path.join(workdir, "deploy.yml")
        with open(self.playbook, "w", encoding="utf-8") as handle:
            yaml.safe_dump([{"name": "deploy the gateway", "hosts": "localhost", "gather_facts": False,
                             "roles": [{"role": "frontdoor.pki.gateway"}]}], handle)
        self.vars_file = os.path.join(workdir, "vars.yml")
        self.set()

    def set(self, **values) -> None:
        self.vars.update(values)
        with open(self.vars_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.vars, handle)

    def path(self, absolute: str) -> str:
        return self.root + absolute

    def apply(self, *extra: str, allowed_warnings: Tuple[str, ...] = ()) -> Tuple[Dict[str, int], str]:
        """Run the role; the PLAY RECAP counts and the output. Fails on a failed task or any warning not allowed."""
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "@" + self.vars_file,
               self.playbook, *extra]
        proc = subprocess.run(cmd, cwd=self.workdir, env=ansible_env(self.collections_dir, self.workdir),
                              capture_output=True, text=True, timeout=900, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, "ansible-playbook %s failed (%d):\n%s" % (extra, proc.returncode, out[-8000:])
        warnings = [line for line in out.splitlines() if line.startswith(("[WARNING]", "[DEPRECATION WARNING]"))
                    and not any(allowed in line for allowed in allowed_warnings)]
        assert not warnings, "ansible-playbook warned:\n%s" % "\n".join(warnings)
        recap = re.search(r"^localhost\s*:(.*)$", proc.stdout, re.MULTILINE)
        assert recap, proc.stdout[-3000:]
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
        return counts, proc.stdout


def task_status(out: str, task: str) -> str:
    """'changed', 'ok', 'skipping'... of the first task whose name starts with ``task`` in ansible-playbook's output."""
    match = re.search(r"^TASK \[[^\]]*: %s[^\]]*\].*?^(ok|changed|skipping|fatal|failed)\b" % re.escape(task), out,
                      re.MULTILINE | re.DOTALL)
    assert match, "task %r not in the output" % task
    return match.group(1)


def unit_directives(path: str) -> Dict[str, List[str]]:
    """[Service] directives of a unit file, each name to its values in order (systemd allows repeats)."""
    found: Dict[str, List[str]] = {}
    section = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]":
                name, _, value = line.partition("=")
                found.setdefault(name, []).append(value)
    return found


def systemd_words(command_line: str) -> List[str]:
    """ExecStart as systemd splits it: quotes and backslashes like a shell, then '%%' -> '%' and '$$' -> '$'."""
    words = shlex.split(command_line)
    assert not any(re.search(r"(?<!%)%[a-zA-Z]", w) for w in words), "unexpected systemd specifier in %r" % words
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def environment_file(path: str) -> Dict[str, str]:
    """NAME="value" lines as systemd's EnvironmentFile parser reads them: inside double quotes a backslash before
    one of  " \\ ` $  is dropped, any other backslash is kept (the role writes only this form)."""
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith(("#", ";")):
                name, _, quoted = line.partition("=")
                assert quoted.startswith('"') and quoted.endswith('"') and len(quoted) >= 2, line
                env[name] = re.sub(r'\\([\\"`$])', r"\1", quoted[1:-1])
    return env


@contextlib.contextmanager
def serve_as_systemd_would(unit_file: str, url: str, ca_file: str, log_path: str) -> Iterator[subprocess.Popen]:
    """Start the unit's ExecStart with its Environment= and EnvironmentFile=, wait until it answers over HTTPS
    (verified with ``ca_file``), and stop it by its PID: a clean shutdown is asserted."""
    unit = unit_directives(unit_file)
    (exec_start,) = unit["ExecStart"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "STEP_"))}
    for path in unit.get("EnvironmentFile", []):
        env.update(environment_file(path.lstrip("-")))
    for assignment in unit.get("Environment", []):
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            env[name] = value
    with open(log_path, "wb") as log:
        process = subprocess.Popen(systemd_words(exec_start), stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd="/", start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "gateway exited %s:\n%s" % (process.returncode, open(log_path).read())
            try:
                if requests.get(url + "/healthz", verify=ca_file, timeout=2).status_code == 200:
                    break
            except (requests.RequestException, OSError):  # OSError: --tls-self's CA file not written yet
                pass
            assert time.monotonic() < deadline, "gateway not healthy:\n%s" % open(log_path).read()
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    log_text = open(log_path).read()
    # a clean shutdown; uvicorn re-raises the SIGTERM it handled, which systemd counts as success as well
    assert process.returncode in (0, -signal.SIGTERM), log_text[-3000:]
    assert "Finished server process" in log_text
    assert API_TOKEN not in log_text


def _server_certificate(hostname: str) -> Tuple[str, str, str]:
    """(CA PEM, server certificate PEM, server key PEM): a throwaway CA of the test's own, as an operator's PKI."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "role test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def test_role_deploys_a_gateway_that_serves_the_reference_workflow_over_https(collections_dir, tmp_path, artifacts):
    deploy = Deployment(collections_dir, str(tmp_path), artifacts)

    # check mode on a fresh host: no failure, changes reported, nothing written
    counts, _out = deploy.apply("--check")
    assert counts["failed"] == 0 and counts["changed"] >= 5, counts
    assert not os.path.exists(deploy.root), os.listdir(deploy.root)

    started = time.monotonic()
    counts, _out = deploy.apply()
    first_run = time.monotonic() - started
    assert counts["failed"] == 0 and counts["changed"] >= 8, counts

    state = deploy.path("/var/lib/frontdoor-gateway")
    config_file = deploy.path("/etc/frontdoor-gateway/config.yaml")
    unit_file = deploy.path("/etc/systemd/system/frontdoor-gateway.service")
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    assert oct(os.stat(config_file).st_mode & 0o777) == "0o640"
    assert oct(os.stat(deploy.path("/etc/frontdoor-gateway/environment")).st_mode & 0o777) == "0o640"
    assert environment_file(deploy.path("/etc/frontdoor-gateway/environment"))["FRONTDOOR_ROLE_TEST"] == ENV_ODD_VALUE
    with open(config_file, encoding="utf-8") as handle:
        text = handle.read()
    config = yaml.safe_load(text)
    assert API_TOKEN not in text
    assert config["apiTokens"][0] == {"name": "deployer", "sha256": hashlib.sha256(API_TOKEN.encode()).hexdigest(),
                                      "permissions": {"*": ["*"]}}
    assert config["apiTokens"][1]["sha256"] == "ab" * 32
    assert config["frontdoors"] == [{"id": "default", "defaultTokenTtl": "1h", "certificateTtl": "30d"}]

    # the hardened unit, as written
    unit = unit_directives(unit_file)
    for name, value in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                        ("ProtectHome", "yes"), ("CapabilityBoundingSet", ""), ("AmbientCapabilities", ""),
                        ("UMask", "0077"), ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                        ("User", deploy.vars["gateway_user"])):
        assert unit.get(name) == [value], (name, unit.get(name))
    assert unit["ReadWritePaths"] == [state]  # the state dir, and nothing else, is writable
    assert "@system-service" in unit["SystemCallFilter"]
    if shutil.which("systemd-analyze"):  # systemd's own checks, where its tools are installed (no running systemd needed)
        verify = subprocess.run(["systemd-analyze", "verify", unit_file], capture_output=True, text=True, timeout=60,
                                check=False)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr  # e.g. "Unknown key ..., ignoring"
        proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit_file],
                              capture_output=True, text=True, timeout=60, check=False)
        exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
        assert exposure and float(exposure.group(1)) <= MAX_EXPOSURE, proc.stdout[-3000:] + proc.stderr

    # start it the way systemd would: the unit's own ExecStart, Environment= and EnvironmentFile=
    argv = systemd_words(unit["ExecStart"][0])
    assert argv[0] == deploy.path("/opt/frontdoor-gateway/venv/bin/frontdoor-gateway") and argv[1] == "serve"
    assert "--tls-self" in argv
    assert argv[argv.index("--threads") + 1] == "auto" and argv[argv.index("--workers") + 1] == "1"
    url = "https://localhost:%d" % deploy.vars["gateway_port"]
    ca_file = os.path.join(state, "tls", "ca.pem")
    with serve_as_systemd_would(unit_file, url, ca_file, str(tmp_path / "gateway.log")):
        _reference_workflow(url, ca_file, tmp_path)
        # the role's hash of an unknown token admits nothing; plain HTTP is not served
        assert requests.get(url + "/frontdoor/default/certificate-request-tokens", verify=ca_file, timeout=10,
                            headers={"Authorization": "Bearer fdk_wrong"}).status_code == 401
        with pytest.raises(requests.RequestException):
            requests.get(url.replace("https:", "http:") + "/healthz", timeout=5)

    # idempotent: a second run changes nothing; check mode on the deployed host fails on nothing
    started = time.monotonic()
    counts, out = deploy.apply()
    second_run = time.monotonic() - started
    assert counts["changed"] == 0 and counts["failed"] == 0, out[-4000:]
    counts, out = deploy.apply("--check")
    # only the two pip tasks: ansible.builtin.pip cannot tell in check mode whether a requirements file or
    # extra_args would install anything, so it says changed (documented in docs/operations.md)
    assert counts["failed"] == 0 and counts["changed"] == 2, out[-4000:]
    print("role: first run %.1f s, second run %.1f s" % (first_run, second_run))

    # TLS from given files: the key is written 0640 and never shown, the unit serves them, the rest is untouched;
    # and the package named as a pip requirement the host resolves (here the wheel already on it) installs nothing
    ca_pem, cert_pem, key_pem = _server_certificate("localhost")
    wheel_on_host = deploy.path("/opt/frontdoor-gateway/dist/" + os.path.basename(artifacts["wheel"]))
    deploy.set(gateway_tls="files", gateway_tls_cert=cert_pem, gateway_tls_key=key_pem,
               gateway_package_file="", gateway_package=wheel_on_host)
    counts, out = deploy.apply("-vv")
    assert counts["failed"] == 0 and counts["changed"] == 3, out[-4000:]  # certificate, key, unit
    assert task_status(out, "Install the gateway package") == "ok"
    assert "PRIVATE KEY" not in out and API_TOKEN not in out
    key_file = deploy.path("/etc/frontdoor-gateway/tls/server.key")
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o640" and open(key_file).read() == key_pem
    argv = systemd_words(unit_directives(unit_file)["ExecStart"][0])
    assert argv[argv.index("--tls-cert") + 1] == deploy.path("/etc/frontdoor-gateway/tls/server.crt")
    assert argv[argv.index("--tls-key") + 1] == key_file and "--tls-self" not in argv
    (tmp_path / "given-ca.pem").write_text(ca_pem)
    with serve_as_systemd_would(unit_file, url, str(tmp_path / "given-ca.pem"), str(tmp_path / "gateway-2.log")):
        tokens = requests.get(url + "/frontdoor/default/certificate-request-tokens", verify=str(tmp_path / "given-ca.pem"),
                              headers={"Authorization": "Bearer " + API_TOKEN}, timeout=10)
        assert tokens.status_code == 200 and tokens.json()["totalElements"] == 1  # the same state dir


def _reference_workflow(url: str, ca_file: str, tmp_path) -> None:
    """The reference curl commands over HTTPS: create a token with the role's API token, redeem it with a CSR."""
    curl = ["curl", "--silent", "--show-error", "--fail-with-body", "--cacert", ca_file]
    created = json.loads(_run(curl + [
        "-X", "POST", "-H", "Authorization: Bearer " + API_TOKEN, "-H", "Content-Type: application/json",
        "-d", json.dumps({"name": "api-service-cert", "commonName": "api.example.com", "organization": "Example Corp",
                          "organizationalUnit": "API Services"}),
        url + "/frontdoor/default/certificate-request-tokens"]).stdout)
    assert created["status"] == "active" and created["token"].startswith("crt_")

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    body = tmp_path / "redeem.json"
    body.write_text(json.dumps({"type": "CSR", "value": csr}))
    issued = json.loads(_run(curl + [
        "-X", "POST", "-H", "Content-Type: application/json", "-d", "@" + str(body),
        url + "/frontdoor/default/client-certificates/token/" + created["token"]]).stdout)
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=api.example.com,OU=API Services,O=Example Corp"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    issuer = x509.load_pem_x509_certificate(issued["caChain"][0].encode())
    cert.verify_directly_issued_by(issuer)

    again = subprocess.run(curl + ["-X", "POST", "-H", "Content-Type: application/json", "-d", "@" + str(body),
                                   "-o", "/dev/null", "-w", "%{http_code}",
                                   url + "/frontdoor/default/client-certificates/token/" + created["token"]],
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.stdout == "200"  # the same key again: the same certificate, replayed


def test_check_mode_on_a_fresh_host_with_user_and_service_management(collections_dir, tmp_path, artifacts):
    """The defaults a real host gets (a new system user and group, systemd managed): check mode fails on nothing,
    reports the user, group and files, and creates nothing (no user either)."""
    deploy = Deployment(collections_dir, str(tmp_path), artifacts)
    name = "fd-gw-check-%d" % os.getpid()
    deploy.set(gateway_manage_user=True, gateway_manage_service=True, gateway_user=name, gateway_group=name,
               gateway_owner="root")
    counts, out = deploy.apply("--check", allowed_warnings=(
        # ansible.builtin.file in check mode about owners that the real run creates first
        "failed to look up user %s" % name, "failed to look up group %s" % name))
    assert counts["failed"] == 0 and counts["changed"] >= 8, out[-4000:]
    assert task_status(out, "Create the service group") == "changed"
    assert task_status(out, "Create the service user") == "changed"
    assert not os.path.exists(deploy.root)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


@pytest.mark.parametrize("values, message", [
    ({"gateway_tls": "none", "gateway_listen_host": "0.0.0.0"}, "plain HTTP (tls 'none') only on a loopback address"),
    ({"gateway_package": "frontdoor-pki==0.1.0"}, "Set exactly one of gateway_package"),
    ({"gateway_tls": "files"}, "tls 'files' needs gateway_tls_cert"),
    ({"gateway_tls": "off"}, "value of gateway_tls must be one of: self, files, none"),
    ({"gateway_environment": {"VAULT_TOKEN": "two\nlines"}}, "values of gateway_environment are single lines"),
    ({"gateway_api_tokens": [{"name": "x", "permissions": {}}]}, "every API token needs its token or its sha256"),
    ({"gateway_api_tokens": [{"name": "x", "token": "fdk_secret_in_a_bad_entry", "permissions": "all"}]},
     "permissions"),
    ({"gateway_threads": "0"}, "gateway_threads is auto or a number from 1 to 1000"),
    ({"gateway_threads": "2; rm -rf /"}, "gateway_threads is auto or a number from 1 to 1000"),
])
def test_role_refuses_bad_options_before_touching_the_host(collections_dir, tmp_path, values, message):
    """Argument specs and the cross-option checks stop the play before any change; secrets stay out of the output."""
    deploy = Deployment(collections_dir, str(tmp_path), {"wheel": "/nonexistent.whl", "wheelhouse": ""})
    deploy.set(**values)
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "@" + deploy.vars_file,
           deploy.playbook]
    proc = subprocess.run(cmd, cwd=deploy.workdir, env=ansible_env(collections_dir, deploy.workdir),
                          capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-3000:]
    assert "changed=0" in out and not os.path.exists(deploy.root)
    assert "fdk_secret_in_a_bad_entry" not in out and API_TOKEN not in out


def test_role_is_lint_clean_and_documented(collections_dir, tmp_path):
    """ansible-lint (production profile) on the role, and ansible-doc renders its argument specs."""
    shutil.copytree(os.path.join(ROOT, "roles", "gateway"), tmp_path / "project" / "roles" / "gateway")
    env = ansible_env(collections_dir, str(tmp_path))
    proc = subprocess.run([os.path.join(BIN, "ansible-lint"), "--offline", "--nocolor", "--profile", "production",
                           "roles/gateway"], cwd=tmp_path / "project", env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "0 failure(s), 0 warning(s)" in proc.stdout + proc.stderr
    doc = _run([os.path.join(BIN, "ansible-doc"), "-t", "role", "frontdoor.pki.gateway"], env=env).stdout
    for option in ("gateway_root", "gateway_package_file", "gateway_wheelhouse_archive", "gateway_api_tokens",
                   "gateway_tls", "gateway_environment"):
        assert option in doc
    with open(os.path.join(ROOT, "roles", "gateway", "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    with open(os.path.join(ROOT, "roles", "gateway", "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    assert set(spec) == set(defaults), "every default is a documented option and the reverse"
    for name, value in defaults.items():
        assert spec[name].get("default") == value, name
    # the lock the role installs is the project's, byte for byte (make lock copies it), and ships in the tarball
    with open(os.path.join(ROOT, "requirements.txt"), "rb") as a, \
            open(os.path.join(ROOT, "roles", "gateway", "files", "requirements.txt"), "rb") as b:
        assert a.read() == b.read(), "roles/gateway/files/requirements.txt differs from requirements.txt: make lock"
    _run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "dist"), ROOT],
         env=env)
    (tarball,) = os.listdir(tmp_path / "dist")
    with tarfile.open(tmp_path / "dist" / tarball) as archive:
        names = set(archive.getnames())
    for needed in ("roles/gateway/meta/argument_specs.yml", "roles/gateway/tasks/main.yml",
                   "roles/gateway/files/requirements.txt", "roles/gateway/templates/frontdoor-gateway.service.j2"):
        assert needed in names, needed
    # secrets are no_log at the option level
    assert spec["gateway_tls_key"]["no_log"] is True
    assert spec["gateway_environment"]["no_log"] is True
    assert spec["gateway_api_tokens"]["options"]["token"]["no_log"] is True
