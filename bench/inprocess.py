"""The physical limit: the same work without HTTP, in this process, one thread.

Three figures frame the HTTP numbers:
- crypto: parse + verify the CSR (with the key policy) and sign a client certificate with the
  local P-256 CA: the work no design can avoid;
- engine redeem: ``FrontdoorService.redeem`` end to end on SQLite (format check, hash lookup,
  claim, sign, check the issued certificate, record, audit line);
- token creation: ``FrontdoorService.create_token`` on SQLite.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Dict, List, Sequence

from frontdoor_pki import csr as csrmod
from frontdoor_pki.model import SignRequest, Subject, utcnow
from frontdoor_pki.service import FrontdoorService
from frontdoor_pki.signers.local import LocalCASigner


def _rate(count: int, wall: float, cpu: float) -> Dict[str, float]:
    return {
        "ops": count, "wall_s": round(wall, 4), "per_s": round(count / wall, 1) if wall else 0.0,
        "us_per_op": round(wall / count * 1e6, 1) if count else None,
        "cpu_us_per_op": round(cpu / count * 1e6, 1) if count else None,
    }


def crypto_limit(state_dir: str, csrs: Sequence[str], seconds: float) -> Dict[str, float]:
    """CSR parse+verify+policy and certificate signing, as the engine does them, in a loop."""
    signer = LocalCASigner(state_dir, "bench-crypto")
    now = utcnow()
    count, start, cpu0 = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    for pem in csrs:
        csr = csrmod.load_csr(pem)
        request = SignRequest(
            frontdoor_id="bench-crypto", csr_pem=pem, csr=csr, subject=Subject("bench-%d" % count, "Bench Org", None),
            not_before=now - _dt.timedelta(seconds=60), not_after=now + _dt.timedelta(days=365), token_id="t",
            name="n",
        )
        signer.sign(request)
        count += 1
        if time.perf_counter() >= deadline:
            break
    return _rate(count, time.perf_counter() - start, time.process_time() - cpu0)


def create_tokens(service: FrontdoorService, count: int, prefix: str, frontdoor: str = "default",
                  organization: str = "Bench Org", ou: str = "Bench Unit") -> List[str]:
    """``count`` fresh tokens through the engine (CN/O/OU locked); returns their secrets."""
    secrets = []
    for i in range(count):
        _record, secret = service.create_token(
            frontdoor, name="%s-%d" % (prefix, i), common_name="%s-%d" % (prefix, i), organization=organization,
            organizational_unit=ou, actor="bench",
        )
        secrets.append(secret)
    return secrets


def token_creation(service: FrontdoorService, count: int, seconds: float) -> Dict[str, float]:
    made, start, cpu0 = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while made < count and time.perf_counter() < deadline:
        create_tokens(service, 100, "inproc-create-%d" % made)
        made += 100
    return _rate(made, time.perf_counter() - start, time.process_time() - cpu0)


def engine_redeem(service: FrontdoorService, secrets: Sequence[str], csrs: Sequence[str], seconds: float):
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    for secret, pem in zip(secrets, csrs):
        service.redeem("default", secret, pem, source="bench")
        done += 1
        if time.perf_counter() >= deadline:
            break
    return _rate(done, time.perf_counter() - start, time.process_time() - cpu0)
