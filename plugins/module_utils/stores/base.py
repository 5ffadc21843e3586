# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The token store interface.

A store is persistence with check-and-set and nothing more: every rule (who may
claim, when a token is expired, what a retry returns) lives in ``service.py``.
That is what lets SQLite and Vault KV v2 sit behind the same service without the
rules drifting between them.
"""

from __future__ import annotations

import abc
import datetime as _dt
from typing import Iterable, List, Optional, Sequence, Set, Tuple

from ..errors import FrontdoorError
from ..model import CertificateRecord, Page, TokenRecord

# Sort keys a caller may ask for (API names -> record attribute names).
TOKEN_SORT_FIELDS = {
    "name": "name",
    "createdAt": "created_at",
    "expiresAt": "expires_at",
    "updatedAt": "updated_at",
    "redeemedAt": "redeemed_at",
    "id": "id",
}
CERTIFICATE_SORT_FIELDS = {
    "name": "name",
    "createdAt": "created_at",
    "notAfter": "not_after",
    "notBefore": "not_before",
    "serialNumber": "serial_number",
    "id": "id",
}


#: the token fields a redemption (or a renewal) changes; everything else stays as the engine read it
REDEMPTION_FIELDS = (
    "state", "updated_at", "redeemed_at", "certificate_id", "public_key_sha256", "claim_id", "claim_until", "version",
)


class TokenStore(abc.ABC):
    """Persistence of tokens and issued certificates for any number of frontdoors."""

    @abc.abstractmethod
    def create_token(self, record: TokenRecord) -> None:
        """Insert a new token. Raises FrontdoorError('conflict') if the id or hash exists."""

    @abc.abstractmethod
    def get_token(self, frontdoor_id: str, token_id: str) -> Optional[TokenRecord]:
        """The token with this id in this frontdoor, or None."""

    @abc.abstractmethod
    def find_token_by_hash(self, secret_hash: str) -> Optional[TokenRecord]:
        """The token whose secret hashes to this value, in any frontdoor, or None."""

    @abc.abstractmethod
    def list_tokens(
        self,
        frontdoor_id: str,
        *,
        now: _dt.datetime,
        statuses: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        page: int = 0,
        size: int = 20,
        sort: Tuple[str, str] = ("created_at", "asc"),
    ) -> Page:
        """One page of tokens. ``statuses`` holds derived statuses (active/expired/redeemed)
        evaluated at ``now``; ``sort`` is (record attribute, 'asc'|'desc')."""

    @abc.abstractmethod
    def replace_token(self, record: TokenRecord, expected_version: int) -> bool:
        """Write ``record`` (whose version the caller already set to expected_version + 1)
        only if the stored version is still ``expected_version``. False if it changed or is gone."""

    @abc.abstractmethod
    def record_redemption(
        self, record: TokenRecord, expected_version: int, certificate: CertificateRecord
    ) -> bool:
        """Atomically: replace the token as replace_token does and store the certificate.

        Either both happen or neither; False (and no certificate kept) if the CAS failed. ``record`` is the token
        read at ``expected_version`` with only REDEMPTION_FIELDS changed, so a store may write just those."""

    @abc.abstractmethod
    def delete_token(self, frontdoor_id: str, token_id: str) -> bool:
        """Delete for good. False if there was nothing to delete."""

    @abc.abstractmethod
    def purge_tokens(
        self,
        frontdoor_id: Optional[str],
        *,
        now: _dt.datetime,
        expired_before: Optional[_dt.datetime],
        redeemed_before: Optional[_dt.datetime],
        dry_run: bool = False,
    ) -> List[str]:
        """Delete (or with dry_run only list) unredeemed tokens whose expires_at <= expired_before
        and redeemed tokens whose redeemed_at <= redeemed_before (either bound may be None: skip
        that class). ``frontdoor_id`` None means every frontdoor. Returns the ids."""

    @abc.abstractmethod
    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> Optional[CertificateRecord]:
        """The certificate record, or None."""

    @abc.abstractmethod
    def list_certificates(
        self,
        frontdoor_id: str,
        *,
        page: int = 0,
        size: int = 20,
        sort: Tuple[str, str] = ("created_at", "asc"),
        token_id: Optional[str] = None,
        revoked: Optional[bool] = None,
    ) -> Page:
        """One page of certificate records."""

    @abc.abstractmethod
    def mark_revoked(self, frontdoor_id: str, certificate_id: str, revoked_at: _dt.datetime) -> bool:
        """Set revoked_at if not already set. False if unknown or already revoked."""

    @abc.abstractmethod
    def revoked_serials(self, frontdoor_id: str) -> Iterable[Tuple[str, _dt.datetime]]:
        """(serial hex, revoked_at) of every revoked certificate: the local CA's CRL input."""

    # -- ACME front state (acme/): small JSON documents with check-and-set, shared by every worker and gateway.
    # Not abstract: a store without them serves everything but the ACME front, which answers not_supported.
    def acme_get(self, kind: str, key: str) -> Optional[Tuple[dict, int]]:
        """(document, version) of ACME object ``kind``/``key`` (nonce, account, key, binding, order), or None."""
        raise FrontdoorError("not_supported", "This token store does not keep ACME state.")

    def acme_put(
        self, kind: str, key: str, doc: dict, expected_version: int, expires_at: Optional[_dt.datetime] = None
    ) -> bool:
        """Write ``doc`` only if the stored version is ``expected_version`` (0: only if absent, an atomic
        insert-if-absent: how a nonce is accepted once and a token bound to one account). False if not."""
        raise FrontdoorError("not_supported", "This token store does not keep ACME state.")

    def acme_delete(self, kind: str, key: str) -> None:
        """Remove an ACME object (absent is fine)."""
        raise FrontdoorError("not_supported", "This token store does not keep ACME state.")

    def acme_purge(self, kind: str, before: _dt.datetime) -> int:
        """Remove objects of ``kind`` written with an ``expires_at`` before ``before``; how many."""
        return 0

    def acme_list(self, kind: str, folder: str) -> List[str]:
        """The names of the objects of ``kind`` directly under ``folder`` (keys ``<folder>/<name>``), e.g. the
        token ids of a frontdoor's bindings (acme/state.py sweeps those whose token is gone)."""
        raise FrontdoorError("not_supported", "This token store does not keep ACME state.")

    def acme_token_ids(self, frontdoor_id: str) -> Optional[Set[str]]:
        """The ids of the frontdoor's tokens from one cheap listing, for the sweep of ACME state whose token is
        gone (it confirms each absent id with get_token); None: no such listing, read each token instead."""
        return None

    def acme_server_key(self) -> bytes:
        """32 random bytes made once per store (every gateway sharing the store sees the same): the key the
        ACME front derives EAB HMAC keys and nonce MACs from. Kept where the store keeps its state."""
        raise FrontdoorError("not_supported", "This token store does not keep ACME state.")

    # -- renewal with the current certificate (renewal.py). Not abstract: a store without them
    #    answers not_supported, and the rest of the API keeps working on it.
    def find_certificate_by_serial(
        self, frontdoor_id: str, serial: str, not_before: Optional[_dt.datetime] = None
    ) -> Optional[CertificateRecord]:
        """The certificate with this serial (lower-case hex, no separators, no leading zeros), or None.
        ``not_before``: the certificate's, when the caller has it (a store may use it to narrow its search)."""
        raise _no_renewal()

    def use_renewal_jti(self, key: str, expires_at: _dt.datetime, now: _dt.datetime) -> bool:
        """Insert-if-absent of a used renewal JWT id (``key``: already hashed and scoped by the caller),
        kept until ``expires_at``. True the first time, False if it is there. Entries expired at ``now``
        may be dropped on the way (their JWTs are refused as expired anyway)."""
        raise _no_renewal()

    def claim_renewal(
        self, frontdoor_id: str, certificate_id: str, claim_id: str, claim_until: _dt.datetime, now: _dt.datetime
    ) -> bool:
        """Check-and-set on the certificate record: take the renewal claim if the certificate is not
        renewed, not revoked and holds no live claim (one whose lease ends after ``now``)."""
        raise _no_renewal()

    def release_renewal(self, frontdoor_id: str, certificate_id: str, claim_id: str) -> None:
        """Drop our claim (nothing was issued); a no-op if the claim is no longer ours."""
        raise _no_renewal()

    def record_renewal(
        self, frontdoor_id: str, previous_id: str, claim_id: str, certificate: CertificateRecord
    ) -> bool:
        """Atomically: set the previous record's ``renewed_by`` to ``certificate.id`` (only while our
        claim holds and it is not revoked) and store ``certificate``. False, and nothing kept, otherwise."""
        raise _no_renewal()

    def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot serve requests (health checks)."""

    def close(self) -> None:
        """Release connections."""


def _no_renewal():
    from ..errors import FrontdoorError

    return FrontdoorError("not_supported", "This token store does not support renewal with the current certificate.")
