"""``python -m bench.compare --old-path DIR``: the OpenBao rows of two engine versions, side by side.

Why: on a shared 2-core machine two bench runs minutes apart differ by more than most changes
(the raw pki/sign row alone moved 1.1k-2.4k/s between runs here). This starts one OpenBao and
four gateways — KV v2 + PKI and SQLite + PKI signer, each once with the engine importable
from ``DIR`` (a directory holding a ``frontdoor_pki`` package, e.g. an older checkout's
``plugins/module_utils`` linked or copied as ``DIR/frontdoor_pki``; put on the gateways'
``PYTHONPATH``) and once with the installed one — and runs raw pki/sign, old and new rows
interleaved, round after round (order reversed every other round), 8 clients, median.
Tokens are made with the installed engine before the clock starts (the KV layout is the
same); everything else is the bench's own code (load generator, requests, CPU accounting).

To get DIR for commit X::

    mkdir -p /tmp/old && git archive X plugins/module_utils | tar -x -C /tmp/old
    ln -s /tmp/old/plugins/module_utils /tmp/old/frontdoor_pki
    .venv/bin/python -m bench.compare --old-path /tmp/old
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

from . import inprocess
from .__main__ import (
    Pool,
    _check_gateway,
    _check_raw,
    create_vault_tokens,
    inprocess_service,
    raw_sign_requests,
    redeem_requests,
    run_row,
    setup_raw_role,
    start_vault_gateway,
)
from .csrs import make_csrs
from .openbao import setup_pki, start_openbao


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-path", required=True, help="directory containing the old frontdoor_pki package")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.old_path, "frontdoor_pki", "service.py")):
        parser.error("%s/frontdoor_pki/service.py does not exist" % args.old_path)

    work = tempfile.mkdtemp(prefix="frontdoor-compare-")
    bao = start_openbao(os.path.join(work, "openbao"))
    gateways = []
    saved = os.environ.get("PYTHONPATH")
    try:
        setup_pki(bao)
        raw_token = setup_raw_role(bao)
        total = args.seconds * args.rounds
        budget = {"kv": int(700 * total), "hyb": int(1800 * total)}  # above what 2 cores do
        csrs = make_csrs(2 * budget["kv"] + 2 * budget["hyb"])
        used = [0]

        def take(n: int) -> List[str]:
            chunk = csrs[used[0]:used[0] + n]
            used[0] += n
            return chunk

        pools = {"raw8": Pool(raw_sign_requests(bao, raw_token, [csrs[i % len(csrs)] for i in range(int(5000 * total))],
                                                0))}
        targets = {}
        for label, path in (("old", os.path.abspath(args.old_path)), ("new", None)):
            if path:
                os.environ["PYTHONPATH"] = path + (os.pathsep + saved if saved else "")
            elif saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
            for kind, backend in (("kv", "vault"), ("hyb", "local")):
                gateway, config = start_vault_gateway(bao, work, "%s-%s" % (kind, label), args.workers, (),
                                                      backend=backend)
                gateways.append(gateway)
                service = inprocess_service(gateway.state_dir, config)
                n = budget[kind]
                secrets = create_vault_tokens(service, n, "t") if kind == "kv" else inprocess.create_tokens(service, n, "t")
                service.close()
                key = "%s_%s" % (kind, label)
                pools[key] = Pool(redeem_requests(gateway, secrets, take(n)))
                targets[key] = gateway
                print("bench.compare: %s ready (%d tokens)" % (key, n), flush=True)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved

        order = ["raw8", "kv_old", "kv_new", "hyb_old", "hyb_new"]
        results: Dict[str, List[dict]] = {k: [] for k in order}
        for rnd in range(args.rounds):
            sequence = order if rnd % 2 == 0 else [order[0]] + order[1:][::-1]
            for key in sequence:
                if key == "raw8":
                    row = run_row(bao.url, pools[key], 8, args.seconds, _check_raw,
                                  {"openbao": lambda: [bao.process.pid]})
                else:
                    gateway = targets[key]
                    row = run_row(gateway.url, pools[key], 8, args.seconds, _check_gateway,
                                  {"gateway": gateway.pids, "openbao": lambda: [bao.process.pid]})
                results[key].append(row)
                print("  round %d %-8s %8.1f /s  errors %d" % (rnd + 1, key, row["rate_per_s"], row["errors"]),
                      flush=True)
        raw = statistics.median(r["rate_per_s"] for r in results["raw8"])
        print()
        print("| row (8 clients) | median /s | ÷ raw pki/sign | rounds | errors | gateway CPU us/req | OpenBao CPU us/req |")
        print("|---|---:|---:|---|---:|---:|---:|")
        titles = {"raw8": "OpenBao pki/sign (raw)", "kv_old": "KV v2 + PKI, old", "kv_new": "KV v2 + PKI, new",
                  "hyb_old": "SQLite + PKI signer, old", "hyb_new": "SQLite + PKI signer, new"}
        for key in order:
            rows = results[key]
            sent = sum(r["sent"] for r in rows) or 1
            cpu: Dict[str, float] = {}
            for r in rows:
                for name, value in r["server_cpu_s_by_process"].items():
                    cpu[name] = cpu.get(name, 0.0) + value
            rate = statistics.median(r["rate_per_s"] for r in rows)
            print("| %s | %.0f | %.3f | %s | %d | %s | %.0f |" % (
                titles[key], rate, rate / raw if raw else 0.0, " ".join("%.0f" % r["rate_per_s"] for r in rows),
                sum(r["errors"] for r in rows), "%.0f" % (cpu["gateway"] / sent * 1e6) if "gateway" in cpu else "",
                cpu.get("openbao", 0.0) / sent * 1e6))
        return 0
    finally:
        for gateway in gateways:
            gateway.stop()
        bao.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
