"""Unit tests of token secrets, durations, timestamps and value validation (frontdoor_pki.tokens)."""

from __future__ import annotations

import datetime as _dt
import re

import pytest
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import UTC
from frontdoor_pki.tokens import (
    CERT_ID_RE,
    TOKEN_ID_RE,
    check_secret_format,
    hash_secret,
    hashes_equal,
    new_certificate_id,
    new_secret,
    new_token_id,
    parse_duration,
    parse_timestamp,
    redact,
    validate_name,
    validate_subject,
    validate_subject_field,
)


def code_and_reason(fn, *args):
    with pytest.raises(FrontdoorError) as info:
        fn(*args)
    return info.value.code, info.value.details.get("reason")


def test_secret_shape_and_randomness():
    secrets = {new_secret() for _ in range(500)}
    assert len(secrets) == 500
    for secret in list(secrets)[:50]:
        assert re.fullmatch(r"crt_[A-Za-z0-9_-]{33}", secret)
        check_secret_format(secret)  # our own secrets always pass


def test_every_single_character_typo_is_detected():
    secret = new_secret()
    alphabet = "abcXYZ019-_"
    for position in range(4, len(secret)):
        for replacement in alphabet:
            if replacement == secret[position]:
                continue
            typo = secret[:position] + replacement + secret[position + 1:]
            assert code_and_reason(check_secret_format, typo) == ("token_not_found", "checksum"), typo


@pytest.mark.parametrize("value", [None, 42, b"crt_x", "", "crt_", "crt_short", "tok_" + "a" * 33,
                                   "crt_" + "a" * 34, "crt_" + "a" * 32 + "!", " crt_" + "a" * 33])
def test_malformed_secrets(value):
    assert code_and_reason(check_secret_format, value) == ("token_not_found", "malformed")


def test_malformed_message_does_not_echo_the_value():
    with pytest.raises(FrontdoorError) as info:
        check_secret_format("crt_this-is-not-right")
    assert "crt_this-is-not-right" not in info.value.message


def test_hashing():
    secret = new_secret()
    digest = hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_secret(secret) and digest != hash_secret(new_secret())
    assert secret not in digest
    assert hashes_equal(digest, hash_secret(secret))
    assert not hashes_equal(digest, hash_secret(new_secret()))


def test_ids():
    assert TOKEN_ID_RE.match(new_token_id())
    assert CERT_ID_RE.match(new_certificate_id())
    assert new_token_id() != new_token_id()
    assert not TOKEN_ID_RE.match(new_certificate_id())


def test_redact():
    secret = new_secret()
    line = 'POST /frontdoor/default/client-certificates/token/%s HTTP/1.1" 201' % secret
    assert redact(line) == line.replace(secret, "crt_[REDACTED]")
    for _ in range(50):  # every alphabet character of the body is covered, not just some
        other = new_secret()
        assert redact("token=%s;" % other) == "token=crt_[REDACTED];"
    encoded = secret.replace("-", "%2D")
    assert encoded not in redact("GET /token/" + encoded)
    assert redact("nothing here") == "nothing here"
    assert secret[4:] not in redact("a %s and %s" % (secret, secret))


@pytest.mark.parametrize(
    "value, seconds",
    [(3600, 3600), ("3600", 3600), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2w", 1209600),
     ("1h30m", 5400), (" 1d 2h ", 93600), (1, 1), ("1s", 1), (1.5, 2), (0.2, 1)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0", "0s", "", "  ", "abc", "1y", "5 minutes", "1.5h", True, None, [],
                                   float("nan"), float("inf"), 101 * 365 * 86400, "-5s"])
def test_bad_durations(value):
    with pytest.raises(FrontdoorError) as info:
        parse_duration(value, "ttl")
    assert info.value.code == "invalid_request"
    assert "ttl" in info.value.message


@pytest.mark.parametrize(
    "text, expected",
    [("2030-01-31T12:00:00Z", _dt.datetime(2030, 1, 31, 12, tzinfo=UTC)),
     ("2030-01-31t12:00:00z", _dt.datetime(2030, 1, 31, 12, tzinfo=UTC)),
     ("2030-01-31T14:00:00+02:00", _dt.datetime(2030, 1, 31, 12, tzinfo=UTC)),
     ("2030-01-31T12:00:00.250Z", _dt.datetime(2030, 1, 31, 12, 0, 0, 250000, tzinfo=UTC))],
)
def test_timestamps(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("value", ["2030-01-31T12:00:00", "2030-01-31", "tomorrow", "", 1700000000, None,
                                   _dt.datetime(2030, 1, 1)])
def test_bad_timestamps(value):
    with pytest.raises(FrontdoorError) as info:
        parse_timestamp(value, "expiresAt")
    assert info.value.code == "invalid_request"


def test_name_rules():
    assert validate_name("n" * 128) == "n" * 128
    assert validate_name("Ünïcödé name ✓") == "Ünïcödé name ✓"
    for bad in ("n" * 129, "", "  ", None, 5, "a\nb", "a\tb", "a\x00", "a\x7f", "a\u200b"):
        with pytest.raises(FrontdoorError) as info:
            validate_name(bad)
        assert info.value.code == "invalid_request", repr(bad)


def test_subject_field_rules():
    assert validate_subject_field(None, "commonName") is None
    assert validate_subject_field("", "commonName") is None  # blank: not locked
    assert validate_subject_field("   ", "commonName") is None
    assert validate_subject_field("c" * 64, "commonName") == "c" * 64
    for bad in ("c" * 65, " lead", "trail ", "a\x01b", 5, ["x"]):
        with pytest.raises(FrontdoorError) as info:
            validate_subject_field(bad, "commonName")
        assert info.value.code == "invalid_request"
        assert "commonName" in info.value.message
    subject = validate_subject("cn", None, "ou")
    assert subject.as_tuple() == ("cn", None, "ou")
