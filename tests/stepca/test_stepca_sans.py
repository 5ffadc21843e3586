"""Pre-approved SANs on the step-ca signer, against a real step-ca: the template writes the token's SANs
(DNS, IP, a SPIFFE URI, an email) from the OTT's frontdoor claim, never the CSR's; a CSR that asks for
other SANs still gets exactly the token's."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import SubjectAltNames
from support.crypto import load_cert, make_csr, make_key
from support.sans import SANS, cert_sans

pytestmark = pytest.mark.stepca



# a CSR asking for SANs of every kind, none of them the token's
OTHERS = x509.SubjectAlternativeName([
    x509.DNSName("evil.example.net"), x509.IPAddress(ipaddress.ip_address("192.0.2.67")),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/x/sa/admin"), x509.RFC822Name("root@example.net"),
])


@pytest.mark.parametrize("asks", [False, True], ids=["csr-without-sans", "csr-asking-for-others"])
def test_stepca_certificate_carries_exactly_the_tokens_sans(service, asks):
    _, secret = service.create_token("default", name="stepca-sans", common_name="api.example.com",
                                     subject_alt_names=SANS)
    csr = make_csr(make_key("p256"), cn="device", extensions=[OTHERS] if asks else [])
    result = service.redeem("default", secret, csr)
    cert = load_cert(result.certificate.certificate_pem)
    assert cert_sans(cert) == {kind: sorted(values) for kind, values in SANS.items()}
    assert result.certificate.subject_alt_names.to_dict() == SANS


def test_stepca_token_without_sans_gives_none(service):
    _, secret = service.create_token("default", name="stepca-no-sans", common_name="plain.example")
    cert = load_cert(service.redeem("default", secret, make_csr(make_key("p256"), cn="x", sans=["evil.example.net"]))
                     .certificate.certificate_pem)
    assert cert_sans(cert) == {}


EDGE = {"dns": ["xn--bcher-kva.example", "a-1.b2.example"], "ip": ["0.0.0.0", "::1", "fe80::1"],
        "uri": ["spiffe://example.org/a!$&'()*+;=:@%41x?q=1#f", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
                "https://user@Example.org:8443/p/%2F?x=%20"],
        "email": ["first.last+tag@example.com", "o'hara@example.com"]}


def test_stepca_writes_edge_values_unchanged(service):
    """Values the rules accept at their edges come back from step-ca exactly (Go's net/url, net, x509)."""
    _, secret = service.create_token("default", name="stepca-edge", common_name="edge", subject_alt_names=EDGE)
    cert = load_cert(service.redeem("default", secret, make_csr(make_key("p256"), cn="x")).certificate.certificate_pem)
    assert cert_sans(cert) == {kind: sorted(values) for kind, values in EDGE.items()}


def test_a_template_from_before_sans_refuses_tokens_with_sans_and_says_to_reinstall(tmp_path, make_service):
    """Upgrading without reinstalling the template: a token with SANs is refused before anything is signed
    (signer_unavailable naming step-ca-template), the token stays redeemable; tokens without SANs keep working."""
    from frontdoor_pki.signers.stepca import x509_template_text
    from support.stepca import StepCA

    text = x509_template_text()
    start, end = text.index("{{- if .Token.frontdoor.sans }}"), text.index("{{- end }}\n", text.index('"sans": [],'))
    old = text[:start] + '  "sans": [],\n' + text[end + len("{{- end }}\n"):]
    assert ".sans" not in old and '"sans": [],' in old
    ca = StepCA.create(str(tmp_path / "ca"), template={"x509": {"template": old}})
    ca.start()
    try:
        service = make_service(ca)
        record, secret = service.create_token("default", name="old-template", common_name="old.example",
                                              subject_alt_names={"dns": ["old.example"]})
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
        error = info.value
        assert error.code == "signer_unavailable" and "subject alternative names" in error.message
        assert "step-ca-template" in error.message
        assert service.get_token("default", record.id).status() == "active"
        # refused before the sign request (the check of a returned certificate would say "step-ca issued ...")
        assert error.message.startswith("Cannot sign with step-ca") and "issued" not in error.message
        assert service.list_certificates("default").total == 0
        _, plain = service.create_token("default", name="no-sans", common_name="plain.example")
        assert service.redeem("default", plain, make_csr(make_key("p256"), cn="x")).certificate.subject_alt_names == \
            SubjectAltNames()
    finally:
        ca.stop()
