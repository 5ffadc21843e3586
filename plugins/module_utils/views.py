# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The public shape of records (camelCase, as in the reference API).

Shared by the gateway's responses and the modules (which snake_case it), so the
HTTP and Ansible faces show the same fields. No view ever includes a secret or
its hash; ``token`` appears only when the caller passes the freshly made secret.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Optional

from .model import CertificateRecord, Page, TokenRecord, isoformat, utcnow


def token_view(record: TokenRecord, now: Optional[_dt.datetime] = None, secret: Optional[str] = None) -> dict:
    view = {
        "id": record.id,
        "name": record.name,
    }
    if secret is not None:
        view["token"] = secret
    view.update(
        {
            "commonName": record.subject.common_name,
            "organization": record.subject.organization,
            "organizationalUnit": record.subject.organizational_unit,
            # {"dns": [...], "ip": [...], "uri": [...], "email": [...]}, kinds without values left out; {}: none
            "subjectAltNames": record.subject_alt_names.to_dict(),
            "expiresAt": isoformat(record.expires_at),
            "createdAt": isoformat(record.created_at),
            "createdBy": record.created_by,
            "updatedAt": isoformat(record.updated_at),
            "status": record.status(now or utcnow()),
            "frontdoorId": record.frontdoor_id,
            "certificateTtl": record.certificate_ttl,
            "redeemedAt": isoformat(record.redeemed_at),
            "certificateId": record.certificate_id,
        }
    )
    return view


def certificate_view(record: CertificateRecord) -> dict:
    return {
        "id": record.id,
        "tokenId": record.token_id,
        "name": record.name,
        "frontdoorId": record.frontdoor_id,
        "certificate": record.certificate_pem,
        "caChain": list(record.ca_chain),
        "serialNumber": record.serial_number,
        "commonName": record.subject.common_name,
        "organization": record.subject.organization,
        "organizationalUnit": record.subject.organizational_unit,
        "subjectAltNames": record.subject_alt_names.to_dict(),
        "notBefore": isoformat(record.not_before),
        "notAfter": isoformat(record.not_after),
        "createdAt": isoformat(record.created_at),
        "revokedAt": isoformat(record.revoked_at),
        "previousCertificateId": record.previous_certificate_id,  # set on a renewal: the certificate it renewed
        "renewedBy": record.renewed_by,  # set once renewed: the certificate that replaced it
    }


def page_view(page: Page, items: list) -> dict:
    total_pages = (page.total + page.size - 1) // page.size if page.size else 0
    return {
        "content": items,
        "pageable": {"pageNumber": page.page, "pageSize": page.size},
        "totalElements": page.total,
        "totalPages": total_pages,
    }


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(view):
    """camelCase keys to snake_case (Ansible return values)."""
    if isinstance(view, dict):
        return {_CAMEL.sub("_", k).lower(): snake_case(v) for k, v in view.items()}
    if isinstance(view, list):
        return [snake_case(v) for v in view]
    return view
