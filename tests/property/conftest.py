"""Property-based (hypothesis) tests of everything a client can send.

Profiles, chosen with HYPOTHESIS_PROFILE (default "ci"):

* ``ci``: few examples per property, so the whole folder stays under a minute on a loaded
  2-core machine; every run still draws new examples (no derandomize), and a failure prints the
  minimal input and a ``@reproduce_failure`` blob.
* ``long``: many examples, for a dedicated run (``HYPOTHESIS_PROFILE=long pytest tests/property``).

Each test sets its own ``deadline`` (a hostile input must be answered quickly, not just
correctly); ``too_slow`` is suppressed because generation time on a shared machine says nothing
about the code under test.

The engine fixtures are real: SQLite and the local CA in a temporary state dir.
"""

from __future__ import annotations

import os

import pytest
from frontdoor_pki.config import build_service, load_config
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True
)
settings.register_profile(
    "long", max_examples=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A FrontdoorService on the embedded default (SQLite + local CA), shared by a test module:
    the properties create their own tokens, so examples do not interfere."""
    config = load_config(state_dir=str(tmp_path_factory.mktemp("state")), env={}, data={"backend": "local"})
    engine = build_service(config)
    yield engine
    engine.close()
