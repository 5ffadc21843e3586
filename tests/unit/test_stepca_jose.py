"""The step-ca signer's keys and tokens, done by jwcrypto: what we check is that our glue is right.

The fixture in data/stepca_go_jose_jwk.json was written by step-ca's own Go library
(go.step.sm/crypto/jose EncryptJWK, the code behind `step crypto jwk create`, 100,000 PBKDF2
iterations), so these tests prove we read what step writes. The OTTs are verified with jwcrypto
against the provisioner's public key, as step-ca verifies them; tests/stepca sends them to a real
step-ca.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from frontdoor_pki.config import ConfigError, build_signer, load_config
from frontdoor_pki.signers.stepca import (
    StepCAConfigError,
    StepCASigner,
    load_provisioner_key,
    parse_go_duration,
    x509_template,
    x509_template_text,
)
from jwcrypto import jwa, jwk
from jwcrypto.common import base64url_decode, base64url_encode
from support.stepca import provisioner_key, verified_ott

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "stepca_go_jose_jwk.json")
URL = "https://stepca.test:9443"


@pytest.fixture(scope="module")
def go():
    with open(FIXTURE, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def root(tmp_path):
    """A root certificate file: the signer only reads it (nothing here talks to a CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jose test root")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "root.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def key_file(tmp_path, content: str, name: str = "key.json") -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def with_header(compact: str, **changes) -> str:
    parts = compact.split(".")
    header = json.loads(base64url_decode(parts[0]))
    header.update(changes)
    parts[0] = base64url_encode(json.dumps(header))
    return ".".join(parts)


def config_error(path: str, password) -> str:
    with pytest.raises(StepCAConfigError) as info:
        load_provisioner_key(path, password)
    return str(info.value)


# -- the key file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["compact", "full"])
def test_the_key_file_step_writes_decrypts(tmp_path, go, form):
    content = go["compact"] if form == "compact" else json.dumps(go["full"], indent=2)
    key = load_provisioner_key(key_file(tmp_path, content), go["password"])
    assert key.export_private(as_dict=True) == go["private"]
    # jwcrypto's guard against PBKDF2 bombs (16384) was raised for this file only
    assert json.loads(base64url_decode(go["full"]["protected"]))["p2c"] == 100_000
    assert jwa.default_max_pbkdf2_iterations == 16384


def test_a_plain_private_jwk_needs_no_password(tmp_path, go):
    key = load_provisioner_key(key_file(tmp_path, json.dumps(go["private"])), None)
    assert key.export_private(as_dict=True) == go["private"]


def test_wrong_password_is_a_clear_config_error_without_secrets(tmp_path, go):
    message = config_error(key_file(tmp_path, go["compact"]), "not-the-password")
    assert "wrong password" in message
    assert "not-the-password" not in message and go["private"]["d"] not in message
    # and through the configuration: a ConfigError naming the frontdoor, not a traceback
    config = load_config(state_dir=str(tmp_path), env={}, data={
        "stepCa": {"url": URL, "root": "/nonexistent", "provisioner": "frontdoor",
                   "provisionerKey": str(tmp_path / "key.json"), "provisionerPassword": "not-the-password"},
        "frontdoors": [{"id": "default", "signer": "step-ca"}]})
    with pytest.raises(ConfigError, match="frontdoor 'default'.*wrong password"):
        build_signer(config, "default")


def test_a_tampered_file_is_refused(tmp_path, go):
    parts = go["compact"].split(".")
    body = bytearray(base64url_decode(parts[3]))
    body[0] ^= 1
    parts[3] = base64url_encode(bytes(body))
    assert "cannot decrypt" in config_error(key_file(tmp_path, ".".join(parts)), go["password"])


def test_hostile_headers_are_refused_at_once(tmp_path, go):
    started = time.monotonic()
    message = config_error(key_file(tmp_path, with_header(go["compact"], p2c=10**9)), go["password"])
    assert "p2c" in message and time.monotonic() - started < 1  # refused before any PBKDF2
    assert jwa.default_max_pbkdf2_iterations == 16384
    # key management other than PBES2 (e.g. the password used directly as the key) is not accepted
    assert "cannot decrypt" in config_error(key_file(tmp_path, with_header(go["compact"], alg="dir")), "x" * 32)
    for garbage in ("a.b.c", "not a key", '{"protected": 1}', "[]"):
        assert "cannot decrypt" in config_error(key_file(tmp_path, garbage), "pw")


def test_what_the_key_file_must_hold(tmp_path, go):
    assert "STEP_PROVISIONER_PASSWORD" in config_error(key_file(tmp_path, go["compact"]), None)
    assert "no private JWK" in config_error(key_file(tmp_path, json.dumps(go["public"])), None)
    assert "no usable JWK" in config_error(key_file(tmp_path, '{"kty": "nope"}'), None)
    assert "cannot read" in config_error(str(tmp_path / "missing.json"), None)


# -- the one-time tokens --------------------------------------------------------------------------


def test_kid_is_the_thumbprint_step_computes(root, go):
    assert StepCASigner(URL, root, "frontdoor", jwk.JWK(**go["private"])).kid == go["public"]["kid"]
    without_kid = {k: v for k, v in go["private"].items() if k != "kid"}
    assert StepCASigner(URL, root, "frontdoor", jwk.JWK(**without_kid)).kid == go["public"]["kid"]


def test_ott_verifies_with_the_provisioner_public_key_and_carries_step_ca_claims(root, go):
    signer = StepCASigner(URL, root, "frontdoor", jwk.JWK(**go["private"]))
    before = int(time.time())
    ott = signer.one_time_token("/1.0/sign", "device-cn", {"sans": ["a.example"], "frontdoor": {"cn": "x"}})
    header, claims = verified_ott(ott, go["public"])
    assert header == {"alg": "ES256", "kid": go["public"]["kid"], "typ": "JWT"}
    assert len(base64url_decode(ott.split(".")[2])) == 64  # JWS raw r||s, which step-ca (go-jose) requires
    assert claims["iss"] == "frontdoor" and claims["aud"] == URL + "/1.0/sign" and claims["sub"] == "device-cn"
    assert claims["sans"] == ["a.example"] and claims["frontdoor"] == {"cn": "x"}
    assert before <= claims["iat"] == claims["nbf"] <= before + 2 and claims["exp"] - claims["iat"] == 120
    assert re.fullmatch(r"[0-9a-f]{64}", claims["jti"])
    assert verified_ott(signer.one_time_token("/1.0/sign", "x"), go["public"])[1]["jti"] != claims["jti"]
    other = provisioner_key(None)[0]
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        verified_ott(ott, other)


@pytest.mark.parametrize("params,alg", [
    ({"kty": "EC", "crv": "P-384"}, "ES384"),
    ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA"),
    ({"kty": "RSA", "size": 2048}, "RS256"),
])
def test_other_key_types_sign_with_go_joses_default_alg(root, params, alg):
    key = jwk.JWK.generate(**params)
    signer = StepCASigner(URL, root, "frontdoor", key)
    header, claims = verified_ott(signer.one_time_token("/1.0/revoke", "255"), key.export_public(as_dict=True))
    assert header["alg"] == alg == signer.alg and header["kid"] == key.thumbprint() and claims["sub"] == "255"


def test_a_key_whose_d_does_not_match_is_refused(root, go):
    other = json.loads(provisioner_key(None)[1])
    with pytest.raises(StepCAConfigError, match="cannot sign"):
        StepCASigner(URL, root, "frontdoor", jwk.JWK(**dict(go["private"], d=other["d"])))


# -- the rest of the signer's small helpers ---------------------------------------------------------


def test_go_durations():
    assert parse_go_duration("24h0m0s") == 86400
    assert parse_go_duration("9000h") == 9000 * 3600
    assert parse_go_duration("5m0s") == 300
    assert parse_go_duration("1.5h") == 5400
    for bad in ("", "24", "h", "24x", None, 5):
        assert parse_go_duration(bad) is None


def test_template_forces_the_profile():
    text = x509_template_text()
    assert x509_template() == {"x509": {"template": text}}
    assert '"sans": []' in text and '"extKeyUsage": ["clientAuth"]' in text and '"isCA": false' in text
    assert '"keyEncipherment"' in text and 'typeIs "*rsa.PublicKey"' in text
    for field in ("cn", "o", "ou"):
        assert "toJson .Token.frontdoor.%s" % field in text
    assert ".Subject" not in text and ".SANs" not in text  # nothing from the CSR or the token's sub/sans
    assert text.count("fail ") == 2


def test_build_signer_reports_what_is_missing(tmp_path):
    config = load_config(state_dir=str(tmp_path), env={"FRONTDOOR_SIGNER": "step-ca", "STEP_CA_URL": "https://ca:9000"})
    with pytest.raises(ConfigError) as info:
        build_signer(config, "default")
    message = str(info.value)
    assert "STEP_ROOT" in message and "STEP_PROVISIONER" in message and "STEP_PROVISIONER_KEY" in message
    assert "STEP_CA_URL" not in message
    config = load_config(state_dir=str(tmp_path), env={}, data={
        "stepCa": {"url": "https://ca:9000", "bogus": 1}, "frontdoors": [{"id": "default", "signer": "step-ca"}]})
    with pytest.raises(ConfigError, match="unknown step-ca option"):
        build_signer(config, "default")
