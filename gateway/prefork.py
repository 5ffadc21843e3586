"""``serve --workers N``: N processes accepting on one socket, without a supervisor process.

Why not uvicorn's own ``workers``: it keeps a supervisor process and multiprocessing's
resource tracker next to the workers, and spawns workers that import everything again. On
the 2-core machines this gateway targets, ``--workers 2`` then meant four Python processes
and ~195 MB of resident memory (VmHWM summed) for two that do the work. Here the serving
process itself is worker 0 and forks the others after the socket is bound and before any
application state exists (each worker builds its own service, SQLite connection and
thread pool after the fork, exactly as a uvicorn worker does): two processes, ~130 MB.

Single use holds across the workers for the same reason it holds across two gateways on
one state dir: the store serialises the claim (SQLite transaction / Vault check-and-set).

What this gives up: uvicorn's supervisor restarts a worker that dies; here the others keep
serving and the death is logged. Stopping the main process (SIGTERM/SIGINT) stops all;
if it is killed outright, the kernel tells the others (PR_SET_PDEATHSIG) and they stop too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading
import time
from typing import List

import uvicorn

log = logging.getLogger("uvicorn.error")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the orphan check below still applies
        pass


def _watch_parent(parent: int) -> None:
    """Backstop where PR_SET_PDEATHSIG is unavailable: stop when the parent is gone."""
    def run():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=run, name="frontdoor-parent-watch", daemon=True).start()


def serve(config: uvicorn.Config, workers: int) -> None:
    """Bind once, fork ``workers - 1`` children, serve in every process; return when stopped."""
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # accepted connections inherit it (uvicorn's protocol class sets it too, per connection)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parent = os.getpid()
    children: List[int] = []
    for _ in range(max(0, workers - 1)):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(0)
                _watch_parent(parent)
                uvicorn.Server(config).run(sockets=[sock])
            except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:  # threads only after the last fork
        _reap_in_background(pid)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        _stop(children)
        sock.close()


def _reap_in_background(pid: int) -> None:
    """Log (and reap) a worker that exits while the others keep serving."""
    def run():
        try:
            _pid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        log.warning("worker %d exited (status %d); the other workers keep serving", pid, status)

    threading.Thread(target=run, name="frontdoor-reap-%d" % pid, daemon=True).start()


def _stop(children: List[int], timeout: float = 15.0) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.remove(pid)
        time.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
