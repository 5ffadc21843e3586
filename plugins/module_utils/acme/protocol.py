# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ACME's JOSE layer: request JWS (RFC 8555 §6.2), External Account Binding (§7.3.4) and nonces (§6.5).

Signatures are verified by josepy (``acme.jws.JWS`` and its algorithms), never here: this module only
checks the envelope RFC 8555 demands before handing it over (flattened JSON, one signature, every
header protected, ``alg`` one of the asymmetric algorithms, exactly one of ``jwk``/``kid``, ``url`` and
``nonce`` present) and turns every failure into an ACME problem, so hostile bodies get a 4xx.

Keys derived from the store's server key (``store.acme_server_key()``), each with its own label:
* EAB HMAC key of a token = HMAC-SHA256(server key, "eab" | frontdoor | token id | secret hash): never
  stored, shown once with the token's secret, and a refresh (new secret hash) gives a new one, so an
  EAB that leaked with an old secret stops working with it;
* nonce MAC key: a nonce is ``expiry (8 bytes) | 16 random bytes | MAC``, so no write is needed to
  hand one out; it is accepted once by an insert-if-absent of the nonce in the store.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import hashlib
import hmac
import json
import secrets
from typing import Any, Dict, Optional

try:
    import josepy
    from acme import jws as acme_jws
except ImportError:  # pragma: no cover - Ansible's import sanity test runs without third-party packages
    josepy = acme_jws = None

from .problems import AcmeProblem

#: account key algorithms (josepy's asymmetric ones); HMAC only inside the EAB, never "none"
ACCOUNT_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
EAB_ALGS = ("HS256", "HS384", "HS512")
NONCE_TTL = 3600  # seconds a nonce stays acceptable (if not used before)
_NONCE_RANDOM = 16
_NONCE_MAC = 16
_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_BODY_KEYS = {"protected", "payload", "signature"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64url(text: str) -> bytes:
    """base64url without padding, strictly (RFC 7515 §2): anything else is ValueError."""
    if not isinstance(text, str) or "=" in text or not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _subkey(server_key: bytes, label: str) -> bytes:
    return hmac.new(server_key, b"frontdoor-acme:" + label.encode("ascii"), hashlib.sha256).digest()


# ---------------------------------------------------------------------------------------------- EAB
def eab_hmac_key(server_key: bytes, frontdoor_id: str, token_id: str, secret_hash: str) -> bytes:
    message = "\0".join((frontdoor_id, token_id, secret_hash)).encode("utf-8")
    return hmac.new(_subkey(server_key, "eab"), message, hashlib.sha256).digest()


def eab_credentials(server_key: bytes, record) -> Dict[str, str]:
    """``{"keyId", "hmacKey"}`` of a token (``TokenRecord``): what create and refresh show once."""
    key = eab_hmac_key(server_key, record.frontdoor_id, record.id, record.secret_hash)
    return {"keyId": record.id, "hmacKey": b64url(key)}


# ---------------------------------------------------------------------------------------------- nonces
def new_nonce(server_key: bytes, now: _dt.datetime) -> str:
    body = int(now.timestamp() + NONCE_TTL).to_bytes(8, "big") + secrets.token_bytes(_NONCE_RANDOM)
    mac = hmac.new(_subkey(server_key, "nonce"), body, hashlib.sha256).digest()[:_NONCE_MAC]
    return b64url(body + mac)


def nonce_expiry(server_key: bytes, nonce: Any, now: _dt.datetime) -> int:
    """The nonce's expiry (epoch seconds) if this server made it and it has not expired; else badNonce.
    Whether it was used already is the store's insert-if-absent, done by the caller after this."""
    try:
        raw = unb64url(nonce)
    except ValueError:
        raw = b""
    if len(raw) != 8 + _NONCE_RANDOM + _NONCE_MAC:
        raise AcmeProblem("badNonce", "The nonce was not issued by this server; get a new one from newNonce.")
    body, mac = raw[: 8 + _NONCE_RANDOM], raw[8 + _NONCE_RANDOM:]
    expected = hmac.new(_subkey(server_key, "nonce"), body, hashlib.sha256).digest()[:_NONCE_MAC]
    if not hmac.compare_digest(mac, expected):
        raise AcmeProblem("badNonce", "The nonce was not issued by this server; get a new one from newNonce.")
    expiry = int.from_bytes(body[:8], "big")
    if expiry <= now.timestamp():
        raise AcmeProblem("badNonce", "The nonce expired; use the one in the last response's Replay-Nonce.")
    return expiry


# ---------------------------------------------------------------------------------------------- JWS
@dataclasses.dataclass
class SignedRequest:
    """A request JWS whose envelope passed; ``verify`` with the key (``jwk`` or the account's)."""

    jws: Any  # acme.jws.JWS
    protected: Dict[str, Any]  # the protected header as sent (JSON object)
    payload: bytes
    alg: str
    url: str
    nonce: str
    jwk: Any = None  # josepy.JWK when the header carries one
    kid: Optional[str] = None

    def payload_json(self) -> Optional[dict]:
        """The payload as a JSON object; None for POST-as-GET (empty payload)."""
        if self.payload == b"":
            return None
        try:
            value = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise AcmeProblem("malformed", "The JWS payload is not JSON.") from None
        if not isinstance(value, dict):
            raise AcmeProblem("malformed", "The JWS payload must be a JSON object (or empty for POST-as-GET).")
        return value

    def verify(self, key) -> None:
        if not verify_jws(self.jws, key):
            raise AcmeProblem("malformed", "The JWS signature does not verify with the account key.")


def _json_object(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AcmeProblem("malformed", "%s is not JSON." % what) from None
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", "%s must be a JSON object." % what)
    return value


def verify_jws(jws, key) -> bool:
    """josepy's verification; a key that does not fit the algorithm is a failure, not an exception."""
    try:
        return bool(jws.verify(key))
    except Exception:  # noqa: BLE001 - josepy raises whatever the key type/algorithm mismatch provokes
        return False


def _protected_header(obj: dict, what: str) -> dict:
    if set(obj) != _BODY_KEYS or not all(isinstance(obj[k], str) for k in _BODY_KEYS):
        raise AcmeProblem(
            "malformed",
            "%s must be a flattened JWS: a JSON object with exactly protected, payload and signature "
            "(strings); unprotected headers are not allowed." % what,
        )
    try:
        header = _json_object(unb64url(obj["protected"]), "The protected header")
    except ValueError:
        raise AcmeProblem("malformed", "The protected header is not base64url.") from None
    try:
        unb64url(obj["payload"])
        unb64url(obj["signature"])
    except ValueError:
        raise AcmeProblem("malformed", "The payload or signature is not base64url.") from None
    return header


def parse_request(body: bytes) -> SignedRequest:
    """The envelope checks of RFC 8555 §6.2; the signature is verified later by ``SignedRequest.verify``."""
    obj = _json_object(body, "The request body")
    header = _protected_header(obj, "The request body")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCOUNT_ALGS:
        raise AcmeProblem(
            "badSignatureAlgorithm", "alg %r is not supported; use one of %s." % (str(alg)[:16], ", ".join(ACCOUNT_ALGS))
        )
    has_jwk, has_kid = "jwk" in header, "kid" in header
    if has_jwk == has_kid:
        raise AcmeProblem("malformed", "The protected header must carry exactly one of jwk and kid.")
    url, nonce = header.get("url"), header.get("nonce")
    if not isinstance(url, str) or not url:
        raise AcmeProblem("malformed", "The protected header must carry the request URL (url).")
    if not isinstance(nonce, str) or not nonce:
        raise AcmeProblem("badNonce", "The protected header must carry a nonce from newNonce.")
    try:
        jws = acme_jws.JWS.from_json(obj)
    except Exception:  # noqa: BLE001 - josepy's decoders raise several types on hostile input
        raise AcmeProblem("malformed", "The JWS could not be decoded.") from None
    request = SignedRequest(jws=jws, protected=header, payload=jws.payload, alg=alg, url=url, nonce=nonce)
    if has_jwk:
        request.jwk = load_jwk(header["jwk"])
    else:
        if not isinstance(header["kid"], str) or not header["kid"]:
            raise AcmeProblem("malformed", "kid must be the account URL.")
        request.kid = header["kid"]
    return request


def load_jwk(value: Any):
    """A public account key from a JWK object: RSA 2048-8192 bits or EC P-256/P-384/P-521."""
    if not isinstance(value, dict) or "d" in value or any(k in value for k in ("p", "q", "k")):
        raise AcmeProblem("badPublicKey", "jwk must be a public RSA or EC key (no private parts).")
    try:
        jwk = josepy.JWK.from_json(value)
    except Exception:  # noqa: BLE001 - josepy raises several types on hostile keys
        raise AcmeProblem("badPublicKey", "jwk is not a key this server can read (RSA or EC).") from None
    if isinstance(jwk, josepy.JWKRSA):
        bits = getattr(jwk.key, "key_size", 0)
        if not 2048 <= bits <= 8192:
            raise AcmeProblem("badPublicKey", "RSA account keys must have 2048 to 8192 bits, not %d." % bits)
    elif isinstance(jwk, josepy.JWKEC):
        curve = getattr(getattr(jwk.key, "curve", None), "name", None)
        if curve not in _EC_CURVES:
            raise AcmeProblem("badPublicKey", "EC account keys must be on P-256, P-384 or P-521.")
    else:
        raise AcmeProblem("badPublicKey", "Account keys must be RSA or EC.")
    return jwk


def thumbprint(jwk) -> str:
    """RFC 7638 thumbprint (SHA-256), base64url: how an account key is looked up."""
    return b64url(jwk.thumbprint())


def parse_eab(value: Any, new_account_url: str) -> Dict[str, Any]:
    """The EAB's envelope (§7.3.4): a flattened JWS, alg HS256/384/512, kid, url = newAccount, no nonce.

    Returns ``{"jws", "kid", "payload"}``; the MAC is checked by ``verify_eab`` once the key is known."""
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", "externalAccountBinding must be a flattened JWS object.")
    header = _protected_header(value, "externalAccountBinding")
    alg, kid, url = header.get("alg"), header.get("kid"), header.get("url")
    if alg not in EAB_ALGS:
        raise AcmeProblem("badSignatureAlgorithm", "The EAB must be MACed with HS256, HS384 or HS512.")
    if "nonce" in header:
        raise AcmeProblem("malformed", "The EAB must not carry a nonce (RFC 8555 §7.3.4).")
    if not isinstance(kid, str) or not kid:
        raise AcmeProblem("malformed", "The EAB must carry the key id (kid) given with the token.")
    if url != new_account_url:
        raise AcmeProblem("unauthorized", "The EAB's url must be this server's newAccount URL.")
    try:
        jws = josepy.JWS.from_json(value)
    except Exception:  # noqa: BLE001
        raise AcmeProblem("malformed", "The EAB could not be decoded.") from None
    return {"jws": jws, "kid": kid, "payload": jws.payload}


def verify_eab(eab: Dict[str, Any], hmac_key: bytes, account_jwk) -> bool:
    """The EAB's MAC verifies with ``hmac_key`` (josepy) and its payload is the account's key."""
    if not verify_jws(eab["jws"], josepy.JWKOct(key=hmac_key)):
        return False
    try:
        inner = load_jwk(_json_object(eab["payload"], "The EAB payload"))
    except AcmeProblem:
        return False
    return hmac.compare_digest(thumbprint(inner), thumbprint(account_jwk))


def parse_inner_key_change(value: Any, outer_url: str) -> Dict[str, Any]:
    """keyChange's inner JWS (§7.3.5): jwk of the new key, the outer url, no nonce; payload a JSON object.

    Returns ``{"jws", "jwk", "payload"}``; the caller verifies it with the new key."""
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", "The keyChange payload must be a flattened JWS object.")
    header = _protected_header(value, "The inner keyChange JWS")
    if header.get("alg") not in ACCOUNT_ALGS:
        raise AcmeProblem("badSignatureAlgorithm", "The inner JWS's alg is not supported.")
    if "nonce" in header or "kid" in header or "jwk" not in header:
        raise AcmeProblem("malformed", "The inner JWS must carry jwk (the new key) and no nonce or kid.")
    if header.get("url") != outer_url:
        raise AcmeProblem("malformed", "The inner JWS's url must be the keyChange URL.")
    jwk = load_jwk(header["jwk"])
    try:
        jws = acme_jws.JWS.from_json(value)
    except Exception:  # noqa: BLE001
        raise AcmeProblem("malformed", "The inner JWS could not be decoded.") from None
    return {"jws": jws, "jwk": jwk, "payload": _json_object(jws.payload, "The inner payload")}


def eab_for(store, record) -> Optional[Dict[str, str]]:
    """The token's EAB credentials for the answer that shows its secret (create, refresh), or None when the
    store keeps no ACME state or cannot give its server key now. Made from the server key each time: never stored.

    Why None rather than an error: the token exists already when this runs, and its secret must reach the caller
    (an error would leave a token nobody can redeem); a refresh shows the EAB again once the key is readable."""
    from ..errors import FrontdoorError

    try:
        return eab_credentials(store.acme_server_key(), record)
    except (FrontdoorError, OSError):
        return None


def with_eab(view: dict, store, record) -> dict:
    """``view`` (a token with its secret) plus ``acmeEab`` when the store keeps ACME state."""
    eab = eab_for(store, record)
    if eab is not None:
        view["acmeEab"] = eab
    return view
