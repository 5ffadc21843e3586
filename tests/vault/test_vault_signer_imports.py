"""The Vault PKI signer beside a SQLite store never loads hvac or requests.

Why it matters: hvac with requests (and urllib3, idna, charset_normalizer) is ~5 MB of memory in
each gateway process, and every request this configuration makes in normal operation (role
creation, signing, the CA chain) goes over the lean transport. vault_client imports them on
first use only (its ``_LazyModule``). Checked in a fresh process against the real OpenBao.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.processes import TESTS_DIR

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
from frontdoor_pki.config import build_service, load_config
from support.crypto import make_csr, make_key

service = build_service(load_config(state_dir=args["state"], env={}, data=args["data"]))
issued = []
for org in ("Org A", "Org B"):  # two (O, OU) pairs: two roles created on the way
    _, secret = service.create_token("default", name=org, common_name="imports", organization=org)
    issued.append(service.redeem("default", secret, make_csr(make_key("p256"), cn="x")).certificate.serial_number)
chain = service.ca_chain("default")
service.close()
print(json.dumps({"issued": issued, "chain": len(chain),
                  "loaded": [m for m in ("hvac", "requests", "urllib3") if m in sys.modules]}))
"""


def test_a_pki_signer_beside_sqlite_signs_without_loading_hvac_or_requests(bao, tmp_path):
    state = str(tmp_path / "state")
    data = bao.vault_config(state_dir=state)
    data["backend"] = "local"  # tokens in SQLite, certificates from OpenBao's PKI engine
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    result = subprocess.run([sys.executable, "-c", CHILD, TESTS_DIR, json.dumps({"state": state, "data": data})],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["issued"]) == 2 and report["chain"] >= 1
    assert report["loaded"] == []
