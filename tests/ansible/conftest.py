"""Real ``ansible-playbook`` runs of the collection's modules.

The collection is symlinked as ``ansible_collections/frontdoor/pki`` into a temporary
directory that ANSIBLE_COLLECTIONS_PATH points at, so the playbooks exercise exactly what
AnsiballZ packs from this checkout. Every task registers its result and a last task dumps
them all as JSON; the tests assert on that, and on the files the modules wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import yaml
from ansible_helpers import BIN, ROOT, ansible_env

PLAYBOOK_TIMEOUT = 300


@pytest.fixture(scope="session")
def collections_dir(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("ansible-collections")
    os.makedirs(base / "ansible_collections" / "frontdoor")
    os.symlink(ROOT, base / "ansible_collections" / "frontdoor" / "pki")
    return str(base)


class Runner:
    """Runs a list of (register_name, task) on localhost and returns every registered result."""

    def __init__(self, collections_dir: str, workdir: str):
        self.collections_dir = collections_dir
        self.workdir = workdir
        self.count = 0

    def run(
        self,
        tasks: Sequence[Tuple[str, Dict[str, Any]]],
        module_defaults: Optional[Dict[str, Any]] = None,
        play_vars: Optional[Dict[str, Any]] = None,
        extra_args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        diff: bool = False,
    ) -> Tuple[Dict[str, Any], subprocess.CompletedProcess]:
        self.count += 1
        results_path = os.path.join(self.workdir, "results-%d.json" % self.count)
        play_tasks: List[Dict[str, Any]] = []
        names = []
        for name, task in tasks:
            task = dict(task)
            if "ansible.builtin.pause" not in task and "ansible.builtin.set_fact" not in task:
                task.setdefault("register", name)
                task.setdefault("ignore_errors", True)
                names.append(name)
            task.setdefault("name", name)
            play_tasks.append(task)
        dump = "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (n, n) for n in names)
        play_tasks.append({"name": "dump results", "ansible.builtin.copy": {"content": dump, "dest": results_path},
                           "check_mode": False, "diff": False})
        play: Dict[str, Any] = {"name": "frontdoor.pki test", "hosts": "localhost", "gather_facts": False,
                                "tasks": play_tasks}
        if module_defaults:
            play["module_defaults"] = {"group/frontdoor.pki.all": module_defaults}
        if play_vars:
            play["vars"] = play_vars
        path = os.path.join(self.workdir, "play-%d.yml" % self.count)
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump([play], handle, sort_keys=False)
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path]
        if diff:
            cmd.append("--diff")
        cmd += list(extra_args)
        proc = subprocess.run(cmd, cwd=self.workdir, env=ansible_env(self.collections_dir, self.workdir, env),
                              capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False)
        if proc.returncode != 0 or not os.path.exists(results_path):
            raise AssertionError("ansible-playbook failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout[-6000:],
                                                                           proc.stderr[-3000:]))
        warnings = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if line.startswith(("[WARNING]", "[DEPRECATION WARNING]"))]
        assert not warnings, "ansible-playbook warned:\n%s" % "\n".join(warnings)
        with open(results_path, encoding="utf-8") as handle:
            return json.load(handle), proc


@pytest.fixture
def play(collections_dir, tmp_path) -> Runner:
    return Runner(collections_dir, str(tmp_path))
