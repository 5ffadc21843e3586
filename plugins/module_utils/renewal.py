# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Renewal with the current certificate: the rules, once, whatever the store and signer.

Authentication is proof of possession of the current certificate's private key, the way
step-ca's x5c renewal tokens work: the ASGI servers do not hand the client's TLS certificate to the
application, and a JWT passes through any TLS-terminating proxy. The client sends
``Authorization: Bearer <JWT>``, a compact JWS signed by the current key whose protected ``x5c``
header holds the current certificate (leaf first, chain optional), with the claims

* ``aud``: the path ``/frontdoor/{frontdoorId}/client-certificates/renew`` (or a list holding it);
* ``iat``, and ``exp`` at most ``MAX_TOKEN_LIFETIME`` (5 minutes) later, not yet past;
* ``jti``: accepted once (the store keeps it until ``exp`` has passed, so it cannot come back).

Behind a proxy that terminates mTLS, the gateway may instead hand over the certificate that proxy
verified (``client_certificate``; gateway/client_cert.py decides when the proxy's header is believed):
the handshake was the proof of possession, and there is no JWT to check or spend.

What is checked, in this order (a refusal says which check failed, with its own code):

1. the frontdoor exists and allows renewal (``renewal_disabled``);
2. the JWT: compact form, an allowed asymmetric ``alg`` (never ``none``, never HMAC), ``x5c``
   parsed by cryptography, the signature verified by jwcrypto with the leaf's public key, then the
   claims (``invalid_renewal_token``, with ``details.reason``);
3. the CSR, as for a redemption (``invalid_csr``);
4. not expired past the frontdoor's grace (``certificate_expired``);
5. the leaf chains to this frontdoor's issuing CA (cryptography's RFC 5280 client verifier, with the
   issuing CA as the only trust anchor, so a certificate of another frontdoor or CA is refused:
   ``certificate_untrusted``), and it is byte for byte a certificate this frontdoor issued and
   recorded (looked up by serial: ``certificate_unknown``);
6. not revoked (``certificate_revoked``), and inside the frontdoor's renewal window (``renewal_too_early``);
7. the ``jti`` is new (``renewal_token_replayed``): an insert-if-absent in the store, done only
   after every check above, so a refused request never spends a JWT;
8. one renewal per certificate: the certificate record is claimed with a check-and-set that
   carries a lease (``renewal_in_progress`` while another request holds it), then signed, then
   recorded with a second check-and-set that sets the old record's ``renewed_by`` and stores the
   new certificate (with ``previous_certificate_id``) in one step. A certificate already renewed
   answers ``certificate_already_renewed``, except that a request whose CSR has the key of the
   certificate it was renewed into gets that certificate again (``replayed``): that is how a
   client that lost the answer recovers, with a fresh JWT signed by the key it still holds.

Why one renewal per certificate (and not "any number while valid"): two requests with different
JWTs for one certificate are either a retry or a copy of the key; either way, issuing two live
certificates from one would double what a stolen key yields. The renewed certificate renews the
next time.

The new certificate keeps the current one's subject and SANs (whatever the CSR asks), its name and
the token it descends from, and the current one's lifetime (at most the frontdoor's
``certificateTtl``). The key may be new (rotation) or the same; the CSR proves possession of it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
from typing import TYPE_CHECKING, List, Optional, Sequence

# Guarded: Ansible's import sanity test loads module_utils without third-party packages.
try:
    from cryptography import x509
    from cryptography.x509 import verification as x509_verification
except ImportError:  # pragma: no cover
    x509 = x509_verification = None
try:
    from jwcrypto import jwk as _jwk
    from jwcrypto import jws as _jws

    HAS_JWCRYPTO = True
except ImportError:  # pragma: no cover
    _jwk = _jws = None
    HAS_JWCRYPTO = False

from . import csr as csrmod
from .audit import emit_or_report, emit_required
from .errors import FrontdoorError, SignerUnavailable, StoreUnavailable
from .model import CertificateRecord, SignRequest, isoformat
from .service import NOT_BEFORE_BACKDATE, Redemption  # service.py imports renewal only inside renew(): no cycle
from .tokens import new_certificate_id

if TYPE_CHECKING:  # pragma: no cover
    from .service import FrontdoorService, FrontdoorSettings

#: algorithms a renewal JWT may use: asymmetric only (the key is the certificate's); never "none" or HS*
ALLOWED_ALGS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
MAX_TOKEN_LIFETIME = 300  # seconds from iat to exp
CLOCK_SKEW = 60  # seconds of clock difference tolerated on iat, nbf and exp
MAX_TOKEN_CHARS = 32 * 1024  # a JWT with a 4096-bit RSA leaf and a chain is ~8 KB
MAX_X5C = 4
MAX_JTI = 256
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
_JTI_KEY_VERSION = "v1"


def renewal_path(frontdoor_id: str) -> str:
    """The endpoint's path, which is also the JWT's required ``aud``."""
    return "/frontdoor/%s/client-certificates/renew" % frontdoor_id


def _bad_token(message: str, reason: str) -> FrontdoorError:
    return FrontdoorError(
        "invalid_renewal_token",
        message + " A renewal needs 'Authorization: Bearer <JWT>' signed by the current certificate's key, with the "
        "certificate in the x5c header (see docs/api.md, Renewal).",
        details={"reason": reason},
    )


@dataclasses.dataclass
class RenewalToken:
    """A renewal JWT whose signature and claims were verified."""

    leaf: object  # cryptography.x509.Certificate: the certificate being renewed (x5c[0])
    intermediates: List[object]  # the rest of x5c, as sent
    jti: Optional[str]  # None: no JWT (a certificate from a trusted proxy's mTLS handshake)
    issued_at: Optional[_dt.datetime]
    expires_at: Optional[_dt.datetime]
    alg: str


def bearer(authorization: Optional[str]) -> str:
    """The JWT of an ``Authorization: Bearer`` header, or invalid_renewal_token."""
    if not isinstance(authorization, str) or not authorization.strip():
        raise _bad_token("The Authorization header is missing.", "missing")
    parts = authorization.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise _bad_token("The Authorization header must be 'Bearer <JWT>'.", "scheme")
    return parts[1].strip()


def _number(claims: dict, name: str, required: bool = True) -> Optional[float]:
    value = claims.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python; a JSON true is not a time
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > 1e11:
        raise _bad_token("The JWT claim %r must be a NumericDate (seconds since the epoch)." % name, "claims")
    return float(value)


def _x5c(header: dict) -> List[object]:
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or len(chain) > MAX_X5C or not all(isinstance(c, str) for c in chain):
        raise _bad_token(
            "The JWT header needs x5c: a list of 1 to %d base64 DER certificates, the current certificate first."
            % MAX_X5C, "x5c",
        )
    certificates = []
    for item in chain:
        try:
            der = base64.b64decode(item, validate=True)
            certificates.append(x509.load_der_x509_certificate(der))
        except (ValueError, binascii.Error, TypeError):
            raise _bad_token("An x5c entry is not a base64 DER certificate.", "x5c") from None
    return certificates


def verify_token(token: str, audience: str, now: _dt.datetime) -> RenewalToken:
    """Verify a renewal JWT's form, signature (jwcrypto, key = the x5c leaf's) and claims.

    Whatever the client sent, the outcome is a RenewalToken or invalid_renewal_token: jwcrypto and
    cryptography raise many exception types on hostile input, and each of them is the client's fault.
    """
    if not HAS_JWCRYPTO:  # pragma: no cover - a dependency of the gateway
        raise FrontdoorError("not_supported", "Renewal needs the jwcrypto library on the gateway.")
    if len(token) > MAX_TOKEN_CHARS or not _COMPACT.match(token):
        raise _bad_token("The bearer token is not a compact JWS (three base64url parts).", "format")
    try:
        jws = _jws.JWS()
        jws.deserialize(token)
        header = jws.jose_header
    except Exception:  # noqa: BLE001 - any parse failure of client bytes is the client's
        raise _bad_token("The bearer token is not a readable JWS.", "format") from None
    if not isinstance(header, dict):
        raise _bad_token("The JWS header is not a JSON object.", "format")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise _bad_token(
            "The JWT alg %r is not allowed; use one of %s (matching the certificate's key)."
            % (str(alg)[:16], ", ".join(ALLOWED_ALGS)), "alg",
        )
    if "jwk" in header or "jku" in header or "x5u" in header:
        raise _bad_token("The JWT header may not carry jwk, jku or x5u: the key is the x5c certificate's.", "header")
    certificates = _x5c(header)
    leaf = certificates[0]
    try:
        key = _jwk.JWK.from_pyca(leaf.public_key())
        jws.allowed_algs = [alg]
        jws.verify(key, alg=alg)
        payload = jws.payload
    except Exception:  # noqa: BLE001 - a wrong key, a key the alg does not fit, a bad signature: all refusals
        raise _bad_token(
            "The JWT signature does not verify with the x5c certificate's key (or alg %s does not fit that key)."
            % alg, "signature",
        ) from None
    try:
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _bad_token("The JWT payload is not JSON.", "claims") from None
    if not isinstance(claims, dict):
        raise _bad_token("The JWT payload is not a JSON object.", "claims")

    aud = claims.get("aud")
    if not (aud == audience or isinstance(aud, list) and audience in aud):
        raise _bad_token("The JWT aud must be %r (this endpoint's path)." % audience, "audience")
    iat = _number(claims, "iat")
    exp = _number(claims, "exp")
    nbf = _number(claims, "nbf", required=False)
    now_ts = now.timestamp()
    if exp <= iat or exp - iat > MAX_TOKEN_LIFETIME:
        raise _bad_token(
            "The JWT must expire after it was issued and at most %d seconds later (exp - iat = %d)."
            % (MAX_TOKEN_LIFETIME, int(exp - iat)), "lifetime",
        )
    if iat > now_ts + CLOCK_SKEW or (nbf is not None and nbf > now_ts + CLOCK_SKEW):
        raise _bad_token("The JWT is issued in the future (iat/nbf); check the client's clock.", "not_yet_valid")
    if exp + CLOCK_SKEW <= now_ts:
        raise _bad_token("The JWT has expired; make a new one for each request.", "expired")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise _bad_token("The JWT needs a jti: a unique string of at most %d characters." % MAX_JTI, "jti")
    utc = _dt.timezone.utc
    return RenewalToken(
        leaf=leaf, intermediates=certificates[1:], jti=jti, issued_at=_dt.datetime.fromtimestamp(iat, utc),
        expires_at=_dt.datetime.fromtimestamp(exp, utc), alg=alg,
    )


PROXY_HEADER_FORMATS = ("nginx", "envoy")
MAX_PROXY_HEADER = 64 * 1024


def certificate_from_proxy_header(value: str, kind: str):
    """The client certificate a TLS-terminating proxy verified and passed on, as a cryptography certificate.

    ``nginx``: ``$ssl_client_escaped_cert``, the PEM URL-encoded. ``envoy``: ``X-Forwarded-Client-Cert``, elements
    separated by ``,`` (one per proxy; the last one is the nearest proxy's), each ``key=value`` pairs separated by
    ``;``, with ``Cert="<URL-encoded PEM>"``. The caller decides whether the header is to be believed (only from a
    configured proxy's address); this only reads it. Unreadable: invalid_renewal_token (reason ``proxy_header``).
    """
    from urllib.parse import unquote

    def bad(why: str) -> FrontdoorError:
        return _bad_token("The proxy's client certificate header is unreadable (%s)." % why, "proxy_header")

    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PROXY_HEADER:
        raise bad("empty or too long")
    if kind == "envoy":
        pem = None
        for pair in _split_unquoted(_split_unquoted(value, ",")[-1], ";"):
            name, _sep, item = pair.partition("=")
            if name.strip().lower() == "cert":
                item = item.strip()
                pem = item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item
        if not pem:
            raise bad("no Cert= element")
        value = pem
    elif kind != "nginx":
        raise ValueError("unknown proxy header format %r" % kind)
    try:
        return x509.load_pem_x509_certificate(unquote(value.strip()).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise bad("not a URL-encoded PEM certificate") from None


def _split_unquoted(text: str, sep: str) -> List[str]:
    """``text`` split at ``sep`` outside double quotes (XFCC quotes values that hold , ; or =)."""
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def chains_to(leaf, intermediates: Sequence[object], issuer_pems: Sequence[str], at: _dt.datetime) -> bool:
    """Whether ``leaf`` is a client certificate (EKU clientAuth) issued under ``issuer_pems[0]`` and
    valid at ``at``, by cryptography's RFC 5280 path validation.

    The frontdoor's issuing CA is the only trust anchor: anchoring at the root would accept a
    certificate from another frontdoor under the same root. The end-entity policy lets the SAN
    extension be absent, since a certificate from a token without SANs has none (the WebPKI
    default requires one).
    """
    if not issuer_pems:
        return False
    anchor = x509.load_pem_x509_certificate(issuer_pems[0].encode("ascii"))
    ee_policy = x509_verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, x509_verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        x509_verification.PolicyBuilder()
        .store(x509_verification.Store([anchor]))
        .time(at)
        .extension_policies(ca_policy=x509_verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(intermediates))
    except (x509_verification.VerificationError, ValueError, TypeError):
        return False  # the leaf and intermediates are the client's: any failure to validate them is "untrusted"
    return True


def jti_key(frontdoor_id: str, certificate_id: str, jti: str) -> str:
    """The store key of a used jti: scoped to the certificate, so one client cannot spend another's
    jti, and hashed, so a client-chosen string never becomes a key name (Vault KV path) as is."""
    text = "\x00".join((_JTI_KEY_VERSION, frontdoor_id, certificate_id, jti))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _certificate_der(record: CertificateRecord) -> Optional[bytes]:
    try:
        return x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii")).public_bytes(
            _serialization().Encoding.DER
        )
    except (ValueError, UnicodeEncodeError):
        return None


def _serialization():
    from cryptography.hazmat.primitives import serialization

    return serialization


class Renewer:
    """Renewal for one service: its store, signers, audit, clock and claim lease."""

    def __init__(self, service: FrontdoorService):
        self.service = service

    # -- checks ----------------------------------------------------------------------------
    def _settings(self, frontdoor_id: str) -> FrontdoorSettings:
        settings = self.service.frontdoor(frontdoor_id)
        if not settings.renewal_enabled:
            raise FrontdoorError(
                "renewal_disabled",
                "Renewal with the current certificate is disabled on frontdoor %r (renewalEnabled: false); "
                "ask an administrator for a certificate request token instead." % settings.id,
            )
        return settings

    def _current(self, settings: FrontdoorSettings, token: RenewalToken, now: _dt.datetime) -> CertificateRecord:
        """The stored record of the certificate the JWT carries, after the chain, identity, revocation,
        expiry and window checks."""
        leaf = token.leaf
        not_after = leaf.not_valid_after_utc
        grace = _dt.timedelta(seconds=settings.renewal_grace or 0)
        if not_after + grace <= now:
            with_grace = " (and the grace of %d seconds has passed)" % grace.total_seconds() if grace else ""
            raise FrontdoorError(
                "certificate_expired",
                "The certificate expired at %s%s; an expired certificate cannot renew itself. Ask an administrator "
                "for a certificate request token." % (isoformat(not_after), with_grace),
                details={"notAfter": isoformat(not_after)},
            )
        serial = "%x" % leaf.serial_number
        record = self.service.store.find_certificate_by_serial(settings.id, serial, leaf.not_valid_before_utc)
        try:
            chain = self.service.ca_chain(settings.id)
        except SignerUnavailable:
            # step-ca tells its chain only with a certificate it issued: a restarted gateway whose frontdoor has
            # issued nothing yet checks against the chain recorded with the certificate itself, which the signer
            # returned when it issued it (and which is only found if this frontdoor recorded that serial)
            chain = list(record.ca_chain) if record is not None else []
        # Within the grace the path is validated at the certificate's last valid second.
        at = min(now, not_after - _dt.timedelta(seconds=1))
        if not chains_to(leaf, token.intermediates, chain, at):
            raise FrontdoorError(
                "certificate_untrusted",
                "The certificate in x5c does not chain to frontdoor %r's CA (or is not a valid client certificate "
                "at %s)." % (settings.id, isoformat(at)),
            )
        if record is None or _certificate_der(record) != leaf.public_bytes(_serialization().Encoding.DER):
            raise FrontdoorError(
                "certificate_unknown",
                "Frontdoor %r has no record of the certificate with serial %s; only certificates it issued "
                "can be renewed." % (settings.id, serial),
            )
        if record.revoked_at is not None:
            raise FrontdoorError(
                "certificate_revoked",
                "The certificate %s was revoked at %s and cannot be renewed." % (record.id, isoformat(record.revoked_at)),
                details={"revokedAt": isoformat(record.revoked_at)},
            )
        window = settings.renewal_window
        if window is not None and record.renewed_by is None:
            opens = not_after - _dt.timedelta(seconds=window)
            if now < opens:
                raise FrontdoorError(
                    "renewal_too_early",
                    "Frontdoor %r renews a certificate only in the last %d seconds of its life; this one can be "
                    "renewed from %s." % (settings.id, window, isoformat(opens)),
                    details={"renewableFrom": isoformat(opens)},
                )
        return record

    # -- the protocol ------------------------------------------------------------------------
    def renew(
        self, frontdoor_id: str, authorization: Optional[str], csr_pem, csr_type="CSR", *, source: Optional[str] = None,
        client_certificate=None,
    ) -> Redemption:
        """``client_certificate``: a certificate that a TLS-terminating proxy the gateway trusts has verified in its
        mTLS handshake (a cryptography certificate); it stands for the JWT, which is then not needed (the handshake
        proved possession of the key, and nothing can be replayed). A JWT, when sent too, is what counts."""
        service = self.service
        previous_id = None
        try:
            settings = self._settings(frontdoor_id)
            if client_certificate is not None and not (isinstance(authorization, str) and authorization.strip()):
                token = RenewalToken(leaf=client_certificate, intermediates=[], jti=None, issued_at=None,
                                     expires_at=None, alg="mtls")
            else:
                token = verify_token(bearer(authorization), renewal_path(settings.id), service.clock())
            csr, public_key = csrmod.load_csr_and_key(csr_pem, csr_type)
            spki = csrmod.public_key_der(public_key)
            key_hash = csrmod.public_key_sha256(public_key, spki)
            now = service.clock()
            current = self._current(settings, token, now)
            previous_id = current.id
            if token.jti is not None and not service.store.use_renewal_jti(
                jti_key(settings.id, current.id, token.jti), token.expires_at + _dt.timedelta(seconds=CLOCK_SKEW), now
            ):
                raise FrontdoorError(
                    "renewal_token_replayed",
                    "This renewal JWT (jti) was used before; make a new JWT for every request.",
                )
            certificate, replayed = self._issue(settings, current, csr, public_key, spki, key_hash, source)
            return Redemption(certificate, replayed=replayed)
        except FrontdoorError as exc:
            # a refusal changes nothing: the client gets the true answer even when its line cannot be written
            emit_or_report(
                service.audit, "renewal.refused", frontdoor=str(frontdoor_id)[:64], certificateId=previous_id,
                code=exc.code, reason=exc.details.get("reason") if exc.details else None, message=exc.message,
                source=source,
            )
            raise

    def _issue(self, settings, current: CertificateRecord, csr, public_key, spki, key_hash, source):
        service = self.service
        store = service.store
        if current.renewed_by is not None:
            return self._renewed_already(settings, current, key_hash, source), True
        now = service.clock()
        claim_id = os.urandom(16).hex()
        if not store.claim_renewal(settings.id, current.id, claim_id, now + service.claim_lease, now):
            latest = store.get_certificate(settings.id, current.id)
            if latest is not None and latest.renewed_by is not None:
                return self._renewed_already(settings, latest, key_hash, source), True
            if latest is not None and latest.revoked_at is not None:
                raise FrontdoorError("certificate_revoked", "The certificate was revoked while being renewed.")
            raise FrontdoorError(
                "renewal_in_progress",
                "Another request is renewing this certificate right now; retry in a few seconds.",
                retry_after=max(1, int(service.claim_lease.total_seconds())),
            )

        signer = service.signers[settings.id]
        lifetime = (current.not_after - current.not_before).total_seconds()
        ttl = max(60, min(settings.certificate_ttl, int(lifetime - NOT_BEFORE_BACKDATE.total_seconds())))
        try:
            not_before, not_after = service._validity(signer, now, ttl)
            request = SignRequest(
                frontdoor_id=settings.id, csr_pem=None, csr=csr, subject=current.subject, not_before=not_before,
                not_after=not_after, token_id=current.token_id, name=current.name, public_key=public_key,
                public_key_der=spki, subject_alt_names=current.subject_alt_names,  # the current SANs, exactly
            )
            issued = signer.sign(request)
            cert = service._check_issued(issued, request)
        except Exception as exc:  # noqa: BLE001 - whatever the signer did, the certificate stays renewable
            store.release_renewal(settings.id, current.id, claim_id)
            if isinstance(exc, FrontdoorError):
                raise
            raise SignerUnavailable(
                "The signer failed (%s); nothing was issued and the certificate can be renewed again."
                % type(exc).__name__
            ) from None

        done_at = service.clock()
        renewed = CertificateRecord(
            id=new_certificate_id(), frontdoor_id=settings.id, token_id=current.token_id, name=current.name,
            serial_number=issued.serial_number, certificate_pem=issued.certificate_pem,
            ca_chain=list(issued.ca_chain), subject=current.subject, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, created_at=done_at, public_key_sha256=key_hash,
            subject_alt_names=current.subject_alt_names, previous_certificate_id=current.id,
        )
        try:
            # Written before the record, which cannot be taken back: no certificate is handed out without its
            # line (as for a redemption). Should the record fail, certificate.discarded with the serial follows.
            emit_required(
                service.audit, "certificate.renewed", actor=source or "anonymous", frontdoor=settings.id,
                tokenId=current.token_id, previousCertificateId=current.id, previousSerial=current.serial_number,
                certificateId=renewed.id, serial=renewed.serial_number, commonName=current.subject.common_name,
                notAfter=isoformat(renewed.not_after), keyRotated=key_hash != current.public_key_sha256,
                source=source,
            )
        except FrontdoorError:
            # audit_unavailable: nothing was handed out; the certificate stays renewable (with a new JWT)
            service._discard(signer, renewed, "audit log unavailable")
            _quietly(lambda: store.release_renewal(settings.id, current.id, claim_id))
            raise
        try:
            recorded = store.record_renewal(settings.id, current.id, claim_id, renewed)
        except Exception as exc:  # noqa: BLE001
            latest = _quietly(lambda: store.get_certificate(settings.id, current.id))
            if latest is not None and latest.renewed_by == renewed.id:
                recorded = True  # the write landed; only its answer was lost
            else:
                service._discard(signer, renewed, "store failed while recording a renewal")
                _quietly(lambda: store.release_renewal(settings.id, current.id, claim_id))
                if isinstance(exc, FrontdoorError):
                    raise
                raise StoreUnavailable(
                    "The token store failed while recording the renewed certificate; nothing was issued."
                ) from None
        if not recorded:
            service._discard(signer, renewed, "renewal claim lost")
            latest = store.get_certificate(settings.id, current.id)
            if latest is not None and latest.revoked_at is not None:
                raise FrontdoorError("certificate_revoked", "The certificate was revoked while being renewed.")
            raise FrontdoorError(
                "renewal_in_progress",
                "The certificate changed while it was being renewed (the renewal outlived its lease); retry.",
                retry_after=1,
            )
        return renewed, False

    def _renewed_already(self, settings, current: CertificateRecord, key_hash: str, source) -> CertificateRecord:
        """The certificate this one was renewed into, for the same key (a client that lost the answer);
        else certificate_already_renewed."""
        from .tokens import hashes_equal

        renewed = self.service.store.get_certificate(settings.id, current.renewed_by)
        if renewed is not None and hashes_equal(renewed.public_key_sha256, key_hash):
            # hands the certificate out again: not without its line (as redemption.replayed)
            emit_required(
                self.service.audit, "renewal.replayed", frontdoor=settings.id, previousCertificateId=current.id,
                certificateId=renewed.id, serial=renewed.serial_number, source=source,
            )
            return renewed
        raise FrontdoorError(
            "certificate_already_renewed",
            "Certificate %s was already renewed (into %s); renew that one instead. A retry with the key of the "
            "renewed certificate returns it." % (current.id, current.renewed_by),
            details={"renewedBy": current.renewed_by},
        )


def _quietly(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - best effort after a failure already being reported
        return None
