"""Generic fixtures only; suite-specific fixtures live next to their suites.

Being a rootless conftest, this file also makes pytest put ``tests/`` on ``sys.path``,
which is how ``import support.crypto`` works from every test directory.
"""

from __future__ import annotations

import pytest
from support.crypto import make_csr, shared_key


@pytest.fixture
def csr_for():
    """csr_for(kind='p256', slot=0, **subject) -> PEM, with a key cached per (kind, slot)."""

    def factory(kind: str = "p256", slot: int = 0, **subject) -> str:
        return make_csr(shared_key(kind, slot), **subject)

    return factory
