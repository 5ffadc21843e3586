"""The audit file: JSON lines, 0600, follows a rename rotation without losing a line, fails closed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import pytest
from frontdoor_pki import audit as auditmod


def lines(path) -> list:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_lines_append_to_the_same_file(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    for n in range(5):
        log.emit("test.event", n=n, skipped=None)
    entries = lines(path)
    assert [e["n"] for e in entries] == [0, 1, 2, 3, 4]
    assert all(set(e) == {"time", "event", "n"} for e in entries)  # None fields are left out
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    log.close()


def test_secrets_quoted_in_a_field_are_redacted(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    secret = "crt_" + "A" * 32
    log.emit("test.event", message="bad token %s" % secret)
    log.close()
    assert secret[4:] not in open(path).read()


def test_a_renamed_file_is_left_at_the_next_line_and_no_line_is_lost(tmp_path):
    """What logrotate does by default: rename the file (optionally create a new one)."""
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    log.emit("before.rotation")
    os.rename(path, path + ".1")
    log.emit("after.rotation")
    os.rename(path, path + ".2")
    with open(path, "w"):  # logrotate's ``create``: the new file is already there
        pass
    log.emit("after.second.rotation")
    assert [e["event"] for e in lines(path + ".1")] == ["before.rotation"]
    assert [e["event"] for e in lines(path + ".2")] == ["after.rotation"]
    assert [e["event"] for e in lines(path)] == ["after.second.rotation"]
    assert oct(os.stat(path + ".2").st_mode & 0o777) == "0o600"  # made again by the log: private
    log.close()


def test_rotation_under_concurrent_writers_loses_nothing(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    per_thread, threads = 300, 4

    def write(t):
        for n in range(per_thread):
            log.emit("load", thread=t, n=n)

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for rotation in range(5):
        if os.path.exists(path):
            os.rename(path, "%s.%d" % (path, rotation))
    for worker in workers:
        worker.join(30)
    log.close()
    seen = []
    for name in os.listdir(tmp_path):
        seen.extend((e["thread"], e["n"]) for e in lines(tmp_path / name))
    assert sorted(seen) == [(t, n) for t in range(threads) for n in range(per_thread)]


CHILD = r"""
import sys
from frontdoor_pki.audit import AuditLog
log = AuditLog(sys.argv[1])
for n in range(500):
    log.emit("child", pid=sys.argv[2], n=n, pad="x" * 300)
"""


def test_lines_of_several_processes_interleave_whole(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    children = [subprocess.Popen([sys.executable, "-c", CHILD, path, str(p)]) for p in range(3)]
    for child in children:
        assert child.wait(60) == 0
    entries = lines(path)  # every line parses
    assert sorted((e["pid"], e["n"]) for e in entries) == [(str(p), n) for p in range(3) for n in range(500)]


def test_a_failing_open_raises(tmp_path):
    """The trail fails closed: if the file cannot be opened again, emit raises."""
    directory = tmp_path / "gone"
    directory.mkdir()
    log = auditmod.AuditLog(str(directory / "audit.jsonl"))
    log.emit("first")
    os.remove(directory / "audit.jsonl")
    directory.rmdir()
    with pytest.raises(OSError):
        log.emit("second")
    log.close()


def test_a_failing_write_raises(tmp_path):
    log = auditmod.AuditLog(str(tmp_path / "audit.jsonl"))
    log.emit("first")
    handler = log._handlers[0]
    handler.stream.close()  # a write error from now on (ValueError: I/O on a closed file)
    with pytest.raises(ValueError):
        log.emit("second")


def test_close_releases_the_file_and_emit_reopens(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    log = auditmod.AuditLog(path)
    log.emit("one")
    fd = log._handlers[0].stream.fileno()
    log.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    log.emit("two")
    assert [e["event"] for e in lines(path)] == ["one", "two"]
    log.close()


def test_stream_copy_and_null_audit(tmp_path):
    stream = io.StringIO()
    log = auditmod.AuditLog(None, stream)
    entry = log.emit("to.stream", tokenId="token-1")
    assert json.loads(stream.getvalue()) == entry
    assert auditmod.NullAudit().emit("nowhere")["event"] == "nowhere"
