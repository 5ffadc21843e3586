# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""frontdoor.pki.enroll: one task that keeps a host enrolled (documentation: plugins/modules/enroll.py).

Why an action plugin: the token must be minted with admin credentials, which live on the controller, and
redeemed with a key that lives on the host. An action plugin runs on the controller and can execute a module
on the host, so one task does both, and the secret exists only in this process's memory and in the one
module call that spends it (as a no_log option). A token is minted only when the host's own module says it
needs one (``missing_token: skip``), so a rerun mints nothing, and renewal with the current certificate
needs no token at all.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import FILE_COMMON_ARGUMENTS
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    certificate_files_argument_spec,
    connect,
    fail_from_error,
    frontdoor_argument_spec,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError

MODULE = "frontdoor.pki.client_certificate"
#: options that stay on the controller: minting, and the admin credential
CONTROLLER_ONLY = frozenset(("api_token", "token_name", "token_ttl", "subject_alt_names", "organization",
                             "organizational_unit", "common_name"))
#: connection options a host needs to reach the frontdoor itself
HOST_CONNECTION = ("frontdoor_id", "gateway_url", "validate_certs", "ca_path", "timeout")
HOST_ENGINE = ("backend", "state_dir", "vault_url", "vault_token", "vault_auth_method", "vault_role_id",
               "vault_secret_id", "vault_namespace", "pki_mount", "kv_mount", "kv_prefix")


def argument_spec() -> Dict[str, Dict[str, Any]]:
    spec = frontdoor_argument_spec()
    spec.update(certificate_files_argument_spec())
    spec.update({k: dict(v) for k, v in FILE_COMMON_ARGUMENTS.items()})
    spec.update(
        privatekey_path=dict(type="path"),
        state=dict(type="str", default="present", choices=["present", "revoked", "absent"]),
        revoke=dict(type="bool", default=False),
        token_name=dict(type="str"),
        token_ttl=dict(type="str", default="15m"),
        subject_alt_names=dict(type="dict"),
    )
    return spec


class _Failed(Exception):
    def __init__(self, result: Dict[str, Any]):
        super().__init__(result.get("msg"))
        self.result = result


class _ControllerModule:
    """What ansible_common.connect/fail_from_error need of a module, on the controller: the options and a
    fail_json that stops the action with the same msg and error_code a module would return."""

    def __init__(self, params: Dict[str, Any]):
        self.params = params

    def fail_json(self, **kwargs):
        kwargs["failed"] = True
        raise _Failed(kwargs)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        validator = ArgumentSpecValidator(argument_spec(), required_if=[("state", "present", ("privatekey_path",))])
        validated = validator.validate(self._task.args)
        if validated.error_messages:
            # the messages name options, never their values (no_log values are masked by the validator)
            raise AnsibleActionFail("Invalid options for frontdoor.pki.enroll: %s" % "; ".join(
                validated.error_messages))
        params = validated.validated_parameters
        for option in ("private_key_size", "remaining_days"):
            if params[option] is not None and params[option] < 0:
                raise AnsibleActionFail("%s must not be negative." % option)
        params["token_name"] = params["token_name"] or task_vars.get("inventory_hostname")
        if params["common_name"] is None:
            params["common_name"] = task_vars.get("inventory_hostname")

        if params["state"] != "present":
            result.update(self._retire(params, task_vars))
            result["minted"] = False
            return result

        host_args = self._host_args(params)
        # Without a certificate on the host nothing can renew, so a token is needed for sure: a shell test of the
        # path instead of a module run saves a whole AnsiballZ round trip per new host. force=true wants a token.
        if self._task.check_mode or (not params["force"] and self._remote_file_exists(params["path"])):
            probe = self._on_host(host_args, task_vars)
            if probe.get("failed") or not probe.get("needs_token"):
                result.update(probe)
                result["minted"] = False
                return result
            if self._task.check_mode:
                # a real run would mint a token and redeem it: say so, spend nothing
                result.update(probe)
                result.update(changed=True, minted=False)
                return result

        try:
            minted = self._mint(params)
        except _Failed as exc:
            result.update(exc.result)
            result["minted"] = False
            return result
        secret = minted.pop("token")
        try:
            host_args_with_token = dict(host_args, token=secret, missing_token="fail")  # noqa: S106 - a choice
            issued = self._on_host(host_args_with_token, task_vars)
        finally:
            del secret
            host_args_with_token = None
        result.update(issued)
        result.update(minted=True, token_id=minted.get("id"))
        if issued.get("failed"):
            # no orphan: the token was not spent, and nobody else has its secret
            result["token_deleted"] = self._quietly(params, lambda backend: backend.delete_token(minted["id"]))
        else:
            # tokens of this name that earlier failed runs left unredeemed can never be used: drop them
            self._quietly(params, lambda backend: self._drop_orphans(backend, params["token_name"], minted.get("id")))
        return result

    @staticmethod
    def _drop_orphans(backend, name: str, keep: Optional[str]) -> None:
        for token in backend.list_tokens(name=name, status=["active"]):
            if token["id"] != keep:
                backend.delete_token(token["id"])

    # ------------------------------------------------------------------ revoked / absent
    def _retire(self, params: Dict[str, Any], task_vars) -> Dict[str, Any]:
        """state=revoked: revoke the host's certificate on the controller (the admin credentials stay there) and keep
        the files; state=absent: remove the files on the host, after revoking the certificate if revoke=true."""
        path = params["path"]
        held = self._execute_module(module_name="frontdoor.pki.client_certificate_info", module_args={"path": path},
                                    task_vars=task_vars)
        held.pop("invocation", None)
        if held.get("failed"):
            return held
        out: Dict[str, Any] = dict(changed=False, path=path)
        if held.get("exists"):
            out.update(serial_number=held["serial_number"], common_name=held.get("common_name"),
                       not_after=held.get("not_after"))
        if params["state"] == "revoked" or params["revoke"]:
            if not held.get("exists"):
                if params["state"] == "revoked":
                    return dict(out, failed=True, error_code="invalid_request",
                                msg="There is no readable certificate at %s to revoke." % path)
                out["revoked"] = False
            else:
                try:
                    changed, certificate_id = self._revoke(params, held["serial_number"])
                except _Failed as exc:
                    return dict(out, **exc.result)
                out.update(changed=changed, revoked=True, certificate_id=certificate_id)
        if params["state"] == "absent":
            args = {"path": path, "state": "absent", "backup": params["backup"]}
            for name in ("chain_path", "fullchain_path"):
                if params.get(name):
                    args[name] = params[name]
            removed = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            removed.pop("invocation", None)
            if removed.get("failed"):
                return dict(out, **removed)
            out["removed"] = removed.get("removed", [])
            out["changed"] = bool(out["changed"] or removed.get("changed"))
        return out

    def _revoke(self, params: Dict[str, Any], serial: str):
        """(changed, certificate id): the certificate with this serial revoked on the frontdoor (admin)."""
        backend = self._backend(params)
        try:
            record = backend.find_certificate(serial)
            if record is None:
                raise _Failed(dict(failed=True, error_code="certificate_not_found",
                                   msg="The frontdoor has no certificate with serial %s (the one at %s): it was not "
                                       "issued by this frontdoor (check frontdoor_id)." % (serial, params["path"])))
            if record.get("revoked_at"):
                return False, record.get("id")
            if not self._task.check_mode:
                backend.revoke_certificate(record["id"])
            return True, record.get("id")
        except FrontdoorError as exc:
            try:
                fail_from_error(_ControllerModule(params), exc, "Revoking the certificate with serial %s" % serial)
            except _Failed as failed:
                raise failed from None
            raise
        finally:
            backend.close()

    # ------------------------------------------------------------------ host side
    def _host_args(self, params: Dict[str, Any]) -> Dict[str, Any]:
        args: Dict[str, Any] = {}
        for name in HOST_CONNECTION:
            if params.get(name) is not None:
                args[name] = params[name]
        if not params.get("gateway_url"):
            # the embedded engine (or Vault) is reached from the host itself: a lab or local-connection setup
            for name in HOST_ENGINE:
                if params.get(name) is not None:
                    args[name] = params[name]
        for name in list(certificate_files_argument_spec()) + list(FILE_COMMON_ARGUMENTS):
            if name in CONTROLLER_ONLY or params.get(name) is None:
                continue
            args[name] = params[name]
        args["missing_token"] = "skip"
        return args

    def _on_host(self, module_args: Dict[str, Any], task_vars) -> Dict[str, Any]:
        result = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        result.pop("invocation", None)  # it lists the options, and one of them may be the token (masked, still)
        return result

    # ------------------------------------------------------------------ controller side
    def _backend(self, params: Dict[str, Any]):
        return connect(_ControllerModule(params))

    def _mint(self, params: Dict[str, Any]) -> Dict[str, Any]:
        backend = self._backend(params)
        try:
            extra: Dict[str, Any] = {}
            if params.get("subject_alt_names"):
                extra["subject_alt_names"] = params["subject_alt_names"]
            return backend.create_token(
                params["token_name"], common_name=params["common_name"], organization=params["organization"],
                organizational_unit=params["organizational_unit"], ttl=params["token_ttl"], **extra
            )
        except TypeError as exc:
            raise _Failed(dict(failed=True, error_code="not_supported",
                               msg="This frontdoor.pki cannot mint tokens with these options: %s" % exc)) from None
        except FrontdoorError as exc:
            try:
                fail_from_error(_ControllerModule(params), exc, "Minting a token for %s on the controller"
                                % params["token_name"])
            except _Failed as failed:
                raise failed from None
            raise
        finally:
            backend.close()

    def _quietly(self, params: Dict[str, Any], action) -> Optional[bool]:
        """Best-effort housekeeping after the main work: its failure must not hide the main result."""
        try:
            backend = self._backend(params)
        except _Failed:
            return None
        try:
            action(backend)
            return True
        except FrontdoorError:
            return False
        finally:
            backend.close()
