"""certificate_request_token returns the token's ACME EAB with the secret, and only then."""

from __future__ import annotations

import os

from frontdoor_pki.acme import protocol
from frontdoor_pki.stores.sqlite import SQLiteStore


def test_created_token_returns_its_eab_once(run_module, tmp_path):
    state = str(tmp_path / "state")
    args = {"state_dir": state, "name": "web-acme", "common_name": "web-acme.example.com"}
    first = run_module("certificate_request_token", args)
    eab = first["token"]["acme_eab"]
    assert eab["key_id"] == first["token"]["id"]
    store = SQLiteStore(os.path.join(state, "frontdoor.db"))
    record = store.get_token("default", eab["key_id"])
    assert protocol.eab_credentials(store.acme_server_key(), record)["hmacKey"] == eab["hmac_key"]
    again = run_module("certificate_request_token", args)
    assert again["changed"] is False and "acme_eab" not in again["token"]
