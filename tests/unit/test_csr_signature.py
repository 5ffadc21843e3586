"""Proof of possession: a CSR is accepted only when cryptography's ``is_signature_valid`` says its
signature verifies with the key it carries; every other answer (false, or an algorithm
cryptography refuses to verify) is ``invalid_csr`` with reason ``bad_signature``."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from frontdoor_pki.csr import load_csr_and_key
from frontdoor_pki.errors import FrontdoorError
from support.crypto import shared_key

# AlgorithmIdentifier DER: ecdsa-with-SHA256 (no parameters), sha256WithRSAEncryption and
# md5WithRSAEncryption (NULL parameters), and an OID no library knows (1.2.3.5)
_ALG_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_ALG_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")
_ALG_RSA_MD5 = bytes.fromhex("300d06092a864886f70d0101040500")
_ALG_UNKNOWN = bytes.fromhex("300506032a0305")


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return "-----BEGIN CERTIFICATE REQUEST-----\n%s-----END CERTIFICATE REQUEST-----\n" % body


def _relabelled(csr: x509.CertificateSigningRequest, algorithm_der: bytes) -> str:
    """The same request info and signature under another signature algorithm identifier."""
    return _pem(_tlv(0x30, csr.tbs_certrequest_bytes + algorithm_der + _tlv(0x03, b"\x00" + csr.signature)))


def _csr(key, algorithm=hashes.SHA256(), rsa_padding=None) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sig-check")])
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = None
    if rsa_padding is not None:
        return builder.sign(key, algorithm, rsa_padding=rsa_padding)
    return builder.sign(key, algorithm)


def _tampered(csr: x509.CertificateSigningRequest) -> str:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    return _pem(bytes(der))


def _as_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _reason(pem: str) -> str:
    with pytest.raises(FrontdoorError) as info:
        load_csr_and_key(pem)
    assert info.value.code == "invalid_csr" and info.value.status == 400
    return info.value.details["reason"]


CASES = [
    ("p256", hashes.SHA256()), ("p256", hashes.SHA384()), ("p256", hashes.SHA512()),
    ("p384", hashes.SHA384()), ("p384", hashes.SHA256()),
    ("rsa2048", hashes.SHA256()), ("rsa2048", hashes.SHA384()), ("rsa2048", hashes.SHA512()),
    ("rsa2048", hashes.SHA224()), ("ed25519", None),
]


@pytest.mark.parametrize("kind,algorithm", CASES, ids=["%s-%s" % (k, a.name if a else "eddsa") for k, a in CASES])
def test_valid_signatures_load_and_tampered_ones_are_refused(kind, algorithm):
    csr = _csr(shared_key(kind), algorithm)
    loaded, key = load_csr_and_key(_as_pem(csr))
    assert loaded == csr and key == shared_key(kind).public_key()
    assert _reason(_tampered(csr)) == "bad_signature"


def test_rsa_pss():
    csr = _csr(shared_key("rsa2048"), hashes.SHA256(),
               rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32))
    assert csr.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    load_csr_and_key(_as_pem(csr))
    assert _reason(_tampered(csr)) == "bad_signature"


def test_algorithm_naming_another_key_type_is_refused():
    """An EC CSR relabelled as sha256WithRSAEncryption, and an RSA one as ecdsa-with-SHA256."""
    ec_csr = _csr(shared_key("p256"))
    load_csr_and_key(_relabelled(ec_csr, _ALG_ECDSA_SHA256))  # the rebuild itself changes nothing
    assert _reason(_relabelled(ec_csr, _ALG_RSA_SHA256)) == "bad_signature"
    assert _reason(_relabelled(_csr(shared_key("rsa2048")), _ALG_ECDSA_SHA256)) == "bad_signature"


def test_unknown_or_broken_signature_algorithms_are_refused():
    """An OID cryptography does not know, and MD5 (which it will not verify), are bad_signature."""
    rsa_csr = _csr(shared_key("rsa2048"))
    assert _reason(_relabelled(rsa_csr, _ALG_UNKNOWN)) == "bad_signature"
    assert _reason(_relabelled(rsa_csr, _ALG_RSA_MD5)) == "bad_signature"


def test_signature_by_another_key_is_refused():
    """A request info carrying one key, signed by another key of the same kind."""
    mine, other = shared_key("p256", 0), shared_key("p256", 1)
    csr = _csr(mine)
    forged = _csr(other)
    assert _reason(_pem(_tlv(0x30, csr.tbs_certrequest_bytes + _ALG_ECDSA_SHA256
                             + _tlv(0x03, b"\x00" + forged.signature)))) == "bad_signature"
