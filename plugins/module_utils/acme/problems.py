# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ACME problem documents (RFC 8555 §6.7, RFC 7807) and the engine's codes mapped onto them.

Every refusal of the ACME front is an ``AcmeProblem``: an ``urn:ietf:params:acme:error:*`` type, a
detail a person can act on and an HTTP status. The body is made by the ``acme`` package's
``messages.Error`` so its shape is the one clients parse.
"""

from __future__ import annotations

from typing import Dict, List, Optional

try:
    from acme import messages
except ImportError:  # pragma: no cover - Ansible's import sanity test runs without third-party packages
    messages = None

from ..errors import FrontdoorError

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Status of each ACME error type used here (RFC 8555 §6.7 leaves most to the server).
_STATUS = {
    "malformed": 400,
    "badNonce": 400,
    "badCSR": 400,
    "badPublicKey": 400,
    "badSignatureAlgorithm": 400,
    "badRevocationReason": 400,
    "invalidContact": 400,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "rejectedIdentifier": 400,
    "accountDoesNotExist": 400,
    "alreadyRevoked": 400,
    "externalAccountRequired": 400,
    "unauthorized": 403,
    "orderNotReady": 403,
    "rateLimited": 429,
    "serverInternal": 500,
}


class AcmeProblem(Exception):
    """A refusal: ``kind`` is the ACME error type without its ``urn:ietf:params:acme:error:`` prefix."""

    def __init__(
        self,
        kind: str,
        detail: str,
        status: Optional[int] = None,
        subproblems: Optional[List[AcmeProblem]] = None,
        identifier: Optional[Dict[str, str]] = None,
        retry_after: Optional[int] = None,
        headers: Optional[Dict[str, str]] = None,
    ):
        super(AcmeProblem, self).__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status or _STATUS.get(kind, 400)
        self.subproblems = list(subproblems or [])
        self.identifier = identifier
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def body(self) -> dict:
        error = messages.Error(
            typ=messages.ERROR_PREFIX + self.kind,
            detail=self.detail,
            subproblems=tuple(messages.Error.from_json(p.body()) for p in self.subproblems) or None,
            identifier=messages.Identifier.from_json(self.identifier) if self.identifier else None,
        )
        body = error.to_json()
        body["status"] = self.status
        return body


# Engine code -> (ACME type, status). Anything not here is serverInternal (the engine's own status).
_FROM_ENGINE = {
    "invalid_request": ("malformed", 400),
    "invalid_csr": ("badCSR", 400),
    "payload_too_large": ("malformed", 413),
    "unsupported_media_type": ("malformed", 415),
    "unauthorized": ("unauthorized", 403),
    "forbidden": ("unauthorized", 403),
    "tcp_shares_disabled": ("unauthorized", 403),
    "token_not_found": ("unauthorized", 403),
    "token_already_used": ("unauthorized", 403),
    "token_expired": ("unauthorized", 403),
    "frontdoor_not_found": ("malformed", 404),
    "certificate_not_found": ("malformed", 404),
    "not_found": ("malformed", 404),
    "redemption_in_progress": ("rateLimited", 429),
    "conflict": ("rateLimited", 429),
    "rate_limited": ("rateLimited", 429),
}


def from_engine(exc: FrontdoorError) -> AcmeProblem:
    """The engine's refusal as an ACME problem, keeping its message (which says what to do)."""
    kind, status = _FROM_ENGINE.get(exc.code, ("serverInternal", exc.status))
    return AcmeProblem(kind, "%s (%s)" % (exc.message, exc.code), status=status, retry_after=exc.retry_after)
