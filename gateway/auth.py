"""Bearer-token authentication and per-frontdoor permissions.

API tokens are configured by SHA-256 hash only (``frontdoor-gateway new-api-token``
prints one and its config entry), compared in constant time. The admin token comes
from FRONTDOOR_ADMIN_TOKEN or a 0600 file in the state dir, generated on first start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from typing import Dict, Iterable, List, Mapping, Optional, Set

from frontdoor_pki.config import ConfigError
from frontdoor_pki.errors import FrontdoorError

PERMISSIONS = (
    "tokens:create",  # create, update (PATCH) and refresh tokens
    "tokens:read",
    "tokens:delete",  # delete one token, clean up expired/redeemed
    "certificates:read",
    "certificates:revoke",
    "metrics:read",  # GET /metrics; grant it on frontdoor '*' (new-api-token --grant '*:metrics:read')
)
ADMIN_TOKEN_FILE = "admin-token"
API_TOKEN_PREFIX = "fdk_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclasses.dataclass
class Principal:
    name: str
    permissions: Dict[str, Set[str]]  # frontdoor id or "*" -> permissions ("*" = all)

    def allows(self, frontdoor_id: str, permission: str) -> bool:
        for key in (frontdoor_id, "*"):
            granted = self.permissions.get(key, set())
            if "*" in granted or permission in granted:
                return True
        return False


def _permission_set(values: Iterable[str], where: str) -> Set[str]:
    result = set()
    for value in values:
        if value != "*" and value not in PERMISSIONS:
            raise ConfigError("%s: unknown permission %r (known: %s, or *)" % (where, value, ", ".join(PERMISSIONS)))
        result.add(value)
    return result


class Authenticator:
    def __init__(self, principals_by_hash: Mapping[str, Principal]):
        self._by_hash = dict(principals_by_hash)

    @classmethod
    def from_config(cls, admin_token: str, api_tokens: List[Mapping]) -> Authenticator:
        principals = {token_hash(admin_token): Principal("admin", {"*": {"*"}})}
        for index, entry in enumerate(api_tokens or []):
            where = "apiTokens[%d]" % index
            if not isinstance(entry, Mapping) or not entry.get("name"):
                raise ConfigError("%s needs a name" % where)
            digest = str(entry.get("sha256", "")).lower()
            if not _HEX64.match(digest):
                raise ConfigError(
                    "%s (%s): sha256 must be the hex SHA-256 of the token; `frontdoor-gateway new-api-token` prints one"
                    % (where, entry["name"])
                )
            perms = entry.get("permissions") or {}
            if not isinstance(perms, Mapping):
                raise ConfigError("%s: permissions must map a frontdoor id (or *) to a list" % where)
            principals[digest] = Principal(
                str(entry["name"]), {str(k): _permission_set(v or [], where) for k, v in perms.items()}
            )
        return cls(principals)

    def authenticate(self, authorization: Optional[str]) -> Principal:
        if not authorization:
            raise FrontdoorError(
                "unauthorized", "This endpoint needs an 'Authorization: Bearer <token>' header with an API token."
            )
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise FrontdoorError("unauthorized", "Use 'Authorization: Bearer <token>'.")
        digest = token_hash(credential)
        found = None
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise FrontdoorError("unauthorized", "The bearer token is not valid for this gateway.")
        return found

    @staticmethod
    def require(principal: Principal, frontdoor_id: str, permission: str) -> None:
        if not principal.allows(frontdoor_id, permission):
            raise FrontdoorError(
                "forbidden",
                "API token %r lacks the %s permission on frontdoor %r; ask an administrator to grant it."
                % (principal.name, permission, str(frontdoor_id)[:64]),
            )


def load_admin_token(state_dir: str, env: Mapping[str, str] = os.environ) -> tuple:
    """(token, path or None, created). Env wins; otherwise the state-dir file, created 0600 on first start."""
    if env.get("FRONTDOOR_ADMIN_TOKEN"):
        return env["FRONTDOOR_ADMIN_TOKEN"], None, False
    path = os.path.join(state_dir, ADMIN_TOKEN_FILE)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(API_TOKEN_PREFIX + "admin_" + secrets.token_urlsafe(32) + "\n")
        created = True
    with open(path, "r", encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        raise ConfigError("%s is empty: delete it to have a new admin token generated" % path)
    return token, path, created
