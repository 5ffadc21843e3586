"""certificate_request_token's subject_alt_names option, run in-process on a real engine (SQLite + local CA):
idempotency (order and case do not matter), replacement on a change, check mode and diff, bad SANs refused
before anything is created, and the redeemed certificate carrying exactly the token's SANs."""

from __future__ import annotations

from cryptography import x509

SPIFFE = "spiffe://example.org/ns/prod/sa/api"
SANS = {"dns": ["web-1.example.com", "web.example.com"], "ip": ["10.0.0.7"], "uri": [SPIFFE]}


def args(tmp_path, **kwargs):
    base = {"state_dir": str(tmp_path / "state"), "name": "web-1", "common_name": "web-1.example.com",
            "subject_alt_names": SANS}
    base.update(kwargs)
    return base


def test_sans_are_created_kept_on_rerun_and_replaced_on_change(run_module, tmp_path):
    first = run_module("certificate_request_token", args(tmp_path))
    assert first["changed"] is True and first["token"]["subject_alt_names"] == SANS
    reordered = {"uri": [SPIFFE], "ip": ["10.0.0.7"], "dns": ["WEB.example.com", "web-1.example.com"]}
    again = run_module("certificate_request_token", args(tmp_path, subject_alt_names=reordered))
    assert again["changed"] is False and again["token"]["id"] == first["token"]["id"]

    changed = dict(SANS, email=["ops@example.com"])
    planned = run_module("certificate_request_token", args(tmp_path, subject_alt_names=changed), check_mode=True,
                         diff=True)
    assert planned["changed"] is True and planned["token"]["subject_alt_names"] == changed
    assert planned["diff"]["before"]["subject_alt_names"] == SANS
    assert planned["diff"]["after"]["subject_alt_names"] == changed
    replaced = run_module("certificate_request_token", args(tmp_path, subject_alt_names=changed), diff=True)
    assert replaced["changed"] is True and replaced["replaced_ids"] == [first["token"]["id"]]
    assert replaced["token"]["subject_alt_names"] == changed

    # no SANs asked: a token with SANs is not what the task wants
    plain = run_module("certificate_request_token", args(tmp_path, subject_alt_names=None))
    assert plain["changed"] is True and plain["token"]["subject_alt_names"] == {}
    assert run_module("certificate_request_token", args(tmp_path, subject_alt_names=None))["changed"] is False


def test_bad_sans_fail_with_invalid_request_even_in_check_mode(run_module, tmp_path):
    for sans in ({"dns": ["*.example.com"]}, {"ip": ["10.0.0.256"]}, {"uri": ["relative/path"]}, {"email": ["x"]}):
        for check_mode in (True, False):
            result = run_module("certificate_request_token", args(tmp_path, subject_alt_names=sans),
                                check_mode=check_mode)
            assert result["failed"] is True and result["error_code"] == "invalid_request", (sans, result)
            assert "subjectAltNames" in result["msg"]
    info = run_module("certificate_request_token_info", {"state_dir": str(tmp_path / "state")})
    assert info["tokens"] == []


def test_redeemed_certificate_carries_exactly_the_tokens_sans(run_module, tmp_path):
    secret = run_module("certificate_request_token", args(tmp_path))["token"]["token"]
    result = run_module("client_certificate", {
        "state_dir": str(tmp_path / "state"), "token": secret, "privatekey_path": str(tmp_path / "client.key"),
        "path": str(tmp_path / "client.crt"), "chain_path": str(tmp_path / "chain.pem"),
    })
    assert result["changed"] is True and result["subject_alt_names"] == SANS
    cert = x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == SANS["dns"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == SANS["ip"]
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == SANS["uri"]
