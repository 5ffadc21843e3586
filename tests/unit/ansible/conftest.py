"""Run the collection's modules in-process, as AnsiballZ would, against real engines.

The modules import ``ansible_collections.frontdoor.pki...``; a temporary tree with
``ansible_collections/frontdoor/pki`` -> this checkout on sys.path makes that name resolve
to the same files (implicit namespace packages), without installing anything.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import pytest
from ansible.module_utils.testing import patch_module_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="session")
def collection_path(tmp_path_factory):
    base = tmp_path_factory.mktemp("collections")
    os.makedirs(base / "ansible_collections" / "frontdoor")
    os.symlink(ROOT, base / "ansible_collections" / "frontdoor" / "pki")
    sys.path.insert(0, str(base))
    importlib.invalidate_caches()
    yield str(base)
    sys.path.remove(str(base))


@pytest.fixture
def run_module(collection_path, capsys):
    """run_module('client_certificate', {...}, check_mode=False, diff=False) -> the module's JSON result.

    The arguments reach AnsibleModule through ansible-core's public test helper (ansible-core >= 2.19), which
    encodes them with the same serialization profile the controller uses.
    """

    def runner(name: str, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
        module = importlib.import_module("ansible_collections.frontdoor.pki.plugins.modules.%s" % name)
        payload = dict(args)
        payload.update(_ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_remote_tmp="/tmp",
                       _ansible_keep_remote_files=False)
        with patch_module_args(payload), pytest.raises(SystemExit):
            module.main()
        out = capsys.readouterr().out
        return json.loads(out)

    return runner
