"""``serve --workers N``: N processes on one port, without a supervisor process.

Why not uvicorn's own ``workers``: it keeps a supervisor process and multiprocessing's
resource tracker next to the workers, and spawns workers that import everything again. On
the 2-core machines this gateway targets, ``--workers 2`` then meant four Python processes
and ~195 MB of resident memory (VmHWM summed) for two that do the work. Here the serving
process itself is worker 0 and forks the others after the listening sockets are bound (one
per worker, SO_REUSEPORT, see ``bind_listeners``) and before any application state exists
(each worker builds its own service, SQLite connection and thread pool after the fork,
exactly as a uvicorn worker does): two processes, ~120 MB.

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


def _listener(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # accepted connections inherit it (the protocol class also sets it per connection)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_listeners(config: uvicorn.Config, workers: int) -> List[socket.socket]:
    """One listening socket per worker on the same port (SO_REUSEPORT), or one shared socket.

    Why one per worker: with a single shared socket, the worker that wakes first accepts every
    pending connection (asyncio accepts in a loop), so 8 keep-alive clients often all landed on
    one worker while the other idled: half the throughput in those runs. With SO_REUSEPORT the
    kernel spreads new connections over the workers' sockets. A plain bind is tried first so
    that a port already in use (even by another SO_REUSEPORT group) is still an error.
    """
    host, port = config.host, config.port
    if config.uds or config.fd is not None or workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [config.bind_socket()]
    try:
        probe = _listener(host, port, reuse_port=False)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        raise SystemExit(3) from None
    port = probe.getsockname()[1]
    probe.close()
    sockets: List[socket.socket] = []
    try:
        for _ in range(workers):
            sockets.append(_listener(host, port, reuse_port=True))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        raise SystemExit(3) from None
    log.info("Uvicorn running on http://%s:%d (%d workers, one listening socket each)", host, port, workers)
    return sockets


def serve(config: uvicorn.Config, workers: int) -> None:
    """Bind, fork ``workers - 1`` children, serve in every process; return when stopped."""
    sockets = bind_listeners(config, workers)
    parent = os.getpid()
    children: List[int] = []
    for index in range(1, max(1, workers)):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(0)
                mine = _keep_only(sockets, index)
                _watch_parent(parent)
                uvicorn.Server(config).run(sockets=mine)
            except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    mine = _keep_only(sockets, 0)
    for pid in children:  # threads only after the last fork
        _reap_in_background(pid)
    try:
        uvicorn.Server(config).run(sockets=mine)
    finally:
        _stop(children)
        for sock in mine:
            sock.close()


def _keep_only(sockets: List[socket.socket], index: int) -> List[socket.socket]:
    """This process's listener; the others are closed here so that a dead worker's socket
    really closes and the kernel stops sending connections to it. A single shared socket is
    kept by everyone."""
    if len(sockets) == 1:
        return sockets
    for i, sock in enumerate(sockets):
        if i != index:
            sock.close()
    return [sockets[index]]


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
