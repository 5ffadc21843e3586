# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signer on a Vault / OpenBao PKI mount.

Forcing the subject: ``pki/sign/<role>`` with ``use_csr_common_name=false``,
``use_csr_sans=false``, the decided CN as ``common_name`` and ``exclude_cn_from_sans=true``
takes nothing from the CSR but its public key. Vault takes O and OU *only* from the role
(per-request values are ignored with a warning), so with ``manageRoles: true`` (default) the
signer keeps one role per distinct (O, OU) pair — named ``frontdoor-<hash>`` so that the
policy can grant ``pki/roles/frontdoor-*`` and nothing else — written once per process on
first need (an idempotent write: several gateways may do it at once) and cached.
``sign-verbatim`` would copy the CSR's subject, SANs and EKU: not usable here.

SANs: a token's pre-approved SANs go in the sign request (``alt_names`` for DNS names and emails, which
Vault sorts by the ``@``; ``ip_sans``; ``uri_sans``), as comma-separated text (the only form OpenBao takes
for ``alt_names``; sans.py refuses commas inside a value), never the CSR's. A managed role only
admits IP and URI SANs when the token has SANs: such requests use a role of their own (``sans`` in the
role's hash material, ``allow_ip_sans`` and ``allowed_uri_sans: ["*"]``), so the roles of tokens without
SANs stay as strict as before. An operator's own role must allow what the tokens carry; whatever it
says, the returned SANs are checked to be exactly the token's (``issued.sans_are``).

With ``manageRoles: false`` an operator provides the roles: ``role`` (one fixed role) or
``roleTemplate`` (``{organization}``, ``{organizationalUnit}``, ``{hash}``, ``{frontdoor}``).
Whatever the role says, the returned certificate is checked: a subject or key that differs
from the request is ``signer_error``; a validity that Vault clamped *shorter* (role or mount
max TTL) is accepted, a longer one is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report what is missing with missing_required_lib instead of a traceback.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:  # pragma: no cover
    x509 = serialization = rsa = None

from ..errors import FrontdoorError, SignerUnavailable
from ..issued import key_is, sans_are, subject_is
from ..model import CertificateRecord, IssuedCertificate, SignRequest, utcnow
from ..tokens import parse_duration
from ..vault.client import VaultClient, hvac_exc, shared_client, whole_errors
from .base import Signer

ROLE_PREFIX = "frontdoor-"
EXPIRY_SLACK = _dt.timedelta(seconds=120)
DEFAULT_ROLE_MAX_TTL = 365 * 86400
_ROLE_NAMES_MAX = 4096  # (O, OU) pairs remembered per signer; bounded for long-running gateways


def role_name(organization: Optional[str], organizational_unit: Optional[str], max_ttl: int, no_store: bool,
              rsa: bool = False, sans: bool = False) -> str:
    """``frontdoor-<hash>``: one role per (O, OU), key family and role settings; the hash keeps names
    short and path-safe. RSA keys get their own role because only they get keyEncipherment
    (Vault copies the role's key_usage whatever the key type); tokens with SANs get their own role
    because only those need IP and URI SANs allowed (the names of roles without them do not change)."""
    material = json.dumps(
        [organization, organizational_unit, int(max_ttl), bool(no_store)] + (["rsa"] if rsa else [])
        + (["sans"] if sans else [])
    )
    return ROLE_PREFIX + hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]


def role_parameters(organization: Optional[str], organizational_unit: Optional[str], max_ttl: int, no_store: bool,
                    rsa: bool = False, sans: bool = False) -> Dict[str, Any]:
    """A client-auth-only role that takes nothing from the CSR but the key. With ``sans``, it also admits the
    IP and URI SANs the sign request names (DNS names and emails pass through ``allow_any_name``); the
    values come from the token, never from the CSR (``use_csr_sans`` is off)."""
    return {
        "organization": [organization] if organization else [],
        "ou": [organizational_unit] if organizational_unit else [],
        "allow_any_name": True,
        "enforce_hostnames": False,
        "cn_validations": ["disabled"],
        "allow_ip_sans": bool(sans),
        "allowed_uri_sans": ["*"] if sans else [],
        "allowed_other_sans": [],
        "allow_wildcard_certificates": False,
        "use_csr_common_name": False,
        "use_csr_sans": False,
        "client_flag": True,
        "server_flag": False,
        "code_signing_flag": False,
        "email_protection_flag": False,
        "key_type": "any",
        "key_usage": ["DigitalSignature", "KeyEncipherment"] if rsa else ["DigitalSignature"],
        "ext_key_usage": [],
        "basic_constraints_valid_for_non_ca": True,
        "require_cn": True,
        "max_ttl": "%ds" % max_ttl,
        "ttl": "%ds" % max_ttl,
        "no_store": bool(no_store),
        "generate_lease": False,
        "country": [], "locality": [], "province": [], "street_address": [], "postal_code": [],
    }


def vault_serial(serial_hex: str) -> str:
    """Our lower-case hex serial -> Vault's colon-separated form."""
    value = "%x" % int(serial_hex, 16)
    if len(value) % 2:
        value = "0" + value
    return ":".join(value[i:i + 2] for i in range(0, len(value), 2))


def _path_safe(value: Optional[str]) -> str:
    """A subject value as a role-name fragment: letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value or "")


class _UnknownRole(Exception):
    """Vault does not know the role (internal signal between _sign_once and sign)."""


class VaultPKISigner(Signer):
    kind = "vault"

    def __init__(self, client: VaultClient, frontdoor_id: str, mount: str, *, manage_roles: bool = True,
                 role: Optional[str] = None, role_template: Optional[str] = None,
                 role_max_ttl: int = DEFAULT_ROLE_MAX_TTL, no_store: bool = False):
        if not manage_roles and not (role or role_template):
            raise FrontdoorError(
                "invalid_request",
                "frontdoor %s: signer.manageRoles is false, so set signer.role or signer.roleTemplate." % frontdoor_id,
            )
        if role_template is not None:
            try:
                role_template.format(organization="o", organizationalUnit="ou", hash="0" * 16, frontdoor=frontdoor_id)
            except (KeyError, IndexError, ValueError) as exc:
                raise FrontdoorError(
                    "invalid_request",
                    "frontdoor %s: signer.roleTemplate %r is not valid (%s); use {organization}, "
                    "{organizationalUnit}, {hash} and {frontdoor}." % (frontdoor_id, role_template, exc),
                ) from None
        self.client = client
        self.frontdoor_id = frontdoor_id
        self.mount = mount.strip("/")
        self.manage_roles = manage_roles
        self.role = role
        self.role_template = role_template
        self.role_max_ttl = int(role_max_ttl)
        self.no_store = bool(no_store)
        self._roles: Dict[str, bool] = {}
        self._role_names: Dict[Tuple[Optional[str], Optional[str], bool, bool], str] = {}
        self._lock = threading.Lock()
        self._chain: Optional[List[str]] = None
        self._issuer_not_after: Optional[_dt.datetime] = None

    # -- roles -------------------------------------------------------------------------
    def role_for(self, organization: Optional[str], organizational_unit: Optional[str], rsa: bool = False,
                 sans: bool = False) -> str:
        if self.manage_roles:
            key = (organization, organizational_unit, rsa, sans)
            name = self._role_names.get(key)
            if name is None:  # a JSON dump and a SHA-256 per redemption otherwise; the settings never change
                name = role_name(organization, organizational_unit, self.role_max_ttl, self.no_store, rsa, sans)
                if len(self._role_names) >= _ROLE_NAMES_MAX:
                    self._role_names.clear()
                self._role_names[key] = name
            return name
        if self.role:
            return self.role
        digest = hashlib.sha256(("%s\x00%s" % (organization or "", organizational_unit or "")).encode()).hexdigest()[:16]
        return self.role_template.format(
            organization=_path_safe(organization), organizationalUnit=_path_safe(organizational_unit), hash=digest,
            frontdoor=self.frontdoor_id,
        )

    def _ensure_role(self, name: str, organization: Optional[str], organizational_unit: Optional[str],
                     rsa: bool = False, sans: bool = False) -> None:
        if not self.manage_roles or self._roles.get(name):
            return
        params = role_parameters(organization, organizational_unit, self.role_max_ttl, self.no_store, rsa, sans)

        def run(c):
            return c.secrets.pki.create_or_update_role(name, extra_params=dict(params), mount_point=self.mount)

        try:
            self.client.call(run, SignerUnavailable, "creating PKI role %s on mount %s" % (name, self.mount))
        except (hvac_exc.InvalidRequest, hvac_exc.InvalidPath) as exc:
            raise SignerUnavailable(
                "Vault refused to create PKI role %s on mount %r (%s); check that the mount exists and is a PKI "
                "engine." % (name, self.mount, _short(exc))
            ) from None
        with self._lock:
            self._roles[name] = True

    # -- signing ------------------------------------------------------------------------
    def sign(self, request: SignRequest) -> IssuedCertificate:
        subject = request.subject
        rsa_key = isinstance(request.key(), rsa.RSAPublicKey)
        sans = request.subject_alt_names
        name = self.role_for(subject.organization, subject.organizational_unit, rsa_key, bool(sans))
        self._ensure_role(name, subject.organization, subject.organizational_unit, rsa_key, bool(sans))
        now = utcnow()
        ttl = max(1, int(math.ceil((request.not_after - now).total_seconds())))
        params = {
            "use_csr_common_name": False,
            "use_csr_sans": False,
            "exclude_cn_from_sans": True,
            "ttl": "%ds" % ttl,
            "format": "pem",
        }
        if sans:  # OpenBao takes alt_names only as comma-separated text (a JSON list is refused); sans.py refuses commas
            if sans.dns or sans.email:
                params["alt_names"] = ",".join(sans.dns + sans.email)
            if sans.ip:
                params["ip_sans"] = ",".join(sans.ip)
            if sans.uri:
                params["uri_sans"] = ",".join(sans.uri)

        try:
            response = self._sign_once(name, request, params)
        except _UnknownRole:
            with self._lock:
                self._roles.pop(name, None)  # deleted behind our back (or Vault lost its storage)
            if not self.manage_roles:
                raise SignerUnavailable(
                    "PKI role %s does not exist on mount %r; create it or enable signer.manageRoles." % (name, self.mount),
                    retry_after=1,
                ) from None
            self._ensure_role(name, subject.organization, subject.organizational_unit, rsa_key, bool(sans))
            try:
                response = self._sign_once(name, request, params)
            except _UnknownRole:
                raise SignerUnavailable(
                    "PKI role %s on mount %r disappeared again right after it was created." % (name, self.mount),
                    retry_after=1,
                ) from None
        if not isinstance(response, dict) or "data" not in response:
            raise FrontdoorError("signer_error", "Vault answered the sign request without a certificate.")
        return self._issued(response["data"], request)

    def _sign_once(self, name: str, request: SignRequest, params: Dict[str, Any]) -> Any:
        def run(c):
            return c.secrets.pki.sign_certificate(
                name, request.pem(), request.subject.common_name, extra_params=dict(params), mount_point=self.mount
            )

        try:
            return self.client.call(run, SignerUnavailable, "signing with role %s on mount %s" % (name, self.mount))
        except (hvac_exc.InvalidRequest, hvac_exc.InvalidPath) as exc:
            detail = _short(exc)
            if "unknown role" in detail or ("role" in detail and "not found" in detail):
                raise _UnknownRole() from None
            raise SignerUnavailable(
                "Vault refused to sign on mount %r with role %s (%s)." % (self.mount, name, detail)
            ) from None

    def _issued(self, data: Mapping[str, Any], request: SignRequest) -> IssuedCertificate:
        pem = data.get("certificate")
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except Exception:  # noqa: BLE001 - whatever Vault sent, it is not a certificate we can hand out
            raise FrontdoorError("signer_error", "Vault returned an unreadable certificate; the token was not used.") from None
        problems = []
        if not subject_is(cert, request.subject):
            problems.append("subject differs (check the role's organization/ou)")
        if not key_is(cert, request):
            problems.append("public key differs")
        if cert.not_valid_after_utc > request.not_after + EXPIRY_SLACK:
            problems.append("valid until %s, later than allowed" % cert.not_valid_after_utc.isoformat())
        if not sans_are(cert, request.subject_alt_names):
            problems.append(
                "subject alternative names differ from the token's (check the role's allowed SANs)"
                if request.subject_alt_names else "carries subject alternative names"
            )
        if problems:
            raise FrontdoorError(
                "signer_error",
                "Vault returned a certificate that does not match the request (%s); it was not handed out and the "
                "token can be redeemed again." % "; ".join(problems),
            )
        chain = list(data.get("ca_chain") or [])
        if not chain and data.get("issuing_ca"):
            chain = [data["issuing_ca"]]
        chain = [c if c.endswith("\n") else c + "\n" for c in chain]
        if chain and chain != self._chain:
            # the issuer changed (rotation, or a re-created dev server): serve what Vault signs with now
            self._issuer_not_after = x509.load_pem_x509_certificate(chain[0].encode("ascii")).not_valid_after_utc
            self._chain = list(chain)
        return IssuedCertificate(
            certificate_pem=pem if pem.endswith("\n") else pem + "\n",
            ca_chain=chain or self.ca_chain(),
            serial_number="%x" % cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            certificate=cert,  # parsed from exactly this PEM: the service checks it without parsing again
        )

    # -- CA ---------------------------------------------------------------------------------
    def _load_chain(self) -> List[x509.Certificate]:
        """The default issuer and its parents; Vault answers an empty body when there is none."""
        def run(c):
            return c.secrets.pki.read_ca_certificate_chain(mount_point=self.mount)

        no_ca = "PKI mount %r has no CA: generate or import a root/intermediate and set a default issuer." % self.mount
        try:
            text = self.client.call(run, SignerUnavailable, "reading the CA chain of mount %s" % self.mount)
        except (hvac_exc.InvalidRequest, hvac_exc.InvalidPath):
            raise SignerUnavailable(no_ca) from None
        try:
            return x509.load_pem_x509_certificates(text.encode("utf-8"))
        except ValueError:  # nothing, or not PEM certificates
            raise SignerUnavailable(no_ca) from None

    def ca_chain(self) -> List[str]:
        if self._chain is None:
            chain = self._load_chain()
            self._issuer_not_after = chain[0].not_valid_after_utc
            self._chain = [cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in chain]
        return list(self._chain)

    def not_after_limit(self) -> Optional[_dt.datetime]:
        if self._chain is None:
            try:
                self.ca_chain()
            except FrontdoorError:
                return None  # the sign call will report the real problem
        return self._issuer_not_after

    def revoke(self, certificate: CertificateRecord) -> None:
        def run(c):
            if self.no_store:  # Vault kept no copy: it needs the certificate itself (no hvac wrapper for that)
                return c.adapter.post("/v1/%s/revoke" % self.mount, json={"certificate": certificate.certificate_pem})
            return c.secrets.pki.revoke_certificate(vault_serial(certificate.serial_number), mount_point=self.mount)

        try:
            self.client.call(run, SignerUnavailable, "revoking serial %s" % certificate.serial_number)
        except (hvac_exc.InvalidRequest, hvac_exc.InvalidPath) as exc:
            detail = _short(exc)
            if "already" in detail and "revoked" in detail:
                return
            raise FrontdoorError(
                "signer_error", "Vault refused to revoke serial %s (%s)." % (certificate.serial_number, detail)
            ) from None

    def crl(self, revoked: Iterable[Tuple[str, _dt.datetime]]) -> bytes:
        """The mount's own CRL (DER): Vault keeps the revocations, ``revoked`` is not needed."""
        def run(c):
            return c.secrets.pki.read_crl(mount_point=self.mount)

        pem = self.client.call(run, SignerUnavailable, "fetching the CRL of mount %s" % self.mount)
        try:
            return x509.load_pem_x509_crl(pem.encode("utf-8")).public_bytes(serialization.Encoding.DER)
        except ValueError:
            raise SignerUnavailable("PKI mount %r served no CRL; check that it has a default issuer." % self.mount) from None

    def ping(self) -> None:
        self._load_chain()

    def close(self) -> None:
        self.client.close()


def _short(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return whole_errors(errors)
    return type(exc).__name__


def _frontdoor_ttl(config, frontdoor_id: str) -> int:
    for settings in getattr(config, "frontdoors", []) or []:
        if settings.id == frontdoor_id:
            return int(settings.certificate_ttl)
    return DEFAULT_ROLE_MAX_TTL


def _flag(value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def signer_mount(config, options: Mapping[str, Any]) -> str:
    return str(options.get("pkiMount") or (config.vault or {}).get("pkiMount") or "pki").strip("/")


def build_vault_signer(config, frontdoor_id: str, options: Mapping[str, Any]) -> VaultPKISigner:
    """The signer for a frontdoor with ``signer: vault`` (hook called by config.build_signer)."""
    known = {"type", "pkiMount", "manageRoles", "role", "roleTemplate", "roleMaxTtl", "noStore"}
    unknown = set(options) - known
    if unknown:
        raise FrontdoorError(
            "invalid_request",
            "frontdoor %s: unknown signer key(s) %s (known: %s)." % (frontdoor_id, ", ".join(sorted(unknown)),
                                                                     ", ".join(sorted(known))),
        )
    max_ttl = options.get("roleMaxTtl")
    max_ttl = parse_duration(max_ttl, "signer.roleMaxTtl") if max_ttl is not None else _frontdoor_ttl(config, frontdoor_id)
    return VaultPKISigner(
        shared_client(config.vault),
        frontdoor_id,
        signer_mount(config, options),
        manage_roles=_flag(options.get("manageRoles"), True),
        role=options.get("role") or None,
        role_template=options.get("roleTemplate") or None,
        role_max_ttl=max_ttl,
        no_store=_flag(options.get("noStore"), False),
    )
