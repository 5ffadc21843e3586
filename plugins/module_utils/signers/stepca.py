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
  ``frontdoor-gateway step-ca-template``) turns into the certificate's subject. The token's
  pre-approved SANs travel in the same claim (``sans``: step-ca's own ``{"type", "value"}`` objects)
  and become the certificate's SANs; none in the claim, none in the certificate. The template
  also fixes the rest of the profile: KU digitalSignature (+keyEncipherment for RSA),
  EKU clientAuth, CA=false; nothing else from the CSR is used.
* Lifetimes: we ask for ``notAfter``; step-ca refuses (403) durations outside the provisioner's
  claims (default 5 min .. 24 h), so ``not_after_limit()`` clamps to the provisioner maximum.
* JOSE is jwcrypto's: the provisioner key is a ``jwk.JWK`` (plain, or decrypted from the PBES2 JWE
  that ``step crypto jwk create`` writes), the OTT a ``jwt.JWT`` signed with it, and its ``kid``
  the key's RFC 7638 thumbprint unless the key file names one.

The provisioner key file and its password are secrets: they are never logged, never put in an
error message, and the OTTs we mint are never logged either.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

# Guarded: Ansible's import sanity test loads module_utils without third-party packages; the modules
# report what is missing with missing_required_lib instead of a traceback.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from jwcrypto import jwa, jwe, jwk, jwt
    from jwcrypto.common import JWException

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False
    x509 = serialization = jwa = jwe = jwk = jwt = None
    JWException = ValueError

from ..errors import FrontdoorError, SignerUnavailable
from ..issued import sans_are
from ..model import SAN_KINDS, IssuedCertificate, SignRequest, SubjectAltNames, utcnow
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
        "{{- if .Token.%(c)s.sans }}\n"
        '  "sans": {{ toJson .Token.%(c)s.sans }},\n'
        "{{- else }}\n"
        '  "sans": [],\n'
        "{{- end }}\n"
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
# The provisioner key and the one-time tokens (jwcrypto)

#: what ``step crypto jwk create`` uses for the key file's JWE (go-jose / go.step.sm/crypto)
KEY_FILE_ALGS = ["PBES2-HS256+A128KW", "PBES2-HS384+A192KW", "PBES2-HS512+A256KW", "A128GCM", "A192GCM", "A256GCM"]
#: PBKDF2 iterations step writes into key files: 100,000 (step 0.19), 600,000 (current step)
STEP_PBES2_MAX_COUNT = 600_000
#: go-jose's signing algorithm for a key whose JWK names none
_DEFAULT_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}
_KEY_CACHE: Dict[Tuple[Any, ...], jwk.JWK] = {}
_KEY_LOCK = threading.Lock()


def _decrypt_key_file(text: str, password: str) -> bytes:
    """The payload of the key file's JWE (compact or JSON serialization).

    jwcrypto refuses PBES2 counts above ``jwa.default_max_pbkdf2_iterations`` (16,384), a guard
    against hostile JWEs. This file is the operator's own and step writes up to 600,000, so the
    cap is raised to that (its public setting) only while this file is decrypted, under a lock,
    and restored at once: every other JWE in the process keeps jwcrypto's guard."""
    token = jwe.JWE()
    token.allowed_algs = KEY_FILE_ALGS
    with _KEY_LOCK:
        cap = jwa.default_max_pbkdf2_iterations
        jwa.default_max_pbkdf2_iterations = max(cap, STEP_PBES2_MAX_COUNT)
        try:
            token.deserialize(text, key=jwk.JWK.from_password(password))
        finally:
            jwa.default_max_pbkdf2_iterations = cap
    return token.payload


def _read_key_file(path: str, text: str, password: Optional[str]) -> jwk.JWK:
    """A private JWK from the file's text: plain JSON, or the JWE ``step`` writes with a password."""
    try:
        plain = json.loads(text)
    except ValueError:
        plain = None
    if not (isinstance(plain, dict) and "kty" in plain):
        if not password:
            raise StepCAConfigError(
                "the provisioner key file %s is encrypted: set STEP_PROVISIONER_PASSWORD (or stepCa "
                "provisionerPassword / provisionerPasswordFile)" % path
            )
        try:
            text = _decrypt_key_file(text, password).decode("utf-8")
        except (JWException, ValueError, TypeError) as exc:
            raise StepCAConfigError(
                "cannot decrypt the provisioner key file %s: wrong password, or not the file 'step crypto jwk "
                "create' wrote (%s)" % (path, _short(exc, 160))
            ) from None
    try:
        key = jwk.JWK.from_json(text)
    except (JWException, ValueError, TypeError) as exc:
        raise StepCAConfigError("the provisioner key file %s holds no usable JWK (%s)" % (path, _short(exc, 160))) \
            from None
    if not key.has_private:
        raise StepCAConfigError(
            "the provisioner key file %s holds no private JWK (a public key? use the file written by "
            "'step crypto jwk create' for the private key)" % path
        )
    return key


def load_provisioner_key(path: str, password: Optional[str]) -> jwk.JWK:
    """The provisioner's private ``jwk.JWK`` from its file.

    Decrypting costs one PBKDF2 (100,000-600,000 rounds), so the key is cached per (file identity,
    password hash) for the frontdoors of one process that share it."""
    try:
        stat = os.stat(path)
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError as exc:
        raise StepCAConfigError("cannot read the provisioner key file %s: %s" % (path, exc.strerror)) from None
    except ValueError:
        raise StepCAConfigError("the provisioner key file %s is not text" % path) from None
    cache_key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size,
                 hashlib.sha256((password or "").encode("utf-8")).hexdigest())
    if cache_key not in _KEY_CACHE:
        _KEY_CACHE[cache_key] = _read_key_file(path, text, password)
    return _KEY_CACHE[cache_key]


def signing_alg(key: jwk.JWK) -> str:
    """The JWS algorithm step-ca expects: the key's own ``alg`` (step writes it), else go-jose's default."""
    return str(key.get("alg") or _DEFAULT_ALGS.get(key.get("crv"), "RS256"))


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


def stepca_sans(sans: SubjectAltNames) -> List[Dict[str, str]]:
    """The token's SANs as step-ca's x509 template writes them (``x509util.SubjectAlternativeName``:
    type dns / ip / uri / email and the value), for the template's ``sans``."""
    return [{"type": kind, "value": value} for kind in SAN_KINDS for value in getattr(sans, kind)]


def csr_sans(csr: x509.CertificateSigningRequest) -> List[str]:
    """The CSR's SANs as step-ca's token ``sans`` (it refuses a CSR whose SANs differ from them).

    They are only compared by step-ca; the template puts the token's SANs into the certificate, never these."""
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
        key: jwk.JWK,
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
        self._key = key
        self.kid = str(key.get("kid") or key.thumbprint())
        self.alg = signing_alg(key)
        try:
            self.one_time_token("/", "probe")  # a d that does not match x/y, or an alg that does not fit the key
        except (JWException, ValueError, TypeError) as exc:
            raise StepCAConfigError("the provisioner key cannot sign %s: %s" % (self.alg, _short(exc, 160))) from None
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
        token = jwt.JWT(header={"alg": self.alg, "kid": self.kid, "typ": "JWT"}, claims=claims)
        token.make_signed_token(self._key)
        return token.serialize()

    def sign_token(self, request: SignRequest) -> str:
        subject = request.subject
        cn = csr_common_name(request.csr) or subject.common_name or ""
        claim: Dict[str, Any] = {"cn": subject.common_name, "frontdoorId": request.frontdoor_id,
                                 "tokenId": request.token_id}
        if subject.organization:
            claim["o"] = subject.organization
        if subject.organizational_unit:
            claim["ou"] = subject.organizational_unit
        if request.subject_alt_names:
            claim["sans"] = stepca_sans(request.subject_alt_names)
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
    def sans_template_problem(self) -> Optional[str]:
        """Why the provisioner's published template cannot write a token's SANs (one printed before SANs
        existed), or None (it can, or a templateFile cannot be told: the result check catches that)."""
        try:
            info = self.provisioner_info() or {}
        except FrontdoorError:
            return None
        template = ((info.get("options") or {}).get("x509") or {}).get("template")
        if template and ".Token.%s.sans" % CLAIM not in str(template):
            return (
                "the JWK provisioner %r has a frontdoor template from before SANs, which would issue the certificate "
                "without the token's subject alternative names: install the one printed by 'frontdoor-gateway "
                "step-ca-template' and restart step-ca." % self.provisioner
            )
        return None

    def sign(self, request: SignRequest) -> IssuedCertificate:
        problem = self.configuration_problem()
        if not problem and request.subject_alt_names:
            problem = self.sans_template_problem()
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
        """The chain step-ca returned with the last certificate. step-ca 0.19 has no API for its
        intermediate, so before this signer's first certificate it is unknown here; the service then
        answers with the chain recorded with the frontdoor's latest certificate."""
        with self._lock:
            if self._chain:
                return list(self._chain)
        raise SignerUnavailable("The step-ca CA chain is not known yet: it is learned from the first certificate "
                                "step-ca issues.", retry_after=30)

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

    The service checks subject, key, SANs, EKU and CA flag too; this also catches extra subject
    attributes, which a wrong step-ca template would add, and SANs other than the token's (an older
    frontdoor template, which wrote none)."""
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
    if not sans_are(cert, request.subject_alt_names):
        return (
            "its subject alternative names differ from the token's" if request.subject_alt_names
            else "it has subject alternative names"
        )
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
        key = load_provisioner_key(os.path.expanduser(str(opts["provisionerKey"])), password)
        return StepCASigner(
            url=str(opts["url"]), root=os.path.expanduser(str(opts["root"])), provisioner=str(opts["provisioner"]),
            key=key, frontdoor_id=frontdoor_id, max_certificate_duration=max_duration, timeout=timeout,
        )
    except StepCAConfigError as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None


__all__ = [
    "CLAIM", "StepCASigner", "build_stepca_signer", "load_provisioner_key", "signing_alg", "x509_template",
    "x509_template_text",
]
