# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP client of the frontdoor gateway for Ansible: ``ansible.module_utils.urls`` only.

Modules run on managed hosts, where nothing but Python and ansible-core's own module_utils can be
assumed (ansible-core 2.19 hosts often lack ``requests``). So every module, and the ``enroll``
action plugin on the controller, talks to the gateway through :class:`ansible.module_utils.urls.Request`,
the client ansible-core ships and maintains (TLS with the system's or a given CA bundle, proxies,
timeouts). It is the collection's one gateway client; a Python program outside Ansible speaks the HTTP API
(docs/api.md) with any client, or uses this one where ansible-core is installed.

Failures become :class:`FrontdoorError` with the gateway's own code and message. Messages are whole:
nothing is cut, so an errno and its text always arrive together. The redemption URL carries the token
secret, so every text that could quote a URL goes through :func:`tokens.redact`.
"""

from __future__ import annotations

import json
import socket
import ssl
from http.client import HTTPException
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import Request

from .errors import ERROR_STATUS, FrontdoorError
from .tokens import redact

DEFAULT_TIMEOUT = 30.0
LIST_PAGE_SIZE = 1000
LIST_MAX_PAGES = 100  # bound on listing: at most 100 000 items in one call
MAX_BODY = 4 * 1024 * 1024  # an answer larger than this is not the gateway's

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
    429: "rate_limited",
    501: "not_supported",
    502: "gateway_unavailable",
    503: "gateway_unavailable",
    504: "gateway_unavailable",
}


def error_from_answer(status: int, body: bytes, headers, method: str, path: str) -> FrontdoorError:
    """The gateway's ``{"error": {"code", "message"}}``; a sensible code from the status otherwise.

    The code is kept only if this collection knows it (a newer gateway's code becomes the status's code,
    with the gateway's message intact)."""
    code = message = None
    details: Dict[str, Any] = {}
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        code = error.get("code")
        message = error.get("message")
        if isinstance(error.get("details"), dict):
            details = dict(error["details"])
    if isinstance(code, str) and code not in ERROR_STATUS:
        details.setdefault("gatewayCode", code)
        code = None
    if not isinstance(code, str):
        code = _STATUS_CODE.get(status, "internal_error" if status >= 500 else "invalid_request")
    if not isinstance(message, str) or not message:
        message = "The gateway answered HTTP %d to %s %s without an error message." % (status, method, redact(path))
    retry_after = None
    header = headers.get("Retry-After") if headers is not None else None
    if header and header.strip().isdigit() and len(header.strip()) < 10:
        retry_after = int(header.strip())
    details.setdefault("httpStatus", status)
    return FrontdoorError(code, redact(message), details=details, retry_after=retry_after)


def _reason(exc: BaseException) -> str:
    """The whole text of a transport failure (an errno with its words), secrets redacted."""
    reason = getattr(exc, "reason", None)
    text = str(reason) if reason is not None else str(exc)
    return redact(text or exc.__class__.__name__)


class UrlsGatewayClient:
    """Calls to one gateway through ansible-core's ``Request``.

    ``api_token`` is the admin bearer token (token and certificate management); redemption needs none
    (the token secret in the URL is the credential) and renewal carries its own bearer JWT.
    """

    def __init__(
        self,
        base_url: str,
        api_token: Optional[str] = None,
        validate_certs: bool = True,
        ca_path: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        user_agent: str = "frontdoor.pki",
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise FrontdoorError(
                "invalid_request",
                "gateway_url must start with http:// or https:// (got %r)." % (redact(str(base_url)),),
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self._api_token = api_token
        self._request_factory = Request(
            headers={"Accept": "application/json"}, validate_certs=validate_certs, ca_path=ca_path,
            timeout=self.timeout, http_agent=user_agent, follow_redirects="none", use_netrc=False,
        )

    def close(self) -> None:
        """Nothing pooled to release (urllib opens a connection per call); kept for the Backend interface."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _call(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        params: Optional[Dict[str, Any]] = None,
        body: Any = None,
        bearer: Optional[str] = None,
    ) -> Tuple[Any, Dict[str, str], int]:
        """(parsed JSON or None, response headers, status) of one call; FrontdoorError on any failure."""
        headers: Dict[str, str] = {}
        if auth:
            if not self._api_token:
                raise FrontdoorError(
                    "unauthorized",
                    "This needs the gateway's admin API token: set api_token (or FRONTDOOR_API_TOKEN).",
                )
            headers["Authorization"] = "Bearer %s" % self._api_token
        elif bearer:
            headers["Authorization"] = "Bearer %s" % bearer
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        try:
            response = self._request_factory.open(method, url, data=data, headers=headers)
            status = response.status
            raw = response.read(MAX_BODY + 1)
            answer_headers = dict(response.headers.items())
        except HTTPError as exc:
            try:
                raw = exc.read(MAX_BODY + 1) or b""
            except (OSError, HTTPException):
                raw = b""
            raise error_from_answer(exc.code, raw, exc.headers, method, path) from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._tls_error(exc) from None
        except URLError as exc:
            if isinstance(exc.reason, (ssl.SSLError, ssl.CertificateError)):
                raise self._tls_error(exc.reason) from None
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise self._timeout_error(method, path) from None
            raise self._unreachable(exc) from None
        except (socket.timeout, TimeoutError):
            raise self._timeout_error(method, path) from None
        except (OSError, HTTPException, ValueError) as exc:
            raise self._unreachable(exc) from None
        if len(raw) > MAX_BODY:
            raise FrontdoorError(
                "gateway_unavailable",
                "The gateway at %s answered %s %s with more than %d bytes: is gateway_url the gateway?"
                % (self.base_url, method, redact(path), MAX_BODY),
            )
        if status == 204 or not raw:
            return None, answer_headers, status
        try:
            return json.loads(raw.decode("utf-8")), answer_headers, status
        except (ValueError, UnicodeDecodeError):
            raise FrontdoorError(
                "gateway_unavailable",
                "The gateway at %s answered %s %s with something that is not JSON: is gateway_url the gateway?"
                % (self.base_url, method, redact(path)),
            ) from None

    def _tls_error(self, exc: BaseException) -> FrontdoorError:
        return FrontdoorError(
            "gateway_unavailable",
            "TLS verification of the gateway at %s failed (%s). Give the CA that signed its certificate with "
            "ca_path, or set validate_certs=false for a test gateway." % (self.base_url, _reason(exc)),
        )

    def _timeout_error(self, method: str, path: str) -> FrontdoorError:
        return FrontdoorError(
            "gateway_unavailable",
            "The gateway at %s did not answer %s %s within %g seconds (timeout)."
            % (self.base_url, method, redact(path), self.timeout),
        )

    def _unreachable(self, exc: BaseException) -> FrontdoorError:
        return FrontdoorError(
            "gateway_unavailable",
            "Cannot reach the gateway at %s: %s. Check gateway_url and that the gateway is running."
            % (self.base_url, _reason(exc)),
        )

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._call(method, path, **kwargs)[0]

    @staticmethod
    def _frontdoor(frontdoor_id: str) -> str:
        return "/frontdoor/%s" % quote(frontdoor_id, safe="")

    def _tokens_path(self, frontdoor_id: str) -> str:
        return self._frontdoor(frontdoor_id) + "/certificate-request-tokens"

    def _certificates_path(self, frontdoor_id: str) -> str:
        return self._frontdoor(frontdoor_id) + "/client-certificates"

    def _pages(self, path: str, params: Dict[str, Any]) -> List[dict]:
        items: List[dict] = []
        params = dict(params, size=LIST_PAGE_SIZE)
        for page in range(LIST_MAX_PAGES):
            params["page"] = page
            body = self._json("GET", path, params=params)
            content = (body.get("content") or []) if isinstance(body, dict) else []
            items.extend(content)
            total_pages = body.get("totalPages", 0) if isinstance(body, dict) else 0
            if not content or page + 1 >= total_pages:
                break
        return items

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
        **extra: Any,
    ) -> dict:
        """The created token's view, the only one that carries the secret (``token``).

        ``extra`` holds further camelCase fields of the API (``certificateTtl``, ``subjectAltNames``), sent
        when not None."""
        body: Dict[str, Any] = {"name": name}
        fields = [("commonName", common_name), ("organization", organization),
                  ("organizationalUnit", organizational_unit), ("ttl", ttl), ("expiresAt", expires_at)]
        fields.extend(extra.items())
        for key, value in fields:
            if value is not None:
                body[key] = value
        return self._json("POST", self._tokens_path(frontdoor_id), body=body)

    def list_tokens(
        self, frontdoor_id: str, status: Union[None, str, Sequence[str]] = None, name: Optional[str] = None
    ) -> List[dict]:
        """Every token matching the filters (all pages, bounded), oldest first."""
        params: Dict[str, Any] = {"sort": "createdAt,asc"}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if name:
            params["name"] = name
        return self._pages(self._tokens_path(frontdoor_id), params)

    def get_token(self, frontdoor_id: str, token_id: str) -> dict:
        return self._json("GET", self._tokens_path(frontdoor_id) + "/" + quote(token_id, safe=""))

    def delete_token(self, frontdoor_id: str, token_id: str) -> None:
        self._call("DELETE", self._tokens_path(frontdoor_id) + "/" + quote(token_id, safe=""))

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
        body = self._json("DELETE", self._tokens_path(frontdoor_id), params=params)
        ids = body.get("ids") if isinstance(body, dict) else None
        return list(ids or [])

    # ------------------------------------------------------------------ certificates (admin)
    def list_certificates(self, frontdoor_id: str, token_id: Optional[str] = None,
                          revoked: Optional[bool] = None) -> List[dict]:
        params: Dict[str, Any] = {"sort": "createdAt,asc"}
        if token_id:
            params["tokenId"] = token_id
        if revoked is not None:
            params["revoked"] = "true" if revoked else "false"
        return self._pages(self._certificates_path(frontdoor_id), params)

    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> dict:
        return self._json("GET", self._certificates_path(frontdoor_id) + "/" + quote(certificate_id, safe=""))

    def revoke_certificate(self, frontdoor_id: str, certificate_id: str) -> Optional[dict]:
        return self._json("DELETE", self._certificates_path(frontdoor_id) + "/" + quote(certificate_id, safe=""))

    # ------------------------------------------------------------------ redemption and renewal (no admin token)
    def redeem(self, frontdoor_id: str, secret: str, csr_pem: str) -> dict:
        """The certificate record (camelCase) for a PEM CSR, with ``replayed`` from ``X-Frontdoor-Replayed``."""
        if not isinstance(secret, str) or not secret:
            raise FrontdoorError("token_not_found", "No token was given to redeem.")
        path = "%s/token/%s" % (self._certificates_path(frontdoor_id), quote(secret, safe=""))
        body, headers, _status = self._call("POST", path, auth=False, body={"type": "CSR", "value": csr_pem})
        return self._record(body, headers, "POST", path)

    def renew(self, frontdoor_id: str, csr_pem: str, renewal_jwt: str) -> dict:
        """A new certificate for the current one, authenticated by a JWT signed with the current key."""
        path = self.renew_path(frontdoor_id)
        body, headers, _status = self._call("POST", path, auth=False, bearer=renewal_jwt,
                                            body={"type": "CSR", "value": csr_pem})
        return self._record(body, headers, "POST", path)

    @classmethod
    def renew_path(cls, frontdoor_id: str) -> str:
        """The renewal endpoint's path, which is also the ``aud`` of the renewal JWT."""
        return cls._frontdoor(frontdoor_id) + "/client-certificates/renew"

    def _record(self, body: Any, headers: Dict[str, str], method: str, path: str) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("certificate"), str):
            raise FrontdoorError(
                "gateway_unavailable",
                "The gateway at %s answered %s %s without a certificate: is gateway_url the gateway?"
                % (self.base_url, method, redact(path)),
            )
        record = dict(body)
        replayed = {k.lower(): v for k, v in headers.items()}.get("x-frontdoor-replayed", "")
        record["replayed"] = replayed.strip().lower() == "true"
        return record

    def ca_chain(self, frontdoor_id: str) -> List[str]:
        body = self._json("GET", self._frontdoor(frontdoor_id) + "/ca", auth=False, params={"format": "json"})
        chain = body.get("caChain") if isinstance(body, dict) else None
        return list(chain or [])
