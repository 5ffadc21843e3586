"""Redemption with any CSR, through the real engine (SQLite + local CA).

A CSR is the one structured, signed, binary thing a stranger sends us. Whatever it holds, the
redemption either issues one certificate or fails with a 4xx FrontdoorError, and a refused
redemption leaves the token redeemable. The CSRs are built with a test-only DER writer
(support/odd_der.py) so their subjects can hold any ASN.1 type while their signatures still verify.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from frontdoor_pki.errors import ERROR_STATUS, FrontdoorError
from frontdoor_pki.tokens import new_secret
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from support.crypto import make_csr, shared_key
from support.odd_der import ODD_TAGS, STRING_TAGS, encode_string, name, odd_csr, pem, request_info, signed_request

KEY = shared_key("p256", 7)  # the odd CSRs' key; the good CSR after a refusal uses another one
GOOD_CSR = make_csr(shared_key("p256", 8), cn="good-after-refusal")
GOOD_DER = x509.load_pem_x509_csr(GOOD_CSR.encode()).public_bytes(serialization.Encoding.DER)
ENGINE = settings(deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])

WELL_KNOWN = ["2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.5", "1.2.840.113549.1.9.1", "2.5.4.6", "0.9.2342.19200300.100.1.25"]
random_oid = st.builds(
    lambda first, second, rest: ".".join(str(a) for a in [first, second % 40 if first < 2 else second, *rest]),
    st.integers(0, 2), st.integers(0, 2**20), st.lists(st.integers(0, 2**70), max_size=6),
)
oids = st.sampled_from(WELL_KNOWN) | random_oid
string_value = st.builds(lambda tag, text: (tag, encode_string(tag, text)), st.sampled_from(STRING_TAGS),
                         st.text(max_size=80))
odd_value = st.tuples(st.sampled_from(ODD_TAGS + STRING_TAGS), st.binary(max_size=80))
attribute = st.builds(lambda dotted, value: (dotted, value[0], value[1]), oids, string_value | odd_value)
subjects = st.lists(st.lists(attribute, min_size=1, max_size=3), max_size=6)
# mostly-ordinary subjects: a UTF8String CN of any text (incl. unicode) next to odd attributes,
# so that some odd CSRs get past the parser and as far as issuance
plain_cn = st.builds(lambda text: [("2.5.4.3", 0x0C, text.encode("utf-8"))], st.text(min_size=1, max_size=70))
near_plain_subjects = st.builds(lambda cn, rest: [cn, *rest], plain_cn, st.lists(st.lists(attribute, min_size=1,
                                                                                          max_size=2), max_size=3))


def mutate(der: bytes, edits) -> bytes:
    data = bytearray(der)
    for kind, position, byte in edits:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "delete" and at < len(data):
            del data[at]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, 10_000),
                           st.integers(0, 255)), min_size=1, max_size=4)
# the signed part mutated and signed again: the signature verifies, so the parser sees the damage
resigned = st.builds(
    lambda rdns, e: pem(signed_request(mutate(request_info(name(rdns), KEY.public_key()), e), KEY)), subjects, edits
)
raw_mutation = st.builds(lambda e: pem(mutate(GOOD_DER, e)), edits)
pem_noise = st.builds(
    lambda head, body, tail: head + body + tail,
    st.sampled_from(["-----BEGIN CERTIFICATE REQUEST-----\n", "-----BEGIN NEW CERTIFICATE REQUEST-----\n", ""]),
    st.text() | st.binary().map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["\n-----END CERTIFICATE REQUEST-----\n", "", "\n-----END NEW CERTIFICATE REQUEST-----"]),
)
odd_csrs = (subjects | near_plain_subjects).map(lambda rdns: odd_csr(rdns, KEY)) | resigned | raw_mutation | pem_noise


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def redeem_outcome(service, secret: str, csr_pem, label: str = "odd CSR"):
    """The Redemption, or the FrontdoorError, which must carry a 4xx code; nothing else may escape."""
    try:
        redemption = service.redeem("default", secret, csr_pem)
    except FrontdoorError as exc:
        event("%s refused: %s %s" % (label, exc.code, (exc.details or {}).get("reason")))
        assert 400 <= ERROR_STATUS[exc.code] < 500, (exc.code, exc.message)
        return None, exc
    event("%s issued" % label)
    return redemption, None


@ENGINE
@given(csr_pem=odd_csrs, locked_cn=st.sampled_from([None, "locked.example"]))
@example(csr_pem=odd_csr([[("2.5.4.3", 0x02, b"\x01")]], KEY), locked_cn=None)  # INTEGER as CN
@example(csr_pem=odd_csr([[("2.5.4.3", 0x1E, b"\x00")]], KEY), locked_cn="x")  # BMPString of odd length
@example(csr_pem=odd_csr([[("2.5.4.10", 0x0C, b"\xff\xfe")]], KEY), locked_cn="x")  # UTF8String, not UTF-8
@example(csr_pem=odd_csr([[("2.5.4.3", 0x1C, "\U0001f600".encode("utf-32-be"))]], KEY), locked_cn=None)
def test_any_csr_issues_or_is_refused_with_4xx_and_a_refusal_keeps_the_token(service, csr_pem, locked_cn):
    _record, secret = service.create_token("default", name="property", common_name=locked_cn)
    redemption, error = redeem_outcome(service, secret, csr_pem)
    if error is None:
        issued = x509.load_pem_x509_certificate(redemption.certificate.certificate_pem.encode())
        requested = x509.load_pem_x509_csr(csr_pem.strip().encode())
        assert spki(issued.public_key()) == spki(requested.public_key())
        return
    # refused: the token must still be redeemable, by a good CSR
    again, error_again = redeem_outcome(service, secret, GOOD_CSR, "good CSR after")
    assert error_again is None and again.replayed is False, (error.code, error_again)


@ENGINE
@given(csr_pem=odd_csrs | st.text() | st.none() | st.integers(), csr_type=st.sampled_from(["CSR", "csr", "", "PEM"]))
def test_unknown_secret_with_any_csr_is_a_4xx(service, csr_pem, csr_type):
    try:
        service.redeem("default", new_secret(), csr_pem, csr_type)
    except FrontdoorError as exc:
        assert 400 <= ERROR_STATUS[exc.code] < 500, (exc.code, exc.message)
    else:
        raise AssertionError("an unknown secret issued a certificate")


def test_odd_der_writes_what_cryptography_reads():
    """The test-only writer is right where cryptography agrees: a plain subject round-trips and
    its signature verifies (so refusals in the properties above are about content, not our DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(odd_csr([[("2.5.4.3", 0x0C, b"odd")], [("2.5.4.10", 0x13, b"Org")]], key).encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "O=Org,CN=odd"
