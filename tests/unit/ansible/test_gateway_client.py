"""The gateway client against canned HTTP answers (responses): request shapes and error mapping.

The real gateway is exercised by tests/ansible; here the point is what the client does with each
kind of answer, including the ones a healthy gateway never gives (proxies, wrong URLs, timeouts).
"""

from __future__ import annotations

import json
import logging

import pytest
import requests
import responses
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.gateway_client import GatewayClient

BASE = "http://127.0.0.1:9"
TOKENS = BASE + "/frontdoor/default/certificate-request-tokens"
SECRET = "crt_" + "A" * 27 + "BBBBBB"


def client(**kwargs) -> GatewayClient:
    kwargs.setdefault("api_token", "fdk_admin")
    return GatewayClient(BASE, **kwargs)


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


@responses.activate
def test_create_sends_camel_case_body_and_bearer_token():
    responses.post(TOKENS, status=201, json={"id": "token-1", "name": "web-1", "token": SECRET})
    created = client().create_token("default", "web-1", common_name="web-1.example.com", organization=None,
                                    organizational_unit="Ops", ttl="1h")
    assert created["token"] == SECRET
    request = responses.calls[0].request
    assert request.headers["Authorization"] == "Bearer fdk_admin"
    assert json.loads(request.body) == {"name": "web-1", "commonName": "web-1.example.com",
                                        "organizationalUnit": "Ops", "ttl": "1h"}


@responses.activate
def test_gateway_error_body_becomes_frontdoor_error_with_its_code_and_message():
    responses.post(TOKENS, status=403, json=error_body("tcp_shares_disabled", "TCP shares are not enabled."))
    with pytest.raises(FrontdoorError) as info:
        client().create_token("default", "x")
    assert info.value.code == "tcp_shares_disabled"
    assert info.value.message == "TCP shares are not enabled."
    assert info.value.details["httpStatus"] == 403


@responses.activate
@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, error_body("unauthorized", "Bad bearer token."), "unauthorized"),
        (404, {"detail": "Not Found"}, "not_found"),          # not our error shape: by status
        (409, error_body("made_up_code", "?"), "conflict"),    # unknown code: by status
        (502, "<html>Bad Gateway</html>", "gateway_unavailable"),
        (500, "oops", "internal_error"),
    ],
)
def test_error_code_falls_back_to_the_http_status(status, body, code):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.get(TOKENS, status=status, **kwargs)
    with pytest.raises(FrontdoorError) as info:
        client().list_tokens("default")
    assert info.value.code == code
    assert info.value.message


@responses.activate
def test_redeem_sends_no_admin_token_and_quotes_the_path():
    url = BASE + "/frontdoor/my%20fd/client-certificates/token/" + SECRET
    responses.post(url, status=201, json={"id": "cert-1", "certificate": "PEM"})
    result = client().redeem("my fd", SECRET, "CSR PEM")
    assert result["id"] == "cert-1"
    request = responses.calls[0].request
    assert "Authorization" not in request.headers
    assert json.loads(request.body) == {"type": "CSR", "value": "CSR PEM"}


@responses.activate
def test_redeem_failures_never_quote_the_secret():
    url = BASE + "/frontdoor/default/client-certificates/token/" + SECRET
    responses.post(url, body=requests.exceptions.ConnectionError("Max retries exceeded with url: "
                                                                  "/frontdoor/default/client-certificates/token/"
                                                                  + SECRET))
    with pytest.raises(FrontdoorError) as info:
        client().redeem("default", SECRET, "CSR")
    assert info.value.code == "gateway_unavailable"
    assert SECRET not in info.value.message and SECRET not in str(info.value)
    assert "crt_[REDACTED]" in info.value.message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@responses.activate
def test_redeem_error_message_from_gateway_is_redacted_too():
    url = BASE + "/frontdoor/default/client-certificates/token/" + SECRET
    responses.post(url, status=410, json=error_body("token_expired", "Token %s expired at 2030-01-01T00:00:00Z."
                                                    % SECRET))
    with pytest.raises(FrontdoorError) as info:
        client().redeem("default", SECRET, "CSR")
    assert info.value.code == "token_expired"
    assert SECRET not in info.value.message


@responses.activate
def test_timeout_is_reported_as_gateway_unavailable():
    responses.get(TOKENS, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(FrontdoorError) as info:
        client(timeout=2).list_tokens("default")
    assert info.value.code == "gateway_unavailable"
    assert "2 seconds" in info.value.message


@responses.activate
def test_tls_failure_says_how_to_fix_it():
    responses.get(TOKENS, body=requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(FrontdoorError) as info:
        client().list_tokens("default")
    assert info.value.code == "gateway_unavailable"
    assert "ca_path" in info.value.message and "validate_certs" in info.value.message


def test_admin_calls_without_api_token_fail_before_any_request():
    with responses.RequestsMock() as mocked:  # asserts no unexpected call happens
        with pytest.raises(FrontdoorError) as info:
            GatewayClient(BASE).list_tokens("default")
        assert info.value.code == "unauthorized"
        assert "FRONTDOOR_API_TOKEN" in info.value.message
        assert len(mocked.calls) == 0


def test_bad_url_is_refused():
    with pytest.raises(FrontdoorError) as info:
        GatewayClient("127.0.0.1:8080")
    assert info.value.code == "invalid_request"


@responses.activate
def test_list_follows_every_page_with_filters():
    responses.get(TOKENS, match=[responses.matchers.query_param_matcher(
        {"size": "1000", "sort": "createdAt,asc", "page": "0", "status": "active,expired", "name": "web"})],
        json={"content": [{"id": "a"}], "totalPages": 2})
    responses.get(TOKENS, match=[responses.matchers.query_param_matcher(
        {"size": "1000", "sort": "createdAt,asc", "page": "1", "status": "active,expired", "name": "web"})],
        json={"content": [{"id": "b"}], "totalPages": 2})
    items = client().list_tokens("default", status=["active", "expired"], name="web")
    assert [i["id"] for i in items] == ["a", "b"]


@responses.activate
def test_cleanup_passes_age_and_dry_run_and_returns_ids():
    responses.delete(TOKENS, match=[responses.matchers.query_param_matcher(
        {"status": "expired,redeemed", "olderThan": "7d", "dryRun": "true"})],
        json={"deleted": 0, "wouldDelete": 2, "ids": ["token-a", "token-b"]})
    assert client().cleanup("default", ["expired", "redeemed"], "7d", dry_run=True) == ["token-a", "token-b"]


@responses.activate
def test_cleanup_without_age_sends_no_older_than():
    responses.delete(TOKENS, match=[responses.matchers.query_param_matcher({"status": "expired"})],
                     json={"deleted": 1, "ids": ["token-a"]})
    assert client().cleanup("default", ["expired"], 0) == ["token-a"]


@responses.activate
def test_delete_accepts_204_and_get_token_returns_the_view():
    responses.delete(TOKENS + "/token-1", status=204)
    responses.get(TOKENS + "/token-1", json={"id": "token-1", "status": "active"})
    c = client()
    assert c.delete_token("default", "token-1") is None
    assert c.get_token("default", "token-1")["status"] == "active"


@responses.activate
def test_one_pooled_session_for_every_call():
    responses.get(TOKENS + "/token-1", json={"id": "token-1"})
    c = client()
    session = c.session
    c.get_token("default", "token-1")
    c.get_token("default", "token-1")
    assert c.session is session
    assert session.get_adapter("http://127.0.0.1").poolmanager is not None


def test_certificate_verification_options():
    assert client().session.verify is True
    assert client(ca_path="/etc/ca.pem").session.verify == "/etc/ca.pem"
    assert client(validate_certs=False, ca_path="/etc/ca.pem").session.verify is False


@responses.activate
def test_ca_chain_needs_no_admin_token():
    responses.get(BASE + "/frontdoor/default/ca", json={"caChain": ["A", "B"]})
    assert GatewayClient(BASE).ca_chain("default") == ["A", "B"]


def test_urllib3_debug_lines_are_redacted(caplog):
    logger = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logger.debug('%s://%s:%s "%s %s %s" %s %s', "http", "127.0.0.1", 9, "POST",
                     "/frontdoor/default/client-certificates/token/" + SECRET, "HTTP/1.1", 201, 100)
    assert caplog.records, "the line itself must still be logged"
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert "crt_[REDACTED]" in caplog.records[-1].getMessage()
