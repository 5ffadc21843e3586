"""Pre-approved SANs on the Vault / OpenBao PKI signer, against a real OpenBao.

The certificate carries exactly the token's SANs (DNS, IP, a SPIFFE URI, an email) whatever the CSR asks;
tokens with SANs sign with a role of their own, so the roles of tokens without SANs stay strict; an
operator role that refuses the SANs is a clear signer_unavailable that leaves the token redeemable.
"""

from __future__ import annotations

import ipaddress
import time

import pytest
from cryptography import x509
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.signers.vault_pki import role_name, role_parameters
from frontdoor_pki.tokens import hash_secret
from support.crypto import load_cert, make_csr, make_key
from support.sans import SANS, SPIFFE, cert_sans

pytestmark = pytest.mark.vault

CSR_SANS = x509.SubjectAlternativeName([
    x509.DNSName("evil.example.net"), x509.IPAddress(ipaddress.ip_address("192.0.2.66")),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/admin"), x509.RFC822Name("root@example.net"),
])


def test_vault_certificate_carries_exactly_the_tokens_sans(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="vault-sans", common_name="api.example.com",
                                     organization="SAN Org", subject_alt_names=SANS)
    result = service.redeem("default", secret, make_csr(make_key("p256"), cn="device", extensions=[CSR_SANS]))
    cert = load_cert(result.certificate.certificate_pem)
    assert cert_sans(cert) == {kind: sorted(values) for kind, values in SANS.items()}
    assert result.certificate.subject_alt_names.to_dict() == SANS
    # read back from the KV store (the optional subjectAltNames field of the token and certificate documents)
    assert service.get_certificate("default", result.certificate.id).subject_alt_names.to_dict() == SANS
    assert service.get_token("default", result.certificate.token_id).subject_alt_names.to_dict() == SANS
    signer = service.signers["default"]
    # signed with the SAN role; the role of tokens without SANs (same O) is another one
    with_sans = role_name("SAN Org", None, signer.role_max_ttl, False, sans=True)
    assert with_sans in signer._roles and with_sans != role_name("SAN Org", None, signer.role_max_ttl, False)


def test_vault_token_without_sans_still_gives_none(bao, make_vault_service):
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="vault-no-sans", common_name="plain")
    cert = load_cert(service.redeem("default", secret, make_csr(make_key("p256"), cn="x", extensions=[CSR_SANS]))
                     .certificate.certificate_pem)
    assert cert_sans(cert) == {}


def test_operator_role_that_refuses_uri_sans_leaves_the_token_redeemable(bao, make_vault_service):
    """manageRoles: false with a strict role: OpenBao refuses the URI SAN; the token survives."""
    role = "ops-strict-sans-%d" % (int(time.time() * 1000) % 10**9)
    bao.root("POST", "pki/roles/%s" % role, json=role_parameters(None, None, 365 * 86400, False))
    service, _ = make_vault_service(
        bao, frontdoors=[{"id": "default", "signer": {"type": "vault", "manageRoles": False, "role": role}}],
    )
    _, secret = service.create_token("default", name="strict", common_name="strict", subject_alt_names={"uri": [SPIFFE]})
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, make_csr(make_key("p256"), cn="x"))
    assert info.value.code == "signer_unavailable", info.value
    token = service.store.find_token_by_hash(hash_secret(secret))
    assert token.state == "active" and token.claim_id is None


EDGE = {"dns": ["xn--bcher-kva.example", "a-1.b2.example"], "ip": ["0.0.0.0", "::1", "fe80::1"],
        "uri": ["spiffe://example.org/a!$&'()*+;=:@%41x?q=1#f", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
                "https://user@Example.org:8443/p/%2F?x=%20"],
        "email": ["first.last+tag@example.com", "o'hara@example.com"]}


def test_vault_writes_edge_values_unchanged(bao, make_vault_service):
    """Values the rules accept at their edges come back from OpenBao exactly (Go's net/url, net, x509)."""
    service, _ = make_vault_service(bao)
    _, secret = service.create_token("default", name="vault-edge", common_name="edge", subject_alt_names=EDGE)
    cert = load_cert(service.redeem("default", secret, make_csr(make_key("p256"), cn="x")).certificate.certificate_pem)
    assert cert_sans(cert) == {kind: sorted(values) for kind, values in EDGE.items()}
