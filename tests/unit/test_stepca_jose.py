"""The step-ca signer's own JOSE code: JWE key files, JWK thumbprints and the JWTs it signs.

The fixture in data/stepca_go_jose_jwk.json was written by step-ca's own Go library
(go.step.sm/crypto/jose EncryptJWK, the code behind `step crypto jwk create`), so these tests prove
we read what step writes, not just what we write ourselves.
"""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from frontdoor_pki.config import ConfigError
from frontdoor_pki.signers.stepca import (
    JWEError,
    StepCAConfigError,
    b64u_decode,
    b64u_encode,
    generate_provisioner_key,
    jwe_decrypt,
    jwe_encrypt,
    jwk_from_private_key,
    jwk_thumbprint,
    jws_verify,
    jwt_encode,
    load_provisioner_jwk,
    parse_go_duration,
    private_key_from_jwk,
    public_jwk,
    x509_template,
    x509_template_text,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "stepca_go_jose_jwk.json")


@pytest.fixture(scope="module")
def go():
    with open(FIXTURE, encoding="utf-8") as handle:
        return json.load(handle)


def test_decrypts_the_compact_jwe_written_by_step(go):
    plain = json.loads(jwe_decrypt(go["compact"], go["password"].encode()))
    assert plain == go["private"]


def test_decrypts_the_json_serialization_too(go):
    plain = json.loads(jwe_decrypt(json.dumps(go["full"]), go["password"].encode()))
    assert plain == go["private"]


def test_wrong_password_is_a_clear_error_without_secrets(go):
    with pytest.raises(JWEError) as info:
        jwe_decrypt(go["compact"], b"not-the-password")
    assert "wrong password" in str(info.value)
    assert "not-the-password" not in str(info.value) and go["private"]["d"] not in str(info.value)


def test_tampered_ciphertext_is_detected(go):
    parts = go["compact"].split(".")
    body = bytearray(b64u_decode(parts[3]))
    body[0] ^= 1
    parts[3] = b64u_encode(bytes(body))
    with pytest.raises(JWEError, match="altered"):
        jwe_decrypt(".".join(parts), go["password"].encode())


def test_header_limits_are_enforced(go):
    def with_header(**changes):
        parts = go["compact"].split(".")
        header = json.loads(b64u_decode(parts[0]))
        header.update(changes)
        parts[0] = b64u_encode(json.dumps(header).encode())
        return ".".join(parts)

    with pytest.raises(JWEError, match="p2c"):
        jwe_decrypt(with_header(p2c=10**9), b"x")  # would be a CPU bomb
    with pytest.raises(JWEError, match="key management"):
        jwe_decrypt(with_header(alg="dir"), b"x")
    with pytest.raises(JWEError, match="content encryption"):
        jwe_decrypt(with_header(enc="A128CBC-HS256"), b"x")
    with pytest.raises(JWEError, match="compact"):
        jwe_decrypt("a.b.c", b"x")


def test_our_jwe_round_trips_and_has_steps_header():
    token = jwe_encrypt(b'{"kty":"EC"}', b"pw", p2c=1000)
    header = json.loads(b64u_decode(token.split(".")[0]))
    assert header["alg"] == "PBES2-HS256+A128KW" and header["enc"] == "A256GCM" and header["cty"] == "jwk+json"
    assert header["p2c"] == 1000 and len(b64u_decode(header["p2s"])) == 16
    assert jwe_decrypt(token, b"pw") == b'{"kty":"EC"}'


def test_thumbprint_is_the_kid_step_computes(go):
    assert jwk_thumbprint(go["public"]) == go["public"]["kid"]
    assert jwk_thumbprint(go["private"]) == go["private"]["kid"]  # private members do not count


@pytest.mark.parametrize("make,alg,sig_len", [
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256", 64),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384", 96),
    (ed25519.Ed25519PrivateKey.generate, "EdDSA", 64),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", 256),
])
def test_jwk_round_trip_and_jwt_signatures(make, alg, sig_len):
    key = make()
    jwk = jwk_from_private_key(key)
    assert jwk["alg"] == alg and jwk["kid"] == jwk_thumbprint(public_jwk(jwk)) and "d" not in public_jwk(jwk)
    loaded = private_key_from_jwk(jwk)
    token = jwt_encode({"kid": jwk["kid"], "typ": "JWT"}, {"sub": "x", "n": 1}, loaded, alg)
    header = json.loads(b64u_decode(token.split(".")[0]))
    assert header == {"kid": jwk["kid"], "typ": "JWT", "alg": alg}
    assert len(b64u_decode(token.split(".")[2])) == sig_len  # JWS raw r||s for ECDSA, not DER
    assert jws_verify(token, key.public_key()) == {"sub": "x", "n": 1}
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        jws_verify(forged, key.public_key())


def test_go_fixture_key_signs_verifiably(go):
    key = private_key_from_jwk(go["private"])
    token = jwt_encode({"kid": go["private"]["kid"]}, {"iss": "p"}, key, "ES256")
    assert jws_verify(token, key.public_key()) == {"iss": "p"}


def test_a_jwk_whose_d_does_not_match_is_refused(go):
    other = jwk_from_private_key(ec.generate_private_key(ec.SECP256R1()))
    mixed = dict(go["private"], d=other["d"])
    with pytest.raises(ValueError, match="does not match"):
        private_key_from_jwk(mixed)


def test_load_provisioner_key_files(tmp_path, go):
    encrypted = tmp_path / "enc.json"
    encrypted.write_text(go["compact"])
    assert load_provisioner_jwk(str(encrypted), go["password"]) == go["private"]
    full = tmp_path / "full.json"
    full.write_text(json.dumps(go["full"], indent=2))
    assert load_provisioner_jwk(str(full), go["password"]) == go["private"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(go["private"]))
    assert load_provisioner_jwk(str(plain), None) == go["private"]

    with pytest.raises(StepCAConfigError, match="STEP_PROVISIONER_PASSWORD"):
        load_provisioner_jwk(str(encrypted), None)
    with pytest.raises(StepCAConfigError) as info:
        load_provisioner_jwk(str(encrypted), "wrong-pw")
    assert "wrong password" in str(info.value) and "wrong-pw" not in str(info.value)
    public = tmp_path / "public.json"
    public.write_text(json.dumps(go["public"]))
    with pytest.raises(StepCAConfigError, match="no private JWK"):
        load_provisioner_jwk(str(public), None)
    with pytest.raises(StepCAConfigError, match="cannot read"):
        load_provisioner_jwk(str(tmp_path / "missing.json"), None)


def test_generated_provisioner_keys_load_back(tmp_path):
    public, content = generate_provisioner_key("pw")
    path = tmp_path / "k"
    path.write_text(content)
    loaded = load_provisioner_jwk(str(path), "pw")
    assert public_jwk(loaded) == public and public["kid"] == jwk_thumbprint(public)
    public, content = generate_provisioner_key(None, kind="OKP")
    assert json.loads(content)["kty"] == "OKP" and "d" not in public


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
    from frontdoor_pki.config import build_signer, load_config

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
