"""The audit file stays open between lines, but never for longer than REOPEN_AFTER seconds."""

from __future__ import annotations

import json
import os

from frontdoor_pki import audit as auditmod


def lines(path) -> list:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_lines_append_to_the_same_file(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    for n in range(5):
        log.emit("test.event", n=n)
    assert [e["n"] for e in lines(path)] == [0, 1, 2, 3, 4]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    log.close()


def test_a_rotated_file_is_left_after_reopen_after(tmp_path, monkeypatch):
    path = str(tmp_path / "audit.jsonl")
    clock = [1000.0]
    monkeypatch.setattr(auditmod.time, "monotonic", lambda: clock[0])
    log = auditmod.AuditLog(path)
    log.emit("before.rotation")
    os.rename(path, path + ".1")  # what logrotate does
    log.emit("within.the.second")  # still the open (rotated) file: kept, not lost
    clock[0] += auditmod.REOPEN_AFTER
    log.emit("after.rotation")
    assert [e["event"] for e in lines(path + ".1")] == ["before.rotation", "within.the.second"]
    assert [e["event"] for e in lines(path)] == ["after.rotation"]
    log.close()


def test_a_failing_open_raises(tmp_path, monkeypatch):
    """The trail fails closed: if the file cannot be opened again, emit raises."""
    clock = [1000.0]
    monkeypatch.setattr(auditmod.time, "monotonic", lambda: clock[0])
    directory = tmp_path / "gone"
    directory.mkdir()
    log = auditmod.AuditLog(str(directory / "audit.jsonl"))
    log.emit("first")
    os.remove(directory / "audit.jsonl")
    directory.rmdir()
    clock[0] += auditmod.REOPEN_AFTER
    try:
        log.emit("second")
    except OSError:
        pass
    else:
        raise AssertionError("emit wrote nowhere without an error")


def test_close_releases_the_file_and_emit_reopens(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    log.emit("one")
    fd = log._file[0]
    log.close()
    try:
        os.fstat(fd)
    except OSError:
        pass
    else:
        raise AssertionError("the descriptor is still open after close()")
    log.emit("two")
    assert [e["event"] for e in lines(path)] == ["one", "two"]
    log.close()
