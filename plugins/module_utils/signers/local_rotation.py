# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotating a frontdoor's intermediate on the local CA (``frontdoor-gateway rotate-intermediate``).

Why a rule of its own: an intermediate's key may be suspected, or its end (5 years, capped by the root's)
draws near; certificates are bounded by it (``not_after_limit``). Rotation makes a new key and a new
intermediate certificate under the same root, with a new unique DN (a fresh random serialNumber attribute,
as :func:`ensure_local_ca` gives every intermediate), so no verifier can mistake one issuer for the other.

What stays true:

* certificates already issued keep verifying: every certificate record stores the chain it was issued with
  (the ``caChain`` of ``GET .../client-certificates/{id}``), and the root does not change;
* the retired certificate and key are kept in ``ca/<frontdoor>/retired/`` (key 0600) rather than deleted, so a
  backup restored later, or an operator, can still produce what the old issuer would have;
* new certificates, ``GET /frontdoor/{id}/ca`` and the CRL use the new intermediate once a gateway (each worker)
  has started again: a running signer keeps the key it loaded.

Crash safety: the retired copies are written first, then the new key, then the new certificate, each file
atomically. A crash between the last two leaves a key that does not match the certificate; the local signer
refuses to start on such a pair (``signer_unavailable``) rather than sign with it, and running the rotation
again finishes the job.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import Optional

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - see local.py
    x509 = serialization = ec = NameOID = None

from ..files import write_atomically
from ..model import utcnow
from .local import (
    FRONTDOOR_ID_RE,
    INTERMEDIATE_LIFETIME,
    _ca_cert,
    _key_pem,
    _locked,
    ensure_local_ca,
)

RETIRED_DIR = "retired"


@dataclasses.dataclass(frozen=True)
class Rotation:
    frontdoor_id: str
    retired_serial: Optional[str]  # hex serial of the intermediate taken out of service
    retired_path: Optional[str]  # where its certificate was kept
    serial: str  # hex serial of the new intermediate
    subject: str  # RFC 4514 DN of the new intermediate
    not_after: str  # ISO 8601, UTC
    path: str  # the new intermediate certificate


def _owned_like(reference: str, paths) -> None:
    """Run as root on a state dir that belongs to the service user, the new files must stay readable by that
    user (a root-owned 0600 key would stop the gateway): give them the owner of ``reference``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return  # files written by the owner of the state dir already belong to it
    owner = os.stat(reference)
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid)


def rotate_intermediate(state_dir: str, frontdoor_id: str, organization: str = "frontdoor.pki") -> Rotation:
    """Replace ``frontdoor_id``'s intermediate with a new key and certificate under the same root.

    Holds the CA's file lock, so it cannot interleave with another rotation or with a first start that creates
    the CA. A frontdoor without an intermediate yet simply gets its first one.
    """
    if not FRONTDOOR_ID_RE.match(frontdoor_id):
        raise ValueError("frontdoor id %r: use letters, digits, '.', '_' or '-' (at most 64)" % frontdoor_id)
    ca_dir = os.path.join(state_dir, "ca")
    had_intermediate = os.path.exists(os.path.join(ca_dir, frontdoor_id, "intermediate.pem"))
    root_path, int_path, int_key_path = ensure_local_ca(state_dir, frontdoor_id, organization)
    if not had_intermediate:  # ensure_local_ca just made the first one: that is the result
        with open(int_path, "rb") as handle:
            first = x509.load_pem_x509_certificate(handle.read())
        return Rotation(frontdoor_id, None, None, "%x" % first.serial_number, first.subject.rfc4514_string(),
                        first.not_valid_after_utc.isoformat(), int_path)
    with _locked(os.path.join(ca_dir, ".lock")):
        with open(root_path, "rb") as handle:
            root = x509.load_pem_x509_certificate(handle.read())
        with open(os.path.join(ca_dir, "root.key"), "rb") as handle:
            root_key = serialization.load_pem_private_key(handle.read(), None)
        with open(int_path, "rb") as handle:
            old_pem = handle.read()
        with open(int_key_path, "rb") as handle:
            old_key_pem = handle.read()
        old = x509.load_pem_x509_certificate(old_pem)
        retired_serial = "%x" % old.serial_number
        retired_dir = os.path.join(ca_dir, frontdoor_id, RETIRED_DIR)
        os.makedirs(retired_dir, mode=0o700, exist_ok=True)
        retired_path = os.path.join(retired_dir, "intermediate-%s.pem" % retired_serial)
        write_atomically(retired_path, old_pem, 0o644)
        write_atomically(os.path.join(retired_dir, "intermediate-%s.key" % retired_serial), old_key_pem, 0o600)
        # the same organization and common name; a new serialNumber attribute makes the DN unique again
        attributes = [a for a in old.subject if a.oid != NameOID.SERIAL_NUMBER]
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)))
        key = ec.generate_private_key(ec.SECP256R1())
        now = utcnow()
        not_after = min(now + INTERMEDIATE_LIFETIME, root.not_valid_after_utc)
        cert = _ca_cert(x509.Name(attributes), root.subject, key.public_key(), root_key, not_after, 0,
                        issuer_cert=root)
        write_atomically(int_key_path, _key_pem(key), 0o600)
        write_atomically(int_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _owned_like(os.path.join(ca_dir, frontdoor_id), [retired_dir, retired_path, int_key_path, int_path,
                                                         os.path.join(retired_dir, "intermediate-%s.key" % retired_serial)])
    return Rotation(frontdoor_id, retired_serial, retired_path, "%x" % cert.serial_number,
                    cert.subject.rfc4514_string(), cert.not_valid_after_utc.isoformat(), int_path)
