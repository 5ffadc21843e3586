# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rules for pre-approved Subject Alternative Names (what a token may lock into its certificate).

Every value comes from a client (API body, CLI, Ansible), so every check is bounded before it looks
inside a value, and every refusal is ``invalid_request`` (400) naming the value's place, never a
traceback. What passes is normalised so that equal SANs are equal strings: the issued-certificate
check (``issued.sans_are``) compares the certificate with these values exactly.

Decisions (docs/api.md says the same):

- **DNS**: ASCII host names only, labels of letters, digits and inner hyphens, 1..63 characters
  each, at most 253 in all, at least two labels, lower-cased; internationalised names go in their
  A-label form (``xn--...``), which is what the certificate holds anyway. No trailing dot. **No
  wildcards**: a client certificate names one identity, and a ``*`` a relying party might match
  against many hosts is not something a single-use token should hand out.
- **IP**: IPv4 or IPv6 as ``ipaddress`` reads it (no leading zeros, no zone ``%eth0``, no
  networks, no IPv4-mapped IPv6, which Go-based signers write as IPv4), kept in its compressed
  form (``2001:db8::1``).
- **URI**: absolute, ``scheme:rest`` with an RFC 3986 scheme, RFC 3986 characters only (no spaces,
  no brackets, ``%`` only as ``%HH``), at most 1024 characters; when it has an authority (``//``)
  the host must not be empty. SPIFFE IDs (``spiffe://example.org/ns/prod/sa/api``) are the common
  case. The scheme is lower-cased.
- **email**: ``local@domain``, ASCII, local part 1..64 printable characters without spaces,
  ``@``, ``,`` or quotes, domain a DNS name as above (lower-cased), at most 254 in all.
- No value may contain a comma: Vault's sign API takes SANs as comma-separated lists, and a
  comma would split one approved SAN into two.
- At most 100 values per kind, 100 in all; a value twice (after normalisation) is refused.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Optional

from .errors import FrontdoorError
from .model import NO_SANS, SAN_KINDS, SubjectAltNames

SANS_MAX = 100  # values in all kinds together
DNS_MAX = 253
DNS_LABEL_MAX = 63
URI_MAX = 1024
EMAIL_MAX = 254
EMAIL_LOCAL_MAX = 64
IP_TEXT_MAX = 45  # the longest IPv6 text form (IPv4-mapped, uncompressed)

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]{0,31}")
# RFC 3986's characters (unreserved, reserved but the brackets, and %HH escapes): exactly what Go's net/url
# (Vault, step-ca) reads and writes back unchanged, so the SAN a signer writes is the one approved
_URI_RE = re.compile(r"(?:[A-Za-z0-9\-._~:/?#@!$&'()*+;=]|%[0-9A-Fa-f]{2})+")
_EMAIL_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


def _bad(kind: str, index: int, value: str, why: str) -> FrontdoorError:
    shown = value if len(value) <= 64 else value[:64] + "..."
    return FrontdoorError(
        "invalid_request", "subjectAltNames.%s[%d] %r %s." % (kind, index, shown, why),
        details={"field": "subjectAltNames.%s" % kind, "index": index},
    )


def _dns_name(value: str, kind: str, index: int) -> str:
    if len(value) > DNS_MAX:
        raise _bad(kind, index, value, "is longer than %d characters" % DNS_MAX)
    if not value.isascii():
        raise _bad(kind, index, value, "is not ASCII: write an internationalised name in its xn-- (A-label) form")
    name = value.lower()
    if name.startswith("*"):
        raise _bad(kind, index, value, "is a wildcard; a token pre-approves exact names only")
    labels = name.split(".")
    if len(labels) < 2:
        raise _bad(kind, index, value, "is not a fully qualified host name (it needs a dot, like host.example.com)")
    for label in labels:
        if not label:
            raise _bad(kind, index, value, "has an empty label (two dots in a row, or a dot at an end)")
        if len(label) > DNS_LABEL_MAX:
            raise _bad(kind, index, value, "has a label longer than %d characters" % DNS_LABEL_MAX)
        if not _LABEL_RE.fullmatch(label):
            raise _bad(
                kind, index, value,
                "is not a host name: labels are letters, digits and hyphens, not starting or ending with a hyphen",
            )
    if labels[-1].isdigit():
        raise _bad(kind, index, value, "looks like an IP address: put it under subjectAltNames.ip")
    return name


def _ip(value: str, index: int) -> str:
    if len(value) > IP_TEXT_MAX or "%" in value or "/" in value:
        raise _bad("ip", index, value, "is not an IPv4 or IPv6 address (no zone, no network)")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise _bad("ip", index, value, "is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # Go's x509 (Vault, step-ca) writes these as 4-byte IPv4: the certificate would not match the token
        raise _bad("ip", index, value, "is an IPv4-mapped IPv6 address: write it as IPv4 (%s)" % address.ipv4_mapped)
    return address.compressed


def _uri(value: str, index: int) -> str:
    if len(value) > URI_MAX:
        raise _bad("uri", index, value, "is longer than %d characters" % URI_MAX)
    if not value.isascii() or not _URI_RE.fullmatch(value):
        raise _bad(
            "uri", index, value,
            "has characters a URI cannot hold (spaces, controls, non-ASCII, brackets, a '%' not followed by two hex "
            "digits): percent-encode them",
        )
    scheme, colon, rest = value.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme.lower()) or not rest:
        raise _bad("uri", index, value, "is not an absolute URI (scheme:rest, like spiffe://example.org/ns/prod/sa/api)")
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        host = authority.rpartition("@")[2]
        if not host or host.startswith(":"):
            raise _bad("uri", index, value, "has an empty host")
    return scheme.lower() + ":" + rest


def _email(value: str, index: int) -> str:
    if len(value) > EMAIL_MAX:
        raise _bad("email", index, value, "is longer than %d characters" % EMAIL_MAX)
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise _bad("email", index, value, "is not an email address (local@domain)")
    if not _EMAIL_LOCAL_RE.fullmatch(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise _bad(
            "email", index, value,
            "has a local part cryptography and relying parties cannot take: 1..%d ASCII letters, digits and "
            "!#$%%&'*+/=?^_`{|}~.- (no leading, trailing or double dot)" % EMAIL_LOCAL_MAX,
        )
    return local + "@" + _dns_name(domain, "email", index)


_NORMALISE = {
    "dns": lambda value, index: _dns_name(value, "dns", index),
    "ip": _ip,
    "uri": _uri,
    "email": _email,
}


def validate_subject_alt_names(data: Optional[Dict[str, Any]]) -> SubjectAltNames:
    """Client input (the API shape, ``None`` for none) -> the normalised value, or invalid_request."""
    sans = SubjectAltNames.from_dict(data)  # the shape: known kinds, lists of strings
    if not sans:
        return NO_SANS
    if len(sans) > SANS_MAX:
        raise FrontdoorError(
            "invalid_request", "subjectAltNames holds %d values; the limit is %d in all." % (len(sans), SANS_MAX)
        )
    result: Dict[str, List[str]] = {}
    for kind in SAN_KINDS:
        seen: Dict[str, int] = {}
        values = []
        for index, value in enumerate(getattr(sans, kind)):
            if "," in value:
                raise _bad(kind, index, value, "contains a comma, which signers take as a separator")
            normal = _NORMALISE[kind](value, index)
            if normal in seen:
                raise _bad(kind, index, value, "repeats subjectAltNames.%s[%d]" % (kind, seen[normal]))
            seen[normal] = index
            values.append(normal)
        result[kind] = values
    return SubjectAltNames.from_dict(result)
