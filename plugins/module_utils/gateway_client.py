# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP client of the frontdoor gateway (the API of the reference workflow).

Used by the Ansible modules when ``gateway_url`` is set, and importable without
Ansible. Every failure becomes a :class:`FrontdoorError` carrying the gateway's own
error code and message, so a module reports the same thing whether it ran the engine
itself or asked a gateway.

Secrets: the admin API token travels only in the Authorization header and is never
put in a message; the redemption URL carries the token secret, so every text that
could quote the URL (exceptions from requests/urllib3, their debug log lines) is
passed through :func:`tokens.redact` first.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import quote, urlsplit

# Guarded: Ansible's import sanity test runs without third-party packages; modules report
# a missing requests with missing_required_lib (HAS_REQUESTS).
try:
    import requests
    from requests.adapters import HTTPAdapter

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover
    requests = HTTPAdapter = None
    HAS_REQUESTS = False

from .errors import ERROR_STATUS, FrontdoorError
from .tokens import redact

DEFAULT_TIMEOUT = 30.0
LIST_PAGE_SIZE = 1000
LIST_MAX_PAGES = 100  # bound on listing: at most 100 000 tokens in one call

# When the body is not our JSON error (a proxy, a wrong URL), the status still says roughly what happened.
_STATUS_CODE = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "token_expired",
    413: "payload_too_large",
    415: "unsupported_media_type",
    501: "not_supported",
    502: "gateway_unavailable",
    503: "gateway_unavailable",
    504: "gateway_unavailable",
}


class _RedactingFilter(logging.Filter):
    """urllib3 logs request lines (with the URL) at DEBUG: never let a token secret through."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is dropped rather than leaked
            return False
        if "crt_" in message:
            record.msg = redact(message)
            record.args = ()
        return True


_FILTER = _RedactingFilter()
for _logger_name in ("urllib3.connectionpool", "requests"):
    _logger = logging.getLogger(_logger_name)
    if _FILTER not in _logger.filters:
        _logger.addFilter(_FILTER)


def _error_from_response(response) -> FrontdoorError:
    """The gateway's ``{"error": {"code", "message"}}``; a sensible code from the status otherwise."""
    status = response.status_code
    code = message = None
    details: Dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code")
        message = error.get("message")
        if isinstance(error.get("details"), dict):
            details = error["details"]
    if not isinstance(code, str) or code not in ERROR_STATUS:
        code = _STATUS_CODE.get(status, "internal_error" if status >= 500 else "invalid_request")
    if not isinstance(message, str) or not message:
        message = "The gateway answered HTTP %d to %s %s without an error message." % (
            status, response.request.method if response.request is not None else "the request",
            redact(urlsplit(response.url).path or "/"),
        )
    retry_after = None
    header = response.headers.get("Retry-After")
    if header and header.isdigit():
        retry_after = int(header)
    details.setdefault("httpStatus", status)
    return FrontdoorError(code, redact(message), details=details, retry_after=retry_after)


class GatewayClient:
    """One pooled HTTP session to one gateway.

    ``api_token`` is the admin bearer token (token management); redemption needs none:
    the token secret in the URL is the credential.
    """

    def __init__(
        self,
        base_url: str,
        api_token: Optional[str] = None,
        validate_certs: bool = True,
        ca_path: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        session=None,
        user_agent: str = "frontdoor.pki",
    ):
        if not HAS_REQUESTS:  # pragma: no cover - checked by the modules first
            raise FrontdoorError("invalid_request", "The Python library 'requests' is needed to talk to a gateway.")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise FrontdoorError(
                "invalid_request", "gateway_url must start with http:// or https:// (got %r)." % (str(base_url)[:100],)
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self._api_token = api_token
        if session is None:
            session = requests.Session()
            # one connection pool per host, reused by every call of this client
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.session.headers.setdefault("User-Agent", user_agent)
        self.session.headers["Accept"] = "application/json"
        self.session.verify = (ca_path or True) if validate_certs else False

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _request(self, method: str, path: str, *, auth: bool = True, expect_json: bool = True, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if not self._api_token:
                raise FrontdoorError(
                    "unauthorized",
                    "This needs the gateway's admin API token: set api_token (or FRONTDOOR_API_TOKEN).",
                )
            headers["Authorization"] = "Bearer %s" % self._api_token
        url = self.base_url + path
        try:
            # verify given on every call: requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override a session's
            # verify (psf/requests#3829), which would drop ca_path (and validate_certs=false) on many hosts
            kwargs.setdefault("verify", self.session.verify)
            response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise FrontdoorError(
                "gateway_unavailable",
                "TLS verification of the gateway at %s failed (%s). Give the CA that signed its certificate with "
                "ca_path, or set validate_certs=false for a test gateway." % (self.base_url, redact(str(exc))),
            ) from None
        except requests.exceptions.Timeout:
            raise FrontdoorError(
                "gateway_unavailable",
                "The gateway at %s did not answer %s %s within %.0f seconds (timeout)."
                % (self.base_url, method, redact(path), self.timeout),
            ) from None
        except requests.exceptions.RequestException as exc:
            raise FrontdoorError(
                "gateway_unavailable",
                "Cannot reach the gateway at %s: %s. Check gateway_url and that the gateway is running."
                % (self.base_url, redact(str(exc))),
            ) from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        if not expect_json or response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise FrontdoorError(
                "gateway_unavailable",
                "The gateway at %s answered %s %s with something that is not JSON: is gateway_url the gateway?"
                % (self.base_url, method, redact(path)),
            ) from None

    @staticmethod
    def _tokens_path(frontdoor_id: str) -> str:
        return "/frontdoor/%s/certificate-request-tokens" % quote(frontdoor_id, safe="")

    # ------------------------------------------------------------------ tokens (admin)
    def create_token(
        self,
        frontdoor_id: str,
        name: str,
        common_name: Optional[str] = None,
        organization: Optional[str] = None,
        organizational_unit: Optional[str] = None,
        ttl: Union[None, int, str] = None,
        expires_at: Optional[str] = None,
        subject_alt_names: Optional[Dict[str, List[str]]] = None,
    ) -> dict:
        """Returns the created token's view, the only one that carries the secret (``token``)."""
        body: Dict[str, Any] = {"name": name}
        for key, value in (
            ("commonName", common_name),
            ("organization", organization),
            ("organizationalUnit", organizational_unit),
            ("ttl", ttl),
            ("expiresAt", expires_at),
            ("subjectAltNames", subject_alt_names),
        ):
            if value is not None:
                body[key] = value
        return self._request("POST", self._tokens_path(frontdoor_id), json=body)

    def list_tokens(
        self, frontdoor_id: str, status: Union[None, str, Sequence[str]] = None, name: Optional[str] = None
    ) -> List[dict]:
        """Every token matching the filters (all pages, bounded)."""
        params: Dict[str, Any] = {"size": LIST_PAGE_SIZE, "sort": "createdAt,asc"}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if name:
            params["name"] = name
        items: List[dict] = []
        for page in range(LIST_MAX_PAGES):
            params["page"] = page
            body = self._request("GET", self._tokens_path(frontdoor_id), params=params)
            content = (body.get("content") or []) if isinstance(body, dict) else []
            items.extend(content)
            total_pages = body.get("totalPages", 0) if isinstance(body, dict) else 0
            if not content or page + 1 >= total_pages:
                break
        return items

    def get_token(self, frontdoor_id: str, token_id: str) -> dict:
        return self._request("GET", self._tokens_path(frontdoor_id) + "/" + quote(token_id, safe=""))

    def delete_token(self, frontdoor_id: str, token_id: str) -> None:
        self._request("DELETE", self._tokens_path(frontdoor_id) + "/" + quote(token_id, safe=""), expect_json=False)

    def cleanup(
        self, frontdoor_id: str, statuses: Sequence[str] = ("expired",), older_than: Union[int, str] = 0,
        dry_run: bool = False,
    ) -> List[str]:
        """Ids of the tokens removed (or that would be, with ``dry_run``)."""
        params: Dict[str, Any] = {"status": ",".join(statuses)}
        if older_than not in (None, 0, "0", "0s", ""):
            params["olderThan"] = str(older_than)
        if dry_run:
            params["dryRun"] = "true"
        body = self._request("DELETE", self._tokens_path(frontdoor_id), params=params)
        ids = body.get("ids") if isinstance(body, dict) else None
        return list(ids or [])

    # ------------------------------------------------------------------ redemption (no admin token)
    def redeem(self, frontdoor_id: str, secret: str, csr_pem: str) -> dict:
        """Redeem ``secret`` with a PEM CSR; returns the certificate record (camelCase)."""
        if not isinstance(secret, str) or not secret:
            raise FrontdoorError("token_not_found", "No token was given to redeem.")
        path = "/frontdoor/%s/client-certificates/token/%s" % (quote(frontdoor_id, safe=""), quote(secret, safe=""))
        return self._request("POST", path, auth=False, json={"type": "CSR", "value": csr_pem})

    def ca_chain(self, frontdoor_id: str) -> List[str]:
        body = self._request("GET", "/frontdoor/%s/ca" % quote(frontdoor_id, safe=""), auth=False,
                             params={"format": "json"})
        chain = body.get("caChain") if isinstance(body, dict) else None
        return list(chain or [])
