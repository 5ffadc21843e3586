# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error codes shared by the engine, the gateway and the Ansible modules.

One table maps a machine-readable code to its HTTP status so that the gateway,
the gateway client and the modules (``error_code`` in ``fail_json``) can never
disagree about what a failure means.
"""

from __future__ import annotations

# code -> HTTP status
ERROR_STATUS = {
    "invalid_request": 400,
    "invalid_csr": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "tcp_shares_disabled": 403,
    "frontdoor_not_found": 404,
    "token_not_found": 404,
    "certificate_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "token_already_used": 409,
    "redemption_in_progress": 409,
    "conflict": 409,
    "token_expired": 410,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,  # with Retry-After: too many failed redemptions / admin authentications from one address
    # renewal with the current certificate (renewal.py)
    "invalid_renewal_token": 401,  # missing/malformed JWT, bad signature, wrong aud, exp too far or past
    "renewal_token_replayed": 401,  # the JWT's jti was used before
    "certificate_untrusted": 403,  # does not chain to this frontdoor's CA
    "certificate_unknown": 403,  # chains, but this frontdoor has no record of it
    "certificate_revoked": 403,
    "certificate_expired": 403,  # past notAfter plus the frontdoor's renewal grace
    "renewal_disabled": 403,
    "renewal_too_early": 409,  # before the frontdoor's renewal window opens (details.renewableFrom)
    "certificate_already_renewed": 409,  # one renewal per certificate (details.renewedBy)
    "renewal_in_progress": 409,  # another request holds the certificate's renewal claim (Retry-After)
    "not_supported": 501,
    "signer_error": 502,
    "signer_unavailable": 503,
    "store_unavailable": 503,
    "audit_unavailable": 503,  # the audit line an action depends on could not be written; the action did not happen
    "gateway_unavailable": 503,  # client side: the gateway could not be reached (network, TLS, timeout)
    "internal_error": 500,
}


class FrontdoorError(Exception):
    """A failure with a code a program can branch on and a message a person can act on."""

    def __init__(self, code, message, details=None, retry_after=None):
        if code not in ERROR_STATUS:
            raise ValueError("unknown error code %r" % (code,))
        super(FrontdoorError, self).__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after

    @property
    def status(self):
        return ERROR_STATUS[self.code]

    def to_dict(self):
        body = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def __repr__(self):
        return "FrontdoorError(%r, %r)" % (self.code, self.message)


class SignerUnavailable(FrontdoorError):
    """The signer could not be reached or refused for reasons the redeemer cannot fix.

    Raised by signer adapters; the service releases the claim so the token stays redeemable.
    """

    def __init__(self, message, details=None, retry_after=None):
        super(SignerUnavailable, self).__init__("signer_unavailable", message, details, retry_after)


class StoreUnavailable(FrontdoorError):
    """The token store could not be reached; nothing was changed that the caller can see."""

    def __init__(self, message, details=None, retry_after=None):
        super(StoreUnavailable, self).__init__("store_unavailable", message, details, retry_after)


class AuditUnavailable(FrontdoorError):
    """The audit line an action depends on could not be written, so the action was undone or not done."""

    def __init__(self, message, details=None, retry_after=None):
        super(AuditUnavailable, self).__init__("audit_unavailable", message, details, retry_after)
