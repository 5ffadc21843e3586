#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: certificate_request_token_info
short_description: List certificate request tokens
version_added: 0.1.0
description:
  - Lists the certificate request tokens of a frontdoor, optionally filtered by name and status.
  - Never returns a token's secret; only the run of M(frontdoor.pki.certificate_request_token) that created a
    token shows it.
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  name:
    description:
      - Only tokens with exactly this name.
    type: str
  status:
    description:
      - Only tokens with one of these statuses.
    type: list
    elements: str
    choices: [active, expired, redeemed]
seealso:
  - module: frontdoor.pki.certificate_request_token
"""

EXAMPLES = r"""
- name: Tokens that were minted but not used yet
  frontdoor.pki.certificate_request_token_info:
    gateway_url: https://pki.example.com:8443
    api_token: "{{ frontdoor_admin_token }}"
    status: [active]
  register: pending

- name: Has web-1 redeemed its token?
  frontdoor.pki.certificate_request_token_info:
    state_dir: /var/lib/frontdoor
    name: web-1
  register: web1

- name: Show it
  ansible.builtin.debug:
    msg: "{{ web1.tokens | map(attribute='status') | list }}"
"""

RETURN = r"""
tokens:
  description: The matching tokens, oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: Identifier of the token.
      type: str
      returned: success
      sample: token-6f0c8f5e-2a53-4f53-9d1c-1a7f8e2b9c31
    name:
      description: Name of the token.
      type: str
      returned: success
      sample: web-1
    common_name:
      description: Locked common name, or null.
      type: str
      returned: success
      sample: web-1.example.com
    organization:
      description: Locked organization, or null.
      type: str
      returned: success
      sample: Example Corp
    organizational_unit:
      description: Locked organizational unit, or null.
      type: str
      returned: success
      sample: Ops
    subject_alt_names:
      description:
        - SANs locked into the certificate, by kind (V(dns), V(ip), V(uri), V(email)); kinds without values are left
          out, and a token without SANs has an empty dict.
      type: dict
      returned: success
      sample: {"dns": ["web-1.example.com"], "uri": ["spiffe://example.org/ns/prod/sa/web"]}
    status:
      description: V(active), V(expired) or V(redeemed).
      type: str
      returned: success
      sample: redeemed
    expires_at:
      description: When the token expires or expired (RFC 3339, UTC).
      type: str
      returned: success
      sample: "2030-01-31T12:00:00Z"
    created_at:
      description: When the token was created.
      type: str
      returned: success
      sample: "2030-01-30T12:00:00Z"
    created_by:
      description: Who created it.
      type: str
      returned: success
      sample: admin
    redeemed_at:
      description: When the token was redeemed, or null.
      type: str
      returned: success
      sample: "2030-01-30T12:05:00Z"
    certificate_id:
      description: The certificate issued from the token, or null.
      type: str
      returned: success
      sample: cert-2b1d7c3e-0f4a-4d8e-9b6c-5a7e3f1d2c4b
    frontdoor_id:
      description: The frontdoor the token belongs to.
      type: str
      returned: success
      sample: default
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    check_libraries,
    connect,
    fail_from_error,
    frontdoor_argument_spec,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError


def main():
    argument_spec = frontdoor_argument_spec()
    argument_spec.update(
        name=dict(type="str"),
        status=dict(type="list", elements="str", choices=["active", "expired", "redeemed"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_libraries(module)
    name = module.params["name"]
    backend = connect(module)
    try:
        tokens = backend.list_tokens(name=name, status=module.params["status"])
        if name:
            tokens = [t for t in tokens if t.get("name") == name]
        for token in tokens:
            token.pop("token", None)  # never a secret, whatever the backend sent
        module.exit_json(changed=False, tokens=tokens)
    except FrontdoorError as exc:
        fail_from_error(module, exc, "Listing certificate request tokens")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
