"""Assertions on registered task results (shared by the playbook tests)."""

from __future__ import annotations

from typing import Any, Dict


def ok(result: Dict[str, Any]) -> Dict[str, Any]:
    """The result, after checking the task did not fail (with its message if it did)."""
    assert not result.get("failed"), "task failed: %s (error_code=%s)" % (result.get("msg"), result.get("error_code"))
    return result


def failed_with(result: Dict[str, Any], code: str) -> str:
    assert result.get("failed") is True, "expected a failure with %s, got %r" % (code, result)
    assert result.get("error_code") == code, "expected %s, got %s: %s" % (code, result.get("error_code"),
                                                                          result.get("msg"))
    assert "Traceback" not in result.get("msg", "") and not result.get("exception")
    return result["msg"]
