"""A real audit-log write failure: the audit path becomes a symlink to /dev/full.

Every write then gets ENOSPC from the kernel, exactly as on a full disk; the audit handler notices the new
inode at its next line (it watches the path for rotation). When the block ends the symlink goes, which is the
disk having room again: the next line makes a new file.
"""

from __future__ import annotations

import contextlib
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
