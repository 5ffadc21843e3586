"""The collection as users get it: built, installed, documented, linted, and its example playbooks run."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
from ansible_helpers import BIN, ROOT, ansible_env
from support.gateway import run_gateway

pytestmark = pytest.mark.ansible

MODULES = ("certificate_request_token", "certificate_request_token_info", "certificate_request_token_cleanup",
           "client_certificate", "client_certificate_info", "enroll")
MAX_TARBALL_BYTES = 300 * 1024


def run(cmd, env, cwd=None, timeout=300):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (cmd[0], proc.returncode, proc.stdout[-5000:],
                                                               proc.stderr[-3000:])
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith(("[WARNING]", "[DEPRECATION WARNING]"))]
    assert not warnings, "%s warned:\n%s" % (cmd[0], "\n".join(warnings))
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball and install it with ansible-galaxy into a fresh collections path."""
    base = tmp_path_factory.mktemp("galaxy")
    env = ansible_env(str(base / "collections"), str(base))
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(base / "dist"), ROOT], env)
    (tarball,) = glob.glob(str(base / "dist" / "frontdoor-pki-*.tar.gz"))
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-p", str(base / "collections"), tarball], env)
    return tarball, str(base / "collections"), str(base)


def test_tarball_is_small_and_holds_only_collection_content(installed):
    tarball, _path, _home = installed
    assert os.path.getsize(tarball) < MAX_TARBALL_BYTES, "tarball is %d bytes" % os.path.getsize(tarball)
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    forbidden = (".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "tests", "build", "dist",
                 "bench", "gateway", ".tmp", "frontdoor_pki.egg-info", "tools", "scripts", ".schemathesis")
    for name in names:
        parts = name.split("/")
        if parts[0] == "roles":
            parts = parts[2:]  # a role may be named gateway
        assert not any(p in forbidden for p in parts), "unexpected file in the tarball: %s" % name
        assert not name.endswith((".pyc", ".tar.gz", ".db", ".log", ".go")), name
    # nothing an Ansible user must not install: no pinned server requirements, no Go sources, no project README
    for absent in ("requirements.txt", "requirements.in", "requirements-test.txt", "pyproject.toml", "Makefile",
                   "README.md", "tools/step-ca/main.go"):
        assert absent not in names, absent
    for module in MODULES:
        assert "plugins/modules/%s.py" % module in names
    for needed in ("MANIFEST.json", "meta/runtime.yml", "plugins/doc_fragments/frontdoor.py",
                   "plugins/action/enroll.py", "plugins/doc_fragments/client_certificate.py",
                   "plugins/module_utils/host_client.py", "docs/collection-README.md",
                   "meta/execution-environment.yml", "meta/ee-requirements.txt",
                   "plugins/module_utils/service.py",
                   "docs/ansible.md", "playbooks/issue-client-certificates.yml", "changelogs/config.yaml"):
        assert needed in names, needed
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile("MANIFEST.json"))
        readme = archive.extractfile(manifest["collection_info"]["readme"]).read().decode()
        ee_requirements = archive.extractfile("meta/ee-requirements.txt").read().decode()
    # the collection's README starts with Ansible usage, not with the gateway
    assert manifest["collection_info"]["readme"] == "docs/collection-README.md"
    blocks = readme.split("```")[1::2]
    assert "ansible-galaxy collection install" in blocks[0]
    assert blocks[1].startswith("yaml") and "frontdoor.pki.enroll:" in blocks[1]
    assert "make demo" not in readme and "frontdoor-gateway serve" not in readme
    requirement_lines = [line.split("#")[0].strip() for line in ee_requirements.splitlines()]
    assert not [line for line in requirement_lines if "==" in line], "pins in the hosts' requirements"


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_each_module(installed, module):
    _tarball, path, home = installed
    proc = run([os.path.join(BIN, "ansible-doc"), "frontdoor.pki.%s" % module], ansible_env(path, home))
    text = proc.stdout
    assert "frontdoor.pki.%s" % module in text
    assert "EXAMPLES" in text and "RETURN VALUES" in text
    assert "gateway_url" in text and "FRONTDOOR_URL" in text  # the shared fragment is merged in


def test_installed_collection_issues_a_certificate(installed, tmp_path):
    """The installed copy (not the checkout) works: a token minted and redeemed on the embedded engine."""
    _tarball, path, home = installed
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/frontdoor.pki.all:
      state_dir: %(dir)s/state
  tasks:
    - frontdoor.pki.certificate_request_token:
        name: installed
        common_name: installed.example.com
      register: minted
    - frontdoor.pki.client_certificate:
        token: "{{ minted.token.token }}"
        privatekey_path: %(dir)s/k.pem
        path: %(dir)s/c.pem
""" % {"dir": tmp_path})
    proc = run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
               ansible_env(path, home))
    assert "changed=2" in proc.stdout and "failed=0" in proc.stdout
    assert (tmp_path / "c.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert os.path.realpath(os.path.join(path, "ansible_collections", "frontdoor", "pki")) != os.path.realpath(ROOT)


def test_ansible_lint_passes_on_the_example_playbooks(collections_dir, tmp_path):
    # linted from a copy: ansible-lint leaves a .ansible/ cache in the directory it runs in
    shutil.copytree(os.path.join(ROOT, "playbooks"), tmp_path / "project" / "playbooks")
    env = ansible_env(collections_dir, str(tmp_path))
    proc = subprocess.run([os.path.join(BIN, "ansible-lint"), "--offline", "--nocolor", "playbooks/"],
                          cwd=tmp_path / "project", env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "0 failure(s), 0 warning(s)" in proc.stdout + proc.stderr


def test_changelog_fragments_are_valid():
    run([os.path.join(BIN, "antsibull-changelog"), "lint"], dict(os.environ), cwd=ROOT)


def test_issue_playbook_on_two_hosts_through_a_gateway(collections_dir, tmp_path):
    """playbooks/issue-client-certificates.yml as written, on two hosts (local connections), against a gateway."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("""
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: %(py)s
  children:
    pki_clients:
      hosts:
        web1:
          frontdoor_pki_dir: %(dir)s/web1
        web2:
          frontdoor_pki_dir: %(dir)s/web2
          frontdoor_organizational_unit: Payments
""" % {"py": sys.executable, "dir": tmp_path})
    with run_gateway(str(tmp_path / "gw")) as gw:
        env = ansible_env(collections_dir, str(tmp_path), {"FRONTDOOR_API_TOKEN": gw.admin_token})
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory),
               os.path.join(ROOT, "playbooks", "issue-client-certificates.yml"),
               "-e", "frontdoor_gateway_url=%s" % gw.url, "-e", "frontdoor_organization=Example Corp"]
        first = run(cmd, env)
        tokens_after_first = gw.request("GET", "/frontdoor/default/certificate-request-tokens").json()
        second = run(cmd, env)
        tokens_after_second = gw.request("GET", "/frontdoor/default/certificate-request-tokens").json()
        log = gw.log()
    for host in ("web1", "web2"):
        assert (tmp_path / host / "client.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert oct(os.stat(tmp_path / host / "client.key").st_mode & 0o777) == "0o600"
        assert "%s serial" % host in first.stdout
    assert tokens_after_first["totalElements"] == 2
    assert sorted(t["status"] for t in tokens_after_first["content"]) == ["redeemed", "redeemed"]
    # the rerun changes nothing and mints nothing
    assert "changed=0" in second.stdout and "changed=1" not in second.stdout and "changed=2" not in second.stdout
    assert tokens_after_second["totalElements"] == 2
    assert "serial" not in second.stdout  # the report of what changed is skipped on every host
    for t in tokens_after_first["content"]:
        assert t["name"] in ("web1", "web2")
    assert "crt_" not in first.stdout + second.stdout
    assert "crt_" not in log.replace("crt_[REDACTED]", "")


def test_cleanup_playbook_through_a_gateway(collections_dir, tmp_path):
    """playbooks/cleanup-tokens.yml as its header says to run it: FRONTDOOR_URL and FRONTDOOR_API_TOKEN only."""
    with run_gateway(str(tmp_path / "gw")) as gw:
        assert gw.create_token(name="stale", commonName="stale", ttl="1s").status_code == 201
        assert gw.create_token(name="waiting", commonName="waiting", ttl="1h").status_code == 201
        time.sleep(1.5)
        env = ansible_env(collections_dir, str(tmp_path), {"FRONTDOOR_URL": gw.url,
                                                           "FRONTDOOR_API_TOKEN": gw.admin_token})
        proc = run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                    "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "frontdoor_cleanup_age=0s",
                    os.path.join(ROOT, "playbooks", "cleanup-tokens.yml")], env)
        left = gw.request("GET", "/frontdoor/default/certificate-request-tokens").json()
    assert "Removed 1 token(s)" in proc.stdout
    assert '"waiting"' in proc.stdout.split("Show them")[-1]  # the token still pending is listed
    assert [t["name"] for t in left["content"]] == ["waiting"]
