"""Gateway-process fixtures for the HTTP tests."""

from __future__ import annotations

import pytest
from support.gateway import run_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One real gateway on the embedded default, shared by a test module."""
    with run_gateway(str(tmp_path_factory.mktemp("gw"))) as gw:
        yield gw
