"""Unit tests of configuration loading and service assembly (frontdoor_pki.config).

Every mistake a person can make in a config file must come back as a ConfigError that says
where, never as another exception or a silently different setting.
"""

from __future__ import annotations

import os
import stat

import pytest
from frontdoor_pki.config import ConfigError, build_service, load_config, resolve_state_dir
from frontdoor_pki.signers.local import LocalCASigner
from frontdoor_pki.stores.sqlite import SQLiteStore


def test_defaults(tmp_path):
    config = load_config(state_dir=str(tmp_path), env={}, data=None)
    assert config.state_dir == str(tmp_path)
    assert config.backend == "local"
    assert config.claim_lease == 30.0
    assert config.audit_path == os.path.join(str(tmp_path), "audit.jsonl")
    assert [f.id for f in config.frontdoors] == ["default"]
    default = config.frontdoors[0]
    assert default.tcp_shares_enabled is True
    assert (default.default_token_ttl, default.max_token_ttl, default.certificate_ttl) == (86400, 30 * 86400,
                                                                                          365 * 86400)
    assert config.signers == {"default": {"type": "local"}}
    assert config.source is None


def test_state_dir_resolution(tmp_path):
    assert resolve_state_dir(None, {"FRONTDOOR_STATE_DIR": str(tmp_path / "env")}) == str(tmp_path / "env")
    assert resolve_state_dir(str(tmp_path / "arg"), {"FRONTDOOR_STATE_DIR": "/elsewhere"}) == str(tmp_path / "arg")
    assert resolve_state_dir(None, {}) == os.path.expanduser("~/.frontdoor")
    config = load_config(env={}, data={"stateDir": str(tmp_path / "from-data")})
    assert config.state_dir == str(tmp_path / "from-data")


def test_full_file(tmp_path):
    path = tmp_path / "frontdoor.yaml"
    path.write_text(
        "backend: local\n"
        "claimLeaseSeconds: 5\n"
        "audit: {path: %s, stderr: true}\n"
        "frontdoors:\n"
        "  - id: default\n"
        "  - id: ops.team_1\n"
        "    tcpSharesEnabled: false\n"
        "    defaultTokenTtl: 15m\n"
        "    maxTokenTtl: 2h\n"
        "    certificateTtl: 30d\n"
        "    signer: {type: local}\n" % (tmp_path / "audit.log")
    )
    config = load_config(str(path), state_dir=str(tmp_path / "state"), env={})
    assert config.source == str(path)
    assert config.claim_lease == 5.0
    assert config.audit_path == str(tmp_path / "audit.log") and config.audit_stderr is True
    ops = config.frontdoors[1]
    assert (ops.id, ops.tcp_shares_enabled, ops.default_token_ttl, ops.max_token_ttl, ops.certificate_ttl) == (
        "ops.team_1", False, 900, 7200, 30 * 86400)


def test_config_file_found_in_state_dir_and_by_env(tmp_path):
    (tmp_path / "config.yaml").write_text("frontdoors: [{id: from-state}]\n")
    assert [f.id for f in load_config(state_dir=str(tmp_path), env={}).frontdoors] == ["from-state"]
    other = tmp_path / "other.yaml"
    other.write_text("frontdoors: [{id: from-env}]\n")
    config = load_config(state_dir=str(tmp_path), env={"FRONTDOOR_CONFIG": str(other)})
    assert [f.id for f in config.frontdoors] == ["from-env"]
    # data given by a caller (the Ansible modules) wins over files
    assert [f.id for f in load_config(state_dir=str(tmp_path), env={}, data={}).frontdoors] == ["default"]


@pytest.mark.parametrize(
    "text, fragment",
    [("frontdoors: [", "not valid YAML"),
     ("- a list\n", "mapping"),
     ("bogus: 1\n", "unknown configuration key"),
     ("backend: consul\n", "backend"),
     ("frontdoors: []\n", "non-empty"),
     ("frontdoors: {id: x}\n", "non-empty list"),
     ("frontdoors: [{name: x}]\n", "needs an id"),
     ("frontdoors: [{id: 'has space'}]\n", "id"),
     ("frontdoors: [{id: '../x'}]\n", "id"),
     ("frontdoors: [{id: a}, {id: a}]\n", "duplicate"),
     ("frontdoors: [{id: a, color: red}]\n", "unknown key"),
     ("frontdoors: [{id: a, maxTokenTtl: 1h, defaultTokenTtl: 2h}]\n", "exceeds"),
     ("frontdoors: [{id: a, certificateTtl: soon}]\n", "certificateTtl"),
     ("frontdoors: [{id: a, signer: magic}]\n", "signer"),
     ("frontdoors: [{id: a, tcpSharesEnabled: 'maybe'}]\n", "tcpSharesEnabled"),
     ("claimLeaseSeconds: abc\n", "claimLeaseSeconds"),
     ("claimLeaseSeconds: -1\n", "claimLeaseSeconds"),
     ("claimLeaseSeconds: 0\n", "claimLeaseSeconds"),
     ("audit: yes-please\n", "audit"),
     ("vault: http://127.0.0.1:8200\n", "vault"),
     ("apiTokens: secret\n", "apiTokens")],
)
def test_mistakes_are_config_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), state_dir=str(tmp_path), env={})
    assert fragment in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"), state_dir=str(tmp_path), env={})
    assert "cannot read" in str(info.value)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("false", False), ("no", False),
                                             ("off", False), ("true", True), (None, True)])
def test_tcp_shares_flag_is_a_real_boolean(tmp_path, value, expected):
    entry = {"id": "a"} if value is None else {"id": "a", "tcpSharesEnabled": value}
    config = load_config(state_dir=str(tmp_path), env={}, data={"frontdoors": [entry]})
    assert config.frontdoors[0].tcp_shares_enabled is expected


def test_environment(tmp_path):
    env = {"FRONTDOOR_BACKEND": "vault", "VAULT_ADDR": "http://127.0.0.1:8200", "BAO_TOKEN": "t0k",
           "FRONTDOOR_VAULT_TIMEOUT": "7", "STEP_CA_URL": "https://127.0.0.1:9000"}
    config = load_config(state_dir=str(tmp_path), env=env, data={"vault": {"kvMount": "secret"}})
    assert config.backend == "vault"
    assert config.vault["url"] == "http://127.0.0.1:8200" and config.vault["token"] == "t0k"
    assert config.vault["kvMount"] == "secret" and config.vault["timeout"] == "7"
    assert config.step_ca["url"] == "https://127.0.0.1:9000"
    assert config.signers["default"] == {"type": "vault"}  # the vault backend signs with Vault by default
    # values from the file win over the environment's defaults
    config = load_config(state_dir=str(tmp_path), env=env, data={"vault": {"url": "http://127.0.0.1:1"}})
    assert config.vault["url"] == "http://127.0.0.1:1"


def test_build_service_local(tmp_path):
    state = tmp_path / "new" / "state"
    config = load_config(state_dir=str(state), env={},
                         data={"frontdoors": [{"id": "default"}, {"id": "second", "certificateTtl": "7d"}]})
    service = build_service(config)
    try:
        assert isinstance(service.store, SQLiteStore)
        assert set(service.signers) == {"default", "second"}
        assert all(isinstance(s, LocalCASigner) for s in service.signers.values())
        assert service.frontdoors["second"].certificate_ttl == 7 * 86400
        assert service.claim_lease.total_seconds() == 30
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        # one root, one intermediate per frontdoor
        default_chain, second_chain = service.ca_chain("default"), service.ca_chain("second")
        assert default_chain[-1] == second_chain[-1] and default_chain[0] != second_chain[0]
        record, _ = service.create_token("default", name="audit-me")
        with open(config.audit_path, encoding="utf-8") as handle:
            assert record.id in handle.read()
    finally:
        service.close()
