"""The table, the ratios and the PASS/FAIL lines of a bench run (also rendered into docs/performance.md)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

# Issue "Stand on maintained libraries": peak RSS per gateway process (the uvicorn supervisor and each worker).
RSS_LIMIT_MB_PER_PROCESS = 100.0

ROW_TITLES = [
    ("raw1", "OpenBao pki/sign (raw)"),
    ("raw8", "OpenBao pki/sign (raw)"),
    ("emb1", "gateway redeem, embedded (SQLite + local CA)"),
    ("emb8", "gateway redeem, embedded (SQLite + local CA)"),
    ("flr8", "library floor: FastAPI + uvicorn route, CSR verify + sign, no rules (bench/floor.py)"),
    ("bao1", "gateway redeem, OpenBao (KV v2 + PKI)"),
    ("bao8", "gateway redeem, OpenBao (KV v2 + PKI)"),
    ("hyb1", "gateway redeem, SQLite store + OpenBao PKI signer"),
    ("hyb8", "gateway redeem, SQLite store + OpenBao PKI signer"),
    ("create8_emb", "gateway token create, embedded"),
    ("create8_bao", "gateway token create, OpenBao"),
]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def targets(results: dict) -> List[Dict[str, object]]:
    rows = results["rows"]
    out: List[Dict[str, object]] = []

    def add(name, value, limit, op, stretch=None, note=""):
        ok = value is not None and (value >= limit if op == ">=" else value <= limit)
        entry = {"target": name, "value": value, "limit": "%s %s" % (op, limit), "pass": bool(ok), "note": note}
        if stretch is not None:
            entry["stretch"] = "%s %s" % (op, stretch)
            entry["stretch_pass"] = value is not None and (value >= stretch if op == ">=" else value <= stretch)
        out.append(entry)

    raw8 = rows.get("raw8", {}).get("rate_per_s")
    if not raw8:
        for name in ("embedded redemptions/s / raw pki/sign/s (8 clients)",
                     "OpenBao-backed redemptions/s / raw pki/sign/s (8 clients)",
                     "SQLite + OpenBao PKI signer redemptions/s / raw pki/sign/s (8 clients)"):
            out.append({"target": name, "value": None, "limit": "-", "pass": True, "skipped": True,
                        "note": "not measured (--skip-vault)"})
    else:
        add("embedded redemptions/s / raw pki/sign/s (8 clients)", _ratio(rows["emb8"]["rate_per_s"], raw8), 0.45, ">=",
            0.6)
        add("OpenBao-backed redemptions/s / raw pki/sign/s (8 clients)", _ratio(rows["bao8"]["rate_per_s"], raw8),
            0.5, ">=", 0.7, note="KV v2 store + PKI signer")
        if "hyb8" in rows:
            add("SQLite + OpenBao PKI signer redemptions/s / raw pki/sign/s (8 clients)",
                _ratio(rows["hyb8"]["rate_per_s"], raw8), 0.5, ">=", 0.7)
    lat = results["latency"].get("embedded")
    if lat:
        add("p50 latency %s / %s stored tokens (embedded)" % (lat["labels"][1], lat["labels"][0]), lat["ratio_p50"],
            1.2, "<=")
    errors = sum(r.get("errors", 0) for r in rows.values())
    errors += sum(v[label]["errors"] for v in results["latency"].values() for label in v["labels"])
    add("errors under load (all rows)", errors, 0, "<=")
    for name, mem in results["memory"].items():
        if name in ("embedded", "vault", "vault_signer"):
            add("gateway peak RSS of the largest process, %s, MB (VmHWM; %d processes, %.1f MB summed)"
                % (name, mem["processes"], mem["peak_rss_mb"]),
                mem.get("peak_rss_mb_max", mem["peak_rss_mb"]), RSS_LIMIT_MB_PER_PROCESS, "<=",
                note="PSS %.1f MB" % mem["pss_mb"])
    return out


def table(results: dict) -> str:
    m = results["machine"]
    lines = [
        "machine: %s x %s, Python %s, OpenBao %s, cryptography %s, uvicorn %s (%s), gateway workers %s%s, commit %s"
        % (m["nproc"], m["cpu_model"], m["python"], m.get("openbao", "-"), m["cryptography"], m["uvicorn"],
           m["http_parser"], results["workers"], " " + " ".join(results["gateway_args"]) if results["gateway_args"]
           else "", m.get("commit", "?")),
        "load average at start %s, at end %s; %s run, %.0f s" % (
            "/".join("%.2f" % x for x in m["loadavg_start"]), "/".join("%.2f" % x for x in m.get("loadavg_end", [])),
            "quick" if results["quick"] else "full", results.get("duration_s", 0)),
        "",
        "| what | clients | per second | p50 ms | p99 ms | errors | server CPU us/req | client CPU us/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title in ROW_TITLES:
        r = results["rows"].get(key)
        if not r:
            continue
        lines.append("| %s | %d | %.0f | %.2f | %.2f | %d | %s | %s |" % (
            title, r["clients"], r["rate_per_s"], r["p50_ms"], r["p99_ms"], r["errors"],
            _num(r.get("server_cpu_us_per_req")), _num(r.get("client_cpu_us_per_req"))))
    ip = results["inprocess"]
    for key, title in (("crypto", "in-process: CSR verify + sign (cryptography, P-256 CA)"),
                       ("engine_redeem", "in-process: engine redeem (SQLite + local CA, no HTTP)"),
                       ("token_create", "in-process: engine token create (SQLite)")):
        if key in ip:
            lines.append("| %s | 1 thread | %.0f | %.3f | | | %s | |" % (
                title, ip[key]["per_s"], ip[key]["us_per_op"] / 1000, _num(ip[key]["cpu_us_per_op"])))
    lines.append("")
    lines.append("| latency, 1 client, alternating batches | stored tokens | p50 ms | p99 ms | n | errors |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, lat in results["latency"].items():
        for label in lat["labels"]:
            v = lat[label]
            lines.append("| %s | %s | %.2f | %.2f | %d | %d |" % (name, label, v["p50_ms"], v["p99_ms"], v["n"],
                                                                 v["errors"]))
    lines.append("")
    lines.append("| memory | processes | peak RSS (VmHWM sum) MB | largest process MB | PSS MB |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, mem in results["memory"].items():
        lines.append("| %s | %d | %.1f | %.1f | %.1f |" % (name, mem["processes"], mem["peak_rss_mb"],
                                                      mem.get("peak_rss_mb_max", 0.0), mem["pss_mb"]))
    rows = results["rows"]
    lines.append("")
    lines.append("ratios (8 clients unless said):")
    if "raw8" in rows:
        lines.append("  embedded / raw pki/sign      %s   (1 client: %s)" % (
            _ratio(rows["emb8"]["rate_per_s"], rows["raw8"]["rate_per_s"]),
            _ratio(rows["emb1"]["rate_per_s"], rows["raw1"]["rate_per_s"])))
        if "flr8" in rows:
            lines.append("  library floor / raw pki/sign %s   (the stack's own ceiling for this request)" % (
                _ratio(rows["flr8"]["rate_per_s"], rows["raw8"]["rate_per_s"])))
        lines.append("  OpenBao-backed (KV v2 + PKI) / raw          %s   (1 client: %s)" % (
            _ratio(rows["bao8"]["rate_per_s"], rows["raw8"]["rate_per_s"]),
            _ratio(rows["bao1"]["rate_per_s"], rows["raw1"]["rate_per_s"])))
        if "hyb8" in rows:
            lines.append("  SQLite store + OpenBao PKI signer / raw     %s   (1 client: %s)" % (
                _ratio(rows["hyb8"]["rate_per_s"], rows["raw8"]["rate_per_s"]),
                _ratio(rows["hyb1"]["rate_per_s"], rows["raw1"]["rate_per_s"])))
    if "flr8" in rows:
        lines.append("  embedded / library floor     %s   (the share of the stack's ceiling the product keeps)" % (
            _ratio(rows["emb8"]["rate_per_s"], rows["flr8"]["rate_per_s"])))
    if "engine_redeem" in results["inprocess"]:
        lines.append("  embedded / in-process engine  %s (engine on 1 thread)" % _ratio(
            rows["emb8"]["rate_per_s"], results["inprocess"]["engine_redeem"]["per_s"]))
    if "raw8" in rows and rows["raw8"].get("server_cpu_us_per_req") and rows["emb8"].get("server_cpu_us_per_req"):
        lines.append("  server CPU per request, embedded redemption / raw sign  %s  (%s us / %s us)" % (
            _ratio(rows["emb8"]["server_cpu_us_per_req"], rows["raw8"]["server_cpu_us_per_req"]),
            _num(rows["emb8"]["server_cpu_us_per_req"]), _num(rows["raw8"]["server_cpu_us_per_req"])))
    for key, label in (("bao8", "KV v2 + PKI"), ("hyb8", "SQLite + PKI signer")):
        if key in rows and "raw8" in rows:
            split = rows[key].get("server_cpu_us_per_req_by_process", {})
            lines.append("  CPU per redemption, %s: gateway %s us + OpenBao %s us (raw pki/sign: OpenBao %s us)" % (
                label, _num(split.get("gateway")), _num(split.get("openbao")),
                _num(rows["raw8"].get("server_cpu_us_per_req"))))
    for name, lat in results["latency"].items():
        lines.append("  p50 %s / %s stored (%s)  %s" % (lat["labels"][1], lat["labels"][0], name, lat["ratio_p50"]))
    check = results.get("single_use_check")
    if check:
        lines.append("  certificates issued %d = successful redemptions %d: %s" % (
            check["embedded_certificates"], check["embedded_successful_redemptions"],
            "yes" if check["embedded_certificates"] == check["embedded_successful_redemptions"] else "NO"))
        if "vault_signer_certificates" in check:
            lines.append("  SQLite + PKI signer: certificates recorded %d = successful redemptions %d: %s" % (
                check["vault_signer_certificates"], check["vault_signer_successful_redemptions"],
                "yes" if check["vault_signer_certificates"] == check["vault_signer_successful_redemptions"] else "NO"))
    lines.append("")
    lines.append("targets:")
    for t in results["targets"]:
        stretch = ""
        if "stretch" in t:
            stretch = "  (stretch %s: %s)" % (t["stretch"], "met" if t["stretch_pass"] else "not met")
        if t.get("skipped"):
            lines.append("  SKIP  %s: %s" % (t["target"], t["note"]))
            continue
        lines.append("  %s  %s = %s, want %s%s%s" % ("PASS" if t["pass"] else "FAIL", t["target"], t["value"],
                                                   t["limit"], stretch, ("; " + t["note"]) if t.get("note") else ""))
    return "\n".join(lines)


def _num(value) -> str:
    return "%.0f" % value if value is not None else ""


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_docs(path: str, results: dict, text: str) -> None:
    """Replace the text between the bench markers with this run's table."""
    with open(path, "r", encoding="utf-8") as handle:
        doc = handle.read()
    block = "%s\nRun %s (`python -m bench%s`):\n\n%s\n%s" % (
        BEGIN, results["started"], " --quick" if results["quick"] else "", text, END)
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(doc)
