"""The SANs a test certificate carries, read back by cryptography, and the token SANs the signer tests share."""

from __future__ import annotations

from cryptography import x509

SPIFFE = "spiffe://example.org/ns/prod/sa/api"
#: a token's pre-approved SANs of every kind
SANS = {"dns": ["api.example.com", "api-2.example.com"], "ip": ["10.0.0.7", "2001:db8::7"], "uri": [SPIFFE],
        "email": ["ops@example.com"]}


def cert_sans(cert, sort: bool = True) -> dict:
    """{kind: [values]} of the SAN extension of ``cert`` (a certificate or its PEM); {} without one. Sorted, or in
    the certificate's order with ``sort=False``. Fails on a kind of name no token approves."""
    if isinstance(cert, str):
        cert = x509.load_pem_x509_certificate(cert.encode("ascii"))
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    found = {
        "dns": names.get_values_for_type(x509.DNSName),
        "ip": [ip.compressed for ip in names.get_values_for_type(x509.IPAddress)],
        "uri": names.get_values_for_type(x509.UniformResourceIdentifier),
        "email": names.get_values_for_type(x509.RFC822Name),
    }
    assert sum(len(v) for v in found.values()) == len(list(names)), "a kind of name no token approves"
    return {kind: sorted(values) if sort else values for kind, values in found.items() if values}
