# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain records passed between the service, the stores and the signers.

Stores persist these and nothing else; they never see a token secret, only its hash.
Times are aware UTC datetimes throughout.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import List, Optional

UTC = _dt.timezone.utc

# Stored states. "expired" is never stored: it is derived from expires_at at read time,
# so expiry can never be missed by a sweeper that did not run.
STATE_ACTIVE = "active"
STATE_REDEEMED = "redeemed"
STATUSES = ("active", "expired", "redeemed")


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(UTC)


def isoformat(value: Optional[_dt.datetime]) -> Optional[str]:
    """RFC 3339 in UTC with a Z, second precision unless sub-second matters."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat() is C code, ~5x cheaper than strftime; "milliseconds" truncates like [:-3] did
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds" if value.microsecond else "seconds") + "Z"


@dataclasses.dataclass
class Subject:
    common_name: Optional[str] = None
    organization: Optional[str] = None
    organizational_unit: Optional[str] = None

    def as_tuple(self):
        return (self.common_name, self.organization, self.organizational_unit)


@dataclasses.dataclass
class TokenRecord:
    id: str
    frontdoor_id: str
    name: str
    secret_hash: str
    subject: Subject
    created_at: _dt.datetime
    created_by: str
    expires_at: _dt.datetime
    updated_at: _dt.datetime
    state: str = STATE_ACTIVE
    certificate_ttl: Optional[int] = None  # seconds; None: the frontdoor's default
    redeemed_at: Optional[_dt.datetime] = None
    certificate_id: Optional[str] = None
    public_key_sha256: Optional[str] = None  # of the key that redeemed it, for idempotent retry
    claim_id: Optional[str] = None
    claim_until: Optional[_dt.datetime] = None
    version: int = 1  # bumped by every write; stores use it for check-and-set

    def status(self, now: Optional[_dt.datetime] = None) -> str:
        if self.state == STATE_REDEEMED:
            return "redeemed"
        now = now or utcnow()
        return "expired" if self.expires_at <= now else "active"

    def claimed(self, now: _dt.datetime) -> bool:
        return self.claim_id is not None and self.claim_until is not None and self.claim_until > now


@dataclasses.dataclass
class CertificateRecord:
    id: str
    frontdoor_id: str
    token_id: str
    name: str
    serial_number: str  # lower-case hex, no separators
    certificate_pem: str
    ca_chain: List[str]  # PEMs from the issuer up to the root
    subject: Subject
    not_before: _dt.datetime
    not_after: _dt.datetime
    created_at: _dt.datetime
    public_key_sha256: str
    revoked_at: Optional[_dt.datetime] = None


@dataclasses.dataclass
class SignRequest:
    """What the rules decided: the signer must produce exactly this and nothing more."""

    frontdoor_id: str
    #: the CSR as PEM for signers that send it on (Vault, step-ca); ``None``: made from ``csr`` by
    #: ``pem()`` on first use (encoding costs ~30 us, and the local CA never needs it)
    csr_pem: Optional[str]
    csr: object  # cryptography.x509.CertificateSigningRequest, already verified
    subject: Subject
    not_before: _dt.datetime
    not_after: _dt.datetime
    token_id: str
    name: str
    #: the CSR's public key, already loaded and checked against the key policy (saves each
    #: consumer another ~9 us ``csr.public_key()``); ``None`` means "ask the CSR"
    public_key: object = None
    #: the key's SubjectPublicKeyInfo DER, when the caller already encoded it; see ``spki()``
    public_key_der: Optional[bytes] = None

    def key(self):
        return self.public_key if self.public_key is not None else self.csr.public_key()

    def spki(self) -> bytes:
        """The public key as SubjectPublicKeyInfo DER: what the token records (as a hash) and what the
        issued certificate's key is compared with."""
        if self.public_key_der is None:
            from .csr import public_key_der  # csr imports this module

            self.public_key_der = public_key_der(self.key())
        return self.public_key_der

    def pem(self) -> str:
        if self.csr_pem is None:
            from cryptography.hazmat.primitives.serialization import Encoding

            self.csr_pem = self.csr.public_bytes(Encoding.PEM).decode("ascii")
        return self.csr_pem


@dataclasses.dataclass
class IssuedCertificate:
    certificate_pem: str
    ca_chain: List[str]
    serial_number: str  # lower-case hex, no separators
    not_before: _dt.datetime
    not_after: _dt.datetime
    #: the parsed certificate when the signer has it at hand (the local CA does): the service
    #: checks this object instead of parsing the PEM again. Must be the certificate in the PEM.
    certificate: object = None


@dataclasses.dataclass
class Page:
    items: list
    total: int
    page: int
    size: int
