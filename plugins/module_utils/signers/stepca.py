# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signer: an existing smallstep step-ca, through its ``/1.0/sign`` API and a JWK provisioner.

Why it works this way (facts measured on step-ca 0.19, see docs/step-ca.md):

* The gateway holds the private key of a JWK provisioner and mints one one-time token (OTT, a JWT)
  per redemption. step-ca consumes the OTT (single use), but only after our own claim on the
  frontdoor token: a step-ca refusal never burns a frontdoor token, the service just releases
  its claim when we raise.
* The JWK provisioner refuses a CSR whose CN differs from the OTT's ``sub`` and whose SANs differ
  from the OTT's ``sans``. So ``sub``/``sans`` echo the CSR (which is harmless: they are only
  checked, never copied), and the subject we decided travels in a custom claim ``frontdoor`` that
  the provisioner's x509 template (``x509_template()``, printed by
  ``frontdoor-gateway step-ca-template``) turns into the certificate's subject. The template
  also fixes the rest of the profile: no SANs, KU digitalSignature (+keyEncipherment for RSA),
  EKU clientAuth, CA=false; nothing else from the CSR is used.
* Lifetimes: we ask for ``notAfter``; step-ca refuses (403) durations outside the provisioner's
  claims (default 5 min .. 24 h), so ``not_after_limit()`` clamps to the provisioner maximum.
* No new dependency: the JWT (ES256/384/512, RS*, PS*, EdDSA) and the PBES2 JWE that
  ``step crypto jwk create`` writes are done with ``cryptography``.

The provisioner key file and its password are secrets: they are never logged, never put in an
error message, and the OTTs we mint are never logged either.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import math
import os
import re
import secrets
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report what is missing with missing_required_lib instead of a traceback.
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False
    x509 = InvalidTag = hashes = serialization = ec = ed25519 = padding = rsa = None
    decode_dss_signature = encode_dss_signature = AESGCM = PBKDF2HMAC = None
    InvalidUnwrap = aes_key_unwrap = aes_key_wrap = None

from ..errors import FrontdoorError, SignerUnavailable
from ..model import IssuedCertificate, SignRequest, utcnow
from .base import Signer

#: the custom OTT claim the template reads the subject from
CLAIM = "frontdoor"
#: how long a minted OTT is valid: it is used at once; this only absorbs clock skew
OTT_LIFETIME = 120
#: step-ca's built-in provisioner claims (authority/provisioner/claims.go)
STEPCA_DEFAULT_MAX_DURATION = 24 * 3600
STEPCA_DEFAULT_MIN_DURATION = 5 * 60
#: not_after_limit() stays this far below the provisioner maximum: the service computes notAfter
#: a moment before step-ca checks it, and the two clocks may differ a little
LIMIT_MARGIN = 60
PROVISIONERS_CACHE_SECONDS = 300.0
MAX_PBES2_COUNT = 2_000_000
OPTION_KEYS = {
    "type", "url", "root", "provisioner", "provisionerKey", "provisionerPassword", "provisionerPasswordFile",
    "maxCertificateDuration", "timeout",
}


class StepCAConfigError(ValueError):
    """A step-ca setting a person must fix (raised as config.ConfigError by build_stepca_signer)."""


# ---------------------------------------------------------------------------------------------
# The provisioner x509 template


def x509_template_text() -> str:
    """The Go text/template (step-ca x509 template language) to install on the JWK provisioner.

    The subject comes only from the OTT's ``frontdoor`` claim (our decision), never from the CSR;
    ``fail`` makes the provisioner refuse tokens that were not minted by a frontdoor gateway
    instead of issuing a certificate with the CSR's subject.
    """
    return (
        '{{- if not .Token.%(c)s }}{{ fail "frontdoor.pki: this provisioner only signs one-time tokens '
        'minted by frontdoor-gateway (claim %(c)s missing)" }}{{ end }}\n'
        '{{- if not .Token.%(c)s.cn }}{{ fail "frontdoor.pki: the %(c)s claim has no cn" }}{{ end -}}\n'
        "{\n"
        '  "subject": {\n'
        "{{- if .Token.%(c)s.o }}\n"
        '    "organization": {{ toJson .Token.%(c)s.o }},\n'
        "{{- end }}\n"
        "{{- if .Token.%(c)s.ou }}\n"
        '    "organizationalUnit": {{ toJson .Token.%(c)s.ou }},\n'
        "{{- end }}\n"
        '    "commonName": {{ toJson .Token.%(c)s.cn }}\n'
        "  },\n"
        '  "sans": [],\n'
        '{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}\n'
        '  "keyUsage": ["digitalSignature", "keyEncipherment"],\n'
        "{{- else }}\n"
        '  "keyUsage": ["digitalSignature"],\n'
        "{{- end }}\n"
        '  "extKeyUsage": ["clientAuth"],\n'
        '  "basicConstraints": {"isCA": false}\n'
        "}\n"
    ) % {"c": CLAIM}


def x509_template() -> Dict[str, Any]:
    """The JWK provisioner's ``options`` object carrying the template (JSON for ca.json).

    The template itself is a Go text/template, not JSON, so it travels as the string
    ``x509.template``: paste the object as the provisioner's ``"options"`` in ca.json, or write
    ``.x509.template`` to a file for ``step ca provisioner add/update --x509-template FILE``.
    """
    return {"x509": {"template": x509_template_text()}}


# ---------------------------------------------------------------------------------------------
# base64url, JWK, JWS and the PBES2 JWE that `step crypto jwk create` writes


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    if not isinstance(text, str) or not re.match(r"^[A-Za-z0-9_-]*$", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)} if HAS_CRYPTOGRAPHY else {}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512} if HAS_CRYPTOGRAPHY else {}


def _b64_int(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(b64u_decode(jwk[name]), "big")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: step-ca's default key id for a JWK provisioner."""
    kty = jwk.get("kty")
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}.get(kty)
    if members is None:
        raise ValueError("unsupported JWK key type %r" % kty)
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64u_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def private_key_from_jwk(jwk: Mapping[str, Any]):
    """A cryptography private key from a private JWK (EC P-256/384/521, RSA, OKP Ed25519)."""
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve, _size = _CURVES[jwk["crv"]]
            key = ec.derive_private_key(_b64_int(jwk, "d"), curve())
            numbers = key.public_key().public_numbers()
            if (numbers.x, numbers.y) != (_b64_int(jwk, "x"), _b64_int(jwk, "y")):
                raise ValueError("the JWK's d does not match its x/y")
            return key
        if kty == "RSA":
            public = rsa.RSAPublicNumbers(_b64_int(jwk, "e"), _b64_int(jwk, "n"))
            return rsa.RSAPrivateNumbers(
                _b64_int(jwk, "p"), _b64_int(jwk, "q"), _b64_int(jwk, "d"), _b64_int(jwk, "dp"),
                _b64_int(jwk, "dq"), _b64_int(jwk, "qi"), public,
            ).private_key()
        if kty == "OKP" and jwk.get("crv") == "Ed25519":
            key = ed25519.Ed25519PrivateKey.from_private_bytes(b64u_decode(jwk["d"]))
            raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if raw != b64u_decode(jwk["x"]):
                raise ValueError("the JWK's d does not match its x")
            return key
    except KeyError as exc:
        raise ValueError("the private JWK lacks member %s" % exc) from None
    except (binascii.Error, TypeError) as exc:
        raise ValueError("the private JWK is malformed (%s)" % type(exc).__name__) from None
    raise ValueError("unsupported private JWK (kty %r, crv %r)" % (kty, jwk.get("crv")))


def public_jwk(jwk: Mapping[str, Any]) -> Dict[str, Any]:
    """The public half of a private JWK (what goes into the provisioner's ``key`` in ca.json)."""
    keep = {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}
    return {k: v for k, v in jwk.items() if k in keep}


def jwk_from_private_key(key, alg: Optional[str] = None) -> Dict[str, Any]:
    """A private JWK (with kid = thumbprint) for a cryptography key; used for key generation."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        size = _CURVES[crv][1]
        numbers = key.private_numbers()
        jwk = {
            "kty": "EC", "crv": crv,
            "x": b64u_encode(numbers.public_numbers.x.to_bytes(size, "big")),
            "y": b64u_encode(numbers.public_numbers.y.to_bytes(size, "big")),
            "d": b64u_encode(numbers.private_value.to_bytes(size, "big")),
        }
        alg = alg or _EC_ALG[crv]
    elif isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()

        def enc(value: int) -> str:
            return b64u_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))

        jwk = {"kty": "RSA", "n": enc(n.public_numbers.n), "e": enc(n.public_numbers.e), "d": enc(n.d),
               "p": enc(n.p), "q": enc(n.q), "dp": enc(n.dmp1), "dq": enc(n.dmq1), "qi": enc(n.iqmp)}
        alg = alg or "RS256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        jwk = {
            "kty": "OKP", "crv": "Ed25519",
            "x": b64u_encode(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
            "d": b64u_encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption())),
        }
        alg = alg or "EdDSA"
    else:
        raise ValueError("unsupported key type %s" % type(key).__name__)
    jwk["use"] = "sig"
    jwk["alg"] = alg
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def _default_alg(jwk: Mapping[str, Any]) -> str:
    if jwk.get("alg"):
        return str(jwk["alg"])
    if jwk.get("kty") == "EC":
        return _EC_ALG.get(jwk.get("crv"), "ES256")
    if jwk.get("kty") == "OKP":
        return "EdDSA"
    return "RS256"


def jws_sign(signing_input: bytes, key, alg: str) -> bytes:
    """The JWS signature bytes (RFC 7518) for ``alg`` with a cryptography private key."""
    if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[alg[2:]]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("RS") and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, padding.PKCS1v15(), _HASHES[alg[2:]]())
    if alg.startswith("PS") and isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[alg[2:]]()
        return key.sign(signing_input, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(signing_input)
    raise ValueError("JWS algorithm %r does not fit a %s key" % (alg, type(key).__name__))


def jws_verify(token: str, public_key) -> Dict[str, Any]:
    """Verify a compact JWS with ``public_key`` and return its claims (tests and diagnostics)."""
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64u_decode(head_b64))
    alg, data, sig = header["alg"], (head_b64 + "." + claims_b64).encode("ascii"), b64u_decode(sig_b64)
    if alg.startswith("ES"):
        half = len(sig) // 2
        der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
        public_key.verify(der, data, ec.ECDSA(_HASHES[alg[2:]]()))
    elif alg.startswith("RS"):
        public_key.verify(sig, data, padding.PKCS1v15(), _HASHES[alg[2:]]())
    elif alg.startswith("PS"):
        digest = _HASHES[alg[2:]]()
        public_key.verify(sig, data, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    elif alg == "EdDSA":
        public_key.verify(sig, data)
    else:
        raise ValueError("unsupported alg %r" % alg)
    return json.loads(b64u_decode(claims_b64))


def jwt_encode(header: Mapping[str, Any], claims: Mapping[str, Any], key, alg: str) -> str:
    head = dict(header, alg=alg)
    signing_input = (
        b64u_encode(json.dumps(head, separators=(",", ":")).encode("utf-8")) + "."
        + b64u_encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    )
    return signing_input + "." + b64u_encode(jws_sign(signing_input.encode("ascii"), key, alg))


_PBES2 = {
    "PBES2-HS256+A128KW": (hashes.SHA256, 16),
    "PBES2-HS384+A192KW": (hashes.SHA384, 24),
    "PBES2-HS512+A256KW": (hashes.SHA512, 32),
} if HAS_CRYPTOGRAPHY else {}
_GCM = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}


class JWEError(ValueError):
    """The JWE cannot be decrypted; the message never contains key material or the password."""


def _pbes2_kek(alg: str, password: bytes, p2s: bytes, p2c: int) -> bytes:
    digest, size = _PBES2[alg]
    salt = alg.encode("ascii") + b"\x00" + p2s
    return PBKDF2HMAC(algorithm=digest(), length=size, salt=salt, iterations=p2c).derive(password)


def jwe_decrypt(serialized: str, password: bytes) -> bytes:
    """Decrypt a password-based JWE (PBES2-HS*+A*KW key wrap, A*GCM content) in compact or
    flattened JSON serialization, as written by ``step crypto jwk create`` / go-jose."""
    text = serialized.strip()
    aad_extra = None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            protected, encrypted_key = obj["protected"], obj.get("encrypted_key", "")
            iv, ciphertext, tag = obj["iv"], obj["ciphertext"], obj["tag"]
            aad_extra = obj.get("aad")
            unprotected = dict(obj.get("unprotected") or {}, **(obj.get("header") or {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise JWEError("not a JWE in JSON serialization (needs protected, iv, ciphertext, tag)") from None
    else:
        parts = text.split(".")
        if len(parts) != 5:
            raise JWEError("not a JWE in compact serialization (five dot-separated parts)")
        protected, encrypted_key, iv, ciphertext, tag = parts
        unprotected = {}
    try:
        header = dict(unprotected, **json.loads(b64u_decode(protected)))
        alg, enc = header.get("alg"), header.get("enc")
        if alg not in _PBES2:
            raise JWEError("unsupported JWE key management %r (supported: %s)" % (alg, ", ".join(sorted(_PBES2))))
        if enc not in _GCM:
            raise JWEError("unsupported JWE content encryption %r (supported: %s)" % (enc, ", ".join(sorted(_GCM))))
        if header.get("zip"):
            raise JWEError("compressed JWE content is not supported")
        p2c = header.get("p2c")
        if not isinstance(p2c, int) or isinstance(p2c, bool) or not 1 <= p2c <= MAX_PBES2_COUNT:
            raise JWEError("JWE p2c must be an iteration count between 1 and %d" % MAX_PBES2_COUNT)
        kek = _pbes2_kek(alg, password, b64u_decode(header.get("p2s", "")), p2c)
        try:
            cek = aes_key_unwrap(kek, b64u_decode(encrypted_key))
        except InvalidUnwrap:
            raise JWEError("wrong password (the key could not be unwrapped)") from None
        if len(cek) != _GCM[enc]:
            raise JWEError("the content key has the wrong length for %s" % enc)
        aad = protected.encode("ascii") + ((b"." + aad_extra.encode("ascii")) if aad_extra else b"")
        try:
            return AESGCM(cek).decrypt(b64u_decode(iv), b64u_decode(ciphertext) + b64u_decode(tag), aad)
        except InvalidTag:
            raise JWEError("the JWE was altered (authentication tag mismatch)") from None
    except JWEError:
        raise
    except (ValueError, TypeError, binascii.Error):
        raise JWEError("the JWE is malformed") from None


def jwe_encrypt(plaintext: bytes, password: bytes, p2c: int = 100_000, content_type: str = "jwk+json") -> str:
    """PBES2-HS256+A128KW / A256GCM compact JWE, the format ``step crypto jwk create`` writes."""
    alg, enc = "PBES2-HS256+A128KW", "A256GCM"
    p2s = os.urandom(16)
    header = {"alg": alg, "cty": content_type, "enc": enc, "p2c": p2c, "p2s": b64u_encode(p2s)}
    protected = b64u_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    cek, iv = os.urandom(32), os.urandom(12)
    wrapped = aes_key_wrap(_pbes2_kek(alg, password, p2s, p2c), cek)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return ".".join([protected, b64u_encode(wrapped), b64u_encode(iv), b64u_encode(sealed[:-16]),
                     b64u_encode(sealed[-16:])])


def generate_provisioner_key(password: Optional[str] = None, kind: str = "EC") -> Tuple[Dict[str, Any], str]:
    """A new provisioner key: (public JWK for ca.json, private key file content).

    The file content is the encrypted compact JWE when ``password`` is given, else plain JSON.
    """
    if kind == "EC":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "OKP":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError("kind must be EC, OKP or RSA")
    jwk = jwk_from_private_key(key)
    data = json.dumps(jwk, indent=2).encode("utf-8")
    content = jwe_encrypt(data, password.encode("utf-8")) if password else data.decode("utf-8")
    return public_jwk(jwk), content


_KEY_CACHE: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
_KEY_CACHE_LOCK = threading.Lock()


def load_provisioner_jwk(path: str, password: Optional[str]) -> Dict[str, Any]:
    """Read the provisioner's private JWK: plain JSON, or a JWE (compact or JSON) with ``password``.

    Decrypting costs one PBKDF2 (100,000 rounds with step's defaults), so the result is cached per
    (file identity, password hash) for the frontdoors of one process that share the key.
    """
    try:
        stat = os.stat(path)
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise StepCAConfigError("cannot read the provisioner key file %s: %s" % (path, exc.strerror)) from None
    cache_key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size,
                 hashlib.sha256((password or "").encode("utf-8")).hexdigest())
    with _KEY_CACHE_LOCK:
        if cache_key in _KEY_CACHE:
            return dict(_KEY_CACHE[cache_key])
    text = text.strip()
    jwk = None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            raise StepCAConfigError("the provisioner key file %s is not valid JSON" % path) from None
        if isinstance(obj, dict) and "kty" in obj:
            jwk = obj
    if jwk is None:
        if not password:
            raise StepCAConfigError(
                "the provisioner key file %s is encrypted: set STEP_PROVISIONER_PASSWORD (or stepCa "
                "provisionerPassword / provisionerPasswordFile)" % path
            )
        try:
            jwk = json.loads(jwe_decrypt(text, password.encode("utf-8")))
        except JWEError as exc:
            raise StepCAConfigError("cannot decrypt the provisioner key file %s: %s" % (path, exc)) from None
        except ValueError:
            raise StepCAConfigError("the provisioner key file %s does not decrypt to a JSON JWK" % path) from None
    if not isinstance(jwk, dict) or "d" not in jwk:
        raise StepCAConfigError(
            "the provisioner key file %s holds no private JWK (a public key? use the file written by "
            "'step crypto jwk create' for the private key)" % path
        )
    with _KEY_CACHE_LOCK:
        _KEY_CACHE[cache_key] = dict(jwk)
    return jwk


# ---------------------------------------------------------------------------------------------
# small helpers


_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(value: Any) -> Optional[float]:
    """Seconds from a Go duration string as step-ca writes claims ("24h", "2160h0m0s", "5m")."""
    if not isinstance(value, str) or not value:
        return None
    pos, total = 0, 0.0
    for match in _GO_DURATION_RE.finditer(value):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(value) and pos > 0 else None


def csr_common_name(csr: x509.CertificateSigningRequest) -> str:
    """The CN as Go sees it (the last CN attribute), which step-ca compares with the OTT's sub."""
    values = [a.value for a in csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    value = values[-1] if values else ""
    return value if isinstance(value, str) else ""


def csr_sans(csr: x509.CertificateSigningRequest) -> List[str]:
    """The CSR's SANs as step-ca's token ``sans`` (it refuses a CSR whose SANs differ from them).

    They are only compared by step-ca; the template puts none into the certificate."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    out: List[str] = []
    for name in ext:
        if isinstance(name, (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier)):
            out.append(name.value)
        elif isinstance(name, x509.IPAddress):
            out.append(str(name.value))
    return out


def _short(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# the signer


class StepCASigner(Signer):
    kind = "step-ca"

    def __init__(
        self,
        url: str,
        root: str,
        provisioner: str,
        jwk: Mapping[str, Any],
        frontdoor_id: str = "default",
        max_certificate_duration: Optional[int] = None,
        timeout: float = 30.0,
        session=None,
    ):
        import requests
        from requests.adapters import HTTPAdapter

        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise StepCAConfigError("step-ca url %r must be https://HOST[:PORT]" % url)
        self.base = "%s://%s" % (parts.scheme, parts.netloc)
        self.host = parts.hostname
        self.port = parts.port or 443
        self.root_path = root
        try:
            with open(root, "rb") as handle:
                root_data = handle.read()
            self._root = x509.load_pem_x509_certificate(root_data)
        except OSError as exc:
            raise StepCAConfigError("cannot read the step-ca root certificate %s: %s" % (root, exc.strerror)) from None
        except ValueError:
            raise StepCAConfigError("the step-ca root %s is not a PEM certificate" % root) from None
        self._root_pem = self._root.public_bytes(serialization.Encoding.PEM).decode("ascii")
        self.provisioner = provisioner
        self.frontdoor_id = frontdoor_id
        self.kid = str(jwk.get("kid") or jwk_thumbprint(jwk))
        self.alg = _default_alg(jwk)
        try:
            self._key = private_key_from_jwk(jwk)
            jws_sign(b"probe", self._key, self.alg)
        except (ValueError, KeyError, TypeError) as exc:
            raise StepCAConfigError("the provisioner key cannot sign: %s" % exc) from None
        self.max_certificate_duration = max_certificate_duration
        self.timeout = (min(5.0, timeout), timeout)
        self._session = session or requests.Session()
        self._session.verify = root
        self._session.trust_env = False  # loopback/intranet CA: never through an HTTP(S)_PROXY
        if session is None:
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            self._session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._chain: List[str] = []
        self._intermediate_not_after: Optional[_dt.datetime] = None
        self._prov: Optional[Dict[str, Any]] = None
        self._prov_at = -math.inf
        self._names: List[str] = []

    # -- tokens ------------------------------------------------------------------------------
    def one_time_token(self, audience_path: str, subject: str, extra: Optional[Mapping[str, Any]] = None) -> str:
        """Mint one OTT. ``iat`` is rounded *up*: step-ca refuses tokens issued before it started,
        and compares whole-second iat with its sub-second start time."""
        now = int(math.ceil(time.time()))
        claims: Dict[str, Any] = {
            "iss": self.provisioner,
            "aud": self.base + audience_path,
            "sub": subject,
            "jti": secrets.token_hex(32),
            "iat": now,
            "nbf": now,
            "exp": now + OTT_LIFETIME,
        }
        claims.update(extra or {})
        return jwt_encode({"kid": self.kid, "typ": "JWT"}, claims, self._key, self.alg)

    def sign_token(self, request: SignRequest) -> str:
        subject = request.subject
        cn = csr_common_name(request.csr) or subject.common_name or ""
        claim: Dict[str, Any] = {"cn": subject.common_name, "frontdoorId": request.frontdoor_id,
                                 "tokenId": request.token_id}
        if subject.organization:
            claim["o"] = subject.organization
        if subject.organizational_unit:
            claim["ou"] = subject.organizational_unit
        return self.one_time_token("/1.0/sign", cn, {"sans": csr_sans(request.csr), CLAIM: claim})

    # -- HTTP --------------------------------------------------------------------------------
    def _post(self, path: str, body: Mapping[str, Any]):
        return self._call("POST", path, json=dict(body))

    def _call(self, method: str, path: str, **kwargs):
        import requests

        try:
            return self._session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError:
            raise SignerUnavailable(
                "TLS to step-ca at %s failed: its certificate does not verify against the root %s "
                "(STEP_ROOT / stepCa.root), or the host name is not in its certificate. The token was not used."
                % (self.base, self.root_path)
            ) from None
        except requests.exceptions.Timeout:
            raise SignerUnavailable(
                "step-ca at %s did not answer in time; the token was not used, retry later." % self.base,
                retry_after=5,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SignerUnavailable(
                "step-ca at %s cannot be reached (%s); the token was not used, retry later."
                % (self.base, type(exc).__name__),
                retry_after=5,
            ) from None

    @staticmethod
    def _message(response) -> str:
        try:
            body = response.json()
            if isinstance(body, dict) and body.get("message"):
                return _short(body["message"])
        except ValueError:
            pass
        return _short(response.text or response.reason or "")

    def provisioner_info(self, refresh: bool = False) -> Optional[Dict[str, Any]]:
        """Our provisioner as step-ca lists it publicly (GET /provisioners); None if not listed.

        Cached (5 min; 5 s while something is wrong, so a fixed CA is noticed at once). Raises
        SignerUnavailable if the CA cannot be reached, FrontdoorError('signer_error') if it
        does not answer with a list."""
        with self._lock:
            ttl = PROVISIONERS_CACHE_SECONDS if self._prov is not None else 5.0
            if not refresh and time.monotonic() - self._prov_at < ttl:
                return self._prov
        found, cursor, names = None, "", []
        for _page in range(50):  # bounded: 50 pages of 100 provisioners
            response = self._call("GET", "/provisioners", params={"limit": 100, "cursor": cursor})
            if response.status_code != 200:
                raise FrontdoorError("signer_error", "step-ca refused to list its provisioners (%d: %s)."
                                     % (response.status_code, self._message(response)))
            try:
                body = response.json()
                items = body.get("provisioners") or []
                cursor = body.get("nextCursor") or ""
            except (ValueError, AttributeError):
                raise FrontdoorError("signer_error", "step-ca's provisioner list is not JSON.") from None
            for item in items:
                if not isinstance(item, dict):
                    continue
                names.append("%s (%s)" % (item.get("name"), item.get("type")))
                key = item.get("key") if isinstance(item.get("key"), dict) else {}
                if item.get("type") == "JWK" and item.get("name") == self.provisioner and key.get("kid") == self.kid:
                    found = item
            if found or not cursor:
                break
        with self._lock:
            self._prov, self._prov_at, self._names = found, time.monotonic(), names
        return found

    def _max_duration(self) -> int:
        """The provisioner's maxTLSCertDuration: configured, else published, else step-ca's 24 h."""
        if self.max_certificate_duration:
            return int(self.max_certificate_duration)
        try:
            info = self.provisioner_info()
        except FrontdoorError:
            info = self._prov
        claims = (info or {}).get("claims") or {}
        parsed = parse_go_duration(claims.get("maxTLSCertDuration"))
        return int(parsed) if parsed else STEPCA_DEFAULT_MAX_DURATION

    def configuration_problem(self, refresh: bool = False) -> Optional[str]:
        """What is wrong with the provisioner for our use, as far as step-ca's public description
        tells; None when it looks right (or cannot be told: a templateFile is not published)."""
        try:
            info = self.provisioner_info(refresh=refresh)
        except FrontdoorError as exc:
            if exc.code == "signer_unavailable":
                raise
            return None  # the list is unusable: let the sign request and the result check decide
        if info is None:
            return (
                "step-ca has no JWK provisioner named %r with key id %s (it lists: %s). Check STEP_PROVISIONER "
                "and that STEP_PROVISIONER_KEY is the private half of that provisioner's key."
                % (self.provisioner, self.kid, ", ".join(self._names[:10]) or "none")
            )
        x509_options = (info.get("options") or {}).get("x509") or {}
        template = x509_options.get("template")
        if not template and not x509_options.get("templateFile"):
            return (
                "the JWK provisioner %r has no x509 template, so step-ca would copy the CSR's subject: install "
                "the one printed by 'frontdoor-gateway step-ca-template' (docs/step-ca.md) and restart step-ca."
                % self.provisioner
            )
        if template and ".Token.%s" % CLAIM not in str(template):
            return (
                "the JWK provisioner %r has an x509 template that is not frontdoor's (it does not read the '%s' "
                "claim): install the one printed by 'frontdoor-gateway step-ca-template' and restart step-ca."
                % (self.provisioner, CLAIM)
            )
        return None

    # -- Signer interface ------------------------------------------------------------------
    def sign(self, request: SignRequest) -> IssuedCertificate:
        problem = self.configuration_problem()
        if problem:
            raise FrontdoorError("signer_unavailable", "Cannot sign with step-ca: %s The token was not used."
                                 % problem, retry_after=30)
        ott = self.sign_token(request)
        body = {"csr": request.pem(), "ott": ott,
                "notAfter": request.not_after.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        response = self._post("/1.0/sign", body)
        del ott, body
        status = response.status_code
        if status in (200, 201):
            return self._issued(response, request)
        message = self._message(response)
        if status >= 500:
            raise SignerUnavailable(
                "step-ca failed to sign (%d: %s). The token was not used; retry later, and see the step-ca log "
                "if this persists." % (status, message),
                retry_after=5,
            )
        if status == 401:
            problem = self.configuration_problem(refresh=True)
            raise FrontdoorError(
                "signer_unavailable",
                "step-ca refused the gateway's one-time token (401: %s). %s The token was not used."
                % (message, problem or (
                    "Check that the gateway's and the CA's clocks agree, that the host of STEP_CA_URL (%s) is in "
                    "the CA's dnsNames, and that the CA did not restart in the last seconds." % self.host)),
                retry_after=5,
            )
        if status in (400, 403):
            raise FrontdoorError(
                "signer_error",
                "step-ca refused to sign (%d: %s). %s The token was not used and can be redeemed again."
                % (status, message, self._refusal_hint(message, request)),
            )
        raise FrontdoorError(
            "signer_error", "step-ca answered %d to a sign request (%s); the token was not used." % (status, message)
        )

    def _refusal_hint(self, message: str, request: SignRequest) -> str:
        lower = message.lower()
        if "duration" in lower:
            seconds = (request.not_after - utcnow()).total_seconds()
            return (
                "The requested certificate lifetime (%d s) is outside the provisioner's claims (step-ca defaults: "
                "5m..24h): adjust minTLSCertDuration/maxTLSCertDuration on provisioner %r, or set stepCa."
                "maxCertificateDuration / the frontdoor's certificateTtl to fit." % (seconds, self.provisioner)
            )
        try:
            problem = self.configuration_problem(refresh=True)
        except FrontdoorError:
            problem = None
        if problem:
            return problem
        if any(word in lower for word in ("common name", "dns names", "ip addresses", "email", "uri")):
            return "step-ca compared the CSR's CN or subject alternative names with the token and they differ."
        return "See the step-ca log for the reason."

    def _issued(self, response, request: SignRequest) -> IssuedCertificate:
        try:
            body = response.json()
            leaf_pem = body["crt"]
            chain_pems = [p for p in (body.get("certChain") or [leaf_pem, body.get("ca")]) if p]
            leaf = x509.load_pem_x509_certificate(leaf_pem.encode("ascii"))
            chain = [x509.load_pem_x509_certificate(p.encode("ascii")) for p in chain_pems[1:]]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FrontdoorError("signer_error", "step-ca answered the sign request with something that is not a "
                                 "certificate; the token was not used.") from None
        wrong = profile_problem(leaf, request)
        if wrong:
            # The provisioner's template is not ours (a templateFile we could not inspect, or ca.json's
            # authority.template adding subject defaults): this certificate must not be used.
            try:
                self._revoke_serial(leaf.serial_number, "issued with the wrong profile; never handed out")
                fate = "was revoked"
            except FrontdoorError:
                fate = "could not be revoked (serial %d)" % leaf.serial_number
            raise FrontdoorError(
                "signer_error",
                "step-ca issued a certificate that differs from what the token allows (%s); it was not handed out "
                "and %s. Install the template printed by 'frontdoor-gateway step-ca-template' on provisioner %r "
                "and remove subject defaults (authority.template) from ca.json. The token was not used."
                % (wrong, fate, self.provisioner),
            )
        ca_chain = [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain]
        if not chain or chain[-1].subject != chain[-1].issuer:
            ca_chain.append(self._root_pem)
        if chain:
            with self._lock:
                self._chain = ca_chain
                self._intermediate_not_after = chain[0].not_valid_after_utc
        return IssuedCertificate(
            certificate_pem=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            ca_chain=ca_chain,
            serial_number="%x" % leaf.serial_number,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )

    def ca_chain(self) -> List[str]:
        with self._lock:
            if self._chain:
                return list(self._chain)
        chain = self._tls_chain()
        with self._lock:
            if not self._chain:
                self._chain = chain
            return list(self._chain)

    def _tls_chain(self) -> List[str]:
        """Before the first certificate, learn the intermediate from step-ca's own TLS chain (its
        server certificate is issued by the intermediate); step-ca 0.19 has no API for it."""
        encoding_der = getattr(ssl, "ENCODING_DER", None) or getattr(__import__("_ssl"), "ENCODING_DER", 2)
        out: List[x509.Certificate] = []
        try:
            context = ssl.create_default_context(cafile=self.root_path)
            with socket.create_connection((self.host, self.port), timeout=self.timeout[0]) as raw:
                with context.wrap_socket(raw, server_hostname=self.host) as tls:
                    # public from Python 3.13, private (same behaviour) since 3.10
                    getter = getattr(tls, "get_verified_chain", None) or getattr(
                        getattr(tls, "_sslobj", None), "get_verified_chain", None)
                    certs = getter() if getter is not None else []
            for item in certs:
                der = item if isinstance(item, bytes) else item.public_bytes(encoding_der)
                cert = x509.load_der_x509_certificate(der)
                try:
                    if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                        out.append(cert)
                except x509.ExtensionNotFound:
                    pass
        except (OSError, ssl.SSLError) as exc:
            raise SignerUnavailable("step-ca at %s cannot be reached for its CA chain (%s)."
                                    % (self.base, type(exc).__name__), retry_after=5) from None
        except (AttributeError, TypeError, ValueError):
            out = []
        if not out:
            raise SignerUnavailable("The step-ca CA chain is not known yet: it is learned from the first certificate "
                                    "issued (this Python cannot read it from the TLS handshake).")
        if not out or out[-1].subject != out[-1].issuer:
            out.append(self._root)
        if len(out) > 1:
            with self._lock:
                self._intermediate_not_after = self._intermediate_not_after or out[0].not_valid_after_utc
        return [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in out]

    def not_after_limit(self) -> Optional[_dt.datetime]:
        """min(intermediate's expiry, now + provisioner maximum - margin). Never raises: the
        service calls it while holding a claim."""
        try:
            limit = utcnow() + _dt.timedelta(seconds=max(self._max_duration() - LIMIT_MARGIN, LIMIT_MARGIN))
        except Exception:  # noqa: BLE001 - fall back to step-ca's built-in maximum
            limit = utcnow() + _dt.timedelta(seconds=STEPCA_DEFAULT_MAX_DURATION - LIMIT_MARGIN)
        with self._lock:
            inter = self._intermediate_not_after
        return min(limit, inter) if inter else limit

    def revoke(self, certificate) -> None:
        self._revoke_serial(int(certificate.serial_number, 16), "revoked via frontdoor.pki")

    def _revoke_serial(self, serial: int, reason: str) -> None:
        decimal = str(serial)
        ott = self.one_time_token("/1.0/revoke", decimal)
        response = self._post("/1.0/revoke", {"serial": decimal, "ott": ott, "reasonCode": 0, "reason": reason,
                                              "passive": True})
        del ott
        status, message = response.status_code, self._message(response)
        if status == 200:
            return
        if status == 400 and "already revoked" in message.lower():
            return
        if status == 501:
            raise FrontdoorError(
                "not_supported",
                "step-ca cannot revoke here (%s): it needs a database (\"db\" in ca.json) to record revocations. "
                "The certificate was not revoked." % message,
            )
        if status in (401, 403):
            raise FrontdoorError(
                "not_supported",
                "step-ca does not let provisioner %r revoke certificate %s (%d: %s). Revoke it on the CA "
                "(step ca revoke %s) and check the provisioner's permissions."
                % (self.provisioner, decimal, status, message, decimal),
            )
        if status >= 500:
            raise SignerUnavailable("step-ca failed to revoke (%d: %s); retry later." % (status, message), retry_after=5)
        raise FrontdoorError("signer_error", "step-ca answered %d to a revoke request (%s)." % (status, message))

    def ping(self) -> None:
        response = self._call("GET", "/health")
        if response.status_code != 200:
            raise SignerUnavailable("step-ca at %s is not healthy (%d: %s)."
                                    % (self.base, response.status_code, self._message(response)), retry_after=5)

    def close(self) -> None:
        self._session.close()


def profile_problem(cert: x509.Certificate, request: SignRequest) -> Optional[str]:
    """Why ``cert`` is not exactly the profile the template must produce, or None.

    The service checks subject, key, EKU and CA flag too; this also catches SANs and extra
    subject attributes, which a wrong step-ca template would add."""
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def values(oid):
        return [a.value for a in cert.subject.get_attributes_for_oid(oid)]

    subject = request.subject
    wanted = {NameOID.COMMON_NAME: [subject.common_name] if subject.common_name else [],
              NameOID.ORGANIZATION_NAME: [subject.organization] if subject.organization else [],
              NameOID.ORGANIZATIONAL_UNIT_NAME: [subject.organizational_unit] if subject.organizational_unit else []}
    for oid, want in wanted.items():
        if values(oid) != want:
            return "subject %s is %r, not %r" % (oid._name, values(oid), want)
    extra = {a.oid for a in cert.subject} - set(wanted)
    if extra:
        return "extra subject attributes %s" % ", ".join(sorted(o._name for o in extra))
    extensions = cert.extensions
    try:
        extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return "it has subject alternative names"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        basic = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "extended key usage or basic constraints missing"
    if eku != [ExtendedKeyUsageOID.CLIENT_AUTH]:
        return "extended key usage is not clientAuth only"
    if basic.ca:
        return "it is a CA certificate"
    return None


# ---------------------------------------------------------------------------------------------


def _options(config, options: Mapping[str, Any]) -> Dict[str, Any]:
    merged = dict(getattr(config, "step_ca", None) or {})
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    return merged


def build_stepca_signer(config, frontdoor_id: str, options: Mapping[str, Any]) -> StepCASigner:
    """The signer for one frontdoor: the frontdoor's ``signer`` mapping overrides ``stepCa``
    (and the STEP_* environment, which config.load_config folded into ``stepCa``)."""
    from ..config import ConfigError

    where = "frontdoor %r (signer step-ca)" % frontdoor_id
    opts = _options(config, options)
    unknown = set(opts) - OPTION_KEYS
    if unknown:
        raise ConfigError("%s: unknown step-ca option(s) %s (known: %s)"
                          % (where, ", ".join(sorted(unknown)), ", ".join(sorted(OPTION_KEYS - {"type"}))))
    missing = [name for key, name in (("url", "STEP_CA_URL / stepCa.url"), ("root", "STEP_ROOT / stepCa.root"),
                                      ("provisioner", "STEP_PROVISIONER / stepCa.provisioner"),
                                      ("provisionerKey", "STEP_PROVISIONER_KEY / stepCa.provisionerKey"))
               if not opts.get(key)]
    if missing:
        raise ConfigError("%s needs %s" % (where, ", ".join(missing)))
    password = opts.get("provisionerPassword")
    if not password and opts.get("provisionerPasswordFile"):
        try:
            with open(os.path.expanduser(str(opts["provisionerPasswordFile"])), "r", encoding="utf-8") as handle:
                password = handle.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError("%s: cannot read provisionerPasswordFile: %s" % (where, exc.strerror)) from None
    max_duration = None
    try:
        if opts.get("maxCertificateDuration") is not None:
            from ..tokens import parse_duration

            max_duration = parse_duration(opts["maxCertificateDuration"], "stepCa.maxCertificateDuration")
        timeout = float(opts.get("timeout", 30))
        if not 0 < timeout <= 600:
            raise ValueError("timeout")
    except (FrontdoorError, ValueError, TypeError):
        raise ConfigError("%s: maxCertificateDuration must be a duration (24h) and timeout seconds (0-600]" % where) from None
    try:
        jwk = load_provisioner_jwk(os.path.expanduser(str(opts["provisionerKey"])), password)
        return StepCASigner(
            url=str(opts["url"]), root=os.path.expanduser(str(opts["root"])), provisioner=str(opts["provisioner"]),
            jwk=jwk, frontdoor_id=frontdoor_id, max_certificate_duration=max_duration, timeout=timeout,
        )
    except StepCAConfigError as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None


__all__ = [
    "CLAIM", "StepCASigner", "build_stepca_signer", "generate_provisioner_key", "jwe_decrypt", "jwe_encrypt",
    "jwk_thumbprint", "jws_verify", "load_provisioner_jwk", "x509_template", "x509_template_text",
]
