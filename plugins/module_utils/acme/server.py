# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACME front's rules (RFC 8555 with the token as External Account Binding).

* **Binding.** ``newAccount`` needs an EAB whose key id is a token id of this frontdoor and whose MAC
  verifies with that token's derived HMAC key (protocol.py). The first account that presents one for
  an active, unexpired token is bound to it, by an insert-if-absent of ``binding/<fd>/<token>`` in the
  store: racing accounts on any number of gateways, exactly one wins; any other account gets
  ``unauthorized``. The bound account's key asking again gets its account back.
* **Identifiers.** The token's common name as a ``dns`` identifier (``ip`` when it parses as an address)
  plus its SANs (dns and ip). An order for anything else is ``rejectedIdentifier``. Authorizations are
  ``valid`` at once: the administrator pre-approved these names, so no challenge is needed.
* **Finalize is the redemption**: ``FrontdoorService.redeem_bound`` with the CSR, so the engine's rules
  hold (single use, the subject and SANs from the token, the CSR's key, clientAuth, audit; a failure
  before issue leaves the token redeemable and the order ``ready`` for another try).
* **Renewal.** The bound account may order the same identifiers again while the token's last
  certificate is valid; finalizing it is ``redeem_bound(renewal=True)`` (audited ``token.renewed``).
* **Deactivation.** An account whose token's last certificate was revoked (or whose token is gone but its
  removal has not run yet) is deactivated when next seen; so is one that asks for it.
* **State** (accounts, key index, bindings, orders, used nonces) lives in the token store as small JSON
  documents with check-and-set (``TokenStore.acme_*``), so it works across workers and gateways. A token's
  binding, account, key entry and orders are removed with the token (acme/state.py); the requests here that
  write some re-read the token afterwards and undo their writes if it was deleted meanwhile.
* **Audit.** A binding and a key change hand the token's use to a key: their lines are required
  (``emit_required``, written before the step); refusals and deactivations are ``emit_or_report``.

Everything here raises ``AcmeProblem`` for a refusal; the HTTP face only moves bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import json
import secrets
from typing import Any, Dict, List, Optional, Tuple

try:
    import josepy
    from acme import messages
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
except ImportError:  # pragma: no cover - Ansible's import sanity test runs without third-party packages
    josepy = messages = x509 = Encoding = None

from ..audit import emit_or_report, emit_required
from ..errors import FrontdoorError
from ..model import STATE_REDEEMED, isoformat
from ..tokens import CERT_ID_RE, TOKEN_ID_RE
from . import protocol
from .problems import AcmeProblem, from_engine
from .state import forget_token

ORDER_LIFETIME = _dt.timedelta(hours=24)
FINALIZE_LEASE = _dt.timedelta(seconds=90)  # an order left "processing" by a crashed gateway is ready again after it
MAX_CONTACTS = 4
MAX_ORDERS_LISTED = 100
MAX_IDENTIFIERS = 100
_PURGE_ODDS = 256  # about one nonce acceptance in this many also removes expired used nonces
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_REVOCATION_REASONS = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10}


@dataclasses.dataclass
class Reply:
    """What the HTTP face sends: status, JSON (dict) or text body, Location, content type."""

    status: int = 200
    body: Any = None
    location: Optional[str] = None
    content_type: str = "application/json"


@dataclasses.dataclass
class Urls:
    """The frontdoor's ACME URLs under ``base`` (e.g. ``https://gw.example/acme/default``)."""

    base: str

    def __getattr__(self, name: str) -> str:
        paths = {
            "directory": "/directory", "new_nonce": "/new-nonce", "new_account": "/new-account",
            "new_order": "/new-order", "revoke_cert": "/revoke-cert", "key_change": "/key-change",
        }
        if name in paths:
            return self.base + paths[name]
        raise AttributeError(name)

    def account(self, account_id: str) -> str:
        return "%s/acct/%s" % (self.base, account_id)

    def orders(self, account_id: str) -> str:
        return "%s/acct/%s/orders" % (self.base, account_id)

    def order(self, order_id: str) -> str:
        return "%s/order/%s" % (self.base, order_id)

    def finalize(self, order_id: str) -> str:
        return "%s/order/%s/finalize" % (self.base, order_id)

    def authz(self, order_id: str, index: int) -> str:
        return "%s/authz/%s/%d" % (self.base, order_id, index)

    def cert(self, certificate_id: str) -> str:
        return "%s/cert/%s" % (self.base, certificate_id)


def _plain_id(value: str, limit: int = 64) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and set(value) <= _ID_CHARS


def _identifier(kind: str, value: str) -> Dict[str, str]:
    return {"type": kind, "value": value}


def normalize_identifier(item: Any) -> Tuple[str, str]:
    """(type, value) in the one spelling identifiers are compared in; malformed input is refused."""
    if not isinstance(item, dict) or set(item) - {"type", "value"}:
        raise AcmeProblem("malformed", "Each identifier must be an object with type and value.")
    kind, value = item.get("type"), item.get("value")
    if not isinstance(kind, str) or not isinstance(value, str) or not value or len(value) > 253:
        raise AcmeProblem("malformed", "Each identifier needs a type and a non-empty value (at most 253 characters).")
    if kind == "dns":
        name = value.strip().rstrip(".").lower()
        if not name or any(c.isspace() for c in name) or not name.isascii():
            raise AcmeProblem("rejectedIdentifier", "%r is not a DNS name." % value[:64], identifier=_identifier(kind, value[:64]))
        return "dns", name
    if kind == "ip":
        try:
            return "ip", ipaddress.ip_address(value).compressed
        except ValueError:
            raise AcmeProblem("rejectedIdentifier", "%r is not an IP address." % value[:64],
                              identifier=_identifier(kind, value[:64])) from None
    raise AcmeProblem("unsupportedIdentifier", "Identifier type %r is not supported (dns, ip)." % kind[:16])


def token_identifiers(record) -> List[Tuple[str, str]]:
    """What the token pre-approves: its CN (``ip`` when it is an address, else ``dns``) and its dns/ip SANs."""
    found: List[Tuple[str, str]] = []
    common_name = record.subject.common_name
    if common_name:
        try:
            found.append(("ip", ipaddress.ip_address(common_name).compressed))
        except ValueError:
            found.append(("dns", common_name.strip().rstrip(".").lower()))
    sans = getattr(record, "subject_alt_names", None)
    if sans:
        found.extend(("dns", name.rstrip(".").lower()) for name in sans.dns)
        found.extend(("ip", ipaddress.ip_address(ip).compressed) for ip in sans.ip)
    unique: List[Tuple[str, str]] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def csr_identifiers(csr) -> List[Tuple[str, str]]:
    """The identifiers a CSR asks for: its dns/ip SANs, or its CN when it has none (RFC 8555 §7.4)."""
    found: List[Tuple[str, str]] = []
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found.extend(("dns", n.rstrip(".").lower()) for n in sans.get_values_for_type(x509.DNSName))
        found.extend(("ip", ip.compressed) for ip in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    except Exception:  # noqa: BLE001 - a malformed extension is the client's error
        raise AcmeProblem("badCSR", "The CSR's subjectAltName extension cannot be read.") from None
    if not found:
        try:
            names = [a.value for a in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        except Exception:  # noqa: BLE001
            names = []
        for name in names:
            if isinstance(name, str):
                try:
                    found.append(("ip", ipaddress.ip_address(name).compressed))
                except ValueError:
                    found.append(("dns", name.rstrip(".").lower()))
    return sorted(set(found))


class AcmeServer:
    """One per gateway process; stateless apart from the store."""

    def __init__(self, service):
        self.service = service

    @property
    def store(self):
        return self.service.store  # read each time: the gateway may wrap it (metrics) after this is made

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> _dt.datetime:
        return self.service.clock()

    def _key(self) -> bytes:
        return self.store.acme_server_key()

    def new_nonce(self) -> str:
        return protocol.new_nonce(self._key(), self._now())

    def _get(self, kind: str, key: str) -> Optional[Tuple[dict, int]]:
        return self.store.acme_get(kind, key)

    def _update(self, kind: str, key: str, change, attempts: int = 5) -> Optional[dict]:
        """Read-modify-write with check-and-set; None if the document is gone."""
        for _attempt in range(attempts):
            got = self._get(kind, key)
            if got is None:
                return None
            doc, version = got
            new = change(dict(doc))
            if self.store.acme_put(kind, key, new, version):
                return new
        raise AcmeProblem("rateLimited", "The %s changed repeatedly; retry." % kind, status=429, retry_after=1)

    def _frontdoor(self, frontdoor_id: str) -> None:
        try:
            self.service.frontdoor(frontdoor_id)
        except FrontdoorError as exc:
            raise AcmeProblem("malformed", exc.message, status=404) from None

    def directory(self, frontdoor_id: str, urls: Urls) -> dict:
        self._frontdoor(frontdoor_id)
        meta = messages.Directory.Meta(external_account_required=True)
        return {
            "newNonce": urls.new_nonce, "newAccount": urls.new_account, "newOrder": urls.new_order,
            "revokeCert": urls.revoke_cert, "keyChange": urls.key_change, "meta": meta.to_json(),
        }

    def check_frontdoor(self, frontdoor_id: str) -> None:
        self._frontdoor(frontdoor_id)

    # ------------------------------------------------------------------ requests
    def post(self, frontdoor_id: str, urls: Urls, url: str, body: bytes, route: str, arg: str = "",
             source: Optional[str] = None) -> Reply:
        """One signed request: envelope, url, key, signature, nonce (accepted once), then the route."""
        self._frontdoor(frontdoor_id)
        request = protocol.parse_request(body)
        if request.url != url:
            raise AcmeProblem("unauthorized", "The JWS url header must be the URL this request was sent to.")
        account = None
        if request.kid is not None:
            if route == "new-account":
                raise AcmeProblem("malformed", "newAccount must be signed with a jwk header, not a kid.")
            account = self._account_for_kid(frontdoor_id, urls, request.kid)
            key = josepy.JWK.from_json(account[0]["jwk"])
        else:
            if route not in ("new-account", "revoke-cert"):
                raise AcmeProblem("malformed", "Sign this request with the account URL (kid), not a jwk.")
            key = request.jwk
        request.verify(key)
        self._accept_nonce(request.nonce)
        ctx = _Context(frontdoor_id, urls, request, account, source)
        handler = {
            "new-account": self._new_account, "account": self._account, "orders": self._orders,
            "new-order": self._new_order, "order": self._order, "authz": self._authz, "finalize": self._finalize,
            "cert": self._cert, "revoke-cert": self._revoke, "key-change": self._key_change,
        }[route]
        return handler(ctx, arg)

    def _accept_nonce(self, nonce: str) -> None:
        now = self._now()
        expiry = protocol.nonce_expiry(self._key(), nonce, now)
        when = _dt.datetime.fromtimestamp(expiry, _dt.timezone.utc)
        if not self.store.acme_put("nonce", "%d/%s" % (expiry // 3600, nonce), {}, 0, expires_at=when):
            raise AcmeProblem("badNonce", "This nonce was used already; use the one in the last response's Replay-Nonce.")
        if secrets.randbelow(_PURGE_ODDS) == 0:
            try:
                self.store.acme_purge("nonce", now)
            except FrontdoorError:  # noqa: S110 - the next purge retries
                pass

    def _account_for_kid(self, frontdoor_id: str, urls: Urls, kid: str) -> Tuple[dict, int]:
        prefix = urls.account("")
        account_id = kid[len(prefix):] if kid.startswith(prefix) else ""
        got = self._get("account", "%s/%s" % (frontdoor_id, account_id)) if _plain_id(account_id) else None
        if got is None:
            raise AcmeProblem("accountDoesNotExist", "No account %s on this frontdoor (an account is removed with "
                              "its token)." % kid[:200])
        return got

    def _live(self, ctx: _Context, allow_revoked: bool = False):
        """The bound token of a usable account; deactivates the account when its token went away or its
        last certificate was revoked."""
        doc = ctx.account[0]
        if doc.get("status") != "valid":
            raise AcmeProblem("unauthorized", "This account is deactivated.")
        token = self.store.get_token(ctx.frontdoor_id, doc["tokenId"])
        why = None
        if token is None:
            why = "its token was deleted"
        elif token.certificate_id and not allow_revoked:
            last = self.store.get_certificate(ctx.frontdoor_id, token.certificate_id)
            if last is not None and last.revoked_at is not None:
                why = "the certificate its token last issued was revoked"
        if why:
            self._deactivate(ctx, why)
            raise AcmeProblem("unauthorized", "This account is deactivated: %s." % why)
        return token

    def _deactivate(self, ctx: _Context, why: str) -> dict:
        account_id = ctx.account[0]["id"]

        def change(doc):
            doc["status"] = "deactivated"
            return doc

        doc = self._update("account", "%s/%s" % (ctx.frontdoor_id, account_id), change)
        emit_or_report(  # takes something away: goes ahead whatever the log
            self.service.audit, "acme.account.deactivated", frontdoor=ctx.frontdoor_id, accountId=account_id,
            tokenId=ctx.account[0].get("tokenId"), reason=why, source=ctx.source,
        )
        return doc or ctx.account[0]

    # ------------------------------------------------------------------ accounts
    def _account_view(self, urls: Urls, doc: dict) -> dict:
        registration = messages.Registration(
            status=messages.Status.from_json(doc["status"]), contact=tuple(doc.get("contact") or ()),
        )
        view = registration.to_json()
        view["contact"] = list(doc.get("contact") or [])
        view["orders"] = urls.orders(doc["id"])
        return view

    @staticmethod
    def _contacts(payload: dict) -> Optional[List[str]]:
        if "contact" not in payload:
            return None
        contact = payload["contact"]
        if not isinstance(contact, list) or len(contact) > MAX_CONTACTS:
            raise AcmeProblem("invalidContact", "contact must be a list of at most %d mailto: URLs." % MAX_CONTACTS)
        for item in contact:
            if not isinstance(item, str) or len(item) > 256:
                raise AcmeProblem("invalidContact", "Each contact must be a mailto: URL of at most 256 characters.")
            if not item.startswith("mailto:") or "@" not in item or any(c.isspace() or c in ",;" for c in item):
                raise AcmeProblem("unsupportedContact", "Only one-address mailto: contacts are supported.")
        return list(contact)

    def _new_account(self, ctx: _Context, _arg: str) -> Reply:
        fd, urls, request = ctx.frontdoor_id, ctx.urls, ctx.request
        payload = request.payload_json() or {}
        thumb = protocol.thumbprint(request.jwk)
        known = self._get("key", "%s/%s" % (fd, thumb))
        if known is not None:
            got = self._get("account", "%s/%s" % (fd, known[0]["account"]))
            if got is not None:
                if got[0].get("status") != "valid":
                    raise AcmeProblem("unauthorized", "The account of this key is deactivated.")
                return Reply(200, self._account_view(urls, got[0]), location=urls.account(got[0]["id"]))
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "No account has this key on this frontdoor.")
        contact = self._contacts(payload) or []
        if payload.get("externalAccountBinding") is None:
            raise AcmeProblem(
                "externalAccountRequired",
                "This server needs External Account Binding: the keyId and hmacKey shown with the token.",
            )
        eab = protocol.parse_eab(payload["externalAccountBinding"], urls.new_account)
        token = None
        if TOKEN_ID_RE.match(eab["kid"]):
            token = self.store.get_token(fd, eab["kid"])
        key = protocol.eab_hmac_key(self._key(), fd, token.id, token.secret_hash) if token is not None else None
        if token is None or not protocol.verify_eab(eab, key, request.jwk):
            emit_or_report(self.service.audit, "acme.account.refused", frontdoor=fd, tokenId=eab["kid"][:64],
                           reason="eab", source=ctx.source)
            raise AcmeProblem(
                "unauthorized",
                "The external account binding does not verify: unknown key id, wrong HMAC key, a token "
                "refreshed since (its EAB changed), deleted, or of another frontdoor.",
            )
        binding_key = "%s/%s" % (fd, token.id)
        binding = self._get("binding", binding_key)
        if binding is None:
            status = token.status(self._now())
            if status != "active":
                raise AcmeProblem("unauthorized", "Token %s is %s; only an active token binds an account." % (token.id, status))
            candidate = {"account": _new_id(), "thumbprint": thumb, "createdAt": isoformat(self._now())}
            if self.store.acme_put("binding", binding_key, candidate, 0):
                binding = (candidate, 1)
            else:
                binding = self._get("binding", binding_key)
        if binding is None:
            raise AcmeProblem("rateLimited", "The token's binding changed; retry.", status=429, retry_after=1)
        account_id = binding[0]["account"]
        existing = self._get("account", "%s/%s" % (fd, account_id))
        owner = existing[0]["thumbprint"] if existing is not None else binding[0]["thumbprint"]
        if owner != thumb:
            emit_or_report(self.service.audit, "acme.account.refused", frontdoor=fd, tokenId=token.id,
                           reason="bound", source=ctx.source)
            raise AcmeProblem(
                "unauthorized", "Token %s is already bound to another ACME account; its EAB works for one account "
                "only. Ask the administrator for a new token." % token.id,
            )
        status = 200
        if existing is None:
            doc = {
                "id": account_id, "frontdoorId": fd, "tokenId": token.id, "jwk": request.jwk.to_json(),
                "thumbprint": thumb, "status": "valid", "contact": contact, "createdAt": isoformat(self._now()),
                "orders": [],
            }
            # The account is what the token grants: not without its line, written before the account exists. If it
            # cannot be written, the binding stays reserved for this key and a retry with it creates the account.
            # (Two racing requests with the same key may both write it, with the same ids.)
            emit_required(self.service.audit, "acme.account.bound", frontdoor=fd, accountId=account_id,
                          tokenId=token.id, source=ctx.source)
            if self.store.acme_put("account", "%s/%s" % (fd, account_id), doc, 0):
                status = 201
            existing = self._get("account", "%s/%s" % (fd, account_id))
        self.store.acme_put("key", "%s/%s" % (fd, thumb), {"account": account_id}, 0)
        if existing is None or self.store.get_token(fd, token.id) is None:
            # the token was deleted meanwhile (acme/state.py): what this request wrote goes with it
            forget_token(self.store, fd, token.id)
            key = self._get("key", "%s/%s" % (fd, thumb))
            if key is not None and key[0].get("account") == account_id:
                self.store.acme_delete("key", "%s/%s" % (fd, thumb))
            self.store.acme_delete("account", "%s/%s" % (fd, account_id))
            raise AcmeProblem("unauthorized", "Token %s was deleted." % token.id)
        return Reply(status, self._account_view(urls, existing[0]), location=urls.account(account_id))

    def _own_account(self, ctx: _Context, account_id: str) -> None:
        if ctx.account is None or ctx.account[0]["id"] != account_id:
            raise AcmeProblem("unauthorized", "This request must be signed by the account it names.")

    def _account(self, ctx: _Context, account_id: str) -> Reply:
        self._own_account(ctx, account_id)
        payload = ctx.request.payload_json() or {}
        doc = ctx.account[0]
        if doc.get("status") != "valid":
            raise AcmeProblem("unauthorized", "This account is deactivated.")
        if payload.get("status") == "deactivated":
            doc = self._deactivate(ctx, "asked by the account")
        elif "status" in payload and payload["status"] != "valid":
            raise AcmeProblem("malformed", "An account may only change its status to deactivated.")
        contact = self._contacts(payload)
        if contact is not None and doc.get("status") == "valid":
            def change(current):
                current["contact"] = contact
                return current

            doc = self._update("account", "%s/%s" % (ctx.frontdoor_id, account_id), change) or doc
        return Reply(200, self._account_view(ctx.urls, doc), location=ctx.urls.account(account_id))

    def _orders(self, ctx: _Context, account_id: str) -> Reply:
        self._own_account(ctx, account_id)
        ids = ctx.account[0].get("orders") or []
        return Reply(200, {"orders": [ctx.urls.order(i) for i in ids]})

    def _key_change(self, ctx: _Context, _arg: str) -> Reply:
        """RFC 8555 §7.3.5: the inner JWS, signed by the new key, names the account and its old key."""
        fd, urls = ctx.frontdoor_id, ctx.urls
        self._live(ctx, allow_revoked=True)
        outer = ctx.request.payload_json()
        if outer is None:
            raise AcmeProblem("malformed", "keyChange needs the inner JWS as payload.")
        inner = protocol.parse_inner_key_change(outer, ctx.request.url)
        new_jwk = inner["jwk"]
        if not protocol.verify_jws(inner["jws"], new_jwk):
            raise AcmeProblem("malformed", "The inner JWS does not verify with its jwk.")
        claims = inner["payload"]
        account = ctx.account[0]
        if claims.get("account") != urls.account(account["id"]):
            raise AcmeProblem("malformed", "The inner payload's account must be this account's URL.")
        try:
            old = protocol.load_jwk(claims.get("oldKey"))
        except AcmeProblem:
            raise AcmeProblem("malformed", "The inner payload's oldKey is not the account key.") from None
        if protocol.thumbprint(old) != account["thumbprint"]:
            raise AcmeProblem("malformed", "The inner payload's oldKey is not the account key.")
        new_thumb = protocol.thumbprint(new_jwk)
        if not self.store.acme_put("key", "%s/%s" % (fd, new_thumb), {"account": account["id"]}, 0):
            other = self._get("key", "%s/%s" % (fd, new_thumb))
            location = urls.account(other[0]["account"]) if other else None
            raise AcmeProblem("malformed", "The new key belongs to an account already.", status=409,
                              headers={"Location": location} if location else None)

        def change(doc):
            doc["jwk"], doc["thumbprint"] = new_jwk.to_json(), new_thumb
            return doc

        try:
            # the new key gets the account: not without its line; the old key keeps it if the line cannot be written
            emit_required(self.service.audit, "acme.account.key_changed", frontdoor=fd, accountId=account["id"],
                          tokenId=account.get("tokenId"), source=ctx.source)
        except FrontdoorError:
            self.store.acme_delete("key", "%s/%s" % (fd, new_thumb))
            raise
        doc = self._update("account", "%s/%s" % (fd, account["id"]), change)
        self.store.acme_delete("key", "%s/%s" % (fd, account["thumbprint"]))
        if doc is None or self.store.get_token(fd, account["tokenId"]) is None:
            # the token (and so the account) was deleted meanwhile: the new key entry goes too (acme/state.py)
            self.store.acme_delete("key", "%s/%s" % (fd, new_thumb))
            raise AcmeProblem("unauthorized", "This account is deactivated: its token was deleted.")
        return Reply(200, self._account_view(urls, doc or account), location=urls.account(account["id"]))

    # ------------------------------------------------------------------ orders
    def _order_view(self, urls: Urls, doc: dict) -> dict:
        order = messages.Order(
            identifiers=tuple(messages.Identifier.from_json(i) for i in doc["identifiers"]),
            status=messages.Status.from_json(self._order_status(doc)),
            authorizations=tuple(urls.authz(doc["id"], i) for i in range(len(doc["identifiers"]))),
            finalize=urls.finalize(doc["id"]),
            certificate=urls.cert(doc["certificateId"]) if doc.get("certificateId") else None,
            expires=_dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00")),
            error=messages.Error.from_json(doc["error"]) if doc.get("error") else None,
        )
        return order.to_json()

    def _order_status(self, doc: dict) -> str:
        status = doc["status"]
        now = self._now()
        if status == "processing" and doc.get("processingUntil", 0) < now.timestamp():
            status = "ready"
        if status == "ready" and _dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00")) <= now:
            status = "invalid"
        return status

    def _new_order(self, ctx: _Context, _arg: str) -> Reply:
        fd, urls = ctx.frontdoor_id, ctx.urls
        token = self._live(ctx)
        payload = ctx.request.payload_json() or {}
        wanted = payload.get("identifiers")
        if not isinstance(wanted, list) or not wanted or len(wanted) > MAX_IDENTIFIERS:
            raise AcmeProblem("malformed", "newOrder needs identifiers: a list of 1 to %d objects." % MAX_IDENTIFIERS)
        requested = []
        for item in wanted:
            normalized = normalize_identifier(item)
            if normalized not in requested:
                requested.append(normalized)
        allowed = token_identifiers(token)
        foreign = [i for i in requested if i not in allowed]
        if foreign:
            approved = ", ".join("%s:%s" % i for i in allowed) or "none (the token has no common name or SANs)"
            raise AcmeProblem(
                "rejectedIdentifier",
                "The token approves only %s; refused: %s." % (approved, ", ".join("%s:%s" % i for i in foreign)[:300]),
                subproblems=[
                    AcmeProblem("rejectedIdentifier", "Not approved by the token.", identifier=_identifier(*i))
                    for i in foreign[:10]
                ],
            )
        now = self._now()
        renewal = token.state == STATE_REDEEMED
        if renewal:
            try:
                self.service._check_renewable(self.service.frontdoor(fd), token, now)
            except FrontdoorError as exc:
                raise from_engine(exc) from None
        elif token.expires_at <= now:
            raise AcmeProblem("unauthorized", "Token %s expired at %s; ask for a refresh or a new token."
                              % (token.id, isoformat(token.expires_at)))
        order_id = _new_id()
        account_id = ctx.account[0]["id"]
        doc = {
            "id": order_id, "accountId": account_id, "tokenId": token.id, "status": "ready",
            "identifiers": [_identifier(*i) for i in requested], "renewal": renewal,
            "expires": isoformat(now + ORDER_LIFETIME), "createdAt": isoformat(now), "certificateId": None,
        }
        order_key = "%s/%s" % (fd, order_id)
        if not self.store.acme_put("order", order_key, doc, 0):
            raise AcmeProblem("serverInternal", "Order id collision; retry.", status=500)
        # The account's list is the index of its orders (the token's removal finds them there, acme/state.py):
        # an order stands only once listed, and the orders that fall off the end of the bounded list go.
        evicted: List[str] = []

        def remember(account):
            listed = list(account.get("orders") or []) + [order_id]
            evicted[:] = listed[:-MAX_ORDERS_LISTED]
            account["orders"] = listed[-MAX_ORDERS_LISTED:]
            return account

        try:
            listed = self._update("account", "%s/%s" % (fd, account_id), remember)
        except (AcmeProblem, FrontdoorError):
            try:
                self.store.acme_delete("order", order_key)
            except FrontdoorError:  # noqa: S110 - the store is down: an order nobody saw, never listed
                pass
            raise
        if listed is None or self.store.get_token(fd, token.id) is None:
            # the token (and so the account) was deleted meanwhile: the order goes with it
            self.store.acme_delete("order", order_key)
            raise AcmeProblem("unauthorized", "This account is deactivated: its token was deleted.")
        for old in evicted:
            self.store.acme_delete("order", "%s/%s" % (fd, old))
        return Reply(201, self._order_view(urls, doc), location=urls.order(order_id))

    def _own_order(self, ctx: _Context, order_id: str) -> Tuple[dict, int]:
        got = self._get("order", "%s/%s" % (ctx.frontdoor_id, order_id)) if _plain_id(order_id) else None
        if got is None or ctx.account is None or got[0]["accountId"] != ctx.account[0]["id"]:
            raise AcmeProblem("malformed", "No such order for this account.", status=404)
        return got

    def _order(self, ctx: _Context, order_id: str) -> Reply:
        doc, _version = self._own_order(ctx, order_id)
        return Reply(200, self._order_view(ctx.urls, doc), location=ctx.urls.order(order_id))

    def _authz(self, ctx: _Context, arg: str) -> Reply:
        order_id, _sep, index = arg.partition("/")
        doc, _version = self._own_order(ctx, order_id)
        if not index.isdigit() or int(index) >= len(doc["identifiers"]):
            raise AcmeProblem("malformed", "No such authorization.", status=404)
        identifier = doc["identifiers"][int(index)]
        authz = messages.Authorization(
            identifier=messages.Identifier.from_json(identifier), status=messages.STATUS_VALID,
            expires=_dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00")),
            wildcard=True if identifier["value"].startswith("*.") else None,
        ).to_json()
        authz["challenges"] = []  # pre-approved by the administrator: nothing to prove
        return Reply(200, authz)

    def _finalize(self, ctx: _Context, order_id: str) -> Reply:
        fd, urls = ctx.frontdoor_id, ctx.urls
        doc, version = self._own_order(ctx, order_id)
        status = self._order_status(doc)
        if status == "valid":
            return Reply(200, self._order_view(urls, doc), location=urls.order(order_id))
        if status != "ready":
            raise AcmeProblem("orderNotReady", "The order is %s, not ready." % status)
        self._live(ctx)
        payload = ctx.request.payload_json() or {}
        try:
            csr = messages.CertificateRequest.from_json(payload).csr
        except Exception:  # noqa: BLE001 - josepy/cryptography raise several types on hostile input
            raise AcmeProblem("badCSR", "csr must be a DER PKCS#10 request, base64url-encoded.") from None
        asked = csr_identifiers(csr)
        ordered = sorted((i["type"], i["value"]) for i in doc["identifiers"])
        if asked != ordered:
            raise AcmeProblem(
                "badCSR", "The CSR must ask for exactly the order's identifiers (%s), not %s."
                % (", ".join("%s:%s" % i for i in ordered), ", ".join("%s:%s" % i for i in asked)[:300] or "none"),
            )
        pem = csr.public_bytes(Encoding.PEM).decode("ascii")
        processing = dict(doc, status="processing", processingUntil=(self._now() + FINALIZE_LEASE).timestamp())
        key = "%s/%s" % (fd, order_id)
        if not self.store.acme_put("order", key, processing, version):
            raise AcmeProblem("orderNotReady", "The order is being finalized by another request; poll it.")
        try:
            result = self.service.redeem_bound(
                fd, doc["tokenId"], pem, renewal=bool(doc.get("renewal")),
                source="acme:%s%s" % (doc["accountId"], "@" + ctx.source if ctx.source else ""),
            )
        except FrontdoorError as exc:
            problem = from_engine(exc)

            def back(current):
                current["status"] = "ready"
                current.pop("processingUntil", None)
                return current

            self._update("order", key, back)
            raise problem from None

        def done(current):
            current.update(status="valid", certificateId=result.certificate.id)
            current.pop("processingUntil", None)
            return current

        final = self._update("order", key, done) or dict(doc, status="valid", certificateId=result.certificate.id)
        return Reply(200, self._order_view(urls, final), location=urls.order(order_id))

    # ------------------------------------------------------------------ certificates
    def _cert(self, ctx: _Context, certificate_id: str) -> Reply:
        record = None
        if isinstance(certificate_id, str) and CERT_ID_RE.match(certificate_id):
            record = self.store.get_certificate(ctx.frontdoor_id, certificate_id)
        if record is None or ctx.account is None or record.token_id != ctx.account[0]["tokenId"]:
            raise AcmeProblem("malformed", "No such certificate for this account.", status=404)
        chain = [record.certificate_pem] + list(record.ca_chain)
        text = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain)
        return Reply(200, text, content_type="application/pem-certificate-chain")

    def _issued_here(self, frontdoor_id: str, certificate, der: bytes):
        """The record of this frontdoor's certificate byte for byte equal to ``der``, or None."""
        try:
            not_before = certificate.not_valid_before_utc
        except Exception:  # noqa: BLE001
            not_before = None
        record = self.store.find_certificate_by_serial(frontdoor_id, format(certificate.serial_number, "x"), not_before)
        if record is None:
            return None
        try:
            stored = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii")).public_bytes(Encoding.DER)
        except ValueError:
            return None
        return record if stored == der else None

    def _revoke(self, ctx: _Context, _arg: str) -> Reply:
        fd = ctx.frontdoor_id
        payload = ctx.request.payload_json() or {}
        reason = payload.get("reason", 0)
        if isinstance(reason, bool) or not isinstance(reason, int) or reason not in _REVOCATION_REASONS:
            raise AcmeProblem("badRevocationReason", "reason must be an RFC 5280 reason code (0-6, 8-10).")
        try:
            certificate = messages.Revocation.from_json(dict(payload, reason=reason)).certificate
        except Exception:  # noqa: BLE001
            raise AcmeProblem("malformed", "certificate must be a DER certificate, base64url-encoded.") from None
        der = certificate.public_bytes(Encoding.DER)
        match = self._issued_here(fd, certificate, der)
        if ctx.account is not None:
            token = self._live(ctx, allow_revoked=True)
            if match is None or match.token_id != token.id:
                raise AcmeProblem("unauthorized", "This account did not obtain that certificate.")
            actor = "acme:%s" % ctx.account[0]["id"]
        else:
            # RFC 8555 §7.6: a request signed with the certificate's own key is authorized too
            try:
                same_key = _spki(certificate.public_key()) == _spki(ctx.request.jwk.public_key().key)
            except Exception:  # noqa: BLE001 - an unreadable certificate key is simply not this key
                same_key = False
            if match is None or not same_key:
                raise AcmeProblem("unauthorized", "Sign with the account that obtained the certificate (kid) or with "
                                  "the certificate's own key (jwk).")
            actor = "acme:certificate-key"
        if match.revoked_at is not None:
            raise AcmeProblem("alreadyRevoked", "The certificate was revoked at %s." % isoformat(match.revoked_at))
        try:
            self.service.revoke_certificate(fd, match.id, actor=actor)
        except FrontdoorError as exc:
            raise from_engine(exc) from None
        return Reply(200, None)


def _spki(public_key) -> bytes:
    from cryptography.hazmat.primitives.serialization import PublicFormat

    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@dataclasses.dataclass
class _Context:
    frontdoor_id: str
    urls: Urls
    request: Any  # protocol.SignedRequest
    account: Optional[Tuple[dict, int]]
    source: Optional[str]


def _new_id() -> str:
    return secrets.token_urlsafe(16)


def problem_json(problem: AcmeProblem) -> str:
    return json.dumps(problem.body())
