# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every frontdoor.pki module shares: options, library checks, one backend object.

The modules never care whether they run the engine in-process (``backend: local`` on a
state directory, or ``backend: vault``) or ask an HTTP gateway (``gateway_url``):
:func:`connect` gives one object with the same operations and snake_case results, and
:func:`fail_from_error` turns any :class:`FrontdoorError` into ``fail_json`` with the
same ``error_code`` the gateway would have sent.
"""

from __future__ import annotations

import abc
import getpass
import os
import traceback
from typing import Any, Dict, List, Optional, Sequence

from ansible.module_utils.basic import env_fallback, missing_required_lib

from .errors import FrontdoorError
from .tokens import parse_duration, parse_timestamp
from .views import certificate_view, snake_case, token_view

try:
    import cryptography  # noqa: F401  pylint: disable=unused-import

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the host
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()


def _import_error(name: str) -> Optional[str]:
    """The traceback of importing ``name``, or None if it imports. Asked only where the library is needed (the Vault
    backend): importing hvac and requests on every module run would cost each host ~0.3 s for nothing."""
    try:
        __import__(name)
    except ImportError:  # pragma: no cover - depends on the host
        return traceback.format_exc()
    return None


LIST_PAGE_SIZE = 1000
LIST_MAX_PAGES = 100


def frontdoor_argument_spec() -> Dict[str, Dict[str, Any]]:
    """Connection and backend options (documented once in the frontdoor.pki.frontdoor doc fragment).

    Environment fallbacks follow community.hashi_vault for the Vault options.
    """
    return dict(
        frontdoor_id=dict(type="str", default="default"),
        gateway_url=dict(type="str", fallback=(env_fallback, ["FRONTDOOR_URL"])),
        api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["FRONTDOOR_API_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="int", default=30),
        backend=dict(type="str", default="local", choices=["local", "vault"]),
        state_dir=dict(type="path", fallback=(env_fallback, ["FRONTDOOR_STATE_DIR"])),
        vault_url=dict(type="str", fallback=(env_fallback, ["VAULT_ADDR", "BAO_ADDR"])),
        vault_token=dict(type="str", no_log=True, fallback=(env_fallback, ["VAULT_TOKEN", "BAO_TOKEN"])),
        vault_auth_method=dict(type="str", default="token", choices=["token", "approle"]),
        vault_role_id=dict(type="str"),
        vault_secret_id=dict(type="str", no_log=True),
        vault_namespace=dict(type="str", fallback=(env_fallback, ["VAULT_NAMESPACE", "BAO_NAMESPACE"])),
        pki_mount=dict(type="str"),
        kv_mount=dict(type="str"),
        kv_prefix=dict(type="str"),
    )


def certificate_files_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The host's key and certificate options (doc fragment frontdoor.pki.client_certificate), shared by
    client_certificate and the enroll action, which passes them through to it."""
    return dict(
        path=dict(type="path", required=True),
        chain_path=dict(type="path"),
        fullchain_path=dict(type="path"),
        privatekey_path=dict(type="path"),
        privatekey_passphrase=dict(type="str", no_log=True),
        # (names with "key" in them, none a secret: no_log=False says so to the sanity test)
        privatekey_mode=dict(type="raw", no_log=False),
        privatekey_owner=dict(type="str", no_log=False),
        privatekey_group=dict(type="str", no_log=False),
        private_key_type=dict(type="str", default="ec", choices=["ec", "rsa"]),
        private_key_size=dict(type="int", default=2048),
        private_key_curve=dict(type="str", default="secp256r1", choices=["secp256r1", "secp384r1"]),
        regenerate=dict(type="str", default="partial_idempotence",
                        choices=["never", "fail", "partial_idempotence", "full_idempotence", "always"]),
        common_name=dict(type="str"),
        organization=dict(type="str"),
        organizational_unit=dict(type="str"),
        remaining_days=dict(type="int", default=30),
        renew=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
    )


def client_certificate_argument_spec() -> Dict[str, Dict[str, Any]]:
    spec = frontdoor_argument_spec()
    spec.update(certificate_files_argument_spec())
    spec.update(
        token=dict(type="str", no_log=True),
        missing_token=dict(type="str", default="fail", choices=["fail", "skip"]),
        csr_path=dict(type="path"),
        csr_content=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "revoked"]),
        revoke=dict(type="bool", default=False),
    )
    return spec


def check_libraries(module, need_cryptography: bool = False) -> None:
    """fail_json with missing_required_lib for what this run needs and the host lacks."""
    params = module.params
    if not params.get("gateway_url"):
        # (a gateway is reached through ansible.module_utils.urls: nothing to install on the host for it)
        # the engine itself needs cryptography (CSR checks, the local CA)
        need_cryptography = True
        if params.get("backend") == "vault":
            for library in ("hvac", "requests"):
                error = _import_error(library)
                if error is not None:
                    module.fail_json(msg=missing_required_lib(library), exception=error)
    if need_cryptography and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)


def fail_from_error(module, exc: FrontdoorError, context: Optional[str] = None, **extra) -> None:
    """fail_json whose msg says the cause and what to do, and whose error_code is the gateway's code."""
    message = exc.message
    if exc.code == "unauthorized" and "api_token" not in message:
        # only a gateway says this; tell the playbook author which option it is about
        message += (" Check api_token (or FRONTDOOR_API_TOKEN): it must be the gateway's admin token or an API "
                    "token the gateway's configuration declares.")
    if context:
        message = "%s: %s" % (context, message)
    result = dict(extra)
    if exc.details:
        result["error_details"] = snake_case(dict(exc.details))
    if exc.retry_after:
        result["retry_after"] = exc.retry_after
    module.fail_json(msg=message, error_code=exc.code, **result)


class Backend(abc.ABC):
    """The operations the modules need, with snake_case dicts as results (never a secret, except
    ``token`` in what :meth:`create_token` returns)."""

    frontdoor_id = "default"

    @abc.abstractmethod
    def create_token(self, name, common_name=None, organization=None, organizational_unit=None, ttl=None,
                     expires_at=None, subject_alt_names=None) -> dict:
        """Create a token; the result carries the secret under ``token``, the only time it exists.
        ``subject_alt_names``: the API shape ({"dns": [...], ...}) or None."""

    @abc.abstractmethod
    def list_tokens(self, name: Optional[str] = None, status: Optional[Sequence[str]] = None) -> List[dict]:
        """Every token of the frontdoor matching ``name``/``status``, oldest first, without secrets."""

    @abc.abstractmethod
    def delete_token(self, token_id: str) -> bool:
        """True if it was deleted, False if it was already gone."""

    @abc.abstractmethod
    def cleanup(self, statuses: Sequence[str], older_than, dry_run: bool) -> List[str]:
        """Ids of the tokens removed (or, with ``dry_run``, that would be)."""

    @abc.abstractmethod
    def redeem(self, secret: str, csr_pem: str) -> dict:
        """The certificate record for ``csr_pem``; the same key again returns the same certificate
        (``replayed`` true)."""

    @abc.abstractmethod
    def list_certificates(self, token_id: Optional[str] = None, revoked: Optional[bool] = None) -> List[dict]:
        """Every certificate record of the frontdoor (admin), oldest first."""

    @abc.abstractmethod
    def revoke_certificate(self, certificate_id: str) -> dict:
        """Revoke one certificate (admin); revoking a revoked certificate changes nothing."""

    @abc.abstractmethod
    def renew(self, certificate_pem: str, private_key, csr_pem: str) -> dict:
        """A new certificate for ``csr_pem`` in place of ``certificate_pem``, authenticated by a renewal JWT
        that ``private_key`` (the current certificate's key) signs; no token, no admin credentials."""

    def renewal_jwt(self, certificate_pem: str, private_key) -> str:
        """The x5c JWT of renewal_client (jwcrypto), leaf only: the frontdoor knows its own chain."""
        from cryptography import x509

        from .renewal_client import make_renewal_token

        leaf = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
        return make_renewal_token([leaf], private_key, self.frontdoor_id)

    def find_certificate(self, serial_number: str) -> Optional[dict]:
        """The record of the certificate with this serial (lower-case hex), or None."""
        wanted = serial_number.lower().lstrip("0")
        for record in self.list_certificates():
            if str(record.get("serial_number") or "").lower().replace(":", "").lstrip("0") == wanted:
                return record
        return None

    @abc.abstractmethod
    def ca_chain(self) -> List[str]:
        """PEM CA certificates from the issuer up to the root."""

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    """The engine in this process, on the state directory (or Vault) a gateway would serve."""

    def __init__(self, service, frontdoor_id: str, actor: str):
        self.service = service
        self.frontdoor_id = frontdoor_id
        self.actor = actor

    def create_token(self, name, common_name=None, organization=None, organizational_unit=None, ttl=None,
                     expires_at=None, subject_alt_names=None) -> dict:
        record, secret = self.service.create_token(
            self.frontdoor_id, name=name, common_name=common_name, organization=organization,
            organizational_unit=organizational_unit, ttl=ttl, expires_at=expires_at,
            subject_alt_names=subject_alt_names, actor=self.actor,
        )
        # imported here, not at the top: the ACME messages pull in acme, josepy and requests, which every module run
        # on every host would otherwise load (~0.3 s each) although only minting on the engine needs them
        from .acme.protocol import with_eab

        return snake_case(with_eab(token_view(record, secret=secret), self.service.store, record))

    def list_tokens(self, name=None, status=None) -> List[dict]:
        items = []
        now = self.service.clock()
        for page in range(LIST_MAX_PAGES):
            result = self.service.list_tokens(
                self.frontdoor_id, status=list(status) if status else None, name=name, page=page,
                size=LIST_PAGE_SIZE, sort="createdAt,asc",
            )
            items.extend(snake_case(token_view(r, now)) for r in result.items)
            if (page + 1) * LIST_PAGE_SIZE >= result.total or not result.items:
                break
        return items

    def delete_token(self, token_id: str) -> bool:
        try:
            self.service.delete_token(self.frontdoor_id, token_id, actor=self.actor)
        except FrontdoorError as exc:
            if exc.code == "token_not_found":
                return False
            raise
        return True

    def cleanup(self, statuses, older_than, dry_run) -> List[str]:
        return list(self.service.cleanup(
            self.frontdoor_id, statuses=list(statuses), older_than=older_than, dry_run=dry_run, actor=self.actor
        ))

    def redeem(self, secret: str, csr_pem: str) -> dict:
        redemption = self.service.redeem(self.frontdoor_id, secret, csr_pem, source=self.actor)
        record = snake_case(certificate_view(redemption.certificate))
        record["replayed"] = bool(redemption.replayed)
        return record

    def list_certificates(self, token_id=None, revoked=None) -> List[dict]:
        items = []
        for page in range(LIST_MAX_PAGES):
            result = self.service.list_certificates(self.frontdoor_id, page=page, size=LIST_PAGE_SIZE,
                                                    sort="createdAt,asc", token_id=token_id, revoked=revoked)
            items.extend(snake_case(certificate_view(r)) for r in result.items)
            if (page + 1) * LIST_PAGE_SIZE >= result.total or not result.items:
                break
        return items

    def revoke_certificate(self, certificate_id: str) -> dict:
        record = self.service.revoke_certificate(self.frontdoor_id, certificate_id, actor=self.actor)
        return snake_case(certificate_view(record))

    def renew(self, certificate_pem: str, private_key, csr_pem: str) -> dict:
        jwt = self.renewal_jwt(certificate_pem, private_key)
        redemption = self.service.renew(self.frontdoor_id, "Bearer " + jwt, csr_pem, source=self.actor)
        record = snake_case(certificate_view(redemption.certificate))
        record["replayed"] = bool(redemption.replayed)
        return record

    def find_certificate(self, serial_number: str) -> Optional[dict]:
        record = self.service.store.find_certificate_by_serial(
            self.frontdoor_id, serial_number.lower().replace(":", "").lstrip("0") or "0")
        return snake_case(certificate_view(record)) if record is not None else None

    def ca_chain(self) -> List[str]:
        return list(self.service.ca_chain(self.frontdoor_id))

    def close(self) -> None:
        self.service.close()


class GatewayBackend(Backend):
    """The same operations through a gateway's HTTP API (:class:`host_client.UrlsGatewayClient`)."""

    def __init__(self, client, frontdoor_id: str):
        self.client = client
        self.frontdoor_id = frontdoor_id

    def create_token(self, name, common_name=None, organization=None, organizational_unit=None, ttl=None,
                     expires_at=None, subject_alt_names=None) -> dict:
        return snake_case(self.client.create_token(
            self.frontdoor_id, name, common_name=common_name, organization=organization,
            organizational_unit=organizational_unit, ttl=ttl, expires_at=expires_at,
            subjectAltNames=subject_alt_names,  # host_client takes further API fields by their camelCase names
        ))

    def list_tokens(self, name=None, status=None) -> List[dict]:
        return snake_case(self.client.list_tokens(self.frontdoor_id, status=list(status) if status else None,
                                                  name=name))

    def delete_token(self, token_id: str) -> bool:
        try:
            self.client.delete_token(self.frontdoor_id, token_id)
        except FrontdoorError as exc:
            if exc.code == "token_not_found":
                return False
            raise
        return True

    def cleanup(self, statuses, older_than, dry_run) -> List[str]:
        return self.client.cleanup(self.frontdoor_id, statuses=list(statuses), older_than=older_than,
                                   dry_run=dry_run)

    def redeem(self, secret: str, csr_pem: str) -> dict:
        return snake_case(self.client.redeem(self.frontdoor_id, secret, csr_pem))

    def list_certificates(self, token_id=None, revoked=None) -> List[dict]:
        return snake_case(self.client.list_certificates(self.frontdoor_id, token_id=token_id, revoked=revoked))

    def revoke_certificate(self, certificate_id: str) -> dict:
        self.client.revoke_certificate(self.frontdoor_id, certificate_id)
        return snake_case(self.client.get_certificate(self.frontdoor_id, certificate_id))

    def renew(self, certificate_pem: str, private_key, csr_pem: str) -> dict:
        jwt = self.renewal_jwt(certificate_pem, private_key)
        return snake_case(self.client.renew(self.frontdoor_id, csr_pem, jwt))

    def ca_chain(self) -> List[str]:
        return self.client.ca_chain(self.frontdoor_id)

    def close(self) -> None:
        self.client.close()


def _read_config_file(path: str) -> Dict[str, Any]:
    from .config import ConfigError, read_config_file

    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError("config file %s must hold a mapping" % path)
    return data


def engine_config_data(params: Dict[str, Any], state_dir: str) -> Dict[str, Any]:
    """The state dir's config.yaml (what a gateway on it would use), with the module's options on top."""
    from .config import CONFIG_FILE_NAME

    path = os.path.join(state_dir, CONFIG_FILE_NAME)
    data: Dict[str, Any] = _read_config_file(path) if os.path.exists(path) else {}
    data["backend"] = params.get("backend") or data.get("backend") or "local"
    vault = dict(data.get("vault") or {})
    for option, key in (
        ("vault_url", "url"), ("vault_token", "token"), ("vault_role_id", "roleId"), ("vault_secret_id", "secretId"),
        ("vault_namespace", "namespace"), ("pki_mount", "pkiMount"), ("kv_mount", "kvMount"),
        ("kv_prefix", "kvPrefix"), ("ca_path", "caCert"),
    ):
        if params.get(option) is not None:
            vault[key] = params[option]
    if params.get("vault_role_id") or params.get("vault_auth_method") == "approle":
        vault["authMethod"] = "approle"
    elif "authMethod" not in vault and not vault.get("roleId"):
        # the option's default; a config file with a roleId and no authMethod keeps meaning AppRole
        vault["authMethod"] = params.get("vault_auth_method") or "token"
    if params.get("validate_certs") is False:
        vault["verify"] = False
    if params.get("timeout"):
        vault["timeout"] = params["timeout"]
    data["vault"] = vault
    return data


def actor_name() -> str:
    try:
        return "ansible:%s" % getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "ansible"


def connect(module) -> Backend:
    """The backend the options ask for; fails the module (with error_code) if it cannot be set up."""
    params = module.params
    frontdoor_id = params.get("frontdoor_id") or "default"
    if params.get("gateway_url"):
        from .host_client import UrlsGatewayClient

        try:
            client = UrlsGatewayClient(
                params["gateway_url"], api_token=params.get("api_token"),
                validate_certs=params.get("validate_certs", True), ca_path=params.get("ca_path"),
                timeout=params.get("timeout") or 30,
            )
        except FrontdoorError as exc:
            fail_from_error(module, exc)
        return GatewayBackend(client, frontdoor_id)

    from .config import ConfigError, build_service, load_config, resolve_state_dir

    state_dir = resolve_state_dir(params.get("state_dir"), {})
    data: Dict[str, Any] = {}
    try:
        data = engine_config_data(params, state_dir)
        # env={}: the module's options (with their own env fallbacks) are the whole truth here
        config = load_config(state_dir=state_dir, env={}, data=data)
        service = build_service(config)
    except ConfigError as exc:
        module.fail_json(msg="Invalid frontdoor configuration: %s" % exc, error_code="invalid_request")
    except FrontdoorError as exc:
        fail_from_error(module, exc, "Cannot set up the %s backend" % data.get("backend", "local"))
    except OSError as exc:
        module.fail_json(
            msg="Cannot use the state directory %s: %s" % (state_dir, exc), error_code="store_unavailable"
        )
    return LocalBackend(service, frontdoor_id, actor_name())


def validate_expiry(ttl, expires_at) -> None:
    """Check ttl/expires_at locally so that check mode reports the same errors as a real run."""
    if ttl is not None:
        parse_duration(ttl, "ttl")  # it takes "3600" as well as 3600, and refuses what int() would choke on
    if expires_at is not None:
        parse_timestamp(expires_at, "expires_at")
