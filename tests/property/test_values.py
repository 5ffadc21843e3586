"""Durations, timestamps, names, subject fields and secrets: any value a client can send is either
accepted as a sensible value or refused with its documented code, never another exception, and
quickly (the deadline), whatever its length."""

from __future__ import annotations

import datetime as _dt
import time

from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import UTC
from frontdoor_pki.tokens import (
    DURATION_MAX,
    check_secret_format,
    new_secret,
    parse_duration,
    parse_timestamp,
    validate_name,
    validate_subject_field,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

FAST = 0.05  # seconds one parse may take, on a loaded machine

# text near the grammar finds more edge cases than arbitrary Unicode alone
duration_like = st.text(alphabet="0123456789wdhmsWDHMS .-+\t\n\u0663\uff11", max_size=64)
timestamp_like = st.text(alphabet="0123456789-T:Ztz+. ,W\u0663", max_size=64)
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
                | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
huge_ints = st.integers(min_value=1, max_value=4000).map(lambda digits: int("9" * digits))
spaces_then_letter = st.builds(lambda n, c: " " * n + c, st.integers(0, 20_000), st.sampled_from("xs1w"))


def outcome(fn, *args):
    """(value, None) or (None, FrontdoorError); any other exception fails the test with the input shown."""
    started = time.perf_counter()
    try:
        value, error = fn(*args), None
    except FrontdoorError as exc:
        value, error = None, exc
    assert time.perf_counter() - started < FAST, "slow on %r" % (args[0],)
    return value, error


@settings(deadline=500)
@given(duration_like | st.text() | json_scalars | huge_ints | huge_ints.map(str) | spaces_then_letter)
@example(" " * 80 + "x")  # 14 s with the old regex
@example("9" * 5000)  # a 500 (int's digit limit) with the old one
def test_any_duration_is_a_bounded_number_of_seconds_or_invalid_request(value):
    seconds, error = outcome(parse_duration, value, "ttl")
    if error is not None:
        assert error.code == "invalid_request" and "ttl" in error.message, error
    else:
        assert type(seconds) is int and 0 < seconds <= DURATION_MAX


@settings(deadline=500)
@given(st.integers(0, 5300), st.integers(0, 400), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100),
       st.sampled_from(["", " "]))
def test_well_formed_durations_add_up(weeks, days, hours, minutes, seconds, gap):
    parts = [(weeks, "w"), (days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    text = gap.join("%d%s" % (n, unit) for n, unit in parts if n)
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    parsed, error = outcome(parse_duration, text or "0", "ttl")
    if 0 < total <= DURATION_MAX:
        assert error is None and parsed == total, (text, error)
    else:
        assert error is not None and error.code == "invalid_request"


@settings(deadline=500)
@given(timestamp_like | st.text() | json_scalars | spaces_then_letter | st.datetimes())
@example("0001-01-01T00:00:00+01:00")  # OverflowError in astimezone: a 500 before
def test_any_timestamp_is_an_aware_utc_datetime_or_invalid_request(value):
    parsed, error = outcome(parse_timestamp, value, "expiresAt")
    if error is not None:
        assert error.code == "invalid_request" and "expiresAt" in error.message, error
    else:
        assert parsed.tzinfo == UTC


offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: _dt.timezone(_dt.timedelta(minutes=m)))


@settings(deadline=500)
@given(st.datetimes(timezones=offsets), st.sampled_from(["T", "t"]), st.booleans())
def test_rfc3339_round_trip(moment, separator, with_fraction):
    """What we print (and any RFC 3339 peer prints) parses back to the same instant, or is refused
    if that instant is outside what a datetime can hold in UTC."""
    moment = moment if with_fraction else moment.replace(microsecond=0)
    text = moment.isoformat(sep=separator, timespec="microseconds" if with_fraction else "seconds")
    parsed, error = outcome(parse_timestamp, text, "expiresAt")
    try:
        expected = moment.astimezone(UTC)
    except OverflowError:
        assert error is not None and error.code == "invalid_request", text
        return
    assert error is None and parsed == expected, (text, error)


@settings(deadline=500)
@given(st.text() | json_scalars | st.integers(0, 300_000).map(lambda n: "n" * n))
def test_names_and_subject_fields(value):
    name, error = outcome(validate_name, value)
    assert error.code == "invalid_request" if error else (isinstance(name, str) and 0 < len(name) <= 128)
    field, error = outcome(validate_subject_field, value, "commonName")
    assert error.code == "invalid_request" if error else (field is None or 0 < len(field) <= 64)


@settings(deadline=500)
@given(st.text() | json_scalars | st.integers(0, 300_000).map(lambda n: "crt_" + "a" * n)
       | st.builds(lambda s, i, c: s[:i] + c + s[i + 1:], st.just(new_secret()), st.integers(0, 36), st.characters()))
def test_secret_format(value):
    _, error = outcome(check_secret_format, value)
    assert error is None or error.code == "token_not_found"
