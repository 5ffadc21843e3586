"""Vault's error texts in our messages: bounded by whole errors, never cut in the middle of one."""

from __future__ import annotations

from frontdoor_pki.vault.client import whole_errors


def test_short_errors_are_all_there():
    assert whole_errors(["permission denied", "1 error occurred"]) == "permission denied; 1 error occurred"


def test_a_long_list_drops_whole_errors_and_counts_them():
    errors = ["error number %d: [Errno 111] Connection refused" % i for i in range(20)]
    text = whole_errors(errors)
    assert len(text) < 400
    kept = text.split(" (and ")[0].split("; ")
    assert all(e in errors for e in kept), "an error was cut"
    assert text.endswith("(and %d more)" % (len(errors) - len(kept)))


def test_one_long_error_is_kept_whole():
    long_one = "x" * 500 + " [Errno 111] Connection refused"
    assert whole_errors([long_one]) == long_one
    assert whole_errors([]) == ""
