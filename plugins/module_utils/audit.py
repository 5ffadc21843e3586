# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit trail: one JSON object per line, per event.

Callers pass named fields only; a secret has no field to go in, and every string
is passed through ``redact`` anyway in case a message quotes one.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Optional

from .model import isoformat, utcnow
from .process import PID  # the pid without a system call per line (refreshed after fork)
from .tokens import redact

#: seconds an open audit file is written before it is opened again by name (see AuditLog._fd)
REOPEN_AFTER = 1.0


# json.dumps with keyword arguments builds a new encoder per call; this is the same one, made once.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class AuditLog:
    def __init__(self, path: Optional[str] = None, stream: Optional[IO[str]] = None):
        self.path = path
        self.stream = stream
        self._lock = threading.Lock()
        self._file = None  # (fd, pid, opened at): see _fd
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)

    def emit(self, event: str, **fields) -> dict:
        entry = {"time": isoformat(utcnow()), "event": event}
        for key, value in fields.items():
            if value is None:
                continue
            entry[key] = redact(value) if isinstance(value, str) else value
        line = _encode(entry) + "\n"
        with self._lock:
            if self.path:
                # O_APPEND: lines from several processes interleave whole, never torn.
                os.write(self._fd(), line.encode("utf-8"))
            if self.stream is not None:
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
        return entry

    def _fd(self) -> int:
        """The audit file, opened by name again once it has been open REOPEN_AFTER seconds.

        Why not open and close per line: that was two of the system calls of every redemption.
        Why not keep it open for good: a rotated (renamed) file must be left within a second;
        lines of that second land in the rotated file, none is lost. A failing open raises
        here, before the event is reported as done (the trail fails closed, as before).
        """
        now = time.monotonic()
        current = self._file
        if current is not None:
            fd, pid, opened = current
            if pid == PID[0] and now - opened < REOPEN_AFTER:
                return fd
            self._file = None
            if pid == PID[0]:
                os.close(fd)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._file = (fd, PID[0], now)
        return fd

    def close(self) -> None:
        with self._lock:
            current, self._file = self._file, None
            if current is not None and current[1] == PID[0]:
                os.close(current[0])


class NullAudit(AuditLog):
    def __init__(self):
        super().__init__(None, None)


def stderr_audit() -> AuditLog:
    return AuditLog(None, sys.stderr)
