"""certbot (the real command, from the test venv) against a real gateway's ACME front on the embedded default."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support.acme_clients import Certbot
from support.crypto import make_csr, shared_key


def _subject(cert: x509.Certificate) -> dict:
    return {a.oid: a.value for a in cert.subject}


def _token(gw, token_id: str) -> dict:
    answer = gw.request("GET", "/frontdoor/default/certificate-request-tokens/%s" % token_id)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _certificates(gw, token_id: str) -> list:
    answer = gw.request("GET", "/frontdoor/default/client-certificates", params={"tokenId": token_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["content"]


def _audit(gw) -> list:
    with open("%s/audit.jsonl" % gw.state_dir, "r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_certbot_obtains_renews_and_revokes(gw, server, new_token, tmp_path):
    token = new_token("web.acme.example", organization="Example Corp", organizationalUnit="Web")
    certbot = Certbot(str(tmp_path / "machine"), server)

    done = certbot.certonly(token["acmeEab"], "web.acme.example")
    assert done.returncode == 0, done.stderr + certbot.log()[-3000:]

    cert = x509.load_pem_x509_certificate(certbot.live("web.acme.example").encode())
    assert _subject(cert) == {NameOID.COMMON_NAME: "web.acme.example", NameOID.ORGANIZATION_NAME: "Example Corp",
                              NameOID.ORGANIZATIONAL_UNIT_NAME: "Web"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # the chain certbot saved is the frontdoor's CA chain, and it signed the certificate
    ca = gw.request("GET", "/frontdoor/default/ca", auth=False).text
    chain = x509.load_pem_x509_certificates(certbot.live("web.acme.example", "chain.pem").encode())
    assert [c.fingerprint(c.signature_hash_algorithm) for c in chain] == [
        c.fingerprint(c.signature_hash_algorithm) for c in x509.load_pem_x509_certificates(ca.encode())]
    cert.verify_directly_issued_by(chain[0])

    record = _token(gw, token["id"])
    assert record["status"] == "redeemed"
    issued = _certificates(gw, token["id"])
    assert [c["serialNumber"] for c in issued] == [format(cert.serial_number, "x")]

    # certbot renew --force-renewal: the bound account orders the same name again while its certificate is valid
    renewed = certbot.run("renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert renewed.returncode == 0, renewed.stderr + certbot.log()[-3000:]
    second = x509.load_pem_x509_certificate(certbot.live("web.acme.example").encode())
    assert second.serial_number != cert.serial_number
    assert _subject(second) == _subject(cert)
    issued = _certificates(gw, token["id"])
    assert len(issued) == 2 and {c["tokenId"] for c in issued} == {token["id"]}
    assert _token(gw, token["id"])["certificateId"] == [
        c["id"] for c in issued if c["serialNumber"] == format(second.serial_number, "x")][0]
    events = [e for e in _audit(gw) if e.get("tokenId") == token["id"]]
    assert [e["event"] for e in events if e["event"] in ("token.redeemed", "token.renewed")] == [
        "token.redeemed", "token.renewed"]
    assert any(e["event"] == "acme.account.bound" for e in events)

    # revocation by the account; its certificate revoked, the account is deactivated: no more renewals
    revoked = certbot.run("revoke", "--cert-name", "web.acme.example", "--no-delete-after-revoke")
    assert revoked.returncode == 0, revoked.stderr + certbot.log()[-3000:]
    states = {c["serialNumber"]: c["revokedAt"] for c in _certificates(gw, token["id"])}
    assert states[format(second.serial_number, "x")] is not None
    assert states[format(cert.serial_number, "x")] is None
    again = certbot.run("renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert again.returncode != 0
    assert "deactivated" in certbot.log()
    assert len(_certificates(gw, token["id"])) == 2


def test_second_account_with_the_same_eab_is_refused(new_token, server, tmp_path, gw):
    token = new_token("shared.acme.example")
    first = Certbot(str(tmp_path / "first"), server)
    assert first.register(token["acmeEab"]).returncode == 0, first.log()[-2000:]
    second = Certbot(str(tmp_path / "second"), server)
    refused = second.certonly(token["acmeEab"], "shared.acme.example")
    assert refused.returncode != 0
    assert "urn:ietf:params:acme:error:unauthorized" in second.log()
    assert "already bound to another ACME account" in refused.stderr + second.log()
    assert _token(gw, token["id"])["status"] == "active"  # nothing issued: the bound account can still redeem it
    done = first.certonly(token["acmeEab"], "shared.acme.example")
    assert done.returncode == 0, done.stderr + first.log()[-2000:]
    assert _token(gw, token["id"])["status"] == "redeemed"


def test_foreign_identifier_is_refused_and_the_token_stays_active(new_token, server, tmp_path, gw):
    token = new_token("mine.acme.example")
    certbot = Certbot(str(tmp_path / "m"), server)
    refused = certbot.certonly(token["acmeEab"], "mine.acme.example", "other.acme.example")
    assert refused.returncode != 0
    log = certbot.log()
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in log and "dns:other.acme.example" in log
    assert _token(gw, token["id"])["status"] == "active"
    assert _certificates(gw, token["id"]) == []


def test_certbot_with_its_own_csr(new_token, server, tmp_path, gw):
    """``certbot certonly --csr``: the key never leaves the machine; the subject still comes from the token."""
    token = new_token("csr.acme.example", organization="Example Corp")
    csr = tmp_path / "req.der"
    pem = make_csr(shared_key("p256", 70), cn="csr.acme.example", o="Evil Corp", sans=["csr.acme.example"])
    csr.write_bytes(x509.load_pem_x509_csr(pem.encode()).public_bytes(Encoding.DER))
    certbot = Certbot(str(tmp_path / "c"), server)
    out = tmp_path / "out"
    done = certbot.certonly(token["acmeEab"], "csr.acme.example", extra=(
        "--csr", str(csr), "--cert-path", str(out / "cert.pem"), "--fullchain-path", str(out / "full.pem"),
        "--chain-path", str(out / "chain.pem")))
    assert done.returncode == 0, done.stderr + certbot.log()[-3000:]
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert _subject(cert)[NameOID.ORGANIZATION_NAME] == "Example Corp"
    assert cert.public_key().public_numbers() == shared_key("p256", 70).public_key().public_numbers()


def test_dry_run_redeems_the_token_and_a_real_run_then_renews(new_token, server, tmp_path, gw):
    """What docs/acme.md says of --dry-run: against this server it issues a real certificate (certbot throws it
    away), and the real run after it is a renewal of the bound account."""
    token = new_token("dry.acme.example")
    certbot = Certbot(str(tmp_path / "d"), server)
    dry = certbot.certonly(token["acmeEab"], "dry.acme.example", extra=("--dry-run",))
    assert dry.returncode == 0, dry.stderr + certbot.log()[-3000:]
    assert _token(gw, token["id"])["status"] == "redeemed"
    assert len(_certificates(gw, token["id"])) == 1
    real = certbot.certonly(token["acmeEab"], "dry.acme.example")
    assert real.returncode == 0, real.stderr + certbot.log()[-3000:]
    assert len(_certificates(gw, token["id"])) == 2
    assert [e["event"] for e in _audit(gw) if e.get("tokenId") == token["id"] and e["event"].startswith("token.r")] == [
        "token.redeemed", "token.renewed"]


def test_create_token_command_prints_the_eab(tmp_path):
    """frontdoor-gateway create-token shows the EAB once, as it shows the secret; --json carries acmeEab."""
    import subprocess

    from support.gateway import GATEWAY_BIN

    state = str(tmp_path / "state")
    plain = subprocess.run([GATEWAY_BIN, "create-token", "--state-dir", state, "--name", "cli", "--common-name",
                            "cli.acme.example"], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert "--eab-kid token-" in plain.stdout and "--eab-hmac-key=" in plain.stdout
    as_json = subprocess.run([GATEWAY_BIN, "create-token", "--state-dir", state, "--name", "cli2", "--common-name",
                              "cli2.acme.example", "--json"], capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["acmeEab"]["keyId"] == view["id"] and len(view["acmeEab"]["hmacKey"]) == 43


def test_an_hmac_key_starting_with_a_dash_works(new_token, server, tmp_path):
    """One key in 64 starts with "-": given as --eab-hmac-key=KEY (what create-token prints and the docs show),
    certbot takes it; given as two words it would take it for an option."""
    for _attempt in range(640):
        token = new_token("dash.acme.example")
        if token["acmeEab"]["hmacKey"].startswith("-"):
            break
    else:
        raise AssertionError("no key starting with '-' in 640 tokens (chance about 4e-5)")
    certbot = Certbot(str(tmp_path / "dash"), server)
    done = certbot.register(token["acmeEab"])
    assert done.returncode == 0, done.stderr + certbot.log()[-2000:]
