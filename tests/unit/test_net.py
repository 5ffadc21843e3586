"""gateway/net.py: the client address and the trusted-proxy list."""

from __future__ import annotations

import pytest
from frontdoor_gateway.net import client_address, parse_forwarded_allow_ips
from starlette.requests import Request


def _request(client):
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [
        (b"x-forwarded-for", b"203.0.113.9")], "client": client})


def test_client_address_is_the_scope_client_never_a_header():
    assert client_address(_request(("192.0.2.1", 5000))) == "192.0.2.1"
    assert client_address(_request(None)) is None
    assert client_address(_request(("", 0))) is None


@pytest.mark.parametrize("value, expected", [
    (None, []), ("", []), (" , ", []),
    ("127.0.0.1", ["127.0.0.1"]),
    ("10.0.0.0/8, ::1,fd00::/64", ["10.0.0.0/8", "::1", "fd00::/64"]),
    (["192.0.2.7", "198.51.100.0/24"], ["192.0.2.7", "198.51.100.0/24"]),
])
def test_allowed_proxies(value, expected):
    assert parse_forwarded_allow_ips(value) == expected


@pytest.mark.parametrize("value", ["*", "proxy.example", "10.0.0.1/8", "300.1.1.1", "127.0.0.1,*", "::1/129"])
def test_refused_proxy_lists(value):
    with pytest.raises(ValueError):
        parse_forwarded_allow_ips(value)


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("forwardedAllowIps: [10.0.0.1, ' 10.0.1.0/24 ']\n", ["10.0.0.1", "10.0.1.0/24"]),
    ("forwardedAllowIps: '127.0.0.1,::1'\n", ["127.0.0.1", "::1"]),
])
def test_config_key(tmp_path, text, expected):
    from frontdoor_pki.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(str(path), str(tmp_path), env={}).forwarded_allow_ips == expected


@pytest.mark.parametrize("text", ["forwardedAllowIps: 10\n", "forwardedAllowIps: [[1]]\n", "forwardedAllowIps: {a: 1}\n"])
def test_config_key_of_the_wrong_type(tmp_path, text):
    from frontdoor_pki.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="forwardedAllowIps"):
        load_config(str(path), str(tmp_path), env={})
