"""The local CA's DER template must produce exactly what cryptography's builder produces.

The template is a speed-up (docs/performance.md): it is only acceptable if, for every input the
service can hand it, its TBS bytes equal the builder's byte for byte and the result is a valid
certificate signed by the intermediate.
"""

from __future__ import annotations

import datetime as _dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from frontdoor_pki import der_template
from frontdoor_pki.model import SignRequest, Subject, utcnow
from frontdoor_pki.signers.local import LocalCASigner

UTC = _dt.timezone.utc


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return LocalCASigner(str(tmp_path_factory.mktemp("ca")), "default")


@pytest.fixture(scope="module")
def keys():
    return {
        "p256": [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(4)],
        "p384": [ec.generate_private_key(ec.SECP384R1()).public_key() for _ in range(2)],
        "ed25519": [ed25519.Ed25519PrivateKey.generate().public_key() for _ in range(2)],
        "rsa2048": [rsa.generate_private_key(65537, 2048).public_key()],
        "rsa4096": [rsa.generate_private_key(65537, 4096).public_key()],
    }


def _text(rng: random.Random, low: int, high: int) -> str:
    """Up to ``high`` characters, and (cryptography's own limit for a CN) up to 64 UTF-8 bytes."""
    alphabet = "abcXYZ019 .-_'" + "éÖß漢字€" + "\u0394\u03a9"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high))).strip() or "x"
    while len(text.encode("utf-8")) > 64:
        text = text[:-1]
    return text


def test_the_signer_uses_the_template_for_every_key_kind(signer):
    assert signer._templates[False] is not None and signer._templates[True] is not None


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa2048", "rsa4096"])
def test_template_tbs_equals_cryptography_builder(signer, keys, kind):
    rng = random.Random(kind)
    for public_key in keys[kind]:
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        template = signer._templates[is_rsa]
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for _ in range(40):
            start = _dt.datetime(rng.choice([1999, 2026, 2049, 2050, 2100]), rng.randint(1, 12), rng.randint(1, 28),
                                 rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999),
                                 tzinfo=rng.choice([UTC, _dt.timezone(_dt.timedelta(hours=2))]))
            end = start + _dt.timedelta(seconds=rng.randint(1, 40 * 365 * 86400))
            serial = rng.choice([1, 127, 128, 255, 256, rng.getrandbits(64), rng.getrandbits(159),
                                 (1 << 158) | rng.getrandbits(158), x509.random_serial_number()])
            names = (_text(rng, 1, 64), rng.choice([None, "", _text(rng, 1, 64)]), rng.choice([None, _text(rng, 1, 64)]))
            reference = template.build_with_cryptography(public_key, serial, start, end, *names)
            assert template.tbs(spki, serial, start, end, *names) == reference.tbs_certificate_bytes, (serial, start, names)


def test_template_certificate_is_valid_and_signed_by_the_intermediate(signer, keys):
    inter = x509.load_pem_x509_certificate(signer.ca_chain()[0].encode())
    now = utcnow()
    for kind in ("p256", "rsa2048", "ed25519"):
        public_key = keys[kind][0]
        request = SignRequest(
            frontdoor_id="default", csr_pem="", csr=None, subject=Subject("device-1", "Example Corp", "Unit"),
            not_before=now - _dt.timedelta(seconds=60), not_after=now + _dt.timedelta(days=30), token_id="t", name="n",
            public_key=public_key,
        )
        issued = signer.sign(request)
        cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
        assert cert.public_bytes(serialization.Encoding.DER) == issued.certificate.public_bytes(serialization.Encoding.DER)
        cert.verify_directly_issued_by(inter)
        inter.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        assert cert.public_key() == public_key
        assert "%x" % cert.serial_number == issued.serial_number
        assert cert.not_valid_before_utc == issued.not_before and cert.not_valid_after_utc == issued.not_after
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.key_encipherment == (kind == "rsa2048")


def test_a_64_character_multibyte_common_name_is_issued(signer, keys):
    """64 characters is the service's limit (RFC 5280 counts characters); cryptography's builder
    refuses a CN over 64 UTF-8 *bytes*, the template issues it and the certificate reads back."""
    now = utcnow()
    cn = "漢" * 64
    request = SignRequest(
        frontdoor_id="default", csr_pem="", csr=None, subject=Subject(cn, None, None),
        not_before=now, not_after=now + _dt.timedelta(days=1), token_id="t", name="n", public_key=keys["p256"][0],
    )
    cert = x509.load_pem_x509_certificate(signer.sign(request).certificate_pem.encode())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == cn


def test_self_test_rejects_a_template_that_encodes_differently(signer):
    template = signer._templates[False]
    probe = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert template.self_test(probe)
    broken = der_template.CertificateTemplate(template.builder, template.aki, template.ca_key)
    broken.issuer = broken.issuer[:-1] + bytes([broken.issuer[-1] ^ 1])
    assert not broken.self_test(probe)


def test_signer_falls_back_to_the_builder_without_a_template(tmp_path, keys):
    signer = LocalCASigner(str(tmp_path), "default")
    signer._templates = {False: None, True: None}
    now = utcnow()
    request = SignRequest(
        frontdoor_id="default", csr_pem="", csr=None, subject=Subject("fallback", None, None),
        not_before=now, not_after=now + _dt.timedelta(days=1), token_id="t", name="n", public_key=keys["p256"][0],
    )
    cert = x509.load_pem_x509_certificate(signer.sign(request).certificate_pem.encode())
    assert cert.subject.rfc4514_string() == "CN=fallback"


def test_der_lengths_round_trip():
    for n in (0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 20):
        encoded = der_template.tlv(0x04, b"\x00" * n)
        tag, start, end = der_template.read_tlv(encoded)
        assert (tag, end - start, end) == (0x04, n, len(encoded))
