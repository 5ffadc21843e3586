"""Fixtures for the Vault/OpenBao-specific tests (the contract suite covers the shared rules)."""

from __future__ import annotations

import pytest
from frontdoor_pki.config import build_service, load_config
from support.openbao import OpenBao, session_server


@pytest.fixture
def bao(request):
    """The session's OpenBao (shared; do not stop or freeze it)."""
    return session_server(request)


@pytest.fixture(scope="module")
def own_bao():
    """A separate OpenBao for tests that freeze, seal, kill or restart it."""
    server = OpenBao.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_vault_service(tmp_path):
    """make_vault_service(server, **vault_config_kwargs) -> (service, config data)."""
    made = []

    def factory(server, claim_lease: float = 30.0, **kwargs):
        state = str(tmp_path / ("state-%d" % len(made)))
        data = kwargs.pop("data", None) or server.vault_config(state_dir=state, **kwargs)
        data = dict(data, claimLeaseSeconds=claim_lease)
        service = build_service(load_config(state_dir=state, env={}, data=data))
        made.append(service)
        return service, data

    yield factory
    for service in made:
        service.close()
