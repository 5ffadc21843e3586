"""TEST-ONLY DER builder for PKCS#10 requests whose subject holds any ASN.1 type.

cryptography's public API only writes subjects it considers valid (string types it knows, with
values that encode), and pyasn1 is not installed, so the hostile-CSR tests (unit and property) build the
CertificationRequestInfo here and sign it with a real key (cryptography), giving a request whose
signature verifies and whose subject is as odd as we like. It writes definite-length DER and
nothing else; it parses nothing and must never be used outside tests.
"""

from __future__ import annotations

import base64
from typing import Iterable, Sequence, Tuple

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# tag numbers (universal class) the strategies pick from
BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID, ENUMERATED = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A
UTF8, NUMERIC, PRINTABLE, T61, IA5, UTC_TIME, GENERALIZED_TIME = 0x0C, 0x12, 0x13, 0x14, 0x16, 0x17, 0x18
VISIBLE, GENERAL, UNIVERSAL, BMP = 0x1A, 0x1B, 0x1C, 0x1E
SEQUENCE, SET = 0x30, 0x31
STRING_TAGS = (UTF8, NUMERIC, PRINTABLE, T61, IA5, VISIBLE, GENERAL, UNIVERSAL, BMP)
ODD_TAGS = (BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID, ENUMERATED, UTC_TIME, GENERALIZED_TIME,
            SEQUENCE, SET, 0x80, 0xA0, 0x1F, 0x00, 0x7F)

ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"


def tlv(tag: int, content: bytes) -> bytes:
    """One definite-length TLV (short form below 128 bytes, long form above)."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER; the strategies keep the second arc below 40 under arcs 0 and 1."""
    arcs = [int(a) for a in dotted.split(".")]
    return tlv(OID, b"".join(_base128(a) for a in [arcs[0] * 40 + arcs[1]] + arcs[2:]))


def _base128(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode_string(tag: int, text: str) -> bytes:
    """The content bytes a string type would carry (BMP: UTF-16BE, Universal: UTF-32BE, else UTF-8)."""
    if tag == BMP:
        return text.encode("utf-16-be", "surrogatepass")
    if tag == UNIVERSAL:
        return text.encode("utf-32-be", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


Attribute = Tuple[str, int, bytes]  # (dotted OID, tag, content bytes)


def name(rdns: Sequence[Sequence[Attribute]]) -> bytes:
    """A Name: SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)."""
    return tlv(SEQUENCE, b"".join(
        tlv(SET, b"".join(tlv(SEQUENCE, oid(dotted) + tlv(tag, content)) for dotted, tag, content in rdn))
        for rdn in rdns
    ))


def request_info(subject_der: bytes, public_key, attributes: bytes = b"") -> bytes:
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return tlv(SEQUENCE, tlv(INTEGER, b"\x00") + subject_der + spki + tlv(0xA0, attributes))


def signed_request(info_der: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """CertificationRequest DER: the info signed with ``key`` (ECDSA with SHA-256), so it verifies."""
    signature = key.sign(info_der, ec.ECDSA(hashes.SHA256()))
    algorithm = tlv(SEQUENCE, oid(ECDSA_WITH_SHA256))
    return tlv(SEQUENCE, info_der + algorithm + tlv(BIT_STRING, b"\x00" + signature))


def pem(der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines: Iterable[str] = (body[i : i + 64] for i in range(0, len(body), 64))
    return "-----BEGIN CERTIFICATE REQUEST-----\n%s\n-----END CERTIFICATE REQUEST-----\n" % "\n".join(lines)


def odd_csr(rdns: Sequence[Sequence[Attribute]], key: ec.EllipticCurvePrivateKey) -> str:
    """A PEM request for ``key`` whose subject is exactly ``rdns``, with a valid signature."""
    return pem(signed_request(request_info(name(rdns), key.public_key()), key))
