#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: client_certificate
short_description: Keep a client certificate from a frontdoor on the host, renewing it by itself
version_added: 0.1.0
description:
  - Keeps a client certificate at O(path) on the host where the module runs. The private key never leaves the
    host; only a certificate signing request (CSR) is sent.
  - Idempotent. If O(path) holds a certificate for the key, issued by the frontdoor's CA (checked against the
    chain at O(chain_path) or O(fullchain_path)) and valid for more than O(remaining_days) days, nothing is done and
    nothing is sent anywhere; check mode then needs no gateway either.
  - A certificate that expires within O(remaining_days), or whose key is rotated (O(regenerate)), is renewed with
    the current certificate and key through the frontdoor's renewal endpoint, without a token
    (O(renew=true), the default).
  - A first certificate, or one that cannot renew (deleted, expired, revoked, another key), is issued from a
    single-use certificate request token (O(token)). The subject comes from the token; fields the token leaves
    open come from the CSR (O(common_name), O(organization), O(organizational_unit)).
  - If a response was lost, running the module again with the same key returns the same certificate
    (RV(replayed=true)).
  - The CSR comes from O(csr_path) or O(csr_content) instead, when given (then renewal is impossible; the module
    does not hold the key).
  - O(state=revoked) revokes the certificate at O(path) and keeps the files; O(state=absent) removes them, and
    with O(revoke=true) revokes the certificate first. Revoking needs the admin credentials (O(api_token) or the
    engine itself).
  - Failures return an RV(ignore:error_code) with the gateway's error code, for example V(token_not_found)
    (mistyped or deleted), V(token_expired), V(token_already_used), V(tcp_shares_disabled), V(invalid_csr),
    V(certificate_revoked), V(gateway_unavailable), V(unauthorized) or V(forbidden). Messages are never censored;
    only the secret options are C(no_log).
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
  - frontdoor.pki.client_certificate
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Never spends a token, never renews or revokes, never writes a key or a certificate; reports
      whether it would. Needs no gateway when nothing has to be done and the chain is on disk.
  diff_mode:
    support: full
    description: Shows the serial number, subject and validity of the certificate before and after.
options:
  token:
    description:
      - The certificate request token (C(crt_...)) to redeem.
      - Only needed when a certificate has to be issued and cannot be renewed; a run that finds a good
        certificate, or renews one, does not spend it.
    type: str
  missing_token:
    description:
      - What to do when a certificate must be issued from a token and O(token) is not set.
      - V(fail) fails with RV(ignore:error_code=invalid_request) and a message that says why a token is needed.
      - V(skip) changes nothing and returns RV(needs_token=true), so that a caller can mint a token and run again
        (what M(frontdoor.pki.enroll) does).
    type: str
    choices: [fail, skip]
    default: fail
  csr_path:
    description:
      - A PEM CSR to send instead of one made by the module.
      - Mutually exclusive with O(privatekey_path) and O(csr_content).
    type: path
  csr_content:
    description:
      - A PEM CSR given as text.
      - Mutually exclusive with O(privatekey_path) and O(csr_path).
    type: str
  state:
    description:
      - V(present) makes sure O(path) holds a good certificate.
      - V(revoked) revokes the certificate at O(path) (by its serial number) and leaves the files.
      - V(absent) removes O(path), O(chain_path) and O(fullchain_path) (the private key is left alone), after
        revoking the certificate if O(revoke=true).
    type: str
    choices: [present, absent, revoked]
    default: present
  revoke:
    description:
      - With O(state=absent), revoke the certificate before removing it.
    type: bool
    default: false
seealso:
  - module: frontdoor.pki.enroll
    description: One task that mints the token on the controller and runs this module on the host.
  - module: frontdoor.pki.client_certificate_info
  - module: frontdoor.pki.certificate_request_token
"""

EXAMPLES = r"""
- name: Keep a client certificate through the gateway, with a key made on this host (renews by itself)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    token: "{{ frontdoor_token | default(omit) }}"  # only spent when no certificate can renew
    privatekey_path: /etc/pki/client/client.key
    privatekey_group: app
    privatekey_mode: "0640"
    path: /etc/pki/client/client.crt
    chain_path: /etc/pki/client/ca-chain.pem
    fullchain_path: /etc/pki/client/fullchain.pem
    remaining_days: 10
    group: app
    mode: "0644"

- name: Rotate the key now (the current certificate renews for the new key; no token)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    privatekey_path: /etc/pki/client/client.key
    path: /etc/pki/client/client.crt
    chain_path: /etc/pki/client/ca-chain.pem
    regenerate: always

- name: Move to RSA keys (a key of another type is replaced, and its certificate renewed)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    privatekey_path: /etc/pki/client/client.key
    private_key_type: rsa
    private_key_size: 3072
    path: /etc/pki/client/client.crt
    chain_path: /etc/pki/client/ca-chain.pem

- name: Same on the embedded engine, with a CN of our own (the token leaves it open)
  frontdoor.pki.client_certificate:
    state_dir: /var/lib/frontdoor
    token: "{{ frontdoor_token }}"
    privatekey_path: /srv/app/tls/client.key
    common_name: "{{ inventory_hostname }}"
    path: /srv/app/tls/client.crt
    backup: true

- name: Send a CSR made elsewhere (for example by a hardware token)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    token: "{{ frontdoor_token }}"
    csr_path: /etc/pki/client/client.csr
    path: /etc/pki/client/client.crt

- name: Decommission - revoke the certificate and remove the files (admin token on the controller)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    api_token: "{{ frontdoor_admin_token }}"
    path: /etc/pki/client/client.crt
    chain_path: /etc/pki/client/ca-chain.pem
    state: absent
    revoke: true
  delegate_to: localhost
"""

RETURN = r"""
certificate:
  description: The certificate (PEM).
  returned: state is present and a certificate is there (not in check mode when one would be issued)
  type: str
  sample: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
ca_chain:
  description: The CA chain, issuer first, as PEMs. Empty if unknown.
  returned: state is present and a certificate is there
  type: list
  elements: str
serial_number:
  description: Serial number, lower-case hex.
  returned: when a certificate is there
  type: str
  sample: 5f3a9c0d2e71b4a8
common_name:
  description: Common name of the certificate.
  returned: when a certificate is there
  type: str
  sample: web-1.example.com
organization:
  description: Organization of the certificate, or null.
  returned: when a certificate is there
  type: str
  sample: Example Corp
organizational_unit:
  description: Organizational unit of the certificate, or null.
  returned: when a certificate is there
  type: str
  sample: Ops
subject_alt_names:
  description:
    - The certificate's Subject Alternative Names by kind (V(dns), V(ip), V(uri), V(email)), the ones its token
      pre-approved; kinds without values are left out, and a certificate without SANs gives an empty dict.
  returned: when a certificate is there
  type: dict
  sample: {"dns": ["web-1.example.com"], "uri": ["spiffe://example.org/ns/prod/sa/web"]}
not_before:
  description: Start of validity (RFC 3339, UTC).
  returned: when a certificate is there
  type: str
  sample: "2030-01-30T12:00:00Z"
not_after:
  description: End of validity (RFC 3339, UTC).
  returned: when a certificate is there
  type: str
  sample: "2031-01-30T12:00:00Z"
path:
  description: Where the certificate is.
  returned: always
  type: str
  sample: /etc/pki/client/client.crt
chain_path:
  description: Where the chain is, if O(chain_path) was set.
  returned: when O(chain_path) is set
  type: str
fullchain_path:
  description: Where the certificate followed by its chain is, if O(fullchain_path) was set.
  returned: when O(fullchain_path) is set
  type: str
  sample: /etc/pki/client/fullchain.pem
privatekey_path:
  description: The private key used, if O(privatekey_path) was set.
  returned: when O(privatekey_path) is set
  type: str
privatekey_generated:
  description: Whether this run generated the private key (a first key, or a new one as O(regenerate) says).
  returned: state is present
  type: bool
redeemed:
  description: Whether this run redeemed the token.
  returned: state is present
  type: bool
renewed:
  description: Whether this run renewed the certificate with the current one (no token).
  returned: state is present
  type: bool
replayed:
  description:
    - Whether the frontdoor answered with a certificate it had issued before for the same token and key (a retry
      after a lost response), instead of a new one.
  returned: state is present
  type: bool
needs_certificate:
  description:
    - Whether a certificate had to be issued or renewed (none at O(path), one for another key or CA, one expiring
      within O(remaining_days), a regenerated key, or O(force=true)).
  returned: state is present
  type: bool
needs_token:
  description:
    - Whether that certificate needs a token (no certificate that can renew). With O(missing_token=skip) and no
      O(token), the run changed nothing.
  returned: state is present
  type: bool
reason:
  description: Why a certificate was (or was not) needed, in words.
  returned: state is present
  type: str
  sample: the certificate there expires within 30 days (at 2031-01-30T12:00:00+00:00)
revoked:
  description: Whether the certificate at O(path) is revoked after the run.
  returned: O(state=revoked), or O(state=absent) with O(revoke=true)
  type: bool
removed:
  description: The files removed.
  returned: O(state=absent)
  type: list
  elements: str
certificate_id:
  description: Id of the certificate record on the frontdoor (when this run redeemed, renewed or revoked).
  returned: when known
  type: str
  sample: cert-2b1d7c3e-0f4a-4d8e-9b6c-5a7e3f1d2c4b
token_id:
  description: Id of the token that was redeemed (only when this run redeemed it).
  returned: when redeemed
  type: str
  sample: token-6f0c8f5e-2a53-4f53-9d1c-1a7f8e2b9c31
backup_file:
  description: The backup of the replaced or removed certificate, with O(backup=true).
  returned: changed and O(backup=true)
  type: str
  sample: /etc/pki/client/client.crt.2030-01-30@12:00:00~
"""

import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    check_libraries,
    client_certificate_argument_spec,
    connect,
    fail_from_error,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError
from ansible_collections.frontdoor.pki.plugins.module_utils.host_certificate import (
    RENEWAL_REFUSALS,
    first_attribute,
    generate_key,
    judge,
    key_description,
    key_matches_options,
    lifetime_days,
    load_chain,
    make_csr,
    private_key_pem,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.issued import san_dict
from ansible_collections.frontdoor.pki.plugins.module_utils.model import isoformat

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()


def read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


def facts_of(cert):
    """The facts a run returns about a certificate."""
    return dict(
        serial_number="%x" % cert.serial_number,
        common_name=first_attribute(cert.subject, NameOID.COMMON_NAME),
        organization=first_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        organizational_unit=first_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        subject_alt_names=san_dict(cert),
        not_before=isoformat(cert.not_valid_before_utc),
        not_after=isoformat(cert.not_valid_after_utc),
    )


def load_existing_certificate(path):
    """(certificate, pem) at path, or (None, None) if there is none readable."""
    try:
        pem = to_native(read_file(path))
        cert = x509.load_pem_x509_certificate(to_bytes(pem))
    except (OSError, ValueError, UnicodeError):
        return None, None
    return cert, pem


def pem_of(cert):
    return to_native(cert.public_bytes(serialization.Encoding.PEM))


def chain_text(chain):
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain)


def file_differs(path, content):
    try:
        return read_file(path) != to_bytes(content)
    except OSError:
        return True


class Files:
    """Writes of this run: every file through a temporary file in its directory and an atomic rename."""

    def __init__(self, module):
        self.module = module
        self.backups = []

    def _temporary(self, path, data, mode=None):
        directory = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(directory):
            self.module.fail_json(msg="The directory of %s does not exist: %s" % (path, directory),
                                  error_code="invalid_request")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".frontdoor-")
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self.module.fail_json(msg="Cannot write %s: %s" % (path, to_native(exc)), error_code="invalid_request")
        return tmp

    def write(self, path, content, backup):
        """Write content to path if it differs; returns whether it did."""
        if not file_differs(path, content):
            return False
        tmp = self._temporary(path, to_bytes(content))
        if backup and os.path.exists(path):
            self.backups.append(self.module.backup_local(path))
        self.module.atomic_move(tmp, path)
        return True

    def stage_key(self, path, key):
        """The key in a 0600 temporary file beside path (renamed into place by commit_key)."""
        return self._temporary(path, private_key_pem(key), 0o600)

    def commit_key(self, tmp, path):
        try:
            os.rename(tmp, path)
        except OSError as exc:
            self.discard(tmp)
            self.module.fail_json(msg="Cannot write the private key to %s: %s" % (path, to_native(exc)),
                                  error_code="invalid_request")

    @staticmethod
    def discard(tmp):
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load_key(module, params):
    """(private key or None, why it cannot be used or None) from privatekey_path."""
    path = params["privatekey_path"]
    if not os.path.exists(path):
        return None, None
    try:
        passphrase = to_bytes(params["privatekey_passphrase"]) if params["privatekey_passphrase"] else None
        return serialization.load_pem_private_key(read_file(path), passphrase), None
    except (OSError, ValueError, TypeError) as exc:
        return None, to_native(exc)


def decide_key(module, params, key, unreadable):
    """Whether to make a new key, and why (the regenerate option, community.crypto's meanings)."""
    policy = params["regenerate"]
    if unreadable is not None:
        if policy in ("full_idempotence", "always"):
            return True, "the key at %s cannot be read (%s)" % (params["privatekey_path"], unreadable)
        module.fail_json(
            msg="Cannot load the private key at %s: %s. Give privatekey_passphrase for an encrypted key, set "
                "regenerate=full_idempotence to replace it, or remove the file." % (params["privatekey_path"],
                                                                                    unreadable),
            error_code="invalid_request",
        )
    if key is None:
        return True, "there is no key yet"
    if policy == "always":
        return True, "regenerate=always"
    if policy == "never":
        return False, None
    if key_matches_options(key, params["private_key_type"], params["private_key_size"], params["private_key_curve"]):
        return False, None
    wanted = ("an RSA %d key" % params["private_key_size"] if params["private_key_type"] == "rsa"
              else "an EC %s key" % params["private_key_curve"])
    if policy == "fail":
        module.fail_json(
            msg="The key at %s is %s, not %s as asked (regenerate=fail). Set regenerate=partial_idempotence to "
                "replace it, or ask for the key that is there."
                % (params["privatekey_path"], key_description(key), wanted),
            error_code="invalid_request",
        )
    return True, "the key at %s is %s, not %s" % (params["privatekey_path"], key_description(key), wanted)


def load_csr(module, params):
    if params["csr_path"]:
        try:
            pem = to_native(read_file(params["csr_path"]))
        except OSError as exc:
            module.fail_json(msg="Cannot read csr_path %s: %s" % (params["csr_path"], to_native(exc)),
                             error_code="invalid_request")
    else:
        pem = params["csr_content"]
    try:
        csr = x509.load_pem_x509_csr(to_bytes(pem.strip()))
        public_key = csr.public_key()
    except (ValueError, TypeError) as exc:
        module.fail_json(msg="The CSR is not a PEM certificate request: %s" % to_native(exc), error_code="invalid_csr")
    return pem, public_key


def known_chain(params):
    """The frontdoor's CA chain as written by an earlier run (chain_path, else the tail of fullchain_path)."""
    if params["chain_path"] and os.path.exists(params["chain_path"]):
        chain = load_chain(read_file(params["chain_path"]))
        if chain:
            return chain
    if params["fullchain_path"] and os.path.exists(params["fullchain_path"]):
        chain = load_chain(read_file(params["fullchain_path"]))[1:]
        if chain:
            return chain
    return None


class Run:
    """One run of the module: the options, one backend opened on first need, the result."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.backend = None
        self.files = Files(module)
        self.result = dict(changed=False, path=self.params["path"])
        for option in ("chain_path", "fullchain_path", "privatekey_path"):
            if self.params[option]:
                self.result[option] = self.params[option]

    def connect(self):
        if self.backend is None:
            self.backend = connect(self.module)
        return self.backend

    def close(self):
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def fail(self, exc, context):
        self.close()
        if self.files.backups:
            self.result["backup_file"] = self.files.backups[0]
        fail_from_error(self.module, exc, context, **self.result)

    def exit(self, **extra):
        self.close()
        self.result.update(extra)
        if self.files.backups:
            self.result["backup_file"] = self.files.backups[0]
        self.module.exit_json(**self.result)

    # ------------------------------------------------------------------ revocation
    def revoke(self, cert):
        """Revoke the certificate (by serial) on the frontdoor; returns whether this run revoked it."""
        serial = "%x" % cert.serial_number
        try:
            record = self.connect().find_certificate(serial)
        except FrontdoorError as exc:
            self.fail(exc, "Looking up the certificate with serial %s to revoke it" % serial)
        if record is None:
            self.fail(FrontdoorError("certificate_not_found",
                                     "The frontdoor has no certificate with serial %s (the one at %s): it was not "
                                     "issued by this frontdoor (check frontdoor_id)." % (serial, self.params["path"])),
                      "Revoking")
        self.result["certificate_id"] = record.get("id")
        if record.get("revoked_at"):
            return False
        if not self.module.check_mode:
            try:
                self.connect().revoke_certificate(record["id"])
            except FrontdoorError as exc:
                self.fail(exc, "Revoking the certificate with serial %s" % serial)
        return True

    def state_revoked(self):
        cert, _pem = load_existing_certificate(self.params["path"])
        if cert is None:
            self.module.fail_json(msg="There is no readable certificate at %s to revoke." % self.params["path"],
                                  error_code="invalid_request", **self.result)
        self.result.update(facts_of(cert))
        changed = self.revoke(cert)
        self.exit(changed=changed, revoked=True)

    def state_absent(self):
        params = self.params
        if params["revoke"]:
            cert, _pem = load_existing_certificate(params["path"])
            if cert is not None:
                self.result.update(facts_of(cert))
                self.result["changed"] = self.revoke(cert)
                self.result["revoked"] = True
            else:
                self.result["revoked"] = False
        removed = []
        for path in (params["path"], params["chain_path"], params["fullchain_path"]):
            if path and os.path.exists(path):
                if not self.module.check_mode:
                    if params["backup"]:
                        self.files.backups.append(self.module.backup_local(path))
                    os.unlink(path)
                removed.append(path)
        self.exit(changed=bool(removed) or self.result["changed"], removed=removed)

    # ------------------------------------------------------------------ present
    def present(self):
        module, params, result = self.module, self.params, self.result
        path = params["path"]
        new_key = staged_key = None
        key = None
        if params["privatekey_path"]:
            key, unreadable = load_key(module, params)
            make_new, key_reason = decide_key(module, params, key, unreadable)
            if make_new:
                new_key = generate_key(params["private_key_type"], params["private_key_size"],
                                       params["private_key_curve"])
            public_key = key.public_key() if key is not None else None
            csr_pem = None
        else:
            csr_pem, public_key = load_csr(module, params)
            make_new, key_reason = False, None

        cert, cert_pem = load_existing_certificate(path)
        chain = known_chain(params)
        if cert is not None and chain is None and not module.check_mode:
            # the frontdoor's CA is not on disk: ask for it (no token needed) to check the issuer
            chain = self.fetch_chain()
        verdict = judge(cert, public_key, chain, params["remaining_days"])
        if cert is not None and chain is None and verdict.good:
            # check mode without a chain on disk: the issuer is checked by the real run
            verdict.reason += " (issuer not checked: no chain on disk)"
        needs_certificate = params["force"] or make_new or not verdict.good
        reason = ("force=true" if params["force"] else key_reason if make_new else verdict.reason)
        result.update(redeemed=False, renewed=False, replayed=False, privatekey_generated=False,
                      needs_certificate=needs_certificate, needs_token=False, reason=reason)
        before = facts_of(cert) if cert is not None else {}
        result["diff"] = dict(before=before, after=before)

        if not needs_certificate:
            return self.keep(cert, cert_pem, chain, key)

        can_renew = (params["renew"] and not params["force"] and key is not None and verdict.renewable)
        if can_renew and module.check_mode:
            result.update(changed=True, privatekey_generated=make_new)
            result["diff"]["after"] = {"path": path, "certificate": "(renewed with the current certificate)"}
            self.exit()
        issued = None
        if can_renew:
            # a rotated key is made now and written only once its certificate exists
            request_key = new_key or key
            csr_pem = make_csr(request_key, params["common_name"], params["organization"],
                               params["organizational_unit"])
            issued = self.renew(cert_pem, chain, key, csr_pem)
            if issued is not None:
                result["renewed"] = True
            else:
                can_renew = False
        if issued is None:
            if not params["token"]:
                result["needs_token"] = True
                if module.check_mode or params["missing_token"] == "skip":
                    if module.check_mode:
                        result["changed"] = True
                        result["privatekey_generated"] = new_key is not None
                        result["diff"]["after"] = {"path": path, "certificate": "(issued from a token)"}
                    self.exit()
                module.fail_json(
                    msg="A certificate must be issued for %s (%s), and that needs a certificate request token: set "
                        "token, or use frontdoor.pki.enroll, which mints one when needed." % (path, reason),
                    error_code="invalid_request", **result
                )
            if module.check_mode:
                result.update(changed=True, privatekey_generated=new_key is not None)
                result["diff"]["after"] = {"path": path, "certificate": "(issued from the token)"}
                self.exit()
            if params["privatekey_path"]:
                csr_pem = make_csr(new_key or key, params["common_name"], params["organization"],
                                   params["organizational_unit"])
            if new_key is not None:
                # a token's certificate may be for a new key: write it first (a failed redemption leaves the key,
                # and the next run redeems with it)
                staged_key = self.files.stage_key(params["privatekey_path"], new_key)
                self.files.commit_key(staged_key, params["privatekey_path"])
                staged_key = None
                result.update(privatekey_generated=True, changed=True)
                self.key_attributes(generated=True)
                new_key = None
            try:
                issued = self.connect().redeem(params["token"], csr_pem)
            except FrontdoorError as exc:
                self.fail(exc, "Redeeming the certificate request token failed")
            result["redeemed"] = True
            result["token_id"] = issued.get("token_id")
        elif new_key is not None:
            staged_key = self.files.stage_key(params["privatekey_path"], new_key)
            self.files.commit_key(staged_key, params["privatekey_path"])
            result["privatekey_generated"] = True
        self.install(issued)

    def fetch_chain(self):
        try:
            return load_chain(to_bytes(chain_text(self.connect().ca_chain()))) or None
        except FrontdoorError as exc:
            self.fail(exc, "Fetching the frontdoor's CA chain to check the certificate at %s" % self.params["path"])

    def renew(self, cert_pem, chain, key, csr_pem):
        """The renewed certificate record, or None when only a token can help (renewal refused)."""
        try:
            return self.connect().renew(cert_pem, key, csr_pem)
        except FrontdoorError as exc:
            if exc.code == "not_supported" and "jwcrypto" in exc.message:
                self.module.warn("%s Until then every renewal of %s takes a token." % (exc.message,
                                                                                       self.params["path"]))
            if exc.code in RENEWAL_REFUSALS:
                self.result["renewal_refused"] = exc.code
                self.result["reason"] += "; renewal refused (%s): %s" % (exc.code, exc.message)
                return None
            if exc.code == "renewal_too_early":
                # the frontdoor's policy says the current certificate is good for a while yet: keep it
                self.module.warn("The frontdoor refused to renew %s yet: %s Lower remaining_days to match its "
                                 "renewal window." % (self.params["path"], exc.message))
                cert, pem = load_existing_certificate(self.params["path"])
                self.keep(cert, pem, chain, key)
            self.fail(exc, "Renewing the certificate at %s with the current one failed" % self.params["path"])

    def keep(self, cert, cert_pem, chain, key):
        """Nothing to issue: make sure the chain files and file attributes are right."""
        params, result = self.params, self.result
        result.update(facts_of(cert))
        result["certificate"] = cert_pem
        chain_pems = [pem_of(c) for c in chain] if chain else []
        changed = False
        if (params["chain_path"] or params["fullchain_path"]) and not chain_pems:
            if self.module.check_mode:
                changed = True
            else:
                chain_pems = [pem_of(c) for c in self.fetch_chain() or []]
        if not self.module.check_mode:
            if params["chain_path"]:
                changed |= self.files.write(params["chain_path"], chain_text(chain_pems), False)
            if params["fullchain_path"]:
                changed |= self.files.write(params["fullchain_path"], chain_text([cert_pem] + chain_pems), False)
        else:
            if params["chain_path"]:
                changed |= bool(chain_pems) and file_differs(params["chain_path"], chain_text(chain_pems))
            if params["fullchain_path"]:
                full = chain_text([cert_pem] + chain_pems)
                changed |= bool(chain_pems) and file_differs(params["fullchain_path"], full)
        result["ca_chain"] = chain_pems
        result["changed"] = changed
        self.warn_lifetime(cert)
        self.attributes(changed)
        if key is not None:
            self.key_attributes(generated=False)
        self.exit()

    def install(self, issued):
        params, result = self.params, self.result
        certificate = issued["certificate"]
        chain = list(issued.get("ca_chain") or [])
        result["replayed"] = bool(issued.get("replayed"))
        self.files.write(params["path"], certificate, params["backup"])
        if params["chain_path"]:
            self.files.write(params["chain_path"], chain_text(chain), params["backup"])
        if params["fullchain_path"]:
            self.files.write(params["fullchain_path"], chain_text([certificate] + chain), params["backup"])
        self.attributes(True)
        if params["privatekey_path"]:
            self.key_attributes(generated=result["privatekey_generated"])
        cert = x509.load_pem_x509_certificate(to_bytes(certificate))
        after = facts_of(cert)
        result.update(after)
        result.update(certificate=certificate, ca_chain=chain, certificate_id=issued.get("id"), changed=True)
        result["diff"]["after"] = after
        self.warn_lifetime(cert)
        self.exit()

    def warn_lifetime(self, cert):
        days = lifetime_days(cert)
        if days < self.params["remaining_days"]:
            self.module.warn(
                "The certificate at %s lives %.1f days, less than remaining_days (%d): every run will renew it. "
                "Set remaining_days below the frontdoor's certificate lifetime (a third of it is common)."
                % (self.params["path"], days, self.params["remaining_days"])
            )

    def attributes(self, changed):
        module, params = self.module, self.params
        for path in (params["path"], params["chain_path"], params["fullchain_path"]):
            if path and os.path.exists(path):
                file_args = module.load_file_common_arguments(params, path=path)
                changed = module.set_fs_attributes_if_different(file_args, changed)
        self.result["changed"] = changed

    def key_attributes(self, generated):
        """privatekey_mode/owner/group on the key file (a generated key is 0600 unless privatekey_mode says)."""
        params = self.params
        path = params["privatekey_path"]
        if not path or not os.path.exists(path):
            return
        if params["privatekey_mode"] is None and params["privatekey_owner"] is None \
                and params["privatekey_group"] is None:
            return
        # the SELinux context and attributes options apply to the key too; owner, group and mode are its own
        wanted = self.module.load_file_common_arguments(params, path=path)
        wanted.update(mode=params["privatekey_mode"], owner=params["privatekey_owner"],
                      group=params["privatekey_group"])
        self.result["changed"] = self.module.set_fs_attributes_if_different(wanted, self.result["changed"])


def main():
    module = AnsibleModule(
        argument_spec=client_certificate_argument_spec(),
        mutually_exclusive=[("privatekey_path", "csr_path", "csr_content")],
        required_if=[("state", "present", ("privatekey_path", "csr_path", "csr_content"), True)],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    run = Run(module)
    if params["state"] == "absent" and not params["revoke"]:
        run.state_absent()

    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    check_libraries(module, need_cryptography=True)
    if params["private_key_type"] == "rsa" and params["private_key_size"] < 2048:
        module.fail_json(msg="private_key_size must be at least 2048 for RSA keys.", error_code="invalid_request")
    if params["remaining_days"] < 0:
        module.fail_json(msg="remaining_days must not be negative.", error_code="invalid_request")
    if params["state"] == "absent":
        run.state_absent()
    if params["state"] == "revoked":
        run.state_revoked()
    run.present()


if __name__ == "__main__":
    main()
