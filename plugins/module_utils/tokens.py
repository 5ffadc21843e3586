# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Token secrets and the value rules for what a token carries.

A secret is ``crt_`` + 160 random bits (URL-safe base64) + a 32-bit checksum. The
checksum lets us tell a mistyped token from one that never existed or was deleted,
without any lookup, which answers one of the most common support questions.
Only SHA-256 of the whole secret is stored: with 160 random bits there is nothing
to brute-force, so a slow KDF would only cost redemption throughput.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import math
import re
import secrets
import uuid
from typing import Optional, Union

from .errors import FrontdoorError
from .model import UTC, Subject

SECRET_PREFIX = "crt_"
_SECRET_BYTES = 20  # 160 bits
_BODY_LEN = 27  # len(token_urlsafe(20))
_CHECK_LEN = 6  # 4 bytes of SHA-256, base64url without padding
_SECRET_RE = re.compile(r"^crt_[A-Za-z0-9_-]{%d}$" % (_BODY_LEN + _CHECK_LEN))
TOKEN_ID_RE = re.compile(r"^token-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CERT_ID_RE = re.compile(r"^cert-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

NAME_MAX = 128
SUBJECT_FIELD_MAX = 64  # RFC 5280 ub-common-name, ub-organization-name, ub-organizational-unit-name


def _checksum(body: str) -> str:
    digest = hashlib.sha256(body.encode("ascii")).digest()[:4]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def new_secret() -> str:
    body = secrets.token_urlsafe(_SECRET_BYTES)
    return SECRET_PREFIX + body + _checksum(body)


def new_token_id() -> str:
    return "token-%s" % uuid.uuid4()


def new_certificate_id() -> str:
    return "cert-%s" % uuid.uuid4()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hashes_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def check_secret_format(secret: str) -> None:
    """Raise token_not_found (saying 'mistyped') if this cannot be a secret we issued."""
    if not isinstance(secret, str) or not _SECRET_RE.match(secret):
        raise FrontdoorError(
            "token_not_found",
            "The token is malformed: a token looks like 'crt_' followed by 33 letters, digits, '-' or '_'. "
            "Check that it was copied completely and not mistyped.",
            details={"reason": "malformed"},
        )
    body, check = secret[4 : 4 + _BODY_LEN], secret[4 + _BODY_LEN :]
    if not hmac.compare_digest(_checksum(body), check):
        raise FrontdoorError(
            "token_not_found",
            "The token's checksum does not match: it was mistyped or altered in transit. "
            "Copy it again from where the administrator shared it.",
            details={"reason": "checksum"},
        )


def redact(text: str) -> str:
    """Replace anything that looks like a token secret in ``text`` (log lines, URLs)."""
    # every match starts with the literal prefix: without it the regex cannot match (and a
    # substring test costs a tenth of running it, on every audit field and access line)
    return _REDACT_RE.sub("crt_[REDACTED]", text) if SECRET_PREFIX in text else text


_REDACT_RE = re.compile(r"crt_[A-Za-z0-9_\-%]+")

_DURATION_RE = re.compile(r"^\s*(?:(\d+)w)?\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*$")


def parse_duration(value: Union[int, float, str], field: str = "ttl") -> int:
    """Seconds from 3600, '3600', '90s', '15m', '24h', '7d', '2w' or combinations like '1h30m'."""
    if isinstance(value, bool):
        raise FrontdoorError("invalid_request", "%s must be a number of seconds or a duration like '15m'." % field)
    if isinstance(value, (int, float)):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not value.strip() or not match or not any(match.groups()):
            raise FrontdoorError(
                "invalid_request",
                "%s %r is not a duration: use seconds (3600) or a number with a unit: 90s, 15m, 24h, 7d, 2w."
                % (field, value),
            )
        w, d, h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = (((w * 7 + d) * 24 + h) * 60 + m) * 60 + s
    else:
        raise FrontdoorError("invalid_request", "%s must be a number of seconds or a duration string." % field)
    if (isinstance(seconds, float) and math.isnan(seconds)) or seconds <= 0 or seconds > 100 * 365 * 86400:
        raise FrontdoorError("invalid_request", "%s must be a positive duration of at most 100 years." % field)
    return int(seconds) if float(seconds).is_integer() else int(seconds) + 1


def parse_timestamp(value: Union[str, _dt.datetime], field: str = "expiresAt") -> _dt.datetime:
    """An RFC 3339 timestamp with a time zone ('Z' or an offset), returned in UTC."""
    if isinstance(value, _dt.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or "T" not in text.upper():
            raise FrontdoorError(
                "invalid_request", "%s %r is not an RFC 3339 timestamp like 2030-01-31T12:00:00Z." % (field, value)
            )
    else:
        raise FrontdoorError("invalid_request", "%s must be an RFC 3339 timestamp string." % field)
    if parsed.tzinfo is None:
        raise FrontdoorError(
            "invalid_request", "%s %r has no time zone: add 'Z' for UTC or an offset like +02:00." % (field, value)
        )
    return parsed.astimezone(UTC)


def validate_name(name) -> str:
    if not isinstance(name, str):
        raise FrontdoorError("invalid_request", "name is required and must be a string.")
    if not name.strip():
        raise FrontdoorError("invalid_request", "name is required and must not be blank.")
    if len(name) > NAME_MAX:
        raise FrontdoorError("invalid_request", "name is %d characters long; the limit is %d." % (len(name), NAME_MAX))
    if not name.isprintable():
        raise FrontdoorError("invalid_request", "name must contain printable characters only (no control characters).")
    return name


def validate_subject_field(value, field: str) -> Optional[str]:
    """None or blank: not locked (taken from the CSR). Otherwise 1..64 printable characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrontdoorError("invalid_request", "%s must be a string." % field)
    if not value.strip():
        return None
    if value != value.strip():
        raise FrontdoorError("invalid_request", "%s must not start or end with white space." % field)
    if len(value) > SUBJECT_FIELD_MAX:
        raise FrontdoorError(
            "invalid_request",
            "%s is %d characters long; RFC 5280 allows at most %d." % (field, len(value), SUBJECT_FIELD_MAX),
        )
    if not value.isprintable():
        raise FrontdoorError("invalid_request", "%s must contain printable characters only." % field)
    return value


def validate_subject(common_name=None, organization=None, organizational_unit=None) -> Subject:
    return Subject(
        validate_subject_field(common_name, "commonName"),
        validate_subject_field(organization, "organization"),
        validate_subject_field(organizational_unit, "organizationalUnit"),
    )
