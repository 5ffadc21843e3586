# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""This process's id, kept rather than asked for.

``os.getpid()`` is a system call (glibc keeps no cache), and the store and the audit log check
the pid on every redemption to notice a fork (connections, lock files and the audit fd belong to
the process that opened them). ``PID[0]`` is refreshed in a forked child by an at-fork hook.
"""

from __future__ import annotations

import os

PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: PID.__setitem__(0, os.getpid()))
