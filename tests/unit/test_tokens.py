"""Unit tests of token secrets, durations, timestamps and value validation (frontdoor_pki.tokens)."""

from __future__ import annotations

import datetime as _dt
import re
import time

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


def short_id(value) -> str:
    """A test id for huge values (str() of a 5000-digit int raises; long ids are unreadable)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "int-of-%d-bits" % value.bit_length()
    return repr(value)[:40]


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
                                   "crt_" + "a" * 34, "crt_" + "a" * 32 + "!", " crt_" + "a" * 33,
                                   "crt_" + "a" * 33 + "\n", "crt_" + "a" * 10**6], ids=short_id)
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
     ("1h30m", 5400), (" 1d 2h ", 93600), (1, 1), ("1s", 1), (1.5, 2), (0.2, 1), ("24h0m0s", 86400),
     ("5200w", 5200 * 7 * 86400), (100 * 365 * 86400, 100 * 365 * 86400), (1e-9, 1)],
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


@pytest.mark.parametrize("value", [
    False, float("-inf"), -0.0, 1e308, 10**5000, -(10**5000), "9" * 5000, "9" * 32, "1" + " " * 40 + "s",
    "30m1h", "1h1h", "1 5m", "15 m", "1d\t2h", "\u0663\u0666\u0660\u0660", "\uff11h", "1h\x00", "+5s", "0x10",
    "1_000", "1e3", "5S", "5H", {"ttl": 5}, b"15m", 3600j,
], ids=short_id)
def test_hostile_durations(value):
    """Out of range, not ASCII digits, units out of order or repeated, bytes, huge ints: all invalid_request."""
    with pytest.raises(FrontdoorError) as info:
        parse_duration(value, "ttl")
    assert info.value.code == "invalid_request"
    assert "ttl" in info.value.message and len(info.value.message) < 300


def test_overlong_duration_is_refused_by_length_first():
    with pytest.raises(FrontdoorError) as info:
        parse_duration("1" * 33, "ttl")
    assert "33 characters" in info.value.message
    assert parse_duration("1" * 6 + " " * 26) == 111111  # 32 characters: still parsed


@pytest.mark.parametrize("hostile", [
    " " * 10_000 + "x", " " * 10_000, "1" * 10_000 + "x", "1w " * 4000 + "x", "1" + " " * 10_000 + "s",
    " " * 30 + "x",  # the old regex took seconds for 80 of these; short enough to reach any regex
    "1w" + " " * 28 + "x", "1w 1d 1h 1m" + " " * 19 + "x",
], ids=short_id)
def test_duration_parsing_time_does_not_grow_with_hostile_input(hostile):
    """The reported stall: spaces then a letter made the regex backtrack for seconds per request."""
    started = time.perf_counter()
    with pytest.raises(FrontdoorError):
        parse_duration(hostile, "ttl")
    assert time.perf_counter() - started < 0.05, repr(hostile[:40])


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


def test_timestamp_forms():
    """Any number of fraction digits (RFC 3339), surrounding white space, and an aware datetime."""
    assert parse_timestamp("2030-01-31T12:00:00.123456789Z").microsecond == 123456
    assert parse_timestamp("2030-01-31T12:00:00.5Z").microsecond == 500000
    assert parse_timestamp(" 2030-01-31T12:00:00Z\n") == _dt.datetime(2030, 1, 31, 12, tzinfo=UTC)
    aware = _dt.datetime(2030, 1, 31, 14, tzinfo=_dt.timezone(_dt.timedelta(hours=2)))
    assert parse_timestamp(aware) == _dt.datetime(2030, 1, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize("value", ["2030-01-31T12:00:00", "2030-01-31", "tomorrow", "", 1700000000, None,
                                   _dt.datetime(2030, 1, 1)])
def test_bad_timestamps(value):
    with pytest.raises(FrontdoorError) as info:
        parse_timestamp(value, "expiresAt")
    assert info.value.code == "invalid_request"


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",  # outside datetime's range once in UTC
    "2030-13-01T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-31T24:00:00Z", "2030-01-31T23:59:60Z",
    "2030-01-31T12:00:00+24:00", "2030-01-31T12:00:00+00:00:30", "20300131T120000Z", "2030-W05-1T12:00:00Z",
    "2030-01-31T12Z", "2030-01-31T12:00Z", "2030-01-31T12:00:00,5Z", "2030-01-31 12:00:00Z",
    "\uff12\uff10\uff13\uff10-01-31T12:00:00Z", "2030-01-31T12:00:00.Z", "2030-01-31T12:00:00." + "1" * 5000 + "Z",
    " " * 10_000 + "x", "2030-01-31T12:00:00Z" * 1000, b"2030-01-31T12:00:00Z", 1.5, True, ["2030"],
], ids=short_id)
def test_hostile_timestamps(value):
    with pytest.raises(FrontdoorError) as info:
        parse_timestamp(value, "expiresAt")
    assert info.value.code == "invalid_request"
    assert "expiresAt" in info.value.message and len(info.value.message) < 300


def test_timestamp_parsing_time_is_bounded():
    started = time.perf_counter()
    for hostile in (" " * 10_000 + "x", "2" * 100_000, "2030-01-31T12:00:00." + "9" * 100_000):
        with pytest.raises(FrontdoorError):
            parse_timestamp(hostile, "expiresAt")
    assert time.perf_counter() - started < 0.05


def test_name_rules():
    assert validate_name("n" * 128) == "n" * 128
    assert validate_name("Ünïcödé name ✓") == "Ünïcödé name ✓"
    for bad in ("n" * 129, "", "  ", None, 5, "a\nb", "a\tb", "a\x00", "a\x7f", "a\u200b", " " * 10**6, b"name"):
        with pytest.raises(FrontdoorError) as info:
            validate_name(bad)
        assert info.value.code == "invalid_request", repr(bad)


def test_subject_field_rules():
    assert validate_subject_field(None, "commonName") is None
    assert validate_subject_field("", "commonName") is None  # blank: not locked
    assert validate_subject_field("   ", "commonName") is None
    assert validate_subject_field("c" * 64, "commonName") == "c" * 64
    for bad in ("c" * 65, " lead", "trail ", "a\x01b", 5, ["x"], " " * 65, "c" * 10**6, b"cn", True):
        with pytest.raises(FrontdoorError) as info:
            validate_subject_field(bad, "commonName")
        assert info.value.code == "invalid_request"
        assert "commonName" in info.value.message
    subject = validate_subject("cn", None, "ou")
    assert subject.as_tuple() == ("cn", None, "ou")


def test_long_values_are_refused_by_length_before_any_scan():
    """A megabyte of client text costs a length check, not a strip, regex or isprintable pass."""
    megabyte = " " * 10**6
    started = time.perf_counter()
    for _ in range(100):
        for call in (lambda: validate_name(megabyte), lambda: validate_subject_field(megabyte, "commonName"),
                     lambda: check_secret_format(megabyte)):
            with pytest.raises(FrontdoorError):
                call()
    assert time.perf_counter() - started < 0.05  # ~300 length checks; one scan of each would take longer
