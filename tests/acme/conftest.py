"""Fixtures of the ACME front's tests: one real gateway per module, tokens with their EAB."""

from __future__ import annotations

import secrets

import pytest
from support.acme_clients import directory_url
from support.gateway import run_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with run_gateway(str(tmp_path_factory.mktemp("acme-gw"))) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def server(gw) -> str:
    return directory_url(gw.url)


@pytest.fixture
def new_token(gw):
    """new_token(commonName, **fields) -> the create answer (with acmeEab)."""

    def factory(common_name: str, **fields) -> dict:
        fields.setdefault("name", "acme-%s" % secrets.token_hex(4))
        answer = gw.create_token(commonName=common_name, **fields)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert set(body["acmeEab"]) == {"keyId", "hmacKey"}
        return body

    return factory
