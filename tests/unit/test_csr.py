"""Unit tests of CSR parsing, proof of possession, the key policy and subject decisions (frontdoor_pki.csr)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from frontdoor_pki.csr import (
    CSR_MAX_BYTES,
    check_key_policy,
    csr_subject,
    decide_subject,
    load_csr,
    public_key_sha256,
)
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import Subject
from support.crypto import make_csr, public_key_der, shared_key, tamper_signature


def refusal(fn, *args):
    with pytest.raises(FrontdoorError) as info:
        fn(*args)
    return info.value


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384", "ed25519"])
def test_allowed_keys_load(kind):
    key = shared_key(kind)
    csr = load_csr(make_csr(key, cn="x"))
    assert public_key_der(csr.public_key()) == public_key_der(key)


@pytest.mark.parametrize("kind, reason", [("rsa1024", "weak_key"), ("p521", "unsupported_key"),
                                          ("secp256k1", "unsupported_key"), ("ed448", "unsupported_key")])
def test_refused_keys(kind, reason):
    error = refusal(load_csr, make_csr(shared_key(kind), cn="x"))
    assert error.code == "invalid_csr" and error.details["reason"] == reason
    assert "RSA 2048" in error.message  # says what would be accepted


def test_rsa_size_bounds_without_generating_huge_keys():
    def public(bits):
        return rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1).public_key()

    check_key_policy(public(2048))
    check_key_policy(public(8192))
    for bits in (2047, 8193):
        assert refusal(check_key_policy, public(bits)).details["reason"] == "weak_key"


def test_proof_of_possession():
    good = make_csr(shared_key("p256"), cn="x")
    error = refusal(load_csr, tamper_signature(good))
    assert error.code == "invalid_csr" and error.details["reason"] == "bad_signature"
    rsa_csr = make_csr(shared_key("rsa2048"), cn="x")
    assert refusal(load_csr, tamper_signature(rsa_csr)).details["reason"] == "bad_signature"


@pytest.mark.parametrize(
    "value, code, reason",
    [(None, "invalid_csr", "empty"), ("", "invalid_csr", "empty"), ("  \n", "invalid_csr", "empty"),
     (b"bytes", "invalid_csr", "empty"), ("hello", "invalid_csr", "not_pem"),
     ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "invalid_csr", "not_pem"),
     ("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----", "invalid_csr", "undecodable"),
     ("-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----", "invalid_csr",
      "undecodable"),
     ("-----BEGIN CERTIFICATE REQUEST-----\n", "invalid_csr", "undecodable")],
)
def test_garbage(value, code, reason):
    error = refusal(load_csr, value)
    assert (error.code, error.details.get("reason")) == (code, reason)


def test_truncated_csr():
    good = make_csr(shared_key("p256"), cn="x")
    lines = good.strip().splitlines()
    truncated = "\n".join(lines[:2] + lines[-1:])
    assert refusal(load_csr, truncated).code == "invalid_csr"


def test_type_and_size():
    good = make_csr(shared_key("p256"), cn="x")
    for csr_type in ("SPKAC", "csr", None, ""):
        assert refusal(load_csr, good, csr_type).code == "invalid_request"
    assert refusal(load_csr, good + " " * CSR_MAX_BYTES).code == "payload_too_large"


def test_new_certificate_request_header_and_surrounding_whitespace():
    good = make_csr(shared_key("p256"), cn="x")
    legacy = good.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
    assert csr_subject(load_csr("\n\n" + legacy + "\n\n")).common_name == "x"


def test_public_key_hash_identifies_the_key():
    key = shared_key("p256")
    a = load_csr(make_csr(key, cn="a")).public_key()
    b = load_csr(make_csr(key, cn="b", o="other")).public_key()
    c = load_csr(make_csr(shared_key("p256", 1), cn="a")).public_key()
    assert public_key_sha256(a) == public_key_sha256(b) != public_key_sha256(c)


def test_csr_subject():
    csr = load_csr(make_csr(shared_key("p256"), cn="cn", o="org", ou="unit"))
    assert csr_subject(csr).as_tuple() == ("cn", "org", "unit")
    assert csr_subject(load_csr(make_csr(shared_key("p256")))).as_tuple() == (None, None, None)


@pytest.mark.parametrize(
    "locked, requested, expected",
    [(("L", "LO", "LU"), ("R", "RO", "RU"), ("L", "LO", "LU")),
     ((None, None, None), ("R", "RO", "RU"), ("R", "RO", "RU")),
     (("L", None, None), ("R", "RO", None), ("L", "RO", None)),
     ((None, "LO", None), ("R", None, "RU"), ("R", "LO", "RU")),
     (("L", None, None), (None, None, None), ("L", None, None))],
)
def test_decide_subject(locked, requested, expected):
    assert decide_subject(Subject(*locked), Subject(*requested)).as_tuple() == expected


@pytest.mark.parametrize(
    "locked, requested, reason",
    [((None, "LO", None), (None, "RO", None), "missing_common_name"),
     ((None, None, None), (None, None, None), "missing_common_name"),
     ((None, None, None), ("c" * 65, None, None), "bad_subject"),
     ((None, None, None), ("bad\x07", None, None), "bad_subject"),
     (("ok", None, None), ("ok", "o" * 65, None), "bad_subject"),
     ((None, None, None), ("   ", None, None), "bad_subject")],
)
def test_decide_subject_refusals(locked, requested, reason):
    error = refusal(decide_subject, Subject(*locked), Subject(*requested))
    assert error.code == "invalid_csr" and error.details["reason"] == reason


def test_locked_fields_hide_bad_csr_values():
    # a field the token locks is never taken from the CSR, so its CSR value cannot make the request fail
    assert decide_subject(Subject("ok", "org", None), Subject("c" * 65, "o" * 65, None)).as_tuple() == (
        "ok", "org", None
    )
