"""`frontdoor-gateway renew`: renew a client certificate with itself, on a host that has no Ansible.

The JWT and the CSR come from ``frontdoor_pki.renewal_client`` (the Ansible module uses the same code);
this is the HTTP round trip (requests) and the file handling around it.

Files are replaced atomically (a temporary file in the same directory, then a rename), so a TLS server
that reloads them sees the old certificate or the new one, never a half-written file. With ``--new-key``
the certificate and the key are two files, so two renames: the new key is first written beside the key
file as ``KEY.next`` (0600), then the certificate replaced, then ``KEY.next`` renamed to KEY. A run that
died between the last two leaves ``KEY.next`` holding the key of the new certificate; the next run
notices (KEY does not match CERT, KEY.next does) and finishes the move before anything else.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List

from frontdoor_pki import renewal_client
from frontdoor_pki.files import write_atomically


def add_parser(sub) -> None:
    p = sub.add_parser(
        "renew",
        help="renew a client certificate with the current one (JWT signed by its key); no token needed",
        description="Renew CERT (signed with KEY) at the gateway URL: the new certificate keeps the subject and SANs "
        "and replaces CERT (and, with --new-key, a new key of the same type replaces KEY).",
    )
    p.add_argument("--url", required=True, help="the gateway's base URL, e.g. https://pki.example.com:8443")
    p.add_argument("--cert", required=True, metavar="FILE", help="the current certificate (PEM, leaf first); replaced")
    p.add_argument("--key", required=True, metavar="FILE", help="its private key (PEM, unencrypted)")
    p.add_argument("--new-key", action="store_true", help="rotate the key: a new key of the same type replaces KEY")
    p.add_argument("--ca", metavar="FILE", help="CA bundle to verify the gateway's HTTPS certificate")
    p.add_argument("--frontdoor", default="default", help="frontdoor id (default: default)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def _fullchain(answer: dict, had_chain: bool) -> bytes:
    """The new leaf, followed by its issuing chain (without the self-signed root) when the old file had one."""
    pems: List[str] = [answer["certificate"]]
    if had_chain:
        from cryptography import x509

        for pem in answer.get("caChain") or []:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            if cert.subject != cert.issuer:
                pems.append(pem)
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems).encode("ascii")


def _finish_key_move(cert_path: str, key_path: str) -> None:
    """Complete a rotation that died after writing the certificate and before renaming KEY.next to KEY."""
    pending = key_path + ".next"
    if not os.path.exists(pending):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def spki(public_key) -> bytes:
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    with open(cert_path, "rb") as handle:
        cert_key = spki(x509.load_pem_x509_certificates(handle.read())[0].public_key())
    with open(pending, "rb") as handle:
        pending_key = spki(serialization.load_pem_private_key(handle.read(), None).public_key())
    if pending_key == cert_key:
        os.replace(pending, key_path)
        print("frontdoor-gateway renew: finished an interrupted key rotation (%s -> %s)" % (pending, key_path),
              file=sys.stderr)
    else:
        os.unlink(pending)  # a rotation that died before the certificate was replaced: that key was never used


def cmd_renew(args) -> int:
    import requests

    try:
        _finish_key_move(args.cert, args.key)
        with open(args.cert, "rb") as handle:
            cert_pem = handle.read()
        with open(args.key, "rb") as handle:
            key_pem = handle.read()
    except OSError as exc:
        print("frontdoor-gateway renew: %s" % exc, file=sys.stderr)
        return 2
    try:
        authorization, body, new_key = renewal_client.renewal_request(cert_pem, key_pem, args.frontdoor, args.new_key)
    except (ValueError, TypeError) as exc:
        print("frontdoor-gateway renew: cannot read %s / %s: %s" % (args.cert, args.key, exc), file=sys.stderr)
        return 2
    url = args.url.rstrip("/") + renewal_client.renewal_path(args.frontdoor)
    try:
        response = requests.post(
            url, data=body, timeout=args.timeout, verify=args.ca or True,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )
    except requests.RequestException as exc:
        print("frontdoor-gateway renew: gateway_unavailable: %s: %s" % (url, type(exc).__name__), file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code not in (200, 201) or not isinstance(answer, dict) or "certificate" not in answer:
        error = (answer or {}).get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            print("frontdoor-gateway renew: %s: %s" % (error.get("code"), error.get("message")), file=sys.stderr)
        else:
            print("frontdoor-gateway renew: HTTP %d from %s" % (response.status_code, url), file=sys.stderr)
        return 1

    had_chain = cert_pem.count(b"-----BEGIN CERTIFICATE-----") > 1
    if args.new_key:
        write_atomically(args.key + ".next", renewal_client.key_pem(new_key), 0o600)
    mode = os.stat(args.cert).st_mode & 0o777
    write_atomically(args.cert, _fullchain(answer, had_chain), mode)
    if args.new_key:
        os.replace(args.key + ".next", args.key)
    summary = {k: answer.get(k) for k in ("id", "serialNumber", "notAfter", "previousCertificateId")}
    summary["replayed"] = response.status_code == 200
    summary["keyRotated"] = bool(args.new_key)
    print(json.dumps(summary))
    return 0


__all__ = ["add_parser", "cmd_renew"]
