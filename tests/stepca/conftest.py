"""Fixtures for the step-ca specific tests (all marked ``stepca``; run by ``make test-step-ca``)."""

from __future__ import annotations

import pytest
from frontdoor_pki.config import build_service, load_config
from support.stepca import StepCA, shared_stepca


def stepca_config(ca: StepCA, state_dir: str, **step_ca_overrides):
    """SQLite store in ``state_dir``, frontdoor ``default`` signing with ``ca``."""
    options = dict(ca.step_ca_options(), **step_ca_overrides)
    return load_config(state_dir=state_dir, env={}, data={
        "stepCa": options, "claimLeaseSeconds": 5, "frontdoors": [{"id": "default", "signer": "step-ca"}],
    })


@pytest.fixture(scope="session")
def stepca() -> StepCA:
    """The session's shared step-ca (tests that stop or restart a CA make their own)."""
    return shared_stepca()


@pytest.fixture
def make_service(tmp_path):
    """make_service(ca, **stepCa overrides) -> FrontdoorService on a fresh state dir; closed after the test."""
    made = []

    def factory(ca: StepCA, state_dir=None, **overrides):
        service = build_service(stepca_config(ca, state_dir or str(tmp_path / ("state%d" % len(made))), **overrides))
        made.append(service)
        return service

    yield factory
    for service in made:
        service.close()


@pytest.fixture
def service(stepca, make_service):
    return make_service(stepca)
