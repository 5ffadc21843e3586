# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit trail: one JSON object per line, per event.

Callers pass named fields only; a secret has no field to go in, and every string
is passed through ``redact`` anyway in case a message quotes one.

The file is written by the standard library's ``WatchedFileHandler``: it notices when logrotate
renames the file and opens a new one by name before the next line, so no line is lost and
``copytruncate`` is not needed. Lines are appended (O_APPEND) and flushed one by one, so lines
of several processes interleave whole.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from typing import IO, List, Optional

from .model import isoformat, utcnow
from .tokens import redact


class _JsonLines(logging.Formatter):
    """The record's message is the event dict; the line is its JSON."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record.msg, separators=(",", ":"), default=str)


class _AuditFile(logging.handlers.WatchedFileHandler):
    """The audit file: private to its owner, and failing closed."""

    def reopenIfNeeded(self) -> None:
        # Created here, before the handler would create it with the process umask: 0600, like the state.
        if not os.path.exists(self.baseFilename):
            os.close(os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        super().reopenIfNeeded()

    def handleError(self, record: logging.LogRecord) -> None:
        # A line that cannot be written fails the action it records (logging's default only prints).
        # logging calls this from inside emit()'s except block: re-raise what failed there.
        failure = sys.exc_info()[1]
        if failure is None:
            return super().handleError(record)
        raise failure


class AuditLog:
    def __init__(self, path: Optional[str] = None, stream: Optional[IO[str]] = None):
        self.path = path
        self.stream = stream
        self._handlers: List[logging.Handler] = []
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._handlers.append(_AuditFile(path, encoding="utf-8", delay=True))
        if stream is not None:
            self._handlers.append(logging.StreamHandler(stream))
        for handler in self._handlers:
            handler.setFormatter(_JsonLines())

    def emit(self, event: str, **fields) -> dict:
        entry = {"time": isoformat(utcnow()), "event": event}
        for key, value in fields.items():
            if value is None:
                continue
            entry[key] = redact(value) if isinstance(value, str) else value
        record = logging.makeLogRecord({"msg": entry, "name": "frontdoor.audit", "levelno": logging.INFO})
        for handler in self._handlers:
            handler.handle(record)
        return entry

    def close(self) -> None:
        for handler in self._handlers:
            handler.close()


class NullAudit(AuditLog):
    def __init__(self):
        super().__init__(None, None)


def stderr_audit() -> AuditLog:
    return AuditLog(None, sys.stderr)
