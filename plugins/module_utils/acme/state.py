# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A token's ACME state goes with the token (``FrontdoorService.delete_token`` and ``cleanup``).

The documents a token has (acme/server.py writes them; ``<fd>`` is the frontdoor):

* ``binding/<fd>/<tokenId>`` -> ``{account, thumbprint}``: the root, found from the token id;
* ``account/<fd>/<accountId>`` -> ``{tokenId, thumbprint, orders: [...]}``;
* ``key/<fd>/<thumbprint>`` -> ``{account}``: the account key index;
* ``order/<fd>/<orderId>``: every order of the account is in its ``orders`` list (newOrder lists it, and deletes
  the orders that fall off the end of that bounded list), so binding -> account -> orders reaches all of them.

Race safety without locks: the token record is deleted *first*; every request that creates ACME state for a token
(newAccount, newOrder, keyChange) reads the token again after its writes and removes what it wrote when the token is
gone. So a creator either sees the token gone and undoes its writes, or its writes happened before the token was
deleted, hence before ``forget_token`` reads them. The binding is removed last: a removal cut short by a store
failure leaves the binding of a token that no longer exists, and ``sweep`` (run by every cleanup) finishes it.

Only the store's ``acme_*`` primitives are used, so SQLite and Vault KV behave the same. A store without ACME state
answers ``not_supported``; the callers treat that as nothing to remove.
"""

from __future__ import annotations

from typing import Iterable, List


def forget_token(store, frontdoor_id: str, token_id: str) -> int:
    """Remove the ACME binding, account, account key index entries and orders of a token that was deleted.
    Idempotent. Returns how many documents it deleted (orders counted as listed)."""
    fd = frontdoor_id
    binding = store.acme_get("binding", "%s/%s" % (fd, token_id))
    if binding is None:
        return 0
    removed = 0
    account_id = binding[0].get("account")
    thumbprints = [binding[0].get("thumbprint")]
    account = store.acme_get("account", "%s/%s" % (fd, account_id)) if isinstance(account_id, str) else None
    if account is not None and account[0].get("tokenId") == token_id:
        doc = account[0]
        thumbprints.append(doc.get("thumbprint"))
        for order_id in doc.get("orders") or []:
            if isinstance(order_id, str):
                store.acme_delete("order", "%s/%s" % (fd, order_id))  # absent is fine
                removed += 1
        for thumbprint in set(t for t in thumbprints if isinstance(t, str)):
            key = store.acme_get("key", "%s/%s" % (fd, thumbprint))
            if key is not None and key[0].get("account") == account_id:  # never another account's key
                store.acme_delete("key", "%s/%s" % (fd, thumbprint))
                removed += 1
        store.acme_delete("account", "%s/%s" % (fd, account_id))
        removed += 1
    store.acme_delete("binding", "%s/%s" % (fd, token_id))
    return removed + 1


def sweep(store, frontdoor_ids: Iterable[str]) -> int:
    """Remove the ACME state of every token that no longer exists (a removal a store failure cut short, or state
    left from before removal came with the token): per frontdoor one listing of the bindings and one of the
    tokens, then one token read per binding whose token is not listed. Returns how many documents were removed."""
    removed = 0
    for fd in frontdoor_ids:
        bound = store.acme_list("binding", fd)
        if not bound:
            continue
        known = store.acme_token_ids(fd)  # one listing; an id it lacks is confirmed by reading the token
        candidates = [t for t in bound if known is None or t not in known]
        orphans: List[str] = [t for t in candidates if store.get_token(fd, t) is None]
        for token_id in orphans:
            removed += forget_token(store, fd, token_id)
    return removed
