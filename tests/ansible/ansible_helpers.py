"""Shared by the playbook tests: paths, a clean Ansible environment, assertions on task results."""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def ansible_env(collections_dir: str, home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A clean environment: no FRONTDOOR_/VAULT_/BAO_ variables leak in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FRONTDOOR_", "VAULT_", "BAO_", "ANSIBLE_"))}
    env.update(
        PATH=BIN + os.pathsep + env.get("PATH", ""),
        HOME=home,
        ANSIBLE_COLLECTIONS_PATH=collections_dir,
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_LOCAL_TEMP=os.path.join(home, "ansible-local"),
        ANSIBLE_REMOTE_TEMP=os.path.join(home, "ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_LOCALHOST_WARNING="false",
    )
    env.update(extra or {})
    return env


def ok(result: Dict[str, Any]) -> Dict[str, Any]:
    """The result, after checking the task did not fail (with its message if it did)."""
    assert not result.get("failed"), "task failed: %s (error_code=%s)" % (result.get("msg"), result.get("error_code"))
    return result


def failed_with(result: Dict[str, Any], code: str) -> str:
    assert result.get("failed") is True, "expected a failure with %s, got %r" % (code, result)
    assert result.get("error_code") == code, "expected %s, got %s: %s" % (code, result.get("error_code"),
                                                                          result.get("msg"))
    # A crash has no error_code; a handled failure must not quote a traceback in its message. (Since ansible-core
    # 2.19 the controller itself fills ``exception`` of every failed result, with a traceback only when
    # DISPLAY_TRACEBACK asks for one, so that field says nothing about the module.)
    assert "Traceback" not in result.get("msg", "")
    return result["msg"]
