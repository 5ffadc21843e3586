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

When a line cannot be written (disk full, file or directory gone, permissions), ``emit`` raises.
What the service does then depends on the action (docs/operations.md, "Audit log"):

- an action that grants something (create a token, redeem, hand out a certificate again) does not
  happen without its line: ``emit_required`` turns the failure into ``AuditUnavailable`` (503
  ``audit_unavailable``) and the service writes the line *before* the step that cannot be taken back,
  or undoes what it wrote (a created token is deleted: its secret was never shown);
- an action that takes something away or only refuses (revoke, delete, clean up, a refused
  redemption, a discarded certificate) goes ahead: refusing a revocation because a log disk is full
  would keep a credential alive. ``emit_or_report`` sends the line that could not be written to the
  ``frontdoor.audit`` logger at ERROR (the gateway's stderr / journal) instead.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from typing import IO, List, Optional

from .errors import AuditUnavailable
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
        self._drop_stream()
        raise failure

    def _drop_stream(self) -> None:
        """Forget the stream and the bytes of the line that failed, which it still buffers: that line's
        action was refused, so it must never reach the file later (a disk that has room again would take
        it at the next flush), and a stream stuck on a write error would fail every later line too. The
        file descriptor is closed first, so closing the wrapper cannot write the buffered bytes anywhere.
        The next line opens the file again by name."""
        stream, self.stream = self.stream, None
        # Forget which file that was, too: the next line opens the path without WatchedFileHandler recording the new
        # file's identity, so a kept identity could match whatever the path names later (the same full-disk device
        # or a reused inode) and the handler would keep writing to a file renamed away. -1 (as with delay=True)
        # makes the line after that one reopen by name and record it.
        self.dev, self.ino = -1, -1
        if stream is None:
            return
        try:
            stream.buffer.raw.close()
        except Exception:  # noqa: BLE001, S110 - already closed or not a file: nothing left to write to
            pass
        try:
            stream.close()
        except Exception:  # noqa: BLE001, S110 - the flush of the dropped bytes fails by design
            pass


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


_fallback = logging.getLogger("frontdoor.audit")


def emit_required(audit: AuditLog, event: str, **fields) -> dict:
    """The line an action depends on: written, or ``AuditUnavailable`` (and the caller must not go on)."""
    try:
        return audit.emit(event, **fields)
    except Exception as exc:  # noqa: BLE001 - whatever the handler raised, the line is not on disk
        _fallback.error("audit line %s could not be written (%s: %s); the action was refused",
                        event, type(exc).__name__, exc)
        raise AuditUnavailable(
            "The audit log cannot be written right now (%s); the action was not completed (no secret or "
            "certificate was handed out): retry once it is writable."
            % type(exc).__name__,
            retry_after=30,
        ) from None


def emit_or_report(audit: AuditLog, event: str, **fields) -> Optional[dict]:
    """The line of an action that goes ahead anyway: written, or logged at ERROR with the full entry."""
    try:
        return audit.emit(event, **fields)
    except Exception as exc:  # noqa: BLE001
        entry = {"event": event}
        entry.update((k, redact(v) if isinstance(v, str) else v) for k, v in fields.items() if v is not None)
        _fallback.error("audit line not written (%s: %s): %s", type(exc).__name__, exc,
                        json.dumps(entry, separators=(",", ":"), default=str))
        return None


def stderr_audit() -> AuditLog:
    return AuditLog(None, sys.stderr)
