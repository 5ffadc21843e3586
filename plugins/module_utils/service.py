# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The token workflow: every rule lives here, once, whatever the store and signer.

Redemption is claim -> sign -> record:
  1. everything the redeemer can get wrong (token format, CSR, subject) is checked
     before the token is touched, so bad input never uses a token up;
  2. the token is claimed with a check-and-set write that carries a lease, so only one
     redeemer (thread, process or gateway) ever reaches the signer for a token, and a
     claim left by a crashed process lapses on its own;
  3. the certificate is recorded with a second check-and-set that only succeeds while
     the claim is ours; any failure before that releases the claim.

The same three steps for every store and signer: the claim is a row (or KV entry) every process
and host sees, so no lock outside the store is needed, and administrators' changes refuse a
token with a live claim instead of landing in the middle of a redemption.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report a missing cryptography with missing_required_lib (HAS_CRYPTOGRAPHY) instead of a traceback.
try:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError:  # pragma: no cover
    x509 = ExtendedKeyUsageOID = None

from . import csr as csrmod
from .audit import AuditLog, NullAudit, emit_or_report, emit_required
from .errors import FrontdoorError, SignerUnavailable, StoreUnavailable
from .issued import key_is as _key_is
from .issued import sans_are as _sans_are
from .issued import subject_is as _subject_is
from .model import (
    STATE_REDEEMED,
    STATUSES,
    CertificateRecord,
    Page,
    SignRequest,
    Subject,
    TokenRecord,
    isoformat,
    utcnow,
)
from .sans import validate_subject_alt_names
from .signers.base import Signer
from .stores.base import CERTIFICATE_SORT_FIELDS, TOKEN_SORT_FIELDS, TokenStore
from .tokens import (
    CERT_ID_RE,
    TOKEN_ID_RE,
    check_secret_format,
    hash_secret,
    hashes_equal,
    new_certificate_id,
    new_secret,
    new_token_id,
    parse_duration,
    parse_timestamp,
    validate_name,
    validate_subject,
    validate_subject_field,
)

DAY = 86400
NOT_BEFORE_BACKDATE = _dt.timedelta(seconds=60)  # tolerate clock skew on the relying party
PAGE_SIZE_MAX = 1000
_CAS_ATTEMPTS = 8


@dataclasses.dataclass
class FrontdoorSettings:
    """Per-frontdoor policy. Durations in seconds."""

    id: str
    tcp_shares_enabled: bool = True
    default_token_ttl: int = DAY
    max_token_ttl: int = 30 * DAY
    certificate_ttl: int = 365 * DAY  # default and upper bound; a token may ask for less
    renewal_enabled: bool = True  # renewal with the current certificate (renewal.py)
    renewal_window: Optional[int] = None  # renewable only in the last N seconds of a certificate's life; None: any time
    renewal_grace: int = 0  # an expired certificate may still renew itself this long after notAfter

    def __post_init__(self):
        if self.default_token_ttl > self.max_token_ttl:
            raise ValueError("frontdoor %s: defaultTokenTtl exceeds maxTokenTtl" % self.id)


@dataclasses.dataclass
class Redemption:
    certificate: CertificateRecord
    replayed: bool  # True: a retry with the same key got the certificate issued before


class FrontdoorService:
    def __init__(
        self,
        store: TokenStore,
        frontdoors: Dict[str, FrontdoorSettings],
        signers: Dict[str, Signer],
        audit: Optional[AuditLog] = None,
        claim_lease: float = 30.0,
        clock: Callable[[], _dt.datetime] = utcnow,
    ):
        missing = set(frontdoors) - set(signers)
        if missing:
            raise ValueError("no signer for frontdoor(s): %s" % ", ".join(sorted(missing)))
        self.store = store
        self.frontdoors = dict(frontdoors)
        self.signers = dict(signers)
        self.audit = audit or NullAudit()
        self.claim_lease = _dt.timedelta(seconds=claim_lease)
        self.clock = clock

    # ------------------------------------------------------------------ helpers
    def frontdoor(self, frontdoor_id: str) -> FrontdoorSettings:
        settings = self.frontdoors.get(frontdoor_id) if isinstance(frontdoor_id, str) else None
        if settings is None:
            raise FrontdoorError(
                "frontdoor_not_found",
                "There is no frontdoor %r on this gateway (known: %s)."
                % (str(frontdoor_id)[:64], ", ".join(sorted(self.frontdoors)) or "none"),
            )
        return settings

    def _require_tcp_shares(self, settings: FrontdoorSettings, action: str) -> None:
        if not settings.tcp_shares_enabled:
            raise FrontdoorError(
                "tcp_shares_disabled",
                "TCP shares are not enabled on frontdoor %r, and certificate authentication needs them: "
                "an administrator must enable TCP shares (tcpSharesEnabled) before tokens can be %s."
                % (settings.id, action),
            )

    def _token(self, frontdoor_id: str, token_id: str) -> TokenRecord:
        record = None
        if isinstance(token_id, str) and TOKEN_ID_RE.match(token_id):
            record = self.store.get_token(frontdoor_id, token_id)
        if record is None:
            raise FrontdoorError(
                "token_not_found",
                "There is no token %r in frontdoor %r: it may have been deleted or cleaned up."
                % (str(token_id)[:64], frontdoor_id),
            )
        return record

    def _expiry(
        self, settings: FrontdoorSettings, now: _dt.datetime, ttl=None, expires_at=None
    ) -> _dt.datetime:
        if ttl is not None and expires_at is not None:
            raise FrontdoorError("invalid_request", "Give either ttl or expiresAt, not both.")
        if expires_at is not None:
            when = parse_timestamp(expires_at, "expiresAt")
            if when <= now:
                raise FrontdoorError(
                    "invalid_request", "expiresAt %s is not in the future (now is %s)." % (isoformat(when), isoformat(now))
                )
        elif ttl is not None:
            when = now + _dt.timedelta(seconds=parse_duration(ttl, "ttl"))
        else:
            when = now + _dt.timedelta(seconds=settings.default_token_ttl)
        limit = now + _dt.timedelta(seconds=settings.max_token_ttl)
        if when > limit + _dt.timedelta(seconds=1):
            raise FrontdoorError(
                "invalid_request",
                "The token would live until %s, past this frontdoor's maximum token lifetime of %s seconds "
                "(latest allowed now: %s)." % (isoformat(when), settings.max_token_ttl, isoformat(limit)),
            )
        return when

    def _certificate_ttl(self, settings: FrontdoorSettings, value) -> Optional[int]:
        if value is None:
            return None
        seconds = parse_duration(value, "certificateTtl")
        if seconds > settings.certificate_ttl:
            raise FrontdoorError(
                "invalid_request",
                "certificateTtl of %d seconds exceeds this frontdoor's certificate lifetime of %d seconds."
                % (seconds, settings.certificate_ttl),
            )
        return seconds

    # ------------------------------------------------------------------ tokens
    def create_token(
        self,
        frontdoor_id: str,
        *,
        name,
        common_name=None,
        organization=None,
        organizational_unit=None,
        ttl=None,
        expires_at=None,
        certificate_ttl=None,
        subject_alt_names=None,
        actor: str = "unknown",
    ) -> Tuple[TokenRecord, str]:
        """Returns the record and the secret. The secret exists nowhere else afterwards.

        ``subject_alt_names``: the API shape ``{"dns": [...], "ip": [...], "uri": [...], "email": [...]}``
        or None; locked into the certificate like the subject (see sans.py for the rules)."""
        settings = self.frontdoor(frontdoor_id)
        self._require_tcp_shares(settings, "created")
        name = validate_name(name)
        subject = validate_subject(common_name, organization, organizational_unit)
        sans = validate_subject_alt_names(subject_alt_names)
        now = self.clock()
        expiry = self._expiry(settings, now, ttl, expires_at)
        cert_ttl = self._certificate_ttl(settings, certificate_ttl)
        secret = new_secret()
        record = TokenRecord(
            id=new_token_id(),
            frontdoor_id=settings.id,
            name=name,
            secret_hash=hash_secret(secret),
            subject=subject,
            created_at=now,
            created_by=actor,
            expires_at=expiry,
            updated_at=now,
            certificate_ttl=cert_ttl,
            subject_alt_names=sans,
        )
        self.store.create_token(record)
        try:
            emit_required(
                self.audit, "token.created", actor=actor, frontdoor=settings.id, tokenId=record.id, name=name,
                expiresAt=isoformat(expiry), subjectAltNames=sans.to_dict() or None,
            )
        except FrontdoorError:
            # No audit line, no token: its secret was never shown, so removing it takes nothing from anyone.
            # Should the delete fail too, the token is unusable (nobody has the secret) and expires.
            try:
                self.store.delete_token(settings.id, record.id)
            except Exception:  # noqa: BLE001, S110 - the audit failure is what the caller must see
                pass
            raise
        return record, secret

    def get_token(self, frontdoor_id: str, token_id: str) -> TokenRecord:
        self.frontdoor(frontdoor_id)
        return self._token(frontdoor_id, token_id)

    def list_tokens(
        self,
        frontdoor_id: str,
        *,
        status: Union[None, str, Sequence[str]] = None,
        name: Optional[str] = None,
        page: int = 0,
        size: int = 20,
        sort: Optional[str] = None,
    ) -> Page:
        self.frontdoor(frontdoor_id)
        statuses = _statuses(status)
        page, size = _paging(page, size)
        return self.store.list_tokens(
            frontdoor_id,
            now=self.clock(),
            statuses=statuses,
            name=name if name else None,
            page=page,
            size=size,
            sort=_sort(sort, TOKEN_SORT_FIELDS),
        )

    def _claim(self, record: TokenRecord, now: _dt.datetime) -> TokenRecord:
        """``record`` claimed: whoever writes this first (check-and-set) owns the token until the
        lease ends, and a claim left by a crashed process lapses on its own."""
        return dataclasses.replace(
            record, claim_id=os.urandom(16).hex(), claim_until=now + self.claim_lease, version=record.version + 1
        )

    @staticmethod
    def _refuse_if_claimed(record: TokenRecord, now: _dt.datetime) -> None:
        if record.claimed(now):
            raise FrontdoorError(
                "redemption_in_progress",
                "Another request is redeeming this token right now; retry in a few seconds.",
                retry_after=max(1, int((record.claim_until - now).total_seconds()) + 1),
            )

    def _cas_update(self, frontdoor_id, token_id, change: Callable[[TokenRecord, _dt.datetime], TokenRecord]):
        for _attempt in range(_CAS_ATTEMPTS):
            current = self._token(frontdoor_id, token_id)
            now = self.clock()
            if current.state == STATE_REDEEMED:
                raise FrontdoorError(
                    "token_already_used",
                    "Token %s was redeemed at %s; a redeemed token cannot be changed. Create a new token."
                    % (current.id, isoformat(current.redeemed_at)),
                )
            self._refuse_if_claimed(current, now)
            updated = change(dataclasses.replace(current), now)
            updated.claim_id = None
            updated.claim_until = None
            updated.updated_at = now
            updated.version = current.version + 1
            if self.store.replace_token(updated, current.version):
                return updated
        raise FrontdoorError("conflict", "Token %s changed repeatedly while being updated; try again." % token_id)

    def update_token(self, frontdoor_id: str, token_id: str, changes: dict, actor: str = "unknown") -> TokenRecord:
        """PATCH: keys name, common_name, organization, organizational_unit, ttl, expires_at, certificate_ttl,
        subject_alt_names.

        A subject field set to None or '' unlocks it (the CSR will provide it). ``subject_alt_names``
        replaces the token's SANs as a whole; None or {} removes them (the certificate will have none)."""
        settings = self.frontdoor(frontdoor_id)
        allowed = {
            "name", "common_name", "organization", "organizational_unit", "ttl", "expires_at", "certificate_ttl",
            "subject_alt_names",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise FrontdoorError("invalid_request", "Unknown field(s): %s." % ", ".join(sorted(unknown)))
        if not changes:
            raise FrontdoorError("invalid_request", "Nothing to change: give at least one field.")
        if "name" in changes:
            validate_name(changes["name"])
        subject_fields = {
            "common_name": "commonName", "organization": "organization", "organizational_unit": "organizationalUnit"
        }
        for key, api in subject_fields.items():
            if key in changes:
                validate_subject_field(changes[key], api)
        cert_ttl = self._certificate_ttl(settings, changes.get("certificate_ttl"))
        sans = validate_subject_alt_names(changes.get("subject_alt_names"))

        def change(record: TokenRecord, now):
            if "name" in changes:
                record.name = changes["name"]
            subject = dataclasses.replace(record.subject)
            for key, api in subject_fields.items():
                if key in changes:
                    setattr(subject, key, validate_subject_field(changes[key], api))
            record.subject = subject
            if "ttl" in changes or "expires_at" in changes:
                record.expires_at = self._expiry(settings, now, changes.get("ttl"), changes.get("expires_at"))
            if "certificate_ttl" in changes:
                record.certificate_ttl = cert_ttl
            if "subject_alt_names" in changes:
                record.subject_alt_names = sans
            return record

        record = self._cas_update(frontdoor_id, token_id, change)
        emit_required(
            self.audit, "token.updated", actor=actor, frontdoor=frontdoor_id, tokenId=token_id, fields=sorted(changes),
            expiresAt=isoformat(record.expires_at),
        )
        return record

    def refresh_token(
        self, frontdoor_id: str, token_id: str, *, ttl=None, expires_at=None, actor: str = "unknown"
    ) -> Tuple[TokenRecord, str]:
        """New secret and expiry for an unredeemed token; the old secret stops working at once."""
        settings = self.frontdoor(frontdoor_id)
        self._require_tcp_shares(settings, "refreshed")
        secret = new_secret()

        def change(record: TokenRecord, now):
            record.secret_hash = hash_secret(secret)
            record.expires_at = self._expiry(settings, now, ttl, expires_at)
            return record

        record = self._cas_update(frontdoor_id, token_id, change)
        emit_required(
            self.audit, "token.refreshed", actor=actor, frontdoor=frontdoor_id, tokenId=token_id,
            expiresAt=isoformat(record.expires_at),
        )
        return record, secret

    def delete_token(self, frontdoor_id: str, token_id: str, actor: str = "unknown") -> TokenRecord:
        """The delete claims the token first, as a redeemer would: so it never removes a token a
        redemption is signing for (that certificate could not be recorded), and no redemption
        starts on a token about to go."""
        self.frontdoor(frontdoor_id)
        record = self._claim_for_delete(frontdoor_id, token_id)
        try:
            deleted = self.store.delete_token(frontdoor_id, token_id)
        except Exception:
            if record.claim_id is not None:
                self._release(record)
            raise
        if not deleted:
            raise FrontdoorError("token_not_found", "Token %s was already deleted." % token_id)
        acme_removed = self._forget_acme(frontdoor_id, token_id)
        emit_or_report(self.audit, "token.deleted", actor=actor, frontdoor=frontdoor_id, tokenId=token_id,
                       name=record.name, acmeObjectsRemoved=acme_removed or None)
        return record

    def _forget_acme(self, frontdoor_id: Optional[str], token_id: Optional[str] = None) -> int:
        """The ACME state (binding, account, orders) of a deleted token goes with it (acme/state.py), after the
        token: ``token_id`` None sweeps every token of the frontdoor(s) that is gone. The token's deletion stands
        if this fails: the account is unusable without its token, and the next cleanup's sweep removes it."""
        from .acme.state import forget_token, sweep

        try:
            if token_id is not None:
                return forget_token(self.store, frontdoor_id, token_id)
            return sweep(self.store, [frontdoor_id] if frontdoor_id is not None else sorted(self.frontdoors))
        except Exception as exc:  # noqa: BLE001 - the deletion is done; what is left is reported, not raised
            code = getattr(exc, "code", type(exc).__name__)
            if code != "not_supported":  # a store without ACME state has nothing to remove
                emit_or_report(self.audit, "acme.cleanup.failed", frontdoor=frontdoor_id or "*", tokenId=token_id,
                               code=code, message=str(getattr(exc, "message", exc))[:300])
            return 0

    def _claim_for_delete(self, frontdoor_id: str, token_id: str) -> TokenRecord:
        for _attempt in range(_CAS_ATTEMPTS):
            current = self._token(frontdoor_id, token_id)
            if current.state == STATE_REDEEMED:
                return current  # final: no redemption will write it again
            now = self.clock()
            self._refuse_if_claimed(current, now)
            claimed = self._claim(current, now)
            if self.store.replace_token(claimed, current.version):
                return claimed
        raise FrontdoorError("conflict", "Token %s changed repeatedly while being deleted; try again." % token_id)

    def cleanup(
        self,
        frontdoor_id: Optional[str] = None,
        *,
        statuses: Sequence[str] = ("expired",),
        older_than=0,
        dry_run: bool = False,
        actor: str = "unknown",
    ) -> List[str]:
        """Delete tokens expired (and/or redeemed) more than ``older_than`` ago. Returns their ids."""
        if frontdoor_id is not None:
            self.frontdoor(frontdoor_id)
        wanted = _statuses(statuses) or ["expired"]
        if "active" in wanted:
            raise FrontdoorError(
                "invalid_request", "cleanup removes expired or redeemed tokens; delete active tokens one by one."
            )
        age = _dt.timedelta(seconds=parse_duration(older_than, "olderThan")) if older_than not in (0, "0", "0s") else _dt.timedelta(0)
        now = self.clock()
        ids = self.store.purge_tokens(
            frontdoor_id,
            now=now,
            expired_before=now - age if "expired" in wanted else None,
            redeemed_before=now - age if "redeemed" in wanted else None,
            dry_run=dry_run,
        )
        if not dry_run:
            acme_removed = self._forget_acme(frontdoor_id)  # the purged tokens' ACME state, and any left behind
            emit_or_report(
                self.audit, "tokens.cleaned", actor=actor, frontdoor=frontdoor_id or "*", statuses=list(wanted),
                olderThanSeconds=int(age.total_seconds()), deleted=len(ids), tokenIds=ids[:1000],
                acmeObjectsRemoved=acme_removed or None,
            )
        return ids

    # ------------------------------------------------------------------ redemption
    def redeem(
        self, frontdoor_id: str, secret: str, csr_pem, csr_type="CSR", *, source: Optional[str] = None
    ) -> Redemption:
        token_id = None
        try:
            settings = self.frontdoor(frontdoor_id)
            self._require_tcp_shares(settings, "redeemed")
            check_secret_format(secret)
            csr, public_key = csrmod.load_csr_and_key(csr_pem, csr_type)
            spki = csrmod.public_key_der(public_key)
            key_hash = csrmod.public_key_sha256(public_key, spki)
            requested_subject = csrmod.csr_subject(csr)
            secret_hash = hash_secret(secret)
            record = self._find(settings, secret_hash)
            token_id = record.id
            return self._redeem(
                settings, record, csr, public_key, key_hash, requested_subject, source, secret_hash, spki,
            )
        except FrontdoorError as exc:
            # a refusal changes nothing: the redeemer gets the true answer even when its line cannot be written
            emit_or_report(
                self.audit, "redemption.refused", frontdoor=str(frontdoor_id)[:64], tokenId=token_id, code=exc.code,
                reason=exc.details.get("reason") if exc.details else None, message=exc.message, source=source,
            )
            raise

    def renew(
        self, frontdoor_id: str, authorization: Optional[str], csr_pem, csr_type="CSR", *, source: Optional[str] = None,
        client_certificate=None,
    ) -> Redemption:
        """Renewal with the current certificate (a JWT signed by its key, or ``client_certificate``: one a trusted
        proxy verified in its mTLS handshake); the rules are in renewal.py."""
        from .renewal import Renewer

        return Renewer(self).renew(
            frontdoor_id, authorization, csr_pem, csr_type, source=source, client_certificate=client_certificate
        )

    def redeem_bound(
        self, frontdoor_id: str, token_id: str, csr_pem, *, renewal: bool = False, source: Optional[str] = None
    ) -> Redemption:
        """Redemption for a holder the caller authenticated otherwise: the ACME account bound to the token
        through its External Account Binding (acme/server.py), which holds the EAB key, not the secret.
        The same rules as redeem(): single use, the subject and SANs from the token, the CSR's key, audit, a
        failure before issue leaves the token redeemable.

        ``renewal``: another certificate for a token already redeemed, only while the certificate the token
        last issued is valid (not revoked, not expired) and the token is not claimed; the caller must have
        checked that the request comes from the account bound to the token. Each is audited token.renewed."""
        try:
            settings = self.frontdoor(frontdoor_id)
            self._require_tcp_shares(settings, "redeemed")
            csr, public_key = csrmod.load_csr_and_key(csr_pem, "CSR")
            spki = csrmod.public_key_der(public_key)
            key_hash = csrmod.public_key_sha256(public_key, spki)
            record = self._token(frontdoor_id, token_id)
            return self._redeem(
                settings, record, csr, public_key, key_hash, csrmod.csr_subject(csr), source, record.secret_hash,
                spki, renewal=renewal,
            )
        except FrontdoorError as exc:
            emit_or_report(
                self.audit, "redemption.refused", frontdoor=str(frontdoor_id)[:64], tokenId=token_id, code=exc.code,
                reason=exc.details.get("reason") if exc.details else None, message=exc.message, source=source,
            )
            raise

    def _check_renewable(self, settings: FrontdoorSettings, record: TokenRecord, now: _dt.datetime) -> None:
        """A bound ACME account may renew while the token's last certificate is valid, and only then."""
        last = None
        if record.state == STATE_REDEEMED and record.certificate_id:
            last = self.store.get_certificate(settings.id, record.certificate_id)
        if last is None or last.revoked_at is not None or last.not_after <= now:
            raise FrontdoorError(
                "token_already_used",
                "Token %s cannot renew: renewal needs the certificate it last issued to be valid (not revoked, "
                "not expired). Ask for a new token." % record.id,
            )

    def _find(self, settings: FrontdoorSettings, secret_hash: str) -> TokenRecord:
        record = self.store.find_token_by_hash(secret_hash)
        if record is None or record.frontdoor_id != settings.id or not hashes_equal(record.secret_hash, secret_hash):
            raise FrontdoorError(
                "token_not_found",
                "No token matches in frontdoor %r. Check that it was not mistyped, that it belongs to this "
                "frontdoor, that it was not replaced by a refresh, and that an administrator did not delete it."
                % settings.id,
                details={"reason": "unknown"},
            )
        return record

    @staticmethod
    def _validity(signer, now: _dt.datetime, ttl_seconds: int) -> Tuple[_dt.datetime, _dt.datetime]:
        """The validity asked of a signer, for a redemption and a renewal alike: backdated for clock skew, and
        never past what the signer's CA can issue (its own notAfter)."""
        not_after = now + _dt.timedelta(seconds=ttl_seconds)
        limit = signer.not_after_limit()
        if limit is not None and not_after > limit:
            not_after = limit
        return now - NOT_BEFORE_BACKDATE, not_after

    def _redeem(
        self, settings, record, csr, public_key, key_hash, requested_subject, source, secret_hash, spki=None,
        renewal: bool = False,
    ) -> Redemption:
        """Check, claim, sign, check what was signed, record."""
        signer = self.signers[settings.id]
        claimed = None
        for _attempt in range(_CAS_ATTEMPTS):
            now = self.clock()
            if renewal:
                self._check_renewable(settings, record, now)
            elif record.state == STATE_REDEEMED:
                if record.public_key_sha256 and hashes_equal(record.public_key_sha256, key_hash):
                    certificate = self.store.get_certificate(settings.id, record.certificate_id)
                    if certificate is not None:
                        emit_required(
                            self.audit, "redemption.replayed", frontdoor=settings.id, tokenId=record.id,
                            certificateId=certificate.id, serial=certificate.serial_number, source=source,
                        )
                        return Redemption(certificate, replayed=True)
                raise FrontdoorError(
                    "token_already_used",
                    "This token was already used at %s to issue a certificate; tokens are single-use. "
                    "A retry with the same key returns that certificate; for a new key, ask for a new token."
                    % isoformat(record.redeemed_at),
                    details={"redeemedAt": isoformat(record.redeemed_at)},
                )
            if not renewal and record.expires_at <= now:
                raise FrontdoorError(
                    "token_expired",
                    "This token expired at %s. Ask the administrator to refresh it or create a new one."
                    % isoformat(record.expires_at),
                    details={"expiresAt": isoformat(record.expires_at)},
                )
            self._refuse_if_claimed(record, now)
            subject = csrmod.decide_subject(record.subject, requested_subject)
            # A signer that keeps its own record of what it signs (Vault, step-ca) needs the token claimed first:
            # a signature for a request that then loses the token would be an orphan there. The local CA keeps
            # nothing, so the record's check-and-set alone decides: one write per redemption, and a lost race
            # only wastes a signature nobody saw.
            candidate = self._claim(record, now) if signer.claim_before_signing else record
            if candidate is record or self.store.replace_token(candidate, record.version):
                claimed = candidate
                break
            record = self.store.get_token(settings.id, record.id)
            if record is None:
                raise FrontdoorError("token_not_found", "The token was deleted while being redeemed.")
            if not hashes_equal(record.secret_hash, secret_hash):
                # refreshed meanwhile: the secret we were given stopped working
                raise FrontdoorError(
                    "token_not_found", "The token was refreshed while being redeemed; use the new token.",
                    details={"reason": "unknown"},
                )
        if claimed is None:
            raise FrontdoorError("redemption_in_progress", "The token is contended; retry in a few seconds.", retry_after=1)

        try:
            # everything from here to the record may fail; each failure must release the claim
            not_before, not_after = self._validity(signer, now, claimed.certificate_ttl or settings.certificate_ttl)
            request = SignRequest(
                frontdoor_id=settings.id, csr_pem=None,
                csr=csr, subject=subject, not_before=not_before, not_after=not_after, token_id=claimed.id,
                name=claimed.name, public_key=public_key, public_key_der=spki,
                subject_alt_names=claimed.subject_alt_names,
            )
            issued = signer.sign(request)
            cert = self._check_issued(issued, request)
        except Exception as exc:  # noqa: BLE001 - whatever the signer did, the token must survive
            self._release(claimed)
            if isinstance(exc, FrontdoorError):
                raise
            raise SignerUnavailable(
                "The signer failed (%s); the token was not used and can be redeemed again." % type(exc).__name__
            ) from None

        done_at = self.clock()
        certificate = CertificateRecord(
            id=new_certificate_id(), frontdoor_id=settings.id, token_id=claimed.id, name=claimed.name,
            serial_number=issued.serial_number, certificate_pem=issued.certificate_pem, ca_chain=list(issued.ca_chain),
            subject=subject, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            created_at=done_at, public_key_sha256=key_hash, subject_alt_names=request.subject_alt_names,
        )
        done = dataclasses.replace(
            claimed, state=STATE_REDEEMED, redeemed_at=claimed.redeemed_at if renewal else done_at,
            certificate_id=certificate.id,
            public_key_sha256=key_hash, claim_id=None, claim_until=None, updated_at=done_at,
            version=claimed.version + 1,
        )
        try:
            # Written before the record, which cannot be taken back: no certificate is handed out without its
            # line. Should the record fail, certificate.discarded with the same serial follows.
            emit_required(
                self.audit, "token.renewed" if renewal else "token.redeemed", actor=source or "anonymous",
                frontdoor=settings.id,
                tokenId=claimed.id, certificateId=certificate.id, serial=certificate.serial_number,
                commonName=subject.common_name, notAfter=isoformat(certificate.not_after), source=source,
                subjectAltNames=certificate.subject_alt_names.to_dict() or None,
            )
        except FrontdoorError:
            self._discard(signer, certificate, "audit log unavailable")
            self._release(claimed)
            raise
        try:
            recorded = self.store.record_redemption(done, claimed.version, certificate)
        except Exception as exc:  # noqa: BLE001
            # The write may have landed even though we saw an error (e.g. a lost response from Vault):
            # if the token now points at our certificate, the redemption succeeded.
            if self._recorded_anyway(settings.id, claimed.id, certificate.id):
                recorded = True
            else:
                self._discard(signer, certificate, "store failed while recording")
                self._release(claimed)
                if isinstance(exc, FrontdoorError):
                    raise
                raise StoreUnavailable(
                    "The token store failed while recording the certificate; the token was not used."
                ) from None
        if not recorded:
            # Another request changed the token first: it won a race we did not claim against (local CA), or our
            # claim lapsed (the signer was slower than the lease).
            self._discard(signer, certificate, "token changed before the record")
            # The check-and-set may also have been refused by a replica that had not yet seen our claim (an OpenBao
            # standby serving reads): then the claim is still ours, and keeping it would hold the token for the
            # whole lease. If another request took the token, this check-and-set fails and changes nothing.
            self._release(claimed)
            raise FrontdoorError(
                "redemption_in_progress",
                "The token changed while it was being redeemed; retry (a retry with the same key returns the "
                "certificate if this key's redemption won).",
                retry_after=1,
            )
        return Redemption(certificate, replayed=False)

    def _recorded_anyway(self, frontdoor_id: str, token_id: str, certificate_id: str) -> bool:
        try:
            current = self.store.get_token(frontdoor_id, token_id)
            return bool(
                current is not None
                and current.certificate_id == certificate_id
                and self.store.get_certificate(frontdoor_id, certificate_id) is not None
            )
        except Exception:  # noqa: BLE001 - still unreachable: treat as not recorded
            return False

    def _release(self, claimed: TokenRecord) -> None:
        if claimed.claim_id is None:  # not claimed (see claim_before_signing): nothing to give back
            return
        released = dataclasses.replace(claimed, claim_id=None, claim_until=None, version=claimed.version + 1)
        try:
            self.store.replace_token(released, claimed.version)
        except Exception:  # noqa: BLE001, S110 - the lease makes the claim lapse anyway
            pass

    def _discard(self, signer: Signer, certificate: CertificateRecord, why: str) -> None:
        """A certificate was signed but cannot be recorded: revoke it so it is not usable."""
        try:
            signer.revoke(certificate)
            outcome = "revoked"
        except Exception:  # noqa: BLE001
            outcome = "revocation failed"
        emit_or_report(
            self.audit, "certificate.discarded", frontdoor=certificate.frontdoor_id, tokenId=certificate.token_id,
            serial=certificate.serial_number, reason=why, outcome=outcome,
        )

    def _check_issued(self, issued, request: SignRequest) -> x509.Certificate:
        """The signer must have issued exactly what the rules decided."""
        def refuse(what):
            raise FrontdoorError(
                "signer_error",
                "The signer returned a certificate that does not match the request (%s); it was not handed out "
                "and the token can be redeemed again." % what,
            )

        cert = issued.certificate
        if cert is None:
            try:
                cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode("ascii"))
            except Exception:  # noqa: BLE001
                refuse("unreadable certificate")
        if not _subject_is(cert, request.subject):
            refuse("subject differs")
        if not _key_is(cert, request):
            refuse("public key differs")
        if not _sans_are(cert, request.subject_alt_names):
            refuse("subject alternative names differ from the token's")
        if cert.not_valid_after_utc > request.not_after + _dt.timedelta(seconds=120):
            refuse("validity longer than allowed")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in list(eku):
                refuse("no clientAuth extended key usage")
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if basic.ca:
                refuse("a CA certificate")
        except x509.ExtensionNotFound:
            refuse("missing extended key usage or basic constraints")
        return cert

    # ------------------------------------------------------------------ certificates
    def list_certificates(self, frontdoor_id: str, *, page=0, size=20, sort=None, token_id=None, revoked=None) -> Page:
        self.frontdoor(frontdoor_id)
        page, size = _paging(page, size)
        return self.store.list_certificates(
            frontdoor_id, page=page, size=size, sort=_sort(sort, CERTIFICATE_SORT_FIELDS), token_id=token_id,
            revoked=revoked,
        )

    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> CertificateRecord:
        self.frontdoor(frontdoor_id)
        record = None
        if isinstance(certificate_id, str) and CERT_ID_RE.match(certificate_id):
            record = self.store.get_certificate(frontdoor_id, certificate_id)
        if record is None:
            raise FrontdoorError(
                "certificate_not_found", "There is no client certificate %r in frontdoor %r."
                % (str(certificate_id)[:64], frontdoor_id),
            )
        return record

    def revoke_certificate(self, frontdoor_id: str, certificate_id: str, actor: str = "unknown") -> CertificateRecord:
        record = self.get_certificate(frontdoor_id, certificate_id)
        if record.revoked_at is not None:
            return record
        self.signers[frontdoor_id].revoke(record)
        now = self.clock()
        self.store.mark_revoked(frontdoor_id, certificate_id, now)
        # revocation takes a credential away: it is never held back by an audit log that cannot be written
        emit_or_report(
            self.audit, "certificate.revoked", actor=actor, frontdoor=frontdoor_id, certificateId=certificate_id,
            tokenId=record.token_id, serial=record.serial_number,
        )
        return self.get_certificate(frontdoor_id, certificate_id)

    def ca_chain(self, frontdoor_id: str) -> List[str]:
        """The signer's chain; where the signer cannot tell it right now (step-ca learns its intermediate only
        from a certificate it issued, and a restarted gateway has issued none yet), the chain recorded with this
        frontdoor's latest certificate, which that signer returned."""
        self.frontdoor(frontdoor_id)
        try:
            return self.signers[frontdoor_id].ca_chain()
        except SignerUnavailable:
            latest = self.store.list_certificates(frontdoor_id, page=0, size=1, sort=("created_at", "desc"))
            if latest.items and latest.items[0].ca_chain:
                return list(latest.items[0].ca_chain)
            raise

    def crl(self, frontdoor_id: str) -> bytes:
        self.frontdoor(frontdoor_id)
        return self.signers[frontdoor_id].crl(self.store.revoked_serials(frontdoor_id))

    def close(self) -> None:
        for signer in self.signers.values():
            try:
                signer.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass
        close_audit = getattr(self.audit, "close", None)
        if close_audit is not None:
            close_audit()
        self.store.close()


def _statuses(status) -> Optional[List[str]]:
    if status is None or status == "" or status == []:
        return None
    values = status.split(",") if isinstance(status, str) else list(status)
    result = []
    for value in values:
        value = str(value).strip().lower()
        if value not in STATUSES:
            raise FrontdoorError(
                "invalid_request", "status %r is not one of %s." % (value, ", ".join(STATUSES))
            )
        if value not in result:
            result.append(value)
    return result


def _paging(page, size) -> Tuple[int, int]:
    try:
        page, size = int(page), int(size)
    except (TypeError, ValueError):
        raise FrontdoorError("invalid_request", "page and size must be whole numbers.") from None
    if page < 0:
        raise FrontdoorError("invalid_request", "page starts at 0.")
    if not 1 <= size <= PAGE_SIZE_MAX:
        raise FrontdoorError("invalid_request", "size must be between 1 and %d." % PAGE_SIZE_MAX)
    return page, size


def _sort(sort: Optional[str], fields: Dict[str, str]) -> Tuple[str, str]:
    if not sort:
        return ("created_at", "asc")
    parts = [p.strip() for p in sort.split(",")]
    field = parts[0]
    direction = parts[1].lower() if len(parts) > 1 and parts[1] else "asc"
    if field not in fields or direction not in ("asc", "desc") or len(parts) > 2:
        raise FrontdoorError(
            "invalid_request",
            "sort must be 'field' or 'field,asc|desc' with field one of: %s." % ", ".join(sorted(fields)),
        )
    return (fields[field], direction)


def subject_dict(subject: Subject) -> dict:
    return {
        "commonName": subject.common_name,
        "organization": subject.organization,
        "organizationalUnit": subject.organizational_unit,
    }
