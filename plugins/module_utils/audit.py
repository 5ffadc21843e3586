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
from typing import IO, Optional

from .model import isoformat, utcnow
from .tokens import redact


class AuditLog:
    def __init__(self, path: Optional[str] = None, stream: Optional[IO[str]] = None):
        self.path = path
        self.stream = stream
        self._lock = threading.Lock()
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)

    def emit(self, event: str, **fields) -> dict:
        entry = {"time": isoformat(utcnow()), "event": event}
        for key, value in fields.items():
            if value is None:
                continue
            entry[key] = redact(value) if isinstance(value, str) else value
        line = json.dumps(entry, sort_keys=False, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self.path:
                # O_APPEND: lines from several processes interleave whole, never torn.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode("utf-8"))
                finally:
                    os.close(fd)
            if self.stream is not None:
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
        return entry


class NullAudit(AuditLog):
    def __init__(self):
        super().__init__(None, None)


def stderr_audit() -> AuditLog:
    return AuditLog(None, sys.stderr)
