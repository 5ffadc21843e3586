#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: client_certificate
short_description: Redeem a certificate request token for a client certificate
version_added: 0.1.0
description:
  - Turns a single-use certificate request token into a client certificate on the host where the module runs. The
    private key never leaves the host; only a certificate signing request (CSR) is sent.
  - The CSR comes from O(csr_path) or O(csr_content), or the module makes it from the private key at
    O(privatekey_path), generating that key first (mode V(0600)) if the file does not exist.
  - The subject of the certificate comes from the token; fields the token leaves open come from the CSR
    (O(common_name), O(organization), O(organizational_unit) when the module makes the CSR).
  - Idempotent. If O(path) already holds a certificate for the same public key that is valid for more than
    O(remaining_days) days, nothing is done and the token is not spent. O(force=true) redeems anyway.
  - A token can be redeemed once. If the response was lost, running the module again with the same key returns
    the same certificate; a different key is refused with RV(ignore:error_code=token_already_used).
  - Failures return an RV(ignore:error_code) with the gateway's error code, for example V(token_not_found)
    (mistyped or deleted), V(token_expired), V(token_already_used), V(tcp_shares_disabled), V(invalid_csr),
    V(unauthorized) or V(forbidden).
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Never spends a token, never writes a key or a certificate; reports whether it would.
  diff_mode:
    support: full
    description: Shows the serial number, subject and validity of the certificate before and after.
options:
  token:
    description:
      - The certificate request token (C(crt_...)) to redeem.
      - Only needed when a certificate has to be issued; a run that finds a valid certificate does not use it.
    type: str
  path:
    description:
      - Where the certificate (PEM) is written, atomically.
    type: path
    required: true
  chain_path:
    description:
      - Where the CA chain (PEM, issuer first, up to the root) is written. Not written when not set.
    type: path
  privatekey_path:
    description:
      - Private key (PEM) from which the module makes the CSR. Generated with mode V(0600) if it does not exist.
      - Mutually exclusive with O(csr_path) and O(csr_content).
    type: path
  privatekey_passphrase:
    description:
      - Passphrase of an existing encrypted private key at O(privatekey_path). Generated keys are not encrypted.
    type: str
  private_key_type:
    description:
      - Type of a key the module generates.
    type: str
    choices: [ec, rsa]
    default: ec
  private_key_size:
    description:
      - Size in bits of a generated RSA key. At least 2048.
    type: int
    default: 2048
  private_key_curve:
    description:
      - Curve of a generated EC key.
    type: str
    choices: [secp256r1, secp384r1]
    default: secp256r1
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
  common_name:
    description:
      - Common name put in the CSR the module makes. Used only if the token does not lock the common name.
    type: str
  organization:
    description:
      - Organization put in the CSR the module makes. Used only if the token does not lock it.
    type: str
  organizational_unit:
    description:
      - Organizational unit put in the CSR the module makes. Used only if the token does not lock it.
    type: str
  remaining_days:
    description:
      - A certificate at O(path) that expires within this many days is renewed (which needs a new token).
    type: int
    default: 30
  force:
    description:
      - Redeem the token even if O(path) holds a valid certificate for the key.
    type: bool
    default: false
  backup:
    description:
      - Keep a timestamped copy of a certificate (and chain) that is replaced or removed.
    type: bool
    default: false
  state:
    description:
      - V(present) makes sure O(path) holds a valid certificate; V(absent) removes O(path) and O(chain_path)
        (the private key is left alone).
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: frontdoor.pki.certificate_request_token
  - module: community.crypto.x509_certificate_info
    description: Inspect the certificate that was written.
"""

EXAMPLES = r"""
- name: Get a client certificate through the gateway, with a key made on this host
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    token: "{{ frontdoor_token }}"
    privatekey_path: /etc/pki/client/client.key
    path: /etc/pki/client/client.crt
    chain_path: /etc/pki/client/ca-chain.pem
    owner: root
    group: app
    mode: "0644"

- name: Same on the embedded engine, with an RSA key and a CN of our own (the token leaves it open)
  frontdoor.pki.client_certificate:
    state_dir: /var/lib/frontdoor
    token: "{{ frontdoor_token }}"
    privatekey_path: /srv/app/tls/client.key
    private_key_type: rsa
    private_key_size: 3072
    common_name: "{{ inventory_hostname }}"
    path: /srv/app/tls/client.crt
    backup: true

- name: Send a CSR made elsewhere (for example by a hardware token)
  frontdoor.pki.client_certificate:
    gateway_url: https://pki.example.com:8443
    token: "{{ frontdoor_token }}"
    csr_path: /etc/pki/client/client.csr
    path: /etc/pki/client/client.crt
"""

RETURN = r"""
certificate:
  description: The certificate (PEM).
  returned: state is present and not in check mode
  type: str
  sample: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
ca_chain:
  description: The CA chain, issuer first, as PEMs. Empty if unknown (an existing certificate and no O(chain_path)).
  returned: state is present and not in check mode
  type: list
  elements: str
serial_number:
  description: Serial number, lower-case hex.
  returned: state is present and not in check mode
  type: str
  sample: 5f3a9c0d2e71b4a8
common_name:
  description: Common name of the certificate.
  returned: state is present and not in check mode
  type: str
  sample: web-1.example.com
organization:
  description: Organization of the certificate, or null.
  returned: state is present and not in check mode
  type: str
  sample: Example Corp
organizational_unit:
  description: Organizational unit of the certificate, or null.
  returned: state is present and not in check mode
  type: str
  sample: Ops
not_before:
  description: Start of validity (RFC 3339, UTC).
  returned: state is present and not in check mode
  type: str
  sample: "2030-01-30T12:00:00Z"
not_after:
  description: End of validity (RFC 3339, UTC).
  returned: state is present and not in check mode
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
privatekey_path:
  description: The private key used, if O(privatekey_path) was set.
  returned: when O(privatekey_path) is set
  type: str
privatekey_generated:
  description: Whether this run generated the private key.
  returned: state is present
  type: bool
redeemed:
  description: Whether this run redeemed the token (false when the certificate on disk was still good).
  returned: state is present
  type: bool
needs_certificate:
  description:
    - Whether a certificate had to be issued (none at O(path), one for another key, one expiring within
      O(remaining_days), or O(force=true)).
    - In check mode no token is needed to find out, so an admin play can mint tokens only for hosts that need one.
  returned: state is present
  type: bool
certificate_id:
  description: Id of the certificate record on the frontdoor (only when this run redeemed the token).
  returned: when redeemed
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

import datetime
import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    check_libraries,
    connect,
    fail_from_error,
    frontdoor_argument_spec,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError
from ansible_collections.frontdoor.pki.plugins.module_utils.model import isoformat

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

UTC = datetime.timezone.utc


def public_key_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


def first_attribute(name, oid):
    attrs = name.get_attributes_for_oid(oid)
    return to_native(attrs[0].value) if attrs else None


def describe_certificate(pem):
    """The facts a run returns about a certificate, from its PEM."""
    cert = x509.load_pem_x509_certificate(to_bytes(pem))
    return cert, dict(
        serial_number="%x" % cert.serial_number,
        common_name=first_attribute(cert.subject, NameOID.COMMON_NAME),
        organization=first_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        organizational_unit=first_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        not_before=isoformat(cert.not_valid_before_utc),
        not_after=isoformat(cert.not_valid_after_utc),
    )


def load_existing_certificate(path):
    """(certificate, facts, pem) of the certificate at path, or (None, {}, None) if there is none readable."""
    if not os.path.exists(path):
        return None, {}, None
    try:
        pem = to_native(read_file(path))
        cert, facts = describe_certificate(pem)
    except (OSError, ValueError, UnicodeError):
        return None, {}, None
    return cert, facts, pem


def still_good(cert, public_key, remaining_days, now=None):
    """The certificate belongs to this key and is valid for more than remaining_days days."""
    if cert is None or public_key is None:
        return False
    if public_key_der(cert.public_key()) != public_key_der(public_key):
        return False
    now = now or datetime.datetime.now(UTC)
    if cert.not_valid_before_utc > now + datetime.timedelta(minutes=5):
        return False
    return cert.not_valid_after_utc > now + datetime.timedelta(days=remaining_days)


def generate_key(key_type, size, curve):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    return ec.generate_private_key(ec.SECP384R1() if curve == "secp384r1" else ec.SECP256R1())


def write_private_key(module, path, key):
    """Key written 0600 from the first byte and renamed into place, so it is never readable by others."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg="The directory of privatekey_path does not exist: %s" % directory,
                         error_code="invalid_request")
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".frontdoor-key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        module.fail_json(msg="Cannot write the private key to %s: %s" % (path, to_native(exc)),
                         error_code="invalid_request")


def make_csr(key, common_name, organization, organizational_unit):
    attributes = []
    for oid, value in ((NameOID.COMMON_NAME, common_name), (NameOID.ORGANIZATION_NAME, organization),
                       (NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit)):
        if value:
            attributes.append(x509.NameAttribute(oid, value))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, algorithm)
    return to_native(csr.public_bytes(serialization.Encoding.PEM))


def write_atomically(module, path, content, backup):
    """Write content to path through a temporary file and module.atomic_move; returns the backup file or None."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg="The directory of %s does not exist." % path, error_code="invalid_request")
    backup_file = None
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".frontdoor-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(content))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        os.unlink(tmp)
        module.fail_json(msg="Cannot write %s: %s" % (path, to_native(exc)), error_code="invalid_request")
    if backup and os.path.exists(path):
        backup_file = module.backup_local(path)
    module.atomic_move(tmp, path)
    return backup_file


def file_differs(path, content):
    try:
        return read_file(path) != to_bytes(content)
    except OSError:
        return True


def read_chain(path):
    """The certificates of a chain file as PEMs, read by cryptography; none if the file holds garbage."""
    try:
        certificates = x509.load_pem_x509_certificates(read_file(path))
    except ValueError:
        return []
    return [to_native(cert.public_bytes(serialization.Encoding.PEM)) for cert in certificates]


def chain_text(chain):
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain)


def load_request_key(module, params):
    """(public key, private key or None, csr pem or None, key exists) from the options, before any token is used."""
    if params["privatekey_path"]:
        path = params["privatekey_path"]
        if not os.path.exists(path):
            return None, None, None, False
        try:
            passphrase = to_bytes(params["privatekey_passphrase"]) if params["privatekey_passphrase"] else None
            key = serialization.load_pem_private_key(read_file(path), passphrase)
        except (OSError, ValueError, TypeError) as exc:
            module.fail_json(
                msg="Cannot load the private key at %s: %s. Give privatekey_passphrase for an encrypted key, or "
                    "remove the file to have a new key generated." % (path, to_native(exc)),
                error_code="invalid_request",
            )
        return key.public_key(), key, None, True
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
        module.fail_json(msg="The CSR is not a PEM certificate request: %s" % to_native(exc),
                         error_code="invalid_csr")
    return public_key, None, pem, True


def remove_files(module, paths, backup):
    removed, backups = [], []
    for path in paths:
        if path and os.path.exists(path):
            if not module.check_mode:
                if backup:
                    backups.append(module.backup_local(path))
                os.unlink(path)
            removed.append(path)
    return removed, backups


def main():
    argument_spec = frontdoor_argument_spec()
    argument_spec.update(
        token=dict(type="str", no_log=True),
        path=dict(type="path", required=True),
        chain_path=dict(type="path"),
        privatekey_path=dict(type="path"),
        privatekey_passphrase=dict(type="str", no_log=True),
        private_key_type=dict(type="str", default="ec", choices=["ec", "rsa"]),
        private_key_size=dict(type="int", default=2048),
        private_key_curve=dict(type="str", default="secp256r1", choices=["secp256r1", "secp384r1"]),
        csr_path=dict(type="path"),
        csr_content=dict(type="str"),
        common_name=dict(type="str"),
        organization=dict(type="str"),
        organizational_unit=dict(type="str"),
        remaining_days=dict(type="int", default=30),
        force=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("privatekey_path", "csr_path", "csr_content")],
        required_if=[("state", "present", ("privatekey_path", "csr_path", "csr_content"), True)],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    chain_path = params["chain_path"]
    result = dict(changed=False, path=path)
    if chain_path:
        result["chain_path"] = chain_path

    if params["state"] == "absent":
        removed, backups = remove_files(module, [path, chain_path], params["backup"])
        if backups:
            result["backup_file"] = backups[0]
        result.update(changed=bool(removed), removed=removed)
        module.exit_json(**result)

    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    check_libraries(module, need_cryptography=True)
    if params["private_key_type"] == "rsa" and params["private_key_size"] < 2048:
        module.fail_json(msg="private_key_size must be at least 2048 for RSA keys.", error_code="invalid_request")
    if params["remaining_days"] < 0:
        module.fail_json(msg="remaining_days must not be negative.", error_code="invalid_request")
    if params["privatekey_path"]:
        result["privatekey_path"] = params["privatekey_path"]

    public_key, private_key, csr_pem, key_exists = load_request_key(module, params)
    cert, before, existing_pem = load_existing_certificate(path)
    needs_certificate = params["force"] or not still_good(cert, public_key, params["remaining_days"])
    result.update(redeemed=False, privatekey_generated=False, needs_certificate=needs_certificate)

    if not needs_certificate:
        # nothing to redeem: the token (if any) stays unspent
        result.update(before)
        result["certificate"] = existing_pem
        result["ca_chain"] = []
        if chain_path and os.path.exists(chain_path):
            result["ca_chain"] = read_chain(chain_path)
        elif chain_path:
            # the certificate is good but its chain file is missing: fetch the chain (no token needed)
            if not module.check_mode:
                backend = connect(module)
                try:
                    chain = backend.ca_chain()
                except FrontdoorError as exc:
                    fail_from_error(module, exc, "Fetching the CA chain for %s" % chain_path)
                finally:
                    backend.close()
                write_atomically(module, chain_path, chain_text(chain), False)
                result["ca_chain"] = chain
            result["changed"] = True
        file_args = module.load_file_common_arguments(params)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
        result["diff"] = dict(before=before, after=before)
        module.exit_json(**result)

    if module.check_mode:
        # never spend a token (nor write a key) in check mode
        result.update(changed=True, privatekey_generated=params["privatekey_path"] is not None and not key_exists)
        result["diff"] = dict(before=before, after={"path": path, "certificate": "(issued from the token)"})
        module.exit_json(**result)

    if not params["token"]:
        if params["force"]:
            why = "force=true"
        elif cert is None:
            why = "there is none yet"
        else:
            why = "the one there is for another key or expires within %d days" % params["remaining_days"]
        module.fail_json(
            msg="A certificate must be issued for %s (%s), and that needs a certificate request token: set token."
                % (path, why),
            error_code="invalid_request", **result
        )

    if params["privatekey_path"] and not key_exists:
        private_key = generate_key(params["private_key_type"], params["private_key_size"], params["private_key_curve"])
        write_private_key(module, params["privatekey_path"], private_key)
        result["privatekey_generated"] = True
        result["changed"] = True
    if private_key is not None:
        csr_pem = make_csr(private_key, params["common_name"], params["organization"],
                           params["organizational_unit"])

    backend = connect(module)
    try:
        issued = backend.redeem(params["token"], csr_pem)
    except FrontdoorError as exc:
        fail_from_error(module, exc, "Redeeming the certificate request token failed", **result)
    finally:
        backend.close()

    certificate = issued["certificate"]
    chain = list(issued.get("ca_chain") or [])
    result["changed"] = True
    result["redeemed"] = True
    if file_differs(path, certificate):
        backup_file = write_atomically(module, path, certificate, params["backup"])
        if backup_file:
            result["backup_file"] = backup_file
    if chain_path and file_differs(chain_path, chain_text(chain)):
        write_atomically(module, chain_path, chain_text(chain), params["backup"])
    file_args = module.load_file_common_arguments(params)
    module.set_fs_attributes_if_different(file_args, True)
    if chain_path:
        chain_args = module.load_file_common_arguments(params, path=chain_path)
        module.set_fs_attributes_if_different(chain_args, True)

    _cert, after = describe_certificate(certificate)
    result.update(after)
    result.update(
        certificate=certificate, ca_chain=chain, certificate_id=issued.get("id"), token_id=issued.get("token_id"),
        diff=dict(before=before, after=after),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
