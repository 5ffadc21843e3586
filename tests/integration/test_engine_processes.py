"""The embedded default across OS processes starting together on a fresh state directory.

Real processes (``python -c``), real SQLite, the real local CA: processes that create the state
dir at the same moment agree on one CA, one database (in WAL mode) and private files. Racing
redemptions and a crash mid-redemption are in tests/contract/test_contract_processes.py, which
runs them on every backend.
"""

from __future__ import annotations

import os
import sqlite3

from frontdoor_pki.config import build_service, load_config
from support.processes import run_together, spawn


def test_processes_starting_together_on_a_fresh_state_dir_share_one_ca(tmp_path):
    state = str(tmp_path / "fresh")
    reports = run_together(tmp_path, [spawn(tmp_path, state, {}, "s%d" % n, create=True) for n in range(4)])
    assert len({tuple(report["chain"]) for report in reports}) == 1
    service = build_service(load_config(state_dir=state, env={}, data={}))
    try:
        assert service.list_tokens("default").total == 4
        assert service.ca_chain("default") == reports[0]["chain"]
    finally:
        service.close()
    with sqlite3.connect(os.path.join(state, "frontdoor.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for key in ("ca/root.key", "ca/default/intermediate.key", "frontdoor.db"):
        assert os.stat(os.path.join(state, key)).st_mode & 0o077 == 0, key
