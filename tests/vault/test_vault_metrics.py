"""Metrics by backend on OpenBao: store calls labelled vault-kv, signer calls vault, and a signer that refuses
counted as a signer error (a real refusal: a frontdoor whose operator-managed role does not exist)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.crypto import make_csr, shared_key
from support.gateway import run_gateway

pytestmark = pytest.mark.vault


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_store_and_signer_metrics_by_backend_and_signer_errors(bao, tmp_path):
    data = bao.vault_config(state_dir=str(tmp_path), frontdoors=[
        {"id": "default", "signer": {"type": "vault"}},
        {"id": "broken", "signer": {"type": "vault", "manageRoles": False, "role": "no-such-role"}},
    ])
    with run_gateway(str(tmp_path / "gw"), config=data) as gw:
        for frontdoor in ("default", "broken"):
            created = gw.create_token(frontdoor, commonName="m.example")
            assert created.status_code == 201, created.text
            answer = gw.redeem(created.json()["token"], make_csr(shared_key("p256", 70), cn="x"), frontdoor=frontdoor)
            assert answer.status_code == (201 if frontdoor == "default" else 503), answer.text
        found = _samples(gw.request("GET", "/metrics").text)

    def get(name, **labels):
        return found.get((name, tuple(sorted(labels.items()))), 0)

    assert get("frontdoor_redemptions_total", frontdoor="default", outcome="issued") == 1
    assert get("frontdoor_redemptions_total", frontdoor="broken", outcome="signer_unavailable") == 1
    assert get("frontdoor_store_call_duration_seconds_count", backend="vault-kv", operation="record_redemption") == 1
    assert get("frontdoor_signer_call_duration_seconds_count", backend="vault", operation="sign") == 2
    assert get("frontdoor_signer_call_errors_total", backend="vault", operation="sign", error="signer_unavailable") == 1
    assert get("frontdoor_tokens", frontdoor="broken", status="active") == 1, "the refused token stays redeemable"
