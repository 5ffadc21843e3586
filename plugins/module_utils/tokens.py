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
_SECRET_LEN = len(SECRET_PREFIX) + _BODY_LEN + _CHECK_LEN
_SECRET_RE = re.compile(r"crt_[A-Za-z0-9_-]{%d}" % (_BODY_LEN + _CHECK_LEN))
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
    if not isinstance(secret, str) or len(secret) != _SECRET_LEN or not _SECRET_RE.fullmatch(secret):
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

DURATION_TEXT_MAX = 32  # '100w 6d 23h 59m 59s' is 19: room for spaces, none for a payload
DURATION_MAX = 100 * 365 * 86400
TIMESTAMP_TEXT_MAX = 40  # '2030-01-31T12:00:00.123456789+00:00' is 35
# Units in falling order, each at most once; a bare number (seconds) only last. Every [0-9]+ must
# be followed by a letter and every ' *' by a digit or the end, so each group matches in at most one
# way: no overlapping quantifiers, hence no backtracking blow-up (the old \s*-between-optional-groups
# form took seconds on 80 spaces). ASCII only: \d would take any Unicode digit.
_DURATION_RE = re.compile(r"(?:([0-9]+)w *)?(?:([0-9]+)d *)?(?:([0-9]+)h *)?(?:([0-9]+)m *)?(?:([0-9]+)s?)?")
_DURATION_UNITS = (7 * 86400, 86400, 3600, 60, 1)
# RFC 3339 section 5.6 date-time; checked before fromisoformat, which also takes other ISO 8601
# forms (week dates, basic format, ',' fractions) that we never documented.
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _bad_duration(field: str, why: str) -> FrontdoorError:
    return FrontdoorError(
        "invalid_request",
        "%s %s: use seconds (3600) or numbers with units: 90s, 15m, 24h, 7d, 2w, 1h30m." % (field, why),
    )


def _duration_text_seconds(text: str, field: str) -> int:
    # the length is checked before anything looks inside, so no input can make the work grow
    if len(text) > DURATION_TEXT_MAX:
        raise _bad_duration(field, "is %d characters long (at most %d)" % (len(text), DURATION_TEXT_MAX))
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise _bad_duration(field, "%r is not a duration" % text)
    return sum(int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS) if g)


def parse_duration(value: Union[int, float, str], field: str = "ttl") -> int:
    """Seconds from 3600, '3600', '90s', '15m', '24h', '7d', '2w' or combinations like '1h30m'.

    Values come from clients, YAML and the command line: anything else, including a bool
    (an int to Python), NaN, infinities and over-long text, is invalid_request.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad_duration(field, "must be a number of seconds or a duration string")
    if isinstance(value, str):
        seconds = _duration_text_seconds(value, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _bad_duration(field, "must be a finite number")
    else:
        seconds = value
    if not 0 < seconds <= DURATION_MAX:
        raise FrontdoorError("invalid_request", "%s must be a positive duration of at most 100 years." % field)
    return math.ceil(seconds)


def _bad_timestamp(field: str, why: str) -> FrontdoorError:
    return FrontdoorError("invalid_request", "%s %s: use RFC 3339, like 2030-01-31T12:00:00Z." % (field, why))


def _timestamp_from_text(text: str, field: str) -> _dt.datetime:
    if len(text) > TIMESTAMP_TEXT_MAX:
        raise _bad_timestamp(field, "is %d characters long (at most %d)" % (len(text), TIMESTAMP_TEXT_MAX))
    match = _TIMESTAMP_RE.fullmatch(text.strip())
    if match is None:
        raise _bad_timestamp(field, "%r is not a date and time" % text)
    date, time, fraction, zone = match.groups()
    # fromisoformat before Python 3.11 (module_utils run on older targets) needs 0, 3 or 6 fraction digits
    fraction = "." + (fraction + "00000")[:6] if fraction else ""
    zone = "+00:00" if zone in ("Z", "z") else zone or ""  # none: naive, refused by the caller
    try:
        return _dt.datetime.fromisoformat("%sT%s%s%s" % (date, time, fraction, zone))
    except ValueError:  # month 13, hour 24, offset +99:00, ...
        raise _bad_timestamp(field, "%r is not a valid date and time" % text) from None


def parse_timestamp(value: Union[str, _dt.datetime], field: str = "expiresAt") -> _dt.datetime:
    """An RFC 3339 timestamp with a time zone ('Z' or an offset), returned in UTC."""
    if isinstance(value, str):
        parsed = _timestamp_from_text(value, field)
    elif isinstance(value, _dt.datetime):
        parsed = value
    else:
        raise _bad_timestamp(field, "must be a timestamp string")
    if parsed.tzinfo is None:
        raise FrontdoorError(
            "invalid_request", "%s %r has no time zone: add 'Z' for UTC or an offset like +02:00." % (field, value)
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise _bad_timestamp(field, "%r is out of range" % (value,)) from None


def validate_name(name) -> str:
    if not isinstance(name, str):
        raise FrontdoorError("invalid_request", "name is required and must be a string.")
    if len(name) > NAME_MAX:  # first: nothing below should scan a megabyte of client text
        raise FrontdoorError("invalid_request", "name is %d characters long; the limit is %d." % (len(name), NAME_MAX))
    if not name.strip():
        raise FrontdoorError("invalid_request", "name is required and must not be blank.")
    if not name.isprintable():
        raise FrontdoorError("invalid_request", "name must contain printable characters only (no control characters).")
    return name


def validate_subject_field(value, field: str) -> Optional[str]:
    """None or blank: not locked (taken from the CSR). Otherwise 1..64 printable characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrontdoorError("invalid_request", "%s must be a string." % field)
    if len(value) > SUBJECT_FIELD_MAX:  # first, as in validate_name
        raise FrontdoorError(
            "invalid_request",
            "%s is %d characters long; RFC 5280 allows at most %d." % (field, len(value), SUBJECT_FIELD_MAX),
        )
    if not value.strip():
        return None
    if value != value.strip():
        raise FrontdoorError("invalid_request", "%s must not start or end with white space." % field)
    if not value.isprintable():
        raise FrontdoorError("invalid_request", "%s must contain printable characters only." % field)
    return value


def validate_subject(common_name=None, organization=None, organizational_unit=None) -> Subject:
    return Subject(
        validate_subject_field(common_name, "commonName"),
        validate_subject_field(organization, "organization"),
        validate_subject_field(organizational_unit, "organizationalUnit"),
    )
