"""Fixtures of the backend contract suite: every test runs once per registered backend.

See ``support/backends.py`` for how a backend plugs in. The frontdoors below are what the
rules need: ``default`` (the product defaults), ``closed`` (TCP shares disabled) and ``short``
(tight token and certificate lifetimes, to test the per-frontdoor bounds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, FrozenSet, List

import pytest
from frontdoor_pki.config import Config, build_service, load_config
from frontdoor_pki.service import FrontdoorService
from support.backends import BACKENDS, contract_data, wrap_signer

CLAIM_LEASE = 2.0  # seconds: short, so lease tests wait ~2 s rather than the product's 30 s
FRONTDOORS = [
    {"id": "default"},
    {"id": "closed", "tcpSharesEnabled": False},
    {"id": "short", "defaultTokenTtl": "10m", "maxTokenTtl": "1h", "certificateTtl": "30d"},
]


@dataclasses.dataclass
class BackendUnderTest:
    name: str
    capabilities: FrozenSet[str]
    config: Config
    data: Dict[str, Any]  # the configuration file's content behind ``config`` (for child processes)
    services: List[FrontdoorService] = dataclasses.field(default_factory=list)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def new_service(self, wrapped: bool = False, **hooks: Any) -> FrontdoorService:
        """Another service on the same state (like a second gateway). With ``wrapped`` (or any
        hook: before=..., alter=..., frontdoor_id=...) the real signer is wrapped in a
        support.backends.WrappedSigner, which counts calls and can inject faults."""
        service = build_service(self.config)
        self.services.append(service)
        if wrapped or hooks:
            wrap_signer(service, **hooks)
        return service

    def audit_lines(self) -> List[dict]:
        path = self.config.audit_path
        if not path or not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def audit_text(self) -> str:
        path = self.config.audit_path
        if not path or not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8") as handle:
            return handle.read()


@pytest.fixture(params=[pytest.param(name, marks=list(b.marks), id=name) for name, b in BACKENDS.items()])
def backend(request, tmp_path):
    """The backend under test with the contract configuration; closes the services it made."""
    registered = BACKENDS[request.param]
    made = registered(tmp_path, request)
    if hasattr(made, "__enter__"):
        with made as base:
            yield from _under_test(registered, base)
    else:
        yield from _under_test(registered, made)


def _under_test(registered, base: Config):
    data = contract_data(base, FRONTDOORS, CLAIM_LEASE)
    config = load_config(state_dir=base.state_dir, env={}, data=data)
    under_test = BackendUnderTest(registered.name, registered.capabilities, config, data)
    try:
        yield under_test
    finally:
        for service in under_test.services:
            service.close()


@pytest.fixture
def service(backend: BackendUnderTest) -> FrontdoorService:
    return backend.new_service()


@pytest.fixture
def make_service(backend: BackendUnderTest) -> Callable[..., FrontdoorService]:
    """make_service(before=..., alter=..., frontdoor_id='default') -> a service with its signer wrapped."""
    return functools.partial(backend.new_service, True)


@pytest.fixture
def token(service):
    """token(**create_kwargs) -> (record, secret) on frontdoor 'default'."""

    def create(frontdoor_id: str = "default", **kwargs):
        kwargs.setdefault("name", "contract-token")
        return service.create_token(frontdoor_id, actor="contract-test", **kwargs)

    return create
