"""The success bodies of the API, as pydantic models: documentation of ``frontdoor_pki.views``.

The routes keep returning what the views build; these models only describe it in ``/openapi.json`` (used through
``responses={201: {"model": TokenCreated}}``, never ``response_model=``, so a field added to a view is never
filtered away by FastAPI). The contract test (tests/fuzz/test_openapi_contract.py) checks every answer against
these models with extra fields forbidden, so a new field in a view must be added here too. The published models stay
open to new fields, so clients generated from an older document keep working when the API grows.
"""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, Field

_TIME = {"format": "date-time"}


class SubjectAltNames(BaseModel):
    """Pre-approved SANs (``SubjectAltNames.to_dict()``): kinds without values are left out; ``{}``: none."""

    dns: Optional[List[str]] = Field(None, description="DNS names, lower-case.")
    ip: Optional[List[str]] = Field(None, description="IPv4/IPv6 addresses, IPv6 compressed.")
    uri: Optional[List[str]] = Field(None, description="Absolute URIs, e.g. spiffe://example.org/ns/prod/sa/api.")
    email: Optional[List[str]] = Field(None, description="Email addresses.")


class Token(BaseModel):
    """A certificate request token, without its secret (``frontdoor_pki.views.token_view``)."""

    id: str = Field(description="token-<uuid>")
    name: str
    commonName: Optional[str] = Field(description="Locked into the certificate when set; else taken from the CSR.")
    organization: Optional[str]
    organizationalUnit: Optional[str]
    subjectAltNames: SubjectAltNames = Field(description="Locked into the certificate: it carries exactly these SANs.")
    expiresAt: str = Field(json_schema_extra=_TIME)
    createdAt: str = Field(json_schema_extra=_TIME)
    createdBy: Optional[str] = Field(description="The API token's name that created it.")
    updatedAt: Optional[str] = Field(json_schema_extra=_TIME)
    status: Literal["active", "expired", "redeemed"]
    frontdoorId: str
    certificateTtl: Optional[int] = Field(description="Seconds; null: the frontdoor's certificateTtl.")
    redeemedAt: Optional[str] = Field(json_schema_extra=_TIME)
    certificateId: Optional[str] = Field(description="The certificate issued for it, once redeemed.")


class AcmeEab(BaseModel):
    """ACME External Account Binding of a token (docs/acme.md): shown with the secret, never stored."""

    keyId: str = Field(description="EAB key id (the token id): certbot --eab-kid.")
    hmacKey: str = Field(description="EAB HMAC key, base64url without padding: certbot --eab-hmac-key.")


class TokenCreated(Token):
    """A token with its secret: answered only by create and refresh, the only time the secret is shown."""

    token: str = Field(description="The secret (crt_...). Stored only hashed: this is the one time it is shown.")
    acmeEab: Optional[AcmeEab] = Field(
        None, description="ACME EAB credentials for /acme/{frontdoorId}/directory; as secret as token, shown once."
    )


class Pageable(BaseModel):
    pageNumber: int = Field(ge=0)
    pageSize: int = Field(ge=1)


class TokenPage(BaseModel):
    content: List[Token]
    pageable: Pageable
    totalElements: int = Field(ge=0)
    totalPages: int = Field(ge=0)


class Certificate(BaseModel):
    """An issued client certificate (``frontdoor_pki.views.certificate_view``)."""

    id: str = Field(description="cert-<uuid>")
    tokenId: str
    name: str
    frontdoorId: str
    certificate: str = Field(description="PEM")
    caChain: List[str] = Field(description="PEM certificates from the issuer up to the root.")
    serialNumber: str
    commonName: Optional[str]
    organization: Optional[str]
    organizationalUnit: Optional[str]
    subjectAltNames: SubjectAltNames = Field(description="The SANs the certificate carries (its token's).")
    notBefore: str = Field(json_schema_extra=_TIME)
    notAfter: str = Field(json_schema_extra=_TIME)
    createdAt: str = Field(json_schema_extra=_TIME)
    revokedAt: Optional[str] = Field(json_schema_extra=_TIME)
    previousCertificateId: Optional[str] = Field(None, description="On a renewal: the certificate it renewed.")
    renewedBy: Optional[str] = Field(None, description="Once renewed: the certificate that renewed it.")


class CertificatePage(BaseModel):
    content: List[Certificate]
    pageable: Pageable
    totalElements: int = Field(ge=0)
    totalPages: int = Field(ge=0)


class CleanupResult(BaseModel):
    deleted: int = Field(ge=0, description="Tokens removed (0 on a dry run).")
    wouldDelete: Optional[int] = Field(description="On a dry run: how many would be removed; else null.")
    ids: List[str] = Field(description="The tokens removed (or that would be).")


class Frontdoor(BaseModel):
    id: str
    tcpSharesEnabled: bool
    defaultTokenTtl: int = Field(description="Seconds.")
    maxTokenTtl: int = Field(description="Seconds.")
    certificateTtl: int = Field(description="Seconds.")
    signer: str = Field(description="local, vault or step-ca")
    renewalEnabled: bool = Field(True, description="Renewal with the current certificate (POST .../renew).")
    renewalWindow: Optional[int] = Field(None, description="Seconds before notAfter from which a certificate may "
                                         "renew; null: any time while valid.")
    renewalGrace: int = Field(0, description="Seconds after notAfter during which a certificate may still renew.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    frontdoors: List[str]


class CaChain(BaseModel):
    caChain: List[str] = Field(description="PEM certificates from the issuer up to the root.")


def model(cls: type, description: Optional[str] = None, **extra) -> dict:
    """One ``responses=`` entry documenting a JSON success body."""
    entry = {"model": cls, **extra}
    if description:
        entry["description"] = description
    return entry


# OpenAPI links: what a client (or a stateful fuzzer) can do next with an answer. Operation ids are the route
# functions' names (create_app sets generate_unique_id_function).
_FRONTDOOR = {"frontdoorId": "$request.path.frontdoorId"}
_TOKEN_ID = dict(_FRONTDOOR, tokenId="$response.body#/id")
TOKEN_LINKS = {
    "getToken": {"operationId": "get_token", "parameters": _TOKEN_ID},
    "updateToken": {"operationId": "update_token", "parameters": _TOKEN_ID},
    "refreshToken": {"operationId": "refresh_token", "parameters": _TOKEN_ID},
    "deleteToken": {"operationId": "delete_token", "parameters": _TOKEN_ID},
    "redeem": {
        "operationId": "redeem", "parameters": {**_FRONTDOOR, "token": "$response.body#/token"},
        "description": "Redeem the secret just shown, with a CSR.",
    },
    "listCertificates": {
        "operationId": "list_certificates", "parameters": dict(_FRONTDOOR, tokenId="$response.body#/id"),
    },
}
_CERTIFICATE_ID = dict(_FRONTDOOR, certificateId="$response.body#/id")
CERTIFICATE_LINKS = {
    "getCertificate": {"operationId": "get_certificate", "parameters": _CERTIFICATE_ID},
    "revokeCertificate": {"operationId": "revoke_certificate", "parameters": _CERTIFICATE_ID},
    "getToken": {"operationId": "get_token", "parameters": dict(_FRONTDOOR, tokenId="$response.body#/tokenId")},
    "redeemAgain": {
        "operationId": "redeem", "parameters": {**_FRONTDOOR, "token": "$request.path.token"},
        "description": "The same token again: the same key gets the same certificate (200), another key 409.",
    },
}
