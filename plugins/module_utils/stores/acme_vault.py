# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACME front's state in the Vault KV v2 store, under ``<kvPrefix>/acme/<kind>/<key>``.

A mixin of ``VaultKVStore`` (its KV primitives, retries and error mapping). The document's version
is the KV version, so check-and-set is KV's own ``cas`` (``cas=0``: create only): any number of
gateways on one Vault accept a nonce once and bind a token to one account. Nonce keys start with an
hour bucket (``<epoch hour of expiry>/<nonce>``) so a purge lists only the bucket folders and drops
whole hours that have passed. The server key is a KV document created once with ``cas=0``; every
gateway reads the winner's. Policy: the paths are under the prefix the store's policy already grants.
"""

from __future__ import annotations

import base64
import datetime as _dt
import secrets
from typing import List, Optional, Set, Tuple

SERVER_KEY_BYTES = 32


class VaultAcmeState:
    """ACME documents for ``VaultKVStore`` (see stores/base.py for the contract)."""

    _acme_key: Optional[bytes] = None

    def _acme_path(self, kind: str, key: str) -> str:
        return self._p("acme", kind, key)

    def acme_get(self, kind: str, key: str) -> Optional[Tuple[dict, int]]:
        return self._read(self._acme_path(kind, key))

    def acme_put(
        self, kind: str, key: str, doc: dict, expected_version: int, expires_at: Optional[_dt.datetime] = None
    ) -> bool:
        data = dict(doc)
        if expires_at is not None:
            data["_expiresAt"] = round(expires_at.timestamp(), 3)
        return self._write(self._acme_path(kind, key), data, cas=int(expected_version))

    def acme_delete(self, kind: str, key: str) -> None:
        self._delete(self._acme_path(kind, key))

    def acme_purge(self, kind: str, before: _dt.datetime) -> int:
        """Whole hour buckets whose hour ended before ``before`` (keys ``<hour>/<name>``)."""
        removed = 0
        limit = before.timestamp()
        for folder in self._list(self._p("acme", kind) + "/"):
            hour = folder.rstrip("/")
            if not folder.endswith("/") or not hour.isdigit() or (int(hour) + 1) * 3600 >= limit:
                continue
            for name in self._list(self._p("acme", kind, hour) + "/"):
                self._delete(self._p("acme", kind, hour, name))
                removed += 1
        return removed

    def acme_list(self, kind: str, folder: str) -> List[str]:
        return sorted(n for n in self._list(self._p("acme", kind, folder) + "/") if not n.endswith("/"))

    def acme_token_ids(self, frontdoor_id: str) -> Set[str]:
        # the id index get_token reads first (i/<fd>/<id>): one LIST
        return {n for n in self._list(self._p("i", frontdoor_id) + "/") if not n.endswith("/")}

    def acme_server_key(self) -> bytes:
        if self._acme_key is None:
            path = self._p("acme", "server", "key")
            got = self._read(path)
            if got is None:
                fresh = base64.b64encode(secrets.token_bytes(SERVER_KEY_BYTES)).decode("ascii")
                self._write(path, {"key": fresh}, cas=0)  # False: another gateway made it first; read theirs
                got = self._read(path)
            key = base64.b64decode(got[0]["key"]) if got else b""
            if len(key) != SERVER_KEY_BYTES:
                from ..errors import StoreUnavailable

                raise StoreUnavailable("The ACME server key in Vault at %s is unreadable." % path)
            self._acme_key = key
        return self._acme_key
