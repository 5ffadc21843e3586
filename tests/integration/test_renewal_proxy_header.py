"""Renewal behind a TLS-terminating proxy that verifies client certificates: the certificate from the proxy's
header (nginx $ssl_client_escaped_cert, Envoy X-Forwarded-Client-Cert) stands for the JWT, only from the
configured proxies' addresses. Real gateway processes; the test client plays the proxy from 127.0.0.1."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from frontdoor_pki.config import ConfigError, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.renewal import certificate_from_proxy_header
from support.crypto import load_cert, make_csr, make_key
from support.gateway import run_gateway

RENEW = "/frontdoor/default/client-certificates/renew"


def enrol(gw, name):
    key = make_key("p256")
    created = gw.create_token(name=name, commonName="%s.example.org" % name)
    assert created.status_code == 201, created.text
    answer = gw.redeem(created.json()["token"], make_csr(key, cn="x")).json()
    return answer, key


def nginx_value(pem: str) -> str:
    return quote(pem, safe="")  # what $ssl_client_escaped_cert holds: the PEM, URL-encoded


def envoy_value(pem: str) -> str:
    return ('By=spiffe://example.org/front;Hash=abc123;Subject="CN=other,O=Example";URI=,'
            'By=spiffe://example.org/gw;Hash=def456;Cert="%s";Subject="CN=x,O=Example, Inc";DNS=a.example'
            % quote(pem, safe=""))


@pytest.fixture(scope="module")
def nginx_gateway(tmp_path_factory):
    config = {"clientCertificateHeader": {"header": "X-SSL-Client-Cert", "format": "nginx", "proxies": ["127.0.0.1"]}}
    with run_gateway(str(tmp_path_factory.mktemp("proxied")), config=config) as gw:
        yield gw


def test_the_proxys_certificate_renews_without_a_jwt(nginx_gateway):
    gw = nginx_gateway
    answer, key = enrol(gw, "px1")
    response = gw.request("POST", RENEW, auth=False, json={"type": "CSR", "value": make_csr(key, cn="x")},
                          headers={"X-SSL-Client-Cert": nginx_value(answer["certificate"])})
    assert response.status_code == 201, response.text
    renewed = response.json()
    assert renewed["previousCertificateId"] == answer["id"] and renewed["commonName"] == "px1.example.org"
    assert load_cert(renewed["certificate"]).subject == load_cert(answer["certificate"]).subject
    # once renewed, the same certificate from the proxy gets the one-renewal-per-certificate answer
    again = gw.request("POST", RENEW, auth=False, json={"type": "CSR", "value": make_csr(make_key("p256"), cn="x")},
                       headers={"X-SSL-Client-Cert": nginx_value(answer["certificate"])})
    assert again.status_code == 409 and again.json()["error"]["code"] == "certificate_already_renewed"


def test_a_header_that_is_not_a_certificate_is_a_4xx(nginx_gateway):
    for value in ("garbage", quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "%ff%fe"):
        response = nginx_gateway.request("POST", RENEW, auth=False,
                                         json={"type": "CSR", "value": make_csr(make_key("p256"), cn="x")},
                                         headers={"X-SSL-Client-Cert": value})
        assert response.status_code == 401, response.text
        assert response.json()["error"]["details"]["reason"] == "proxy_header"


def test_the_header_from_an_address_that_is_not_a_proxy_is_refused(tmp_path):
    config = {"clientCertificateHeader": {"header": "X-SSL-Client-Cert", "format": "nginx", "proxies": ["10.9.9.9"]}}
    with run_gateway(str(tmp_path / "gw"), config=config) as gw:
        answer, key = enrol(gw, "px2")
        response = gw.request("POST", RENEW, auth=False, json={"type": "CSR", "value": make_csr(key, cn="x")},
                              headers={"X-SSL-Client-Cert": nginx_value(answer["certificate"])})
        assert response.status_code == 401
        assert response.json()["error"]["details"]["reason"] == "proxy_untrusted"
        assert gw.request("GET", "/frontdoor/default/client-certificates/" + answer["id"]).json()["renewedBy"] is None


def test_envoy_format_over_http(tmp_path):
    config = {"clientCertificateHeader": {"header": "X-Forwarded-Client-Cert", "format": "envoy",
                                          "proxies": ["127.0.0.0/8"]}}
    with run_gateway(str(tmp_path / "gw"), config=config) as gw:
        answer, key = enrol(gw, "px3")
        response = gw.request("POST", RENEW, auth=False, json={"type": "CSR", "value": make_csr(key, cn="x")},
                              headers={"X-Forwarded-Client-Cert": envoy_value(answer["certificate"])})
        assert response.status_code == 201, response.text


def test_the_header_parsers(tmp_path):
    pem = _a_certificate_pem()
    cert = load_cert(pem)
    assert certificate_from_proxy_header(nginx_value(pem), "nginx") == cert
    assert certificate_from_proxy_header(envoy_value(pem), "envoy") == cert
    for value, kind in (("", "nginx"), ("By=x;Hash=y", "envoy"), ('Cert="%zz"', "envoy"), ("x" * 70000, "nginx")):
        with pytest.raises(FrontdoorError) as info:
            certificate_from_proxy_header(value, kind)
        assert info.value.code == "invalid_renewal_token"


def test_config_refuses_a_proxy_that_is_also_trusted_for_forwarded_for(tmp_path):
    with pytest.raises(ConfigError, match="overlaps forwardedAllowIps"):
        load_config(state_dir=str(tmp_path), env={}, data={
            "forwardedAllowIps": ["10.0.0.0/8"],
            "clientCertificateHeader": {"header": "X-SSL-Client-Cert", "proxies": ["10.1.2.3"]},
        })


def _a_certificate_pem() -> str:
    import datetime as _dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = make_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parser")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
