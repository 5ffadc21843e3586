# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client certificates from a DER template: the local CA's hot path.

Why: cryptography's CertificateBuilder spends ~60 us converting Python objects (name,
extensions, key) into DER per certificate, twice the ECDSA signature itself. The local CA
issues one shape only, so everything but the serial, validity, subject, key and subject key
identifier is the same DER every time. This module takes those constant pieces from a
certificate that cryptography itself built (nothing constant is written by hand), splices in
the variable ones, and signs the TBS bytes with the CA key.

Safety: ``CertificateTemplate.self_test`` builds the same certificate both ways and compares
the TBS bytes; the signer uses the template only when they are identical, so a cryptography
release that encodes differently makes the signer fall back to the builder, not issue
something else. The unit tests compare both ways over many keys, subjects and dates.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import hashlib
from typing import List, Optional, Tuple

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = hashes = serialization = ec = NameOID = None

# AttributeType OIDs (2.5.4.10 O, 2.5.4.11 OU, 2.5.4.3 CN), DER-encoded, and the UTF8String tag
# cryptography uses for them.
_OID_O = b"\x06\x03\x55\x04\x0a"
_OID_OU = b"\x06\x03\x55\x04\x0b"
_OID_CN = b"\x06\x03\x55\x04\x03"
_UTF8 = 0x0C
_SKI_OID = b"\x06\x03\x55\x1d\x0e"  # 2.5.29.14 subjectKeyIdentifier


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def read_tlv(data: bytes, pos: int = 0, end: Optional[int] = None) -> Tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``pos``.

    ValueError (or IndexError) if it runs past ``end`` (default: the end of ``data``) or its
    length takes more than 3 bytes: callers also read DER that came from outside (CSRs, other
    signers' certificates) and fall back to cryptography on either error."""
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        size = first & 0x7F
        if not 1 <= size <= 3:
            raise ValueError("length")
        start, length = pos + 2 + size, int.from_bytes(data[pos + 2 : pos + 2 + size], "big")
    if start + length > (len(data) if end is None else end):
        raise ValueError("overrun")
    return tag, start, start + length


def children(data: bytes, start: int, end: int) -> List[bytes]:
    """The encoded elements inside a constructed element's content."""
    out, pos = [], start
    while pos < end:
        _tag, _s, e = read_tlv(data, pos)
        out.append(data[pos:e])
        pos = e
    return out


def _time(value: _dt.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5), whole seconds."""
    if value.tzinfo is not _dt.timezone.utc:
        value = value.astimezone(_dt.timezone.utc)
    # the same digits strftime("%y%m%d%H%M%SZ") writes, at a fraction of its cost
    rest = b"%02d%02d%02d%02d%02dZ" % (value.month, value.day, value.hour, value.minute, value.second)
    if 1950 <= value.year < 2050:
        return b"\x17\x0d%02d" % (value.year % 100) + rest
    return b"\x18\x0f%04d" % value.year + rest


def _integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


_SUBJECTS: dict = {}  # (cn, o, ou) -> DER: the signer and the issued-certificate check ask for the same one


def subject_der(common_name: str, organization: Optional[str], organizational_unit: Optional[str]) -> bytes:
    """The Name the local CA writes: O, OU, CN (those present), one attribute per RDN, UTF8String."""
    key = (common_name, organization, organizational_unit)
    der = _SUBJECTS.get(key)
    if der is None:
        rdns = b""
        for oid, value in ((_OID_O, organization), (_OID_OU, organizational_unit), (_OID_CN, common_name)):
            if value:
                rdns += tlv(0x31, tlv(0x30, oid + tlv(_UTF8, value.encode("utf-8"))))
        der = tlv(0x30, rdns)
        if len(_SUBJECTS) >= 256:
            _SUBJECTS.clear()
        _SUBJECTS[key] = der
    return der


def key_identifier(spki: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1), as cryptography computes it."""
    _tag, start, end = read_tlv(spki)
    algorithm, bits = children(spki, start, end)
    _tag, bstart, bend = read_tlv(bits)
    return hashlib.sha1(bits[bstart + 1 : bend]).digest()  # noqa: S324 - the identifier RFC 5280 defines


def pem(der: bytes) -> str:
    body = binascii.b2a_base64(der, newline=False).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def build_with_cryptography(builder, aki, ca_key, public_key, serial, not_before, not_after, common_name,
                            organization, organizational_unit) -> x509.Certificate:
    """The reference path (and the signer's fallback): cryptography's builder with the same inputs."""
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if organizational_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return (
        builder.subject_name(x509.Name(attributes))
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )


class CertificateTemplate:
    """The constant DER of one client-certificate shape, taken from a cryptography-built certificate.

    ``builder`` must add, in this order, every extension that does not depend on the request,
    and be complete but for subject, key, serial, validity and the two key identifiers, which
    ``tbs`` adds as SKI then AKI (the order LocalCASigner uses).
    """

    def __init__(self, builder: x509.CertificateBuilder, aki: x509.AuthorityKeyIdentifier, ca_key) -> None:
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError("the template signs with ECDSA only")
        self.builder = builder
        self.aki = aki
        self.ca_key = ca_key
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        self.probe_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        now = _dt.datetime(2030, 1, 1, tzinfo=_dt.timezone.utc)
        probe = self.build_with_cryptography(self.probe_key, 1, now, now, "probe", None, None)
        tbs = probe.tbs_certificate_bytes
        _tag, start, end = read_tlv(tbs)
        parts = children(tbs, start, end)
        # version, serial, signature algorithm, issuer, validity, subject, spki, [3] extensions
        if len(parts) != 8 or parts[0][0] != 0xA0 or parts[7][0] != 0xA3:
            raise ValueError("unexpected TBS layout")
        self.version, self.signature_algorithm, self.issuer = parts[0], parts[2], parts[3]
        _tag, estart, eend = read_tlv(parts[7])
        _tag, sstart, send = read_tlv(parts[7], estart)
        extensions = children(parts[7], sstart, send)
        # the constant extensions come first; SKI and AKI are the last two
        self.constant_extensions = b"".join(extensions[:-2])
        self.aki_der = extensions[-1]
        # [3] { SEQUENCE { constant extensions, SKI (20-byte identifier), AKI } } up to the identifier
        ski_head = tlv(0x30, _SKI_OID + tlv(0x04, tlv(0x04, bytes(20))))[:-20]
        body_length = len(self.constant_extensions) + len(ski_head) + 20 + len(self.aki_der)
        sequence_head = tlv(0x30, bytes(body_length))[:-body_length]
        self._extensions_head = (
            tlv(0xA3, bytes(len(sequence_head) + body_length))[:-(len(sequence_head) + body_length)]
            + sequence_head + self.constant_extensions + ski_head
        )
        cert_der = probe.public_bytes(serialization.Encoding.DER)
        _tag, cstart, cend = read_tlv(cert_der)
        self.outer_algorithm = children(cert_der, cstart, cend)[1]

    def build_with_cryptography(self, public_key, serial, not_before, not_after, common_name, organization,
                                organizational_unit) -> x509.Certificate:
        return build_with_cryptography(self.builder, self.aki, self.ca_key, public_key, serial, not_before, not_after,
                                       common_name, organization, organizational_unit)

    def tbs(self, spki: bytes, serial: int, not_before: _dt.datetime, not_after: _dt.datetime, common_name: str,
            organization: Optional[str], organizational_unit: Optional[str]) -> bytes:
        # The SKI is always a 20-byte SHA-1, so everything around it in the extensions is constant.
        extensions = self._extensions_head + key_identifier(spki) + self.aki_der
        return tlv(0x30, b"".join((
            self.version, _integer(serial), self.signature_algorithm, self.issuer,
            tlv(0x30, _time(not_before) + _time(not_after)),
            subject_der(common_name, organization, organizational_unit), spki, extensions,
        )))

    def sign(self, tbs: bytes) -> bytes:
        """The certificate DER: TBS, algorithm, and the CA's ECDSA signature over the TBS."""
        signature = self.ca_key.sign(tbs, self._ecdsa)
        return tlv(0x30, tbs + self.outer_algorithm + tlv(0x03, b"\x00" + signature))

    def self_test(self, public_key=None) -> bool:
        """True when the template's TBS equals cryptography's, byte for byte, for a sample request
        (with ``public_key``, or the key the template was laid out with)."""
        public_key = self.probe_key if public_key is None else public_key
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        start = _dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=_dt.timezone.utc)
        end = _dt.datetime(2051, 2, 3, 4, 5, 6, tzinfo=_dt.timezone.utc)
        for serial, names in ((0x7F << 150, ("a" * 64, "Ö org", "unit")), (0x1234, ("cn", None, None))):
            reference = self.build_with_cryptography(public_key, serial, start, end, *names).tbs_certificate_bytes
            if reference != self.tbs(spki, serial, start, end, *names):
                return False
        return True
