"""A gateway process killed mid-redemption on Vault: its claim lapses, the token is redeemed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, shared_key

pytestmark = pytest.mark.vault

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEASE = 2.0

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
from frontdoor_pki.config import build_service, load_config
from support.backends import blocking, wrap_signer
from support.crypto import make_csr, shared_key
service = build_service(load_config(state_dir=args["state"], env={}, data=args["data"]))
wrap_signer(service, before=blocking(args["marker"], args["release"]))
service.redeem("default", args["secret"], make_csr(shared_key("p256", 70), cn="x"))
"""


def test_killed_mid_redemption_claim_lapses_and_one_certificate(bao, tmp_path):
    data = dict(bao.vault_config(state_dir=str(tmp_path)), claimLeaseSeconds=LEASE)
    service = build_service(load_config(state_dir=str(tmp_path / "me"), env={}, data=data))
    try:
        _, secret = service.create_token("default", name="crash", common_name="crash")
        marker, release = str(tmp_path / "claimed"), str(tmp_path / "release")
        before = bao.certificate_count()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, TESTS_DIR, json.dumps({
                "state": str(tmp_path / "child"), "data": data, "secret": secret, "marker": marker, "release": release,
            })], start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(marker):
                assert child.poll() is None, "child exited early"
                assert time.monotonic() < deadline, "child never claimed the token"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)  # claimed, not signed, never recorded
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        csr = make_csr(shared_key("p256", 71), cn="x")
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, csr)
        assert info.value.code == "redemption_in_progress" and info.value.retry_after >= 1
        deadline = time.monotonic() + LEASE + 10
        while True:
            try:
                result = service.redeem("default", secret, csr)
                break
            except FrontdoorError as exc:
                assert exc.code == "redemption_in_progress" and time.monotonic() < deadline, exc
                time.sleep(0.2)
        assert not result.replayed
        assert bao.certificate_count() == before + 1
        assert service.list_certificates("default").total == 1
    finally:
        service.close()
