#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: client_certificate_info
short_description: Inspect the client certificate on a host - validity, key, issuer, whether it is due
version_added: 0.1.0
description:
  - Reads the certificate at O(path) on the host (and the key at O(privatekey_path), the chain at O(chain_path)
    or O(fullchain_path)) and says what M(frontdoor.pki.client_certificate) would decide about it, without
    changing anything and without the network.
  - RV(issued_by_frontdoor) checks the certificate's signature against the first certificate of the chain written
    by M(frontdoor.pki.client_certificate), not just the issuer's name.
  - With O(fetch_chain=true) and no chain on disk, the chain is fetched from the frontdoor (no credentials needed).
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
  platform:
    platforms: posix
options:
  path:
    description:
      - The certificate (PEM).
    type: path
    required: true
  privatekey_path:
    description:
      - The private key; RV(key_matches) says whether the certificate is for it.
    type: path
  privatekey_passphrase:
    description:
      - Passphrase of an encrypted key at O(privatekey_path).
    type: str
  chain_path:
    description:
      - The CA chain (PEM, issuer first), as O(frontdoor.pki.client_certificate#module:chain_path) writes it.
    type: path
  fullchain_path:
    description:
      - The certificate followed by its chain; its chain is used when O(chain_path) is not set or missing.
    type: path
  remaining_days:
    description:
      - RV(needs_renewal) is true when the certificate expires within this many days.
    type: int
    default: 30
  fetch_chain:
    description:
      - Fetch the frontdoor's CA chain (O(gateway_url), or the engine) when none is on disk, to check the issuer.
      - The other connection options are accepted so that C(module_defaults) for the C(group/frontdoor.pki.all)
        group apply; only this option uses them.
    type: bool
    default: false
seealso:
  - module: frontdoor.pki.client_certificate
  - module: frontdoor.pki.enroll
"""

EXAMPLES = r"""
- name: What does the host hold?
  frontdoor.pki.client_certificate_info:
    path: /etc/pki/frontdoor/client.crt
    privatekey_path: /etc/pki/frontdoor/client.key
    chain_path: /etc/pki/frontdoor/ca-chain.pem
    remaining_days: 10
  register: held

- name: Report hosts whose certificate is due
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ held.common_name }} expires {{ held.not_after }}"
  when: held.exists and held.needs_renewal
"""

RETURN = r"""
exists:
  description: Whether O(path) holds a readable certificate.
  returned: always
  type: bool
serial_number:
  description: Serial number, lower-case hex.
  returned: when exists
  type: str
  sample: 5f3a9c0d2e71b4a8
common_name:
  description: Common name of the subject.
  returned: when exists
  type: str
  sample: web-1.example.com
organization:
  description: Organization of the subject, or null.
  returned: when exists
  type: str
organizational_unit:
  description: Organizational unit of the subject, or null.
  returned: when exists
  type: str
subject_alt_names:
  description: The certificate's Subject Alternative Names by kind.
  returned: when exists
  type: dict
  contains:
    dns:
      description: DNS names.
      type: list
      elements: str
      returned: when exists
    ip:
      description: IP addresses.
      type: list
      elements: str
      returned: when exists
    uri:
      description: URIs (a SPIFFE id, for example).
      type: list
      elements: str
      returned: when exists
    email:
      description: E-mail addresses.
      type: list
      elements: str
      returned: when exists
issuer:
  description: The issuer's distinguished name (RFC 4514).
  returned: when exists
  type: str
not_before:
  description: Start of validity (RFC 3339, UTC).
  returned: when exists
  type: str
not_after:
  description: End of validity (RFC 3339, UTC).
  returned: when exists
  type: str
  sample: "2031-01-30T12:00:00Z"
expires_in_days:
  description: Days left (negative once expired).
  returned: when exists
  type: float
  sample: 212.4
lifetime_days:
  description: Days from RV(not_before) to RV(not_after).
  returned: when exists
  type: float
  sample: 365.0
expired:
  description: Whether the certificate has expired.
  returned: when exists
  type: bool
needs_renewal:
  description: Whether it expires within O(remaining_days) (or has expired).
  returned: when exists
  type: bool
key_matches:
  description: Whether the certificate is for the key at O(privatekey_path); null without a readable key.
  returned: when exists
  type: bool
issued_by_frontdoor:
  description: Whether the first certificate of the chain signed it; null when no chain is known.
  returned: when exists
  type: bool
fingerprint_sha256:
  description: SHA-256 fingerprint of the certificate, colon-separated hex.
  returned: when exists
  type: str
public_key_type:
  description: Type of the certificate's key, for example C(EC secp256r1) or C(RSA 2048).
  returned: when exists
  type: str
"""

import datetime
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    connect,
    fail_from_error,
    frontdoor_argument_spec,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError
from ansible_collections.frontdoor.pki.plugins.module_utils.host_certificate import (
    first_attribute,
    issued_by,
    lifetime_days,
    load_chain,
    public_key_der,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.model import isoformat

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def key_type(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA %d" % public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC %s" % public_key.curve.name
    return type(public_key).__name__.replace("PublicKey", "").lstrip("_")


def sans_of(cert):
    sans = dict(dns=[], ip=[], uri=[], email=[])
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return sans
    sans["dns"] = [to_native(v) for v in ext.get_values_for_type(x509.DNSName)]
    sans["ip"] = [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
    sans["uri"] = [to_native(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    sans["email"] = [to_native(v) for v in ext.get_values_for_type(x509.RFC822Name)]
    return sans


def chain_on_disk(params):
    if params["chain_path"] and os.path.exists(params["chain_path"]):
        chain = load_chain(read(params["chain_path"]))
        if chain:
            return chain
    if params["fullchain_path"] and os.path.exists(params["fullchain_path"]):
        return load_chain(read(params["fullchain_path"]))[1:] or None
    return None


def main():
    argument_spec = frontdoor_argument_spec()
    argument_spec.update(
        path=dict(type="path", required=True),
        privatekey_path=dict(type="path"),
        privatekey_passphrase=dict(type="str", no_log=True),
        chain_path=dict(type="path"),
        fullchain_path=dict(type="path"),
        remaining_days=dict(type="int", default=30),
        fetch_chain=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    result = dict(changed=False, path=params["path"])
    try:
        cert = x509.load_pem_x509_certificate(read(params["path"]))
    except (OSError, ValueError) as exc:
        module.exit_json(exists=False, reason=to_native(exc), **result)

    key_matches = None
    if params["privatekey_path"] and os.path.exists(params["privatekey_path"]):
        try:
            passphrase = to_bytes(params["privatekey_passphrase"]) if params["privatekey_passphrase"] else None
            key = serialization.load_pem_private_key(read(params["privatekey_path"]), passphrase)
            key_matches = public_key_der(key.public_key()) == public_key_der(cert.public_key())
        except (OSError, ValueError, TypeError) as exc:
            module.warn("Cannot read the private key at %s: %s" % (params["privatekey_path"], to_native(exc)))

    chain = chain_on_disk(params)
    if chain is None and params["fetch_chain"]:
        backend = connect(module)
        try:
            chain = load_chain(to_bytes("".join(backend.ca_chain()))) or None
        except FrontdoorError as exc:
            fail_from_error(module, exc, "Fetching the frontdoor's CA chain", **result)
        finally:
            backend.close()

    now = datetime.datetime.now(datetime.timezone.utc)
    left = (cert.not_valid_after_utc - now).total_seconds() / 86400.0
    result.update(
        exists=True,
        serial_number="%x" % cert.serial_number,
        common_name=first_attribute(cert.subject, NameOID.COMMON_NAME),
        organization=first_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        organizational_unit=first_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        subject_alt_names=sans_of(cert),
        issuer=cert.issuer.rfc4514_string(),
        not_before=isoformat(cert.not_valid_before_utc),
        not_after=isoformat(cert.not_valid_after_utc),
        expires_in_days=round(left, 3),
        lifetime_days=round(lifetime_days(cert), 3),
        expired=left <= 0,
        needs_renewal=left <= params["remaining_days"],
        key_matches=key_matches,
        issued_by_frontdoor=issued_by(cert, chain) if chain else None,
        fingerprint_sha256=":".join("%02x" % b for b in cert.fingerprint(hashes.SHA256())),
        public_key_type=key_type(cert.public_key()),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
