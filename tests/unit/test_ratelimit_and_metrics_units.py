"""The rate-limit storage and policy, and the metrics plumbing, in process (real SQLite, real prometheus_client)."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
from frontdoor_gateway import metrics
from frontdoor_gateway.ratelimit import RateLimits, SQLiteStorage, address_key
from frontdoor_pki.config import ConfigError, RateLimitPolicy, load_config
from frontdoor_pki.errors import FrontdoorError, SignerUnavailable
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter, Histogram


def _uri(tmp_path) -> str:
    return "frontdoor+sqlite://" + str(tmp_path / "rl.db")


# ---------------------------------------------------------------------- the storage
def test_sqlite_storage_is_found_by_its_scheme_and_counts_a_window(tmp_path):
    storage = storage_from_string(_uri(tmp_path))
    assert isinstance(storage, SQLiteStorage)
    limiter = FixedWindowRateLimiter(storage)
    item = parse("3/second")
    assert [limiter.hit(item, "k") for _ in range(4)] == [True, True, True, False]
    assert not limiter.test(item, "k")
    assert limiter.test(item, "other")
    reset = limiter.get_window_stats(item, "k").reset_time
    assert time.time() < reset <= time.time() + 1
    time.sleep(reset - time.time() + 0.05)
    assert limiter.test(item, "k") and limiter.hit(item, "k"), "a new window after the old one passed"
    storage.clear(item.key_for("k"))
    assert storage.get(item.key_for("k")) == 0 and storage.check()


def _hammer(uri: str, n: int) -> None:
    storage = storage_from_string(uri)
    for _ in range(n):
        storage.incr("shared", 60)


def test_sqlite_storage_loses_no_count_across_processes(tmp_path):
    uri = _uri(tmp_path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(uri, 150)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert storage_from_string(uri).get("shared") == 450


def test_address_key_groups_ipv6_by_64_and_unmaps_ipv4():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3" == address_key("10.1.2.3")
    assert address_key(None) is None and address_key("") is None


# ---------------------------------------------------------------------- the policy
def _limits(tmp_path, **section) -> RateLimits:
    config = load_config(state_dir=str(tmp_path), env={}, data={"rateLimits": section})
    rejected = []
    limits = RateLimits.from_config(config, on_reject=rejected.append)
    limits.rejected = rejected
    return limits


def test_over_the_address_limit_every_attempt_is_refused_until_the_window_passes(tmp_path):
    limits = _limits(tmp_path, unknownTokenPerAddress="3/2 seconds", unknownTokenPerFrontdoor="off")
    for _ in range(3):
        limits.check_redemption("default", "192.0.2.1")
        limits.redemption_failed("default", "192.0.2.1")
    with pytest.raises(FrontdoorError) as refused:
        limits.check_redemption("default", "192.0.2.1")
    assert refused.value.code == "rate_limited" and 1 <= refused.value.retry_after <= 2
    assert limits.rejected == ["unknown_token_per_address"]
    limits.check_redemption("default", "192.0.2.2")  # another address
    time.sleep(refused.value.retry_after + 0.1)
    limits.check_redemption("default", "192.0.2.1")


def test_the_frontdoor_limit_adds_up_every_address_of_a_known_frontdoor(tmp_path):
    limits = _limits(tmp_path, unknownTokenPerAddress="off", unknownTokenPerFrontdoor="4/minute")
    for n in range(4):
        limits.redemption_failed("default", "192.0.2.%d" % n)
        limits.redemption_failed("no-such-frontdoor", "192.0.2.%d" % n)  # unknown ids make no counters
    with pytest.raises(FrontdoorError, match="all addresses on this frontdoor"):
        limits.check_redemption("default", "198.51.100.1")
    limits.check_redemption("no-such-frontdoor", "198.51.100.1")


def test_auth_failures_have_their_own_count(tmp_path):
    limits = _limits(tmp_path, authFailuresPerAddress="2/minute")
    limits.auth_failed("192.0.2.1")
    limits.check_auth("192.0.2.1")
    limits.check_redemption("default", "192.0.2.1")
    limits.auth_failed("192.0.2.1")
    with pytest.raises(FrontdoorError) as refused:
        limits.check_auth("192.0.2.1")
    assert refused.value.status == 429 and "bearer" in refused.value.message
    limits.check_redemption("default", "192.0.2.1")  # redemptions are counted apart


def test_a_storage_that_fails_lets_requests_through(tmp_path, caplog):
    limits = _limits(tmp_path, storage="frontdoor+sqlite://" + str(tmp_path / "missing-dir" / "rl.db"))
    limits.redemption_failed("default", "192.0.2.1")
    limits.check_redemption("default", "192.0.2.1")
    assert "rate-limit storage failed" in caplog.text


def test_config_defaults_switches_and_refusals(tmp_path):
    default = load_config(state_dir=str(tmp_path), env={}, data={}).rate_limits
    assert default == RateLimitPolicy() and default.unknown_token_per_address == "30/minute" and default.enabled
    assert RateLimits.from_config(load_config(state_dir=str(tmp_path), env={"FRONTDOOR_RATE_LIMITS": "off"})) is None
    assert not load_config(state_dir=str(tmp_path), env={}, data={"rateLimits": {"enabled": False}}).rate_limits.enabled
    custom = load_config(state_dir=str(tmp_path), env={}, data={"rateLimits": {
        "storage": "redis://cache:6379/2", "unknownTokenPerAddress": "10 per hour", "authFailuresPerAddress": "off"}})
    assert custom.rate_limits.storage == "redis://cache:6379/2"
    assert custom.rate_limits.unknown_token_per_address == "10 per hour"
    assert custom.rate_limits.auth_failures_per_address is None
    for bad in ({"unknownTokenPerAddress": "lots"}, {"unknownTokenPerAddress": "0/minute"},
                {"unknownTokenPerAddress": 30}, {"storage": "redis"}, {"perAddress": "1/second"},
                {"enabled": "sometimes"}):
        with pytest.raises(ConfigError):
            load_config(state_dir=str(tmp_path), env={}, data={"rateLimits": bad})
    with pytest.raises(ConfigError):
        load_config(state_dir=str(tmp_path), env={"FRONTDOOR_RATE_LIMITS": "maybe"}, data={})


# ---------------------------------------------------------------------- metrics plumbing
class _Signer:
    kind = "fake"

    def sign(self, fail=None):
        if fail:
            raise fail
        return "signed"

    def revoke(self):
        raise FrontdoorError("not_supported", "cannot revoke")


def test_instrumented_proxy_times_calls_and_counts_errors_by_backend():
    registry = CollectorRegistry()
    seconds = Histogram("t_seconds", "t", ["backend", "operation"], registry=registry)
    failures = Counter("t_errors", "t", ["backend", "operation", "error"], registry=registry)
    proxy = metrics.Instrumented(_Signer(), "fake", seconds, failures)
    assert proxy.kind == "fake" and proxy.sign() == "signed"
    with pytest.raises(SignerUnavailable):
        proxy.sign(SignerUnavailable("down"))
    with pytest.raises(ZeroDivisionError):
        proxy.sign(ZeroDivisionError())
    with pytest.raises(FrontdoorError):
        proxy.revoke()
    get = registry.get_sample_value
    assert get("t_seconds_count", {"backend": "fake", "operation": "sign"}) == 3
    assert get("t_errors_total", {"backend": "fake", "operation": "sign", "error": "signer_unavailable"}) == 1
    assert get("t_errors_total", {"backend": "fake", "operation": "sign", "error": "ZeroDivisionError"}) == 1
    assert get("t_errors_total", {"backend": "fake", "operation": "revoke", "error": "not_supported"}) is None


@pytest.mark.parametrize("status, body, outcome", [
    (201, b"", "issued"),
    (200, b"", "replayed"),
    (404, b'{"error": {"code": "token_not_found", "message": "x"}}', "token_not_found"),
    (429, b'{"error": {"code": "rate_limited", "message": "x"}}', "rate_limited"),
    (500, b"not json", "internal_error"),
    (400, b'{"error": {"code": "made_up", "message": "x"}}', "internal_error"),
])
def test_redemption_outcome_from_the_answer(status, body, outcome):
    assert metrics._outcome(status, body) == outcome


class _Page:
    def __init__(self, total):
        self.total = total


class _Store:
    def __init__(self):
        self.calls = 0
        self.fail = False

    def list_tokens(self, frontdoor_id, *, now, statuses, page, size):
        self.calls += 1
        if self.fail:
            raise OSError("down")
        return _Page({"active": 3, "expired": 2, "redeemed": 1}[statuses[0]])


def test_token_gauge_is_counted_at_scrape_and_cached(caplog):
    store = _Store()
    collector = metrics.TokenStatusCollector(store, ["default"], clock=lambda: None, max_age=60)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("frontdoor_tokens", {"frontdoor": "default", "status": "active"}) == 3
    assert registry.get_sample_value("frontdoor_tokens", {"frontdoor": "default", "status": "redeemed"}) == 1
    calls = store.calls
    registry.get_sample_value("frontdoor_tokens", {"frontdoor": "default", "status": "active"})
    assert store.calls == calls, "a scrape within max_age reuses the counts"
    collector.max_age, store.fail = 0, True
    assert registry.get_sample_value("frontdoor_tokens", {"frontdoor": "default", "status": "active"}) is None
    assert "counting tokens for metrics failed" in caplog.text


def _dead_pid() -> int:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    return process.pid


def test_multiprocess_dir_is_private_emptied_and_dead_workers_are_marked(tmp_path):
    path = metrics.prepare_multiprocess_dir(str(tmp_path), "127.0.0.1", 8080)
    assert oct(os.stat(path).st_mode & 0o777) == "0o700" and os.listdir(path) == []
    dead_pid = _dead_pid()
    for name in ("counter_%d.db" % dead_pid, "gauge_livesum_%d.db" % dead_pid, "counter_%d.db" % os.getpid()):
        open(os.path.join(path, name), "wb").close()
    assert metrics.mark_dead_workers(path) == [dead_pid]
    assert sorted(os.listdir(path)) == sorted(["counter_%d.db" % dead_pid, "counter_%d.db" % os.getpid()])
    assert metrics.prepare_multiprocess_dir(str(tmp_path), "127.0.0.1", 8080) == path and os.listdir(path) == []


def test_a_new_server_removes_dead_servers_dirs_and_never_a_live_one(tmp_path):
    live = metrics.prepare_multiprocess_dir(str(tmp_path), "127.0.0.1", 8080)  # this process: alive
    open(os.path.join(live, "counter_1.db"), "wb").close()
    dead = metrics.prepare_multiprocess_dir(str(tmp_path), "127.0.0.1", 8081, pid=_dead_pid())
    elsewhere = os.path.join(str(tmp_path), "metrics", "otherhost-0.0.0.0-8080-1")
    os.makedirs(elsewhere)
    mine = metrics.prepare_multiprocess_dir(str(tmp_path), "127.0.0.1", 8080, pid=os.getppid())
    assert os.listdir(live) == ["counter_1.db"], "a running server's files are kept (same host and port)"
    assert not os.path.exists(dead) and os.path.isdir(elsewhere) and os.path.isdir(mine)


@pytest.mark.parametrize("text, expected", [("127.0.0.1:9102", ("127.0.0.1", 9102)), ("[::1]:0", ("::1", 0))])
def test_metrics_address(text, expected):
    assert metrics.parse_address(text) == expected


@pytest.mark.parametrize("text", ["9102", ":9102", "host:", "host:port", "host:99999", "host:²"])
def test_metrics_address_refused(text):
    with pytest.raises(ValueError):
        metrics.parse_address(text)


def test_a_storage_that_cannot_work_is_a_config_error_without_its_password(tmp_path):
    with pytest.raises(ConfigError) as refused:
        _limits(tmp_path, storage="nosuch://user:pw@host:1")
    assert "rateLimits.storage nosuch://user:***@host:1" in str(refused.value) and "pw@" not in str(refused.value)


def test_the_over_limit_flag_spares_reads_and_is_seen_by_every_process_at_once(tmp_path, monkeypatch):
    first = _limits(tmp_path, unknownTokenPerAddress="3/minute")
    second = _limits(tmp_path, unknownTokenPerAddress="3/minute")  # another worker or gateway on the state dir
    reads = []
    monkeypatch.setattr(second.storage, "get", lambda key: reads.append(key) or 0)
    second.check_redemption("default", "192.0.2.1")
    assert reads == [], "no counter is read while nothing is over"
    monkeypatch.undo()
    for _ in range(3):
        first.redemption_failed("default", "192.0.2.1")
    assert first._flag.raised()
    with pytest.raises(FrontdoorError):  # at once, no cache to expire
        second.check_redemption("default", "192.0.2.1")
    second.check_redemption("default", "192.0.2.2")
    old = time.time() - 62  # the longest window (1 minute) + 1 s later the flag no longer counts
    os.utime(first._flag.path, (old, old))
    assert not second._flag.raised()


def test_an_unwritable_flag_means_always_check(tmp_path):
    limits = _limits(tmp_path, unknownTokenPerAddress="1/minute")
    limits._flag.path = str(tmp_path / "no-such-dir" / "flag")
    limits.redemption_failed("default", "192.0.2.1")
    assert limits._flag.raised()
    with pytest.raises(FrontdoorError):
        limits.check_redemption("default", "192.0.2.1")
