"""A real audit-log write failure: the audit path becomes a symlink to /dev/full.

Every write then gets ENOSPC from the kernel, exactly as on a full disk; the audit handler notices the new
inode at its next line (it watches the path for rotation). When the block ends the symlink goes, which is the
disk having room again: the next line makes a new file.
"""

from __future__ import annotations

import contextlib
import json
import os


@contextlib.contextmanager
def disk_full(path: str):
    """Writes to the audit file ``path`` fail with ENOSPC until the block ends. The file written so far is kept
    as ``path + ".before"``."""
    if os.path.exists(path):
        os.rename(path, path + ".before")
    os.symlink("/dev/full", path)
    try:
        yield
    finally:
        os.remove(path)


def lines(path: str) -> list:
    """Every audit line written, across the full-disk episode: the file moved aside to ``.before`` while the path
    was a symlink to /dev/full, then the file made again."""
    found = []
    for name in (path + ".before", path):
        if os.path.exists(name) and not os.path.islink(name):
            with open(name, encoding="utf-8") as handle:
                found.extend(json.loads(line) for line in handle)
    return found
