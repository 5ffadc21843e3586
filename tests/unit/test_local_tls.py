"""The gateway's own server certificate from the local CA (signers/local_tls.py): what is issued, and when it
is reused or issued again."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from frontdoor_pki.signers.local import ensure_local_ca
from frontdoor_pki.signers.local_tls import TLS_CA_DIR, ensure_server_certificate, normalize_names


def _leaf(server) -> x509.Certificate:
    with open(server.cert_path, "rb") as handle:
        return x509.load_pem_x509_certificates(handle.read())[0]


def test_issued_for_the_names_and_verifiable_from_the_root(tmp_path):
    state = str(tmp_path)
    server = ensure_server_certificate(state, ["GW.Example.com.", "127.0.0.1", "::1", "gw.example.com"])
    assert server.issued and server.names == ("gw.example.com", "127.0.0.1", "::1")
    cert = _leaf(server)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    for path, mode in ((server.key_path, 0o600), (server.cert_path, 0o600), (server.ca_path, 0o644)):
        assert os.stat(path).st_mode & 0o777 == mode
    # what a TLS client does: the presented chain (leaf + TLS intermediate) verifies against ca.pem only
    client = ssl.create_default_context(cafile=server.ca_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server.cert_path, server.key_path)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(incoming, outgoing, server_hostname="gw.example.com")
    s = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(outgoing.read())
        incoming.write(s_out.read())
    assert c.version() in ("TLSv1.2", "TLSv1.3")


def test_the_client_certificate_intermediates_are_not_the_issuer(tmp_path):
    state = str(tmp_path)
    ensure_local_ca(state, "default")
    server = ensure_server_certificate(state, ["localhost"])
    with open(os.path.join(state, "ca", "default", "intermediate.pem"), "rb") as handle:
        client_ca = x509.load_pem_x509_certificate(handle.read())
    assert _leaf(server).issuer != client_ca.subject
    with open(os.path.join(state, "ca", "root.pem"), "rb") as handle:
        assert handle.read() == open(server.ca_path, "rb").read()  # one root for both


def test_reused_while_valid_and_reissued_when_the_names_change(tmp_path):
    state = str(tmp_path)
    first = _leaf(ensure_server_certificate(state, ["localhost", "127.0.0.1"])).serial_number
    again = ensure_server_certificate(state, ["127.0.0.1", "LOCALHOST"])  # same set, other order and case
    assert not again.issued and _leaf(again).serial_number == first
    changed = ensure_server_certificate(state, ["localhost"])
    assert changed.issued and _leaf(changed).serial_number != first


def test_reissued_near_its_end_or_when_the_files_do_not_match(tmp_path):
    state = str(tmp_path)
    first = ensure_server_certificate(state, ["localhost"])
    # the same certificate re-signed by the TLS intermediate with 10 days left: inside the renewal window
    with open(os.path.join(state, "ca", TLS_CA_DIR, "intermediate.key"), "rb") as handle:
        issuer_key = serialization.load_pem_private_key(handle.read(), None)
    with open(first.key_path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    old = _leaf(first)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=80))
               .not_valid_after(now + dt.timedelta(days=10)))
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    near_end = builder.sign(issuer_key, hashes.SHA256())
    with open(first.cert_path, "wb") as handle:
        handle.write(near_end.public_bytes(serialization.Encoding.PEM))
    renewed = ensure_server_certificate(state, ["localhost"])
    assert renewed.issued and renewed.not_after > now + dt.timedelta(days=80)
    # a key that is not the certificate's (e.g. restored from another backup): reissued, never served
    os.remove(renewed.key_path)
    with open(first.cert_path, "rb") as handle:
        kept = handle.read()
    os.symlink(os.path.join(state, "ca", "root.key"), renewed.key_path)
    fixed = ensure_server_certificate(state, ["localhost"])
    assert fixed.issued and open(fixed.cert_path, "rb").read() != kept


@pytest.mark.parametrize("names", [[], [""], ["bad_name"], ["-x.example"], ["a" * 64 + ".example"], ["bücher.example"],
                                   ["gw.example/evil"]])
def test_bad_names_are_refused(names):
    with pytest.raises(ValueError):
        normalize_names(names)
