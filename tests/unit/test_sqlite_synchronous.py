"""`sqlite.synchronous`: the durability of the local store's commits is a configuration choice."""

from __future__ import annotations

import pytest
from frontdoor_pki.config import ConfigError, build_service, load_config


def synchronous_of(service) -> int:
    return service.store._conn().execute("PRAGMA synchronous").fetchone()[0]


def test_default_is_normal(tmp_path):
    service = build_service(load_config(None, str(tmp_path), env={}, data={}))
    assert synchronous_of(service) == 1  # NORMAL
    service.close()


def test_full_fsyncs_every_commit_and_still_redeems(tmp_path):
    from support.crypto import make_csr, shared_key

    config = load_config(None, str(tmp_path), env={}, data={"sqlite": {"synchronous": "FULL"}})
    assert config.sqlite_synchronous == "full"
    service = build_service(config)
    assert synchronous_of(service) == 2  # FULL
    _record, secret = service.create_token("default", name="d", common_name="durable")
    assert service.redeem("default", secret, make_csr(shared_key("p256"))).certificate.subject.common_name == "durable"
    service.close()


@pytest.mark.parametrize("data, message", [
    ({"sqlite": {"synchronous": "off"}}, "sqlite.synchronous must be 'normal' or 'full'"),
    ({"sqlite": {"journal": "wal"}}, "sqlite: unknown key(s) journal"),
    ({"sqlite": "full"}, "sqlite must be a mapping"),
])
def test_bad_values_are_config_errors(tmp_path, data, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, str(tmp_path), env={}, data=data)
    assert message in str(info.value)
