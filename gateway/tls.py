"""HTTPS for `frontdoor-gateway serve`, through uvicorn's own TLS support.

uvicorn builds the server's ``ssl.SSLContext`` from ``ssl_certfile`` / ``ssl_keyfile`` in every
worker. It has no option for a minimum protocol version (``ssl_version`` picks the protocol
*method*, and the only non-deprecated one, ``PROTOCOL_TLS_SERVER``, negotiates every version the
OpenSSL build allows), so the minimum is set through its public ``ssl_context_factory`` hook:
uvicorn's default context, then ``minimum_version``. The factory is a module-level function
(wrapped in ``functools.partial``) so that it pickles into uvicorn's spawned workers.

uvicorn calls the factory each time a worker starts: at start, when its supervisor replaces a worker
that died, and on SIGHUP (``--workers`` 2 or more), when it replaces every worker, the new one in
service before the old one goes. So a SIGHUP makes the gateway read renewed ``--tls-cert`` files
without dropping its socket, and with ``--tls-self`` the factory first asks the local CA for the
certificate again, which renews it when it nears its end (the CA's file lock keeps workers from
issuing two).
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from typing import Callable, Optional, Sequence

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _context(
    minimum: str, self_state_dir: Optional[str], self_names: Optional[Sequence[str]], _config,
    default: Callable[[], ssl.SSLContext],
) -> ssl.SSLContext:
    if self_state_dir is not None and self_names:
        from frontdoor_pki.signers.local_tls import ensure_server_certificate

        ensure_server_certificate(self_state_dir, self_names)  # same files: reused, or renewed in place
    context = default()
    context.minimum_version = MIN_VERSIONS[minimum]
    return context


def context_factory(minimum: str = "1.2", self_state_dir: Optional[str] = None,
                    self_names: Optional[Sequence[str]] = None):
    """uvicorn ``ssl_context_factory``: its own context with TLS ``minimum`` (1.2 or 1.3) as the floor;
    with ``self_state_dir``/``self_names`` (``--tls-self``) the certificate is renewed first when due."""
    if minimum not in MIN_VERSIONS:
        raise ValueError("TLS minimum version must be one of %s" % ", ".join(MIN_VERSIONS))
    return functools.partial(_context, minimum, self_state_dir, tuple(self_names) if self_names else None)


def check_files(cert_path: str, key_path: str) -> None:
    """Load the pair once before any worker starts, so a wrong path or a key that does not match the
    certificate is one clear error instead of workers dying in a loop. Raises ValueError."""
    for path in (cert_path, key_path):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise ValueError("%s: no such file" % path) from None
        except OSError as exc:
            raise ValueError("%s: cannot be read by this user (%s)" % (path, exc.strerror)) from None
    def encrypted() -> str:
        # called by OpenSSL only for an encrypted key; without it OpenSSL would prompt on the terminal
        raise ValueError("%s: the key is encrypted; give the gateway an unencrypted key that only its user can "
                         "read (e.g. openssl pkey -in %s -out key.pem)" % (key_path, key_path))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path, password=encrypted)
    except ssl.SSLError as exc:
        raise ValueError(
            "%s / %s: not a PEM certificate and its matching private key (%s)" % (cert_path, key_path, exc.reason)
        ) from None


def is_loopback(host: str) -> bool:
    """True when ``host`` (a --host value) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
