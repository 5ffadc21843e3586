#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file holds only the documentation: frontdoor.pki.enroll is an action plugin (plugins/action/enroll.py)
# that runs on the controller and executes frontdoor.pki.client_certificate on the host.

DOCUMENTATION = r"""
---
module: enroll
short_description: Enrol a host with one idempotent task - mint a token only when needed, redeem it on the host
version_added: 0.1.0
description:
  - Keeps a client certificate on the host with one task, for a whole fleet.
  - First it runs M(frontdoor.pki.client_certificate) on the host without a token. A host whose certificate is
    good changes nothing; one whose certificate expires within O(remaining_days), or whose key is rotated
    (O(regenerate)), renews it with the current certificate (no token).
  - Only when the host says it needs a token (no certificate, deleted, expired, revoked, or not from this
    frontdoor) does the action mint one on the controller, with the admin credentials (O(api_token) or
    E(FRONTDOOR_API_TOKEN) for a gateway, or the engine itself), named O(token_name), valid O(token_ttl), with the
    subject O(common_name), O(organization), O(organizational_unit). It then runs the module on the host again
    with that token. The key is made on the host and never leaves it.
  - The token's secret lives only in the controller's memory and in that one module call, as a C(no_log)
    option. It is in no registered result and no log line, so the task needs no C(no_log) and its errors stay
    visible. A token whose redemption failed is deleted (it was not spent, and nobody else has its secret);
    unredeemed tokens of the same name left by earlier failed runs are deleted after a success.
  - A rerun with good certificates mints nothing and reports no change.
  - O(api_token) and the minting options stay on the controller. With O(gateway_url), the host gets only the
    gateway's address and TLS options (O(validate_certs), O(ca_path), O(timeout)). Without it, the host runs
    the engine itself with the same O(state_dir) (or Vault options), which suits a controller enrolling itself
    or hosts with C(ansible_connection=local).
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
  - frontdoor.pki.client_certificate
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    description: Mints nothing and spends nothing; reports whether the host would get a certificate.
  diff_mode:
    support: full
    description: Shows the serial number, subject and validity of the certificate before and after.
  platform:
    platforms: posix
options:
  privatekey_path:
    description:
      - Private key (PEM) on the host. Generated there (mode V(0600) from its first byte) if it does not exist,
        and regenerated as O(regenerate) says.
      - Required with O(state=present).
    type: path
  state:
    description:
      - V(present) keeps a good certificate on the host, as described above.
      - V(revoked) revokes the certificate at O(path) on the frontdoor, with the admin credentials on the controller,
        and leaves the files. The host only reads its certificate's serial number.
      - V(absent) removes O(path), O(chain_path) and O(fullchain_path) on the host (not the key), and with
        O(revoke=true) revokes the certificate first.
    type: str
    choices: [present, revoked, absent]
    default: present
  revoke:
    description:
      - With O(state=absent), revoke the certificate before removing its files (decommissioning).
    type: bool
    default: false
  token_name:
    description:
      - Name of a token minted for this host. It also becomes the name of the certificate record.
      - Defaults to the host's C(inventory_hostname).
    type: str
  token_ttl:
    description:
      - Lifetime of a token minted for this host. It is redeemed a moment later by the same task, so minutes
        are plenty.
    type: str
    default: 15m
  common_name:
    description:
      - Common name locked into a token minted for this host.
      - Defaults to the host's C(inventory_hostname).
    type: str
  organization:
    description:
      - Organization locked into a token minted for this host.
    type: str
  organizational_unit:
    description:
      - Organizational unit locked into a token minted for this host.
    type: str
  subject_alt_names:
    description:
      - Subject Alternative Names pre-approved on a token minted for this host, as the gateway's
        C(subjectAltNames) - a dict with lists under C(dns), C(ip), C(uri) and C(email).
      - Needs a frontdoor.pki whose tokens carry SANs.
    type: dict
notes:
  - Renewal on the host needs the Python library C(jwcrypto) there (it signs the renewal JWT with the host's key).
    Without it, every renewal takes a token and the module warns.
seealso:
  - module: frontdoor.pki.client_certificate
  - module: frontdoor.pki.client_certificate_info
  - module: frontdoor.pki.certificate_request_token
"""

EXAMPLES = r"""
# FRONTDOOR_API_TOKEN is set in the controller's environment only; hosts never see it.
- name: Enrol every host of the group, renew what expires, mint only what is missing
  hosts: pki_clients
  module_defaults:
    group/frontdoor.pki.all:
      gateway_url: https://pki.example.com:8443
      ca_path: /etc/pki/frontdoor/gateway-ca.pem
  tasks:
    - name: Keep this host's client certificate
      frontdoor.pki.enroll:
        organization: Example Corp
        privatekey_path: /etc/pki/frontdoor/client.key
        path: /etc/pki/frontdoor/client.crt
        chain_path: /etc/pki/frontdoor/ca-chain.pem
        remaining_days: 10
      register: enrolment

    - name: Decommission - revoke the certificate (on the controller) and remove the files
      frontdoor.pki.enroll:
        path: /etc/pki/frontdoor/client.crt
        chain_path: /etc/pki/frontdoor/ca-chain.pem
        state: absent
        revoke: true
      when: decommission | default(false)

    - name: Rotate every host's key (renewal with the current certificate, no token)
      frontdoor.pki.enroll:
        privatekey_path: /etc/pki/frontdoor/client.key
        path: /etc/pki/frontdoor/client.crt
        chain_path: /etc/pki/frontdoor/ca-chain.pem
        regenerate: always
      when: rotate_keys | default(false)
"""

RETURN = r"""
minted:
  description: Whether this run minted a token for the host (it needed a certificate that could not renew).
  returned: always
  type: bool
revoked:
  description: Whether the certificate is revoked after the run.
  returned: O(state=revoked), or O(state=absent) with O(revoke=true)
  type: bool
removed:
  description: The files removed on the host.
  returned: O(state=absent)
  type: list
  elements: str
token_id:
  description: Id of the token minted (never its secret).
  returned: when minted
  type: str
  sample: token-6f0c8f5e-2a53-4f53-9d1c-1a7f8e2b9c31
token_deleted:
  description: Whether the token minted was deleted again because its redemption failed.
  returned: when minted and the redemption failed
  type: bool
renewed:
  description: Whether the host renewed its certificate with the current one.
  returned: success
  type: bool
redeemed:
  description: Whether the host redeemed a token.
  returned: success
  type: bool
replayed:
  description: Whether the frontdoor answered with a certificate it had issued before (a retry).
  returned: success
  type: bool
needs_token:
  description: Whether the host needed a token (in check mode, whether a real run would mint one).
  returned: success
  type: bool
serial_number:
  description: Serial number of the host's certificate, lower-case hex.
  returned: when a certificate is there
  type: str
  sample: 5f3a9c0d2e71b4a8
common_name:
  description: Common name of the certificate.
  returned: when a certificate is there
  type: str
  sample: web-1.example.com
not_after:
  description: End of validity (RFC 3339, UTC).
  returned: when a certificate is there
  type: str
  sample: "2031-01-30T12:00:00Z"
path:
  description: Where the certificate is.
  returned: always
  type: str
  sample: /etc/pki/frontdoor/client.crt
fullchain_path:
  description: Where the certificate followed by its chain is, if O(fullchain_path) was set.
  returned: when O(fullchain_path) is set
  type: str
certificate:
  description: The certificate (PEM).
  returned: when a certificate is there (not in check mode when one would be issued)
  type: str
ca_chain:
  description: The CA chain, issuer first, as PEMs.
  returned: when a certificate is there
  type: list
  elements: str
reason:
  description: Why a certificate was (or was not) needed, in words.
  returned: success
  type: str
"""
