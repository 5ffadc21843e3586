# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Token store on Vault / OpenBao KV v2, so that any number of gateways share state and HA.

Layout (all under ``<kvMount>/<kvPrefix>/``; ``<fd>`` is the frontdoor id)::

    t/<hash>                                     the token record (authoritative), keyed by the
                                                 SHA-256 of its secret; after redemption it also
                                                 embeds the certificate record
    i/<fd>/<token-id>                            {"hash": ...}: lookup by id
    l/<fd>/<created>.<expires>.<id>.<hash>.<name> listing entry (value unused): times in epoch ms,
                                                 name base64url
    c/<fd>/<created>.<token-id>.<cert-id>        the certificate record (a copy of the embedded one)
    r/<fd>/<cert-id>.<serial>.<revoked>          revocation marker

Why keyed by hash: redemption starts from the secret, so the record is one read away
(``find_token_by_hash``); the redemption path is read, claim CAS, sign, record CAS, plus one
write of the certificate copy. The secret itself is never stored, only its hash.

Check-and-set: every state change of a token is a KV v2 write with ``cas`` = the KV version
we expect, so single use holds across any number of gateways (measured: exactly one winner of
20 racing writers, also on raft). Records carry the engine's own ``version``; the KV version of
``t/<hash>`` is ``version - base`` where ``base`` is fixed when the key is created (a refresh
moves the token to a new hash key, whose KV versions start again at 1).

Refresh (the hash changes) moves the record: CAS the old key to a tombstone that carries the
new record (the old secret stops working at that instant), create the new key with ``cas=0``,
repoint ``i/``, delete the old key. A reader that meets a tombstone follows it and finishes
an interrupted move.

record_redemption: CAS the token record with the certificate embedded *first*, then write the
certificate copy ``c/...``. The CAS is the single commit point: if it fails nothing was kept;
if the process dies after it, the certificate exists in the token record and the copy is
re-created from it when next needed (get by id, purge). The reverse order (copy first) would,
after a crash, leave a certificate visible in listings for a token that is still redeemable,
so listings could show two certificates for one token.

Listing without reading every token: the fields used to filter and sort (created, expires,
name, id) are encoded in the ``l/`` key names and redemption time in the ``c/`` key names, so
one LIST of each folder yields the total, the status of every token and its sort position;
only the records of the requested page are read (in parallel). Renaming an ``l/`` entry is
needed only when an administrator changes the name or expiry, never on the redemption path.
Sorting by ``updatedAt`` (not encoded) falls back to reading the matching records.

Deletion is a metadata delete (all versions gone), never a soft delete.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import FrontdoorError, StoreUnavailable
from ..model import STATE_REDEEMED, UTC, CertificateRecord, Page, Subject, SubjectAltNames, TokenRecord
from ..vault.client import VaultClient, hvac_exc, is_cas_mismatch, shared_client, whole_errors
from .acme_vault import VaultAcmeState
from .base import TokenStore

_WORKERS = 8
_CACHE_MAX = 512  # tokens remembered per store: enough for the redemptions in flight (a few KB each)


def _ms(value: _dt.datetime) -> int:
    return int(round(value.timestamp() * 1000))


def _ts(value: Optional[_dt.datetime]) -> Optional[float]:
    return None if value is None else round(value.timestamp(), 6)


def _from_ts(value: Optional[float]) -> Optional[_dt.datetime]:
    return None if value is None else _dt.datetime.fromtimestamp(float(value), UTC)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")


def _with_sans(data: Dict[str, Any], sans: SubjectAltNames) -> Dict[str, Any]:
    """The optional ``subjectAltNames`` field (SubjectAltNames.to_dict()), written only when there are
    SANs: documents without SANs stay as before, and old documents read as having none."""
    if sans:
        data["subjectAltNames"] = sans.to_dict()
    return data


def token_to_dict(r: TokenRecord) -> Dict[str, Any]:
    return _with_sans({
        "id": r.id, "frontdoorId": r.frontdoor_id, "name": r.name, "secretHash": r.secret_hash,
        "commonName": r.subject.common_name, "organization": r.subject.organization,
        "organizationalUnit": r.subject.organizational_unit, "createdAt": _ts(r.created_at),
        "createdBy": r.created_by, "expiresAt": _ts(r.expires_at), "updatedAt": _ts(r.updated_at), "state": r.state,
        "certificateTtl": r.certificate_ttl, "redeemedAt": _ts(r.redeemed_at), "certificateId": r.certificate_id,
        "publicKeySha256": r.public_key_sha256, "claimId": r.claim_id, "claimUntil": _ts(r.claim_until),
        "version": r.version,
    }, r.subject_alt_names)


def token_from_dict(d: Dict[str, Any]) -> TokenRecord:
    return TokenRecord(
        id=d["id"], frontdoor_id=d["frontdoorId"], name=d["name"], secret_hash=d["secretHash"],
        subject=Subject(d.get("commonName"), d.get("organization"), d.get("organizationalUnit")),
        created_at=_from_ts(d["createdAt"]), created_by=d.get("createdBy") or "unknown",
        expires_at=_from_ts(d["expiresAt"]), updated_at=_from_ts(d["updatedAt"]), state=d["state"],
        certificate_ttl=d.get("certificateTtl"), redeemed_at=_from_ts(d.get("redeemedAt")),
        certificate_id=d.get("certificateId"), public_key_sha256=d.get("publicKeySha256"), claim_id=d.get("claimId"),
        claim_until=_from_ts(d.get("claimUntil")), version=int(d["version"]),
        subject_alt_names=SubjectAltNames.from_dict(d.get("subjectAltNames")),
    )


def _with_renewal(data: Dict[str, Any], c: CertificateRecord) -> Dict[str, Any]:
    """The renewal links, only when set: a document without them reads as "not renewed" (older documents too)."""
    if c.previous_certificate_id:
        data["previousCertificateId"] = c.previous_certificate_id
    if c.renewed_by:
        data["renewedBy"] = c.renewed_by
    return data


def cert_to_dict(c: CertificateRecord) -> Dict[str, Any]:
    return _with_renewal(_with_sans({
        "id": c.id, "frontdoorId": c.frontdoor_id, "tokenId": c.token_id, "name": c.name,
        "serialNumber": c.serial_number, "certificate": c.certificate_pem, "caChain": list(c.ca_chain),
        "commonName": c.subject.common_name, "organization": c.subject.organization,
        "organizationalUnit": c.subject.organizational_unit, "notBefore": _ts(c.not_before),
        "notAfter": _ts(c.not_after), "createdAt": _ts(c.created_at), "publicKeySha256": c.public_key_sha256,
        "revokedAt": _ts(c.revoked_at),
    }, c.subject_alt_names), c)


def cert_from_dict(d: Dict[str, Any]) -> CertificateRecord:
    return CertificateRecord(
        id=d["id"], frontdoor_id=d["frontdoorId"], token_id=d["tokenId"], name=d["name"],
        serial_number=d["serialNumber"], certificate_pem=d["certificate"], ca_chain=list(d.get("caChain") or []),
        subject=Subject(d.get("commonName"), d.get("organization"), d.get("organizationalUnit")),
        not_before=_from_ts(d["notBefore"]), not_after=_from_ts(d["notAfter"]), created_at=_from_ts(d["createdAt"]),
        public_key_sha256=d["publicKeySha256"], revoked_at=_from_ts(d.get("revokedAt")),
        subject_alt_names=SubjectAltNames.from_dict(d.get("subjectAltNames")),
        previous_certificate_id=d.get("previousCertificateId"), renewed_by=d.get("renewedBy"),
    )


@dataclasses.dataclass
class _Entry:
    """A token as its listing key name describes it."""

    key: str
    created_ms: int
    expires_ms: int
    token_id: str
    secret_hash: str
    name: str

    @classmethod
    def parse(cls, key: str) -> Optional[_Entry]:
        parts = key.split(".")
        if len(parts) != 5:
            return None
        try:
            return cls(key, int(parts[0]), int(parts[1]), parts[2], parts[3], _unb64(parts[4]))
        except (ValueError, UnicodeDecodeError):
            return None


def _list_key(r: TokenRecord) -> str:
    return "%013d.%013d.%s.%s.%s" % (_ms(r.created_at), _ms(r.expires_at), r.id, r.secret_hash, _b64(r.name))


def _cert_key(c: CertificateRecord) -> str:
    return "%013d.%s.%s" % (_ms(c.created_at), c.token_id, c.id)


class VaultKVStore(VaultAcmeState, TokenStore):
    kind = "vault"

    def __init__(self, client: VaultClient, mount: str, prefix: str):
        self.client = client
        self.mount = mount
        self.prefix = prefix.strip("/")
        self._lock = threading.Lock()
        self._bases: Dict[str, int] = {}  # hash -> KV version offset (immutable per key)
        self._seen: Dict[str, TokenRecord] = {}  # token id -> last record read or written here
        self._cert_keys: Dict[Tuple[str, str], str] = {}  # (fd, cert id) -> c/ key name (immutable)
        self._embedded: Dict[Tuple[str, str], CertificateRecord] = {}  # certs seen inside token records
        self._pending: List[CertificateRecord] = []  # certificate copies still to write
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="frontdoor-kv")

    # -- KV primitives ----------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join((self.prefix,) + parts)

    def _read(self, path: str) -> Optional[Tuple[Dict[str, Any], int]]:
        def run(c):
            return c.secrets.kv.v2.read_secret_version(path=path, mount_point=self.mount, raise_on_deleted_version=True)

        try:
            response = self.client.call(run, StoreUnavailable, "reading the token store")
        except hvac_exc.InvalidPath:
            return None
        except hvac_exc.InvalidRequest as exc:
            raise StoreUnavailable("Vault refused a token store read: %s" % _short(exc)) from None
        return response["data"]["data"], int(response["data"]["metadata"]["version"])

    def _write(self, path: str, data: Dict[str, Any], cas: Optional[int]) -> bool:
        """True if written; False if check-and-set did not match (someone else wrote first)."""
        def run(c):
            return c.secrets.kv.v2.create_or_update_secret(path=path, secret=data, cas=cas, mount_point=self.mount)

        try:
            self.client.call(run, StoreUnavailable, "writing the token store")
        except hvac_exc.InvalidRequest as exc:
            if is_cas_mismatch(exc):
                return False
            if cas is None and "check-and-set parameter required" in _short(exc):
                # The mount has cas_required=true: an unconditional write becomes a CAS on what is there.
                current = self._read(path)
                return self._write(path, data, cas=current[1] if current else 0)
            raise StoreUnavailable("Vault refused a token store write: %s" % _short(exc)) from None
        except hvac_exc.InvalidPath:
            raise StoreUnavailable(
                "The KV mount %r does not exist or is not KV version 2; create it (see docs/vault.md)." % self.mount
            ) from None
        return True

    def _delete(self, path: str) -> None:
        def run(c):
            return c.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=self.mount)

        try:
            self.client.call(run, StoreUnavailable, "deleting from the token store")
        except hvac_exc.InvalidPath:
            pass
        except hvac_exc.InvalidRequest as exc:
            raise StoreUnavailable("Vault refused a token store delete: %s" % _short(exc)) from None

    def _list(self, path: str) -> List[str]:
        def run(c):
            return c.secrets.kv.v2.list_secrets(path=path, mount_point=self.mount)

        try:
            response = self.client.call(run, StoreUnavailable, "listing the token store")
        except hvac_exc.InvalidPath:
            return []
        except hvac_exc.InvalidRequest as exc:
            raise StoreUnavailable("Vault refused a token store listing: %s" % _short(exc)) from None
        return list(response.get("data", {}).get("keys") or [])

    def _parallel(self, fn: Callable, items: Sequence) -> list:
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    # -- token records -------------------------------------------------------------------
    def _remember(self, record: TokenRecord, base: int) -> None:
        with self._lock:
            if len(self._seen) > _CACHE_MAX:
                # Caches only save round trips; everything in them can be read again.
                self._seen.clear()
                self._bases.clear()
                self._embedded.clear()
                self._cert_keys.clear()
            self._bases[record.secret_hash] = base
            self._seen[record.id] = record

    def _load(self, secret_hash: str, follow: bool = True) -> Optional[TokenRecord]:
        """The record at t/<hash>, following (and completing) a refresh move if ``follow``."""
        got = self._read(self._p("t", secret_hash))
        if got is None:
            return None
        data, kv_version = got
        if data.get("movedTo"):
            if not follow:
                return None
            return self._finish_move(data)
        base = int(data.get("base", 0))
        record = token_from_dict(data)
        if record.version - base != kv_version:
            # Written outside this store (e.g. by hand): the KV version is the truth for CAS.
            base = record.version - kv_version
        self._remember(record, base)
        cert = data.get("certificate")
        if cert:
            embedded = cert_from_dict(cert)
            with self._lock:
                self._embedded[(embedded.frontdoor_id, embedded.id)] = embedded
                self._cert_keys[(embedded.frontdoor_id, embedded.id)] = _cert_key(embedded)
        return record

    def _finish_move(self, tombstone: Dict[str, Any]) -> Optional[TokenRecord]:
        new_hash = tombstone["movedTo"]
        record = self._load(new_hash, follow=False)
        if record is not None:
            return record
        moved = token_from_dict(tombstone["record"])
        self._write(self._p("t", new_hash), dict(tombstone["record"], base=moved.version - 1), cas=0)
        self._write(self._p("i", moved.frontdoor_id, moved.id), {"hash": new_hash}, cas=None)
        return self._load(new_hash, follow=False)

    def _record_data(self, record: TokenRecord, base: int, certificate: Optional[CertificateRecord] = None) -> dict:
        data = token_to_dict(record)
        data["base"] = base
        if certificate is not None:
            data["certificate"] = cert_to_dict(certificate)
        return data

    def create_token(self, record: TokenRecord) -> None:
        index = self._p("i", record.frontdoor_id, record.id)
        if not self._write(index, {"hash": record.secret_hash}, cas=0):
            raise FrontdoorError("conflict", "A token with this id already exists.")
        base = record.version - 1
        if not self._write(self._p("t", record.secret_hash), self._record_data(record, base), cas=0):
            self._delete(index)
            raise FrontdoorError("conflict", "A token with this secret already exists.")
        self._write(self._p("l", record.frontdoor_id, _list_key(record)), {"v": 1}, cas=None)
        self._remember(record, base)

    def get_token(self, frontdoor_id: str, token_id: str) -> Optional[TokenRecord]:
        got = self._read(self._p("i", frontdoor_id, token_id))
        if got is None:
            return None
        record = self._load(got[0]["hash"])
        if record is None or record.frontdoor_id != frontdoor_id or record.id != token_id:
            return None
        return record

    def find_token_by_hash(self, secret_hash: str) -> Optional[TokenRecord]:
        if not _is_hex64(secret_hash):
            return None
        return self._load(secret_hash, follow=False)

    def _current(self, token_id: str, expected_version: int) -> Optional[Tuple[TokenRecord, int]]:
        """(stored record, base) if the stored version is expected_version, else None."""
        with self._lock:
            seen = self._seen.get(token_id)
            base = self._bases.get(seen.secret_hash) if seen else None
        if seen is not None and base is not None and seen.version == expected_version:
            return seen, base
        if seen is None:
            return None
        fresh = self._load(seen.secret_hash)
        if fresh is None or fresh.version != expected_version:
            return None
        with self._lock:
            base = self._bases.get(fresh.secret_hash)
        return None if base is None else (fresh, base)

    def _locate(self, record: TokenRecord, expected_version: int) -> Optional[Tuple[TokenRecord, int]]:
        found = self._current(record.id, expected_version)
        if found is None and record.id not in self._seen:
            current = self.get_token(record.frontdoor_id, record.id)
            if current is None or current.version != expected_version:
                return None
            found = self._current(record.id, expected_version)
        return found

    def replace_token(self, record: TokenRecord, expected_version: int) -> bool:
        found = self._locate(record, expected_version)
        if found is None:
            return False
        old, base = found
        if record.secret_hash == old.secret_hash:
            if not self._write(self._p("t", old.secret_hash), self._record_data(record, base), cas=expected_version - base):
                self._forget(record.id)
                return False
            self._remember(record, base)
        else:
            if not self._move(old, base, record, expected_version):
                return False
        if _list_key(record) != _list_key(old):
            self._write(self._p("l", record.frontdoor_id, _list_key(record)), {"v": 1}, cas=None)
            self._delete(self._p("l", old.frontdoor_id, _list_key(old)))
        return True

    def _move(self, old: TokenRecord, base: int, record: TokenRecord, expected_version: int) -> bool:
        tombstone = {"movedTo": record.secret_hash, "record": token_to_dict(record)}
        if not self._write(self._p("t", old.secret_hash), tombstone, cas=expected_version - base):
            self._forget(record.id)
            return False
        new_base = record.version - 1
        self._write(self._p("t", record.secret_hash), self._record_data(record, new_base), cas=0)
        self._write(self._p("i", record.frontdoor_id, record.id), {"hash": record.secret_hash}, cas=None)
        self._delete(self._p("t", old.secret_hash))
        self._remember(record, new_base)
        return True

    def _forget(self, token_id: str) -> None:
        with self._lock:
            self._seen.pop(token_id, None)

    def record_redemption(self, record: TokenRecord, expected_version: int, certificate: CertificateRecord) -> bool:
        found = self._locate(record, expected_version)
        if found is None:
            return False
        old, base = found
        if old.secret_hash != record.secret_hash:
            return False
        path = self._p("t", record.secret_hash)
        try:
            won = self._write(path, self._record_data(record, base, certificate), cas=expected_version - base)
        except StoreUnavailable:
            # The write may have landed before the connection broke: look before reporting failure,
            # or the service would revoke a certificate the token now points to.
            current = self._load(record.secret_hash, follow=False)  # may raise StoreUnavailable again
            if current is None or current.certificate_id != certificate.id:
                raise
            won = True
        if not won:
            self._forget(record.id)
            return False
        self._remember(record, base)
        key = _cert_key(certificate)
        with self._lock:
            self._cert_keys[(certificate.frontdoor_id, certificate.id)] = key
            self._embedded[(certificate.frontdoor_id, certificate.id)] = certificate
        if self._pending:
            self._flush_pending()
        try:
            self._write(self._p("c", certificate.frontdoor_id, key), cert_to_dict(certificate), cas=0)
        except StoreUnavailable:
            # Committed already (the token record holds the certificate); retried on the next call
            # here, and re-created from the token record by any gateway when needed.
            with self._lock:
                self._pending.append(certificate)
        return True

    def _flush_pending(self) -> None:
        """Write certificate copies that failed right after their redemption committed."""
        with self._lock:
            pending, self._pending = self._pending, []
        for index, certificate in enumerate(pending):
            try:
                self._write(self._p("c", certificate.frontdoor_id, _cert_key(certificate)), cert_to_dict(certificate),
                            cas=0)
            except StoreUnavailable:
                with self._lock:
                    self._pending = pending[index:] + self._pending
                return

    def delete_token(self, frontdoor_id: str, token_id: str) -> bool:
        index = self._p("i", frontdoor_id, token_id)
        got = self._read(index)
        if got is None:
            return False
        record = self._load(got[0]["hash"])
        if record is not None:
            self._delete(self._p("t", record.secret_hash))
            self._delete(self._p("l", frontdoor_id, _list_key(record)))
        else:
            # The record is already gone, so the listing entry's name cannot be rebuilt: find it by id.
            for entry in self._entries(frontdoor_id):
                if entry.token_id == token_id:
                    self._delete(self._p("l", frontdoor_id, entry.key))
        self._delete(index)
        self._forget(token_id)
        return True

    # -- listing -----------------------------------------------------------------------------
    def _entries(self, frontdoor_id: str) -> List[_Entry]:
        entries = []
        for key in self._list(self._p("l", frontdoor_id) + "/"):
            entry = _Entry.parse(key)
            if entry is not None:
                entries.append(entry)
        return entries

    def _redeemed(self, frontdoor_id: str) -> Dict[str, int]:
        """token id -> redemption time (ms) from the certificate copies' key names."""
        result = {}
        for key in self._list(self._p("c", frontdoor_id) + "/"):
            parts = key.split(".")
            if len(parts) == 3 and parts[0].isdigit():
                # a token's first certificate is its redemption; later ones (renewals) share its token id
                result[parts[1]] = min(int(parts[0]), result.get(parts[1], int(parts[0])))
                with self._lock:
                    self._cert_keys[(frontdoor_id, parts[2])] = key
        return result

    def _dedup(self, entries: List[_Entry]) -> List[_Entry]:
        """One entry per token; two exist only after a rename was interrupted: the record decides."""
        by_id: Dict[str, List[_Entry]] = {}
        for entry in entries:
            by_id.setdefault(entry.token_id, []).append(entry)
        result = []
        for group in by_id.values():
            if len(group) == 1:
                result.append(group[0])
                continue
            record = None
            for entry in group:
                record = record or self._load(entry.secret_hash)
            keep = _list_key(record) if record is not None else None
            chosen = [e for e in group if e.key == keep] or [max(group, key=lambda e: e.key)]
            result.append(chosen[0])
        return result

    def list_tokens(self, frontdoor_id, *, now, statuses=None, name=None, page=0, size=20, sort=("created_at", "asc")):
        if self._pending:
            self._flush_pending()
        entries = self._dedup(self._entries(frontdoor_id))
        redeemed = self._redeemed(frontdoor_id)
        now_ms = _ms(now)

        def status(entry: _Entry) -> str:
            if entry.token_id in redeemed:
                return "redeemed"
            return "expired" if entry.expires_ms <= now_ms else "active"

        selected = [
            e for e in entries
            if (not statuses or status(e) in statuses) and (name is None or e.name == name)
        ]
        column, direction = sort
        reverse = direction == "desc"
        keys: Dict[str, Callable[[_Entry], Any]] = {
            "created_at": lambda e: e.created_ms,
            "expires_at": lambda e: e.expires_ms,
            "name": lambda e: e.name,
            "id": lambda e: e.token_id,
            "redeemed_at": lambda e: redeemed.get(e.token_id, -1),
        }
        if column in keys:
            selected.sort(key=lambda e: e.token_id)  # stable tie-break on id, as SQLite does
            selected.sort(key=keys[column], reverse=reverse)
            window = selected[page * size:(page + 1) * size]
            records = self._parallel(lambda e: self._load(e.secret_hash), window)
        else:  # updated_at: not in the key names, read what matches
            records = [r for r in self._parallel(lambda e: self._load(e.secret_hash), selected) if r is not None]
            records.sort(key=lambda r: r.id)
            records.sort(key=lambda r: getattr(r, column) or _dt.datetime.min.replace(tzinfo=UTC), reverse=reverse)
            records = records[page * size:(page + 1) * size]
        items = [r for r in records if r is not None and r.frontdoor_id == frontdoor_id]
        return Page(items, len(selected), page, size)

    def purge_tokens(self, frontdoor_id, *, now, expired_before, redeemed_before, dry_run=False) -> List[str]:
        if expired_before is None and redeemed_before is None:
            return []
        if frontdoor_id is None:
            frontdoors = [k.rstrip("/") for k in self._list(self._p("l") + "/") if k.endswith("/")]
        else:
            frontdoors = [frontdoor_id]
        ids: List[str] = []
        for fd in frontdoors:
            ids.extend(self._purge_frontdoor(fd, now, expired_before, redeemed_before, dry_run))
        return ids

    def _purge_frontdoor(self, fd, now, expired_before, redeemed_before, dry_run) -> List[str]:
        entries = self._dedup(self._entries(fd))
        redeemed = self._redeemed(fd)
        expired_bound = _ms(min(expired_before, now)) if expired_before is not None else None
        redeemed_bound = _ms(redeemed_before) if redeemed_before is not None else None
        now_ms = _ms(now)
        candidates = []
        for e in entries:
            if e.token_id in redeemed:
                if redeemed_bound is not None and redeemed[e.token_id] <= redeemed_bound + 1:
                    candidates.append(e)
            elif expired_bound is not None and e.expires_ms <= expired_bound:
                candidates.append(e)
            elif redeemed_bound is not None and e.expires_ms <= now_ms and e.created_ms <= redeemed_bound:
                # Looks expired but may have been redeemed by a gateway that died before writing the
                # certificate copy: the record decides (and the copy is re-created). Only tokens past
                # their expiry are read, so cleaning up redeemed tokens does not read every active one.
                candidates.append(e)

        def confirm(entry: _Entry) -> Optional[Tuple[_Entry, Optional[TokenRecord]]]:
            record = self._load(entry.secret_hash)
            if record is None:
                return (entry, None) if expired_bound is not None and entry.expires_ms <= expired_bound else None
            if record.state == STATE_REDEEMED:
                self._ensure_copy(fd, record)
                if redeemed_before is not None and record.redeemed_at is not None and record.redeemed_at <= redeemed_before:
                    return entry, record
                return None
            if expired_before is not None and record.expires_at <= min(expired_before, now):
                return entry, record
            return None

        confirmed = [c for c in self._parallel(confirm, candidates) if c is not None]
        confirmed.sort(key=lambda c: c[0].expires_ms)
        if not dry_run:
            def remove(item):
                entry, record = item
                if record is not None:
                    self._delete(self._p("t", record.secret_hash))
                self._delete(self._p("t", entry.secret_hash))
                self._delete(self._p("l", fd, entry.key))
                self._delete(self._p("i", fd, entry.token_id))
                self._forget(entry.token_id)

            self._parallel(remove, confirmed)
        return [entry.token_id for entry, _record in confirmed]

    def _ensure_copy(self, fd: str, record: TokenRecord) -> None:
        """Re-create the certificate copy of a redemption whose gateway died after the token CAS."""
        with self._lock:
            cert = self._embedded.get((fd, record.certificate_id))
        if cert is None:
            return
        key = _cert_key(cert)
        if self._read(self._p("c", fd, key)) is None:
            self._write(self._p("c", fd, key), cert_to_dict(cert), cas=0)

    # -- certificates ----------------------------------------------------------------------
    def _cert_key_for(self, frontdoor_id: str, certificate_id: str) -> Optional[str]:
        with self._lock:
            key = self._cert_keys.get((frontdoor_id, certificate_id))
        if key is None:
            self._redeemed(frontdoor_id)  # one LIST fills the cache for every certificate
            with self._lock:
                key = self._cert_keys.get((frontdoor_id, certificate_id))
        return key

    def _read_cert(self, frontdoor_id: str, key: str) -> Optional[Tuple[CertificateRecord, int]]:
        got = self._read(self._p("c", frontdoor_id, key))
        if got is None:
            return None
        return cert_from_dict(got[0]), got[1]

    def get_certificate(self, frontdoor_id: str, certificate_id: str) -> Optional[CertificateRecord]:
        if self._pending:
            self._flush_pending()
        key = self._cert_key_for(frontdoor_id, certificate_id)
        if key is None:
            return None
        got = self._read_cert(frontdoor_id, key)
        if got is not None:
            return got[0]
        with self._lock:
            embedded = self._embedded.get((frontdoor_id, certificate_id))
        if embedded is None:
            return None
        self._write(self._p("c", frontdoor_id, key), cert_to_dict(embedded), cas=0)
        got = self._read_cert(frontdoor_id, key)
        return got[0] if got else embedded

    def _revoked_markers(self, frontdoor_id: str) -> Dict[str, Tuple[str, int]]:
        """cert id -> (serial, revoked ms)."""
        result = {}
        for key in self._list(self._p("r", frontdoor_id) + "/"):
            parts = key.split(".")
            if len(parts) == 3 and parts[2].isdigit():
                result[parts[0]] = (parts[1], int(parts[2]))
        return result

    def _certificate_rows(self, frontdoor_id: str) -> List[Tuple[int, str, str, str]]:
        """One LIST of c/<fd>/: (created ms, token id, certificate id, key) per copy, each key remembered."""
        if self._pending:
            self._flush_pending()
        rows = []
        for key in self._list(self._p("c", frontdoor_id) + "/"):
            parts = key.split(".")
            if len(parts) == 3 and parts[0].isdigit():
                rows.append((int(parts[0]), parts[1], parts[2], key))
                with self._lock:
                    self._cert_keys[(frontdoor_id, parts[2])] = key
        return rows

    def list_certificates(self, frontdoor_id, *, page=0, size=20, sort=("created_at", "asc"), token_id=None, revoked=None):
        rows = self._certificate_rows(frontdoor_id)
        if token_id:
            rows = [r for r in rows if r[1] == token_id]
        if revoked is not None:
            marked = self._revoked_markers(frontdoor_id)
            rows = [r for r in rows if (r[2] in marked) == bool(revoked)]
        column, direction = sort
        reverse = direction == "desc"
        rows.sort(key=lambda r: r[2])
        if column in ("created_at", "id"):
            rows.sort(key=(lambda r: r[0]) if column == "created_at" else (lambda r: r[2]), reverse=reverse)
            window = rows[page * size:(page + 1) * size]
            got = self._parallel(lambda r: self._read_cert(frontdoor_id, r[3]), window)
            items = [g[0] for g in got if g is not None]
        else:
            got = [g[0] for g in self._parallel(lambda r: self._read_cert(frontdoor_id, r[3]), rows) if g is not None]
            got.sort(key=lambda c: c.id)
            got.sort(key=lambda c: getattr(c, column), reverse=reverse)
            items = got[page * size:(page + 1) * size]
        return Page(items, len(rows), page, size)

    def mark_revoked(self, frontdoor_id: str, certificate_id: str, revoked_at: _dt.datetime) -> bool:
        key = self._cert_key_for(frontdoor_id, certificate_id)
        if key is None:
            return False
        got = self._read_cert(frontdoor_id, key)
        if got is None:
            if self.get_certificate(frontdoor_id, certificate_id) is None:
                return False
            got = self._read_cert(frontdoor_id, key)
            if got is None:
                return False
        cert, kv_version = got
        if cert.revoked_at is not None:
            return False
        cert.revoked_at = revoked_at
        if not self._write(self._p("c", frontdoor_id, key), cert_to_dict(cert), cas=kv_version):
            return False
        marker = "%s.%s.%013d" % (cert.id, cert.serial_number, _ms(revoked_at))
        self._write(self._p("r", frontdoor_id, marker), {"v": 1}, cas=None)
        return True

    def revoked_serials(self, frontdoor_id: str) -> Iterable[Tuple[str, _dt.datetime]]:
        return [
            (serial, _dt.datetime.fromtimestamp(ms / 1000.0, UTC))
            for serial, ms in self._revoked_markers(frontdoor_id).values()
        ]

    # -- renewal (renewal.py) ------------------------------------------------------------------
    # Layout: the renewal claim and ``renewedBy`` live in the certificate copy c/<fd>/<key> itself, written with
    # check-and-set on its KV version (as mark_revoked does); used renewal JWT ids are j/<key> ({"exp": ...}),
    # created with cas=0 (insert-if-absent) and deleted once expired.
    def find_certificate_by_serial(
        self, frontdoor_id: str, serial: str, not_before: Optional[_dt.datetime] = None
    ) -> Optional[CertificateRecord]:
        """One LIST of c/<fd>/, then reads of the copies created close to the certificate's notBefore (the
        creation time is in the key name; a certificate's notBefore is within minutes of its record), and only if
        none matches, of every copy. No index is written on the redemption path for this."""
        rows = self._certificate_rows(frontdoor_id)
        if not rows:
            return None

        def match(row) -> Optional[CertificateRecord]:
            got = self._read_cert(frontdoor_id, row[3])
            return got[0] if got is not None and got[0].serial_number == serial else None

        hint = _ms(not_before) if not_before is not None else None
        near = [r for r in rows if hint is not None and abs(r[0] - hint) <= 15 * 60 * 1000]
        for candidates in (near, [r for r in rows if r not in near]):
            found = [c for c in self._parallel(match, candidates) if c is not None]
            if found:
                return found[0]
        return None

    def _cert_doc(self, frontdoor_id: str, certificate_id: str) -> Optional[Tuple[str, Dict[str, Any], int]]:
        key = self._cert_key_for(frontdoor_id, certificate_id)
        if key is None:
            return None
        got = self._read(self._p("c", frontdoor_id, key))
        if got is None:
            return None
        return key, got[0], got[1]

    def use_renewal_jti(self, key: str, expires_at: _dt.datetime, now: _dt.datetime) -> bool:
        won = self._write(self._p("j", key), {"exp": _ts(expires_at)}, cas=0)
        self._sweep_jtis(now)
        return won

    def _sweep_jtis(self, now: _dt.datetime) -> None:
        """Delete used JWT ids whose JWT has expired: at most once per 10 minutes per store, best effort."""
        with self._lock:
            last = getattr(self, "_jti_swept", None)
            if last is not None and (now - last).total_seconds() < 600:
                return
            self._jti_swept = now
        try:
            def expired(name: str) -> Optional[str]:
                got = self._read(self._p("j", name))
                return name if got is not None and float(got[0].get("exp") or 0) <= now.timestamp() else None

            names = [n for n in self._list(self._p("j") + "/") if not n.endswith("/")]
            for name in [n for n in self._parallel(expired, names) if n is not None]:
                self._delete(self._p("j", name))
        except (StoreUnavailable, ValueError, TypeError):
            pass  # the next sweep retries; a leftover entry only refuses a JWT that is expired anyway

    def claim_renewal(self, frontdoor_id, certificate_id, claim_id, claim_until, now) -> bool:
        found = self._cert_doc(frontdoor_id, certificate_id)
        if found is None:
            return False
        key, data, version = found
        live = data.get("renewalClaim") and float(data.get("renewalClaimUntil") or 0) > now.timestamp()
        if data.get("renewedBy") or data.get("revokedAt") is not None or live:
            return False
        data = dict(data, renewalClaim=claim_id, renewalClaimUntil=_ts(claim_until))
        return self._write(self._p("c", frontdoor_id, key), data, cas=version)

    def release_renewal(self, frontdoor_id, certificate_id, claim_id) -> None:
        found = self._cert_doc(frontdoor_id, certificate_id)
        if found is None:
            return
        key, data, version = found
        if data.get("renewalClaim") != claim_id:
            return
        data = {k: v for k, v in data.items() if k not in ("renewalClaim", "renewalClaimUntil")}
        self._write(self._p("c", frontdoor_id, key), data, cas=version)

    def record_renewal(self, frontdoor_id, previous_id, claim_id, certificate) -> bool:
        """The commit point is the check-and-set of the previous certificate's copy that sets ``renewedBy`` and
        embeds the new record; the new certificate's own copy is written right after (and, if that write fails,
        retried by the next call here, as a redemption's copy is)."""
        found = self._cert_doc(frontdoor_id, previous_id)
        if found is None:
            return False
        key, data, version = found
        if data.get("renewalClaim") != claim_id or data.get("renewedBy") or data.get("revokedAt") is not None:
            return False
        updated = {k: v for k, v in data.items() if k not in ("renewalClaim", "renewalClaimUntil")}
        updated["renewedBy"] = certificate.id
        updated["renewal"] = cert_to_dict(certificate)
        path = self._p("c", frontdoor_id, key)
        try:
            won = self._write(path, updated, cas=version)
        except StoreUnavailable:
            got = self._read(path)  # the write may have landed before the connection broke
            if got is None or got[0].get("renewedBy") != certificate.id:
                raise
            won = True
        if not won:
            return False
        new_key = _cert_key(certificate)
        with self._lock:
            self._cert_keys[(certificate.frontdoor_id, certificate.id)] = new_key
        try:
            self._write(self._p("c", certificate.frontdoor_id, new_key), cert_to_dict(certificate), cas=0)
        except StoreUnavailable:
            with self._lock:
                self._pending.append(certificate)
        return True

    # -- health ---------------------------------------------------------------------------
    def ping(self) -> None:
        self._read(self._p("ping"))  # 404 is fine: Vault answered and the policy allows reads

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.client.close()


_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _is_hex64(value: str) -> bool:
    return isinstance(value, str) and _HEX64.match(value) is not None


def _short(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return whole_errors(errors)
    return type(exc).__name__


def build_vault_store(config) -> VaultKVStore:
    """The store for ``backend: vault`` (hook called by config.build_store)."""
    client = shared_client(config.vault)
    return VaultKVStore(client, client.settings.kv_mount, client.settings.kv_prefix)


__all__ = ["VaultKVStore", "build_vault_store"]
