#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: certificate_request_token_cleanup
short_description: Remove expired (and optionally redeemed) certificate request tokens
version_added: 0.1.0
description:
  - Deletes the tokens of a frontdoor that expired more than O(older_than) ago and, with O(include_redeemed=true),
    those redeemed more than O(older_than) ago.
  - Active tokens are never removed; delete those with M(frontdoor.pki.certificate_request_token) and
    O(frontdoor.pki.certificate_request_token#module:state=absent).
  - Certificates issued from redeemed tokens stay valid and stay listed by the gateway.
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
attributes:
  check_mode:
    support: full
    description: Reports which tokens would be removed without removing them.
  diff_mode:
    support: none
    description: The result lists the removed ids instead.
options:
  older_than:
    description:
      - Only tokens that expired (or were redeemed) at least this long ago, in seconds or as a duration like
        V(15m), V(24h) or V(7d).
      - V(0s) removes all of them.
    type: str
    default: 0s
  include_redeemed:
    description:
      - Also remove redeemed tokens.
    type: bool
    default: false
seealso:
  - module: frontdoor.pki.certificate_request_token_info
"""

EXAMPLES = r"""
- name: Nightly, forget tokens that expired more than a week ago
  frontdoor.pki.certificate_request_token_cleanup:
    gateway_url: https://pki.example.com:8443
    api_token: "{{ frontdoor_admin_token }}"
    older_than: 7d

- name: What would go, redeemed ones included
  frontdoor.pki.certificate_request_token_cleanup:
    state_dir: /var/lib/frontdoor
    include_redeemed: true
  check_mode: true
  register: would
"""

RETURN = r"""
deleted:
  description: How many tokens were removed (in check mode, would be removed).
  returned: success
  type: int
  sample: 3
ids:
  description: Ids of the tokens removed (in check mode, that would be removed).
  returned: success
  type: list
  elements: str
  sample: [token-6f0c8f5e-2a53-4f53-9d1c-1a7f8e2b9c31]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.frontdoor.pki.plugins.module_utils.ansible_common import (
    check_libraries,
    connect,
    fail_from_error,
    frontdoor_argument_spec,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError
from ansible_collections.frontdoor.pki.plugins.module_utils.tokens import parse_duration


def normalise_age(value):
    """'0', '0s' or empty mean no minimum age; anything else must be a duration."""
    text = str(value).strip() if value is not None else ""
    if text in ("", "0", "0s"):
        return "0s"
    parse_duration(text, "older_than")
    return text


def main():
    argument_spec = frontdoor_argument_spec()
    argument_spec.update(
        older_than=dict(type="str", default="0s"),
        include_redeemed=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_libraries(module)
    try:
        older_than = normalise_age(module.params["older_than"])
    except FrontdoorError as exc:
        fail_from_error(module, exc)
    statuses = ["expired"] + (["redeemed"] if module.params["include_redeemed"] else [])
    backend = connect(module)
    try:
        ids = backend.cleanup(statuses, 0 if older_than == "0s" else older_than, dry_run=module.check_mode)
        module.exit_json(changed=bool(ids), deleted=len(ids), ids=ids)
    except FrontdoorError as exc:
        fail_from_error(module, exc, "Cleaning up certificate request tokens")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
