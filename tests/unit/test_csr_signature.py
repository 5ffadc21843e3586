"""The CSR signature check made with the already-loaded key must agree with cryptography's own.

``csr.signature_is_valid`` verifies the common algorithms with ``public_key.verify`` instead of
``CertificateSigningRequest.is_signature_valid`` (which parses the key again); these tests hold it
to the same answer on real CSRs of every key kind and hash, tampered ones, and CSRs whose
algorithm identifier names another key type than the key they carry.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from frontdoor_pki import csr as csrmod
from support.crypto import shared_key

# AlgorithmIdentifier DER: ecdsa-with-SHA256 (no parameters), sha256WithRSAEncryption (NULL parameters)
_ALG_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_ALG_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _relabelled(csr: x509.CertificateSigningRequest, algorithm_der: bytes) -> x509.CertificateSigningRequest:
    """The same request info and signature under another signature algorithm identifier."""
    der = _tlv(0x30, csr.tbs_certrequest_bytes + algorithm_der + _tlv(0x03, b"\x00" + csr.signature))
    return x509.load_der_x509_csr(der)


def _csr(key, algorithm=hashes.SHA256(), rsa_padding=None) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sig-check")])
    )
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        algorithm = None
    if rsa_padding is not None:
        return builder.sign(key, algorithm, rsa_padding=rsa_padding)
    return builder.sign(key, algorithm)


def _tampered(csr: x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    return x509.load_der_x509_csr(bytes(der))


def _agree(csr: x509.CertificateSigningRequest) -> bool:
    try:
        expected = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - cryptography refuses some odd signatures outright
        expected = False
    ours = csrmod.signature_is_valid(csr, csr.public_key())
    assert ours is expected
    return ours


CASES = [
    ("p256", hashes.SHA256()), ("p256", hashes.SHA384()), ("p256", hashes.SHA512()),
    ("p384", hashes.SHA384()), ("p384", hashes.SHA256()),
    ("rsa2048", hashes.SHA256()), ("rsa2048", hashes.SHA384()), ("rsa2048", hashes.SHA512()),
    ("ed25519", None), ("ed448", None), ("p521", hashes.SHA256()), ("rsa2048", hashes.SHA224()),
]


@pytest.mark.parametrize("kind,algorithm", CASES, ids=["%s-%s" % (k, a.name if a else "eddsa") for k, a in CASES])
def test_valid_and_tampered_agree_with_cryptography(kind, algorithm):
    csr = _csr(shared_key(kind), algorithm)
    assert _agree(csr) is True
    assert _agree(_tampered(csr)) is False


def test_rsa_pss_is_left_to_cryptography():
    csr = _csr(shared_key("rsa2048"), hashes.SHA256(),
               rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32))
    assert csr.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert _agree(csr) is True
    assert _agree(_tampered(csr)) is False


def test_algorithm_naming_another_key_type_is_refused():
    """An EC CSR relabelled as sha256WithRSAEncryption, and an RSA one as ecdsa-with-SHA256."""
    ec_csr = _csr(shared_key("p256"))
    assert _relabelled(ec_csr, _ALG_ECDSA_SHA256).public_bytes(serialization.Encoding.DER) == \
        ec_csr.public_bytes(serialization.Encoding.DER)  # the rebuild itself changes nothing
    odd = _relabelled(ec_csr, _ALG_RSA_SHA256)
    assert odd.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert _agree(odd) is False
    odd = _relabelled(_csr(shared_key("rsa2048")), _ALG_ECDSA_SHA256)
    assert odd.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert _agree(odd) is False


def test_a_key_that_did_not_sign_is_refused():
    """The key passed in is what gets checked: another key of the same kind fails."""
    csr = _csr(shared_key("p256", 0))
    assert csrmod.signature_is_valid(csr, shared_key("p256", 1).public_key()) is False
    csr = _csr(shared_key("rsa2048", 0))
    assert csrmod.signature_is_valid(csr, shared_key("rsa2048", 1).public_key()) is False
    assert isinstance(shared_key("rsa2048", 1), rsa.RSAPrivateKey)
    assert isinstance(shared_key("p256", 1), ec.EllipticCurvePrivateKey)


def test_redemption_path_refuses_a_tampered_csr():
    pem = _tampered(_csr(shared_key("p256"))).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(Exception) as info:
        csrmod.load_csr_and_key(pem)
    assert getattr(info.value, "code", None) == "invalid_csr"
    assert info.value.details == {"reason": "bad_signature"}
