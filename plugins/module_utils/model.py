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
from typing import Any, Dict, List, Optional, Tuple

from .errors import FrontdoorError

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


#: the kinds of Subject Alternative Name a token may pre-approve, in API order
SAN_KINDS = ("dns", "ip", "uri", "email")


@dataclasses.dataclass(frozen=True)
class SubjectAltNames:
    """Pre-approved Subject Alternative Names, locked like the subject fields: the certificate
    carries exactly these, whatever the CSR asks. Immutable, so one value can be shared by the
    token, the sign request and the certificate record without a copy.

    The values are already validated and normalised by ``sans.validate_subject_alt_names`` when
    they come from a client (DNS names lower-case, IPs in ``ipaddress``'s compressed form): equal
    values mean equal SANs, which is what the check of an issued certificate relies on.

    API / storage shape: ``{"dns": [...], "ip": [...], "uri": [...], "email": [...]}``. ``to_dict``
    leaves empty kinds out (``{}`` when there are none), so a token without SANs looks the same
    in every store and answer; ``from_dict`` takes missing kinds, ``null`` and ``[]`` alike as none.
    """

    dns: Tuple[str, ...] = ()
    ip: Tuple[str, ...] = ()
    uri: Tuple[str, ...] = ()
    email: Tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dns or self.ip or self.uri or self.email)

    def __len__(self) -> int:
        return len(self.dns) + len(self.ip) + len(self.uri) + len(self.email)

    def to_dict(self) -> Dict[str, List[str]]:
        return {kind: list(getattr(self, kind)) for kind in SAN_KINDS if getattr(self, kind)}

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> SubjectAltNames:
        """The value of a dict of the API shape. Only the shape is checked here (an object of known
        kinds, each a list of strings; else invalid_request): the rules for each value are in
        ``sans.py``, which clients' input goes through; stores read back what those rules kept."""
        if data is None:
            return NO_SANS
        if not isinstance(data, dict):
            raise FrontdoorError(
                "invalid_request", 'subjectAltNames must be an object like {"dns": ["host.example.com"]}.'
            )
        unknown = [str(k)[:32] for k in data if k not in SAN_KINDS]
        if unknown:
            raise FrontdoorError(
                "invalid_request",
                "subjectAltNames has unknown kind(s) %s; the kinds are %s." % (", ".join(unknown), ", ".join(SAN_KINDS)),
            )
        values = {}
        for kind in SAN_KINDS:
            items = data.get(kind)
            if items is None:
                items = []
            if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
                raise FrontdoorError("invalid_request", "subjectAltNames.%s must be a list of strings." % kind)
            values[kind] = tuple(items)
        return cls(**values) if any(values.values()) else NO_SANS


NO_SANS = SubjectAltNames()


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
    subject_alt_names: SubjectAltNames = NO_SANS  # locked into the certificate; none: it has no SAN extension

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
    subject_alt_names: SubjectAltNames = NO_SANS  # what the certificate carries (the token's)
    #: renewal (renewal.py): the certificate this one renewed, and the one that renewed it (set once, by a
    #: check-and-set: one renewal per certificate)
    previous_certificate_id: Optional[str] = None
    renewed_by: Optional[str] = None


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
    #: exactly the SANs the certificate must carry (the token's, never the CSR's); none: no SAN extension
    subject_alt_names: SubjectAltNames = NO_SANS

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
