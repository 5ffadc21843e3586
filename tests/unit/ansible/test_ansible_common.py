"""Shared option spec, config merging and error mapping of the modules."""

from __future__ import annotations

import importlib

import pytest
import yaml


@pytest.fixture
def common(collection_path):
    return importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common")


def test_env_fallbacks_and_no_log_as_documented(common):
    spec = common.frontdoor_argument_spec()
    fallbacks = {name: opt["fallback"][1] for name, opt in spec.items() if "fallback" in opt}
    assert fallbacks == {
        "gateway_url": ["FRONTDOOR_URL"],
        "api_token": ["FRONTDOOR_API_TOKEN"],
        "state_dir": ["FRONTDOOR_STATE_DIR"],
        "vault_url": ["VAULT_ADDR", "BAO_ADDR"],
        "vault_token": ["VAULT_TOKEN", "BAO_TOKEN"],
        "vault_namespace": ["VAULT_NAMESPACE", "BAO_NAMESPACE"],
    }
    assert {name for name, opt in spec.items() if opt.get("no_log")} == {"api_token", "vault_token",
                                                                        "vault_secret_id"}
    assert spec["backend"]["choices"] == ["local", "vault"]
    assert spec["frontdoor_id"]["default"] == "default"


def test_doc_fragment_documents_exactly_the_shared_options(common, collection_path):
    fragment = importlib.import_module("ansible_collections.frontdoor.pki.plugins.doc_fragments.frontdoor")
    documented = yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"]
    spec = common.frontdoor_argument_spec()
    assert set(documented) == set(spec)
    for name, opt in spec.items():
        assert documented[name]["type"] == opt["type"], name
        assert documented[name].get("default") == opt.get("default"), name


def test_engine_config_keeps_the_state_dir_file_and_lets_options_win(common, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "frontdoors": [{"id": "default", "tcpSharesEnabled": False}],
        "vault": {"url": "http://file:8200", "kvMount": "kv-file"},
    }))
    params = {name: None for name in common.frontdoor_argument_spec()}
    params.update(backend="vault", vault_url="http://opt:8200", vault_auth_method="token", timeout=30,
                  validate_certs=True)
    data = common.engine_config_data(params, str(tmp_path))
    assert data["frontdoors"] == [{"id": "default", "tcpSharesEnabled": False}]
    assert data["backend"] == "vault"
    assert data["vault"]["url"] == "http://opt:8200"
    assert data["vault"]["kvMount"] == "kv-file"
    assert data["vault"]["authMethod"] == "token"


def test_approle_options_map_to_the_engine_keys(common, tmp_path):
    params = {name: None for name in common.frontdoor_argument_spec()}
    params.update(backend="vault", vault_auth_method="approle", vault_role_id="r", vault_secret_id="s",
                  validate_certs=False, ca_path="/ca.pem", pki_mount="pki2", kv_prefix="fd")
    vault = common.engine_config_data(params, str(tmp_path))["vault"]
    assert vault == {"authMethod": "approle", "roleId": "r", "secretId": "s", "verify": False, "caCert": "/ca.pem",
                     "pkiMount": "pki2", "kvPrefix": "fd"}


class FakeModule:
    def __init__(self):
        self.failed = None

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise SystemExit(1)


def test_fail_from_error_keeps_code_message_and_details(common, collection_path):
    errors = importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.errors")
    module = FakeModule()
    exc = errors.FrontdoorError("token_expired", "This token expired at 2030-01-01T00:00:00Z.",
                                details={"expiresAt": "2030-01-01T00:00:00Z"})
    with pytest.raises(SystemExit):
        common.fail_from_error(module, exc, "Redeeming failed", path="/x")
    assert module.failed == {
        "msg": "Redeeming failed: This token expired at 2030-01-01T00:00:00Z.",
        "error_code": "token_expired",
        "error_details": {"expires_at": "2030-01-01T00:00:00Z"},
        "path": "/x",
    }


def test_retry_after_is_passed_on(common, collection_path):
    errors = importlib.import_module("ansible_collections.frontdoor.pki.plugins.module_utils.errors")
    module = FakeModule()
    with pytest.raises(SystemExit):
        common.fail_from_error(module, errors.FrontdoorError("redemption_in_progress", "busy", retry_after=3))
    assert module.failed["retry_after"] == 3 and module.failed["error_code"] == "redemption_in_progress"


def test_config_file_approle_is_kept_when_the_option_is_left_at_its_default(common, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"vault": {"roleId": "r", "secretId": "s"}}))
    params = {name: None for name in common.frontdoor_argument_spec()}
    params.update(backend="vault", vault_auth_method="token")
    vault = common.engine_config_data(params, str(tmp_path))["vault"]
    assert "authMethod" not in vault and vault["roleId"] == "r"
