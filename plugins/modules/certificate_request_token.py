#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: certificate_request_token
short_description: Create, replace or delete single-use certificate request tokens
version_added: 0.1.0
description:
  - Manages certificate request tokens of a frontdoor. A token is single-use and expires; whoever redeems it with a
    certificate signing request gets a client certificate whose subject comes from the token
    (see M(frontdoor.pki.client_certificate)).
  - With O(state=present), an unredeemed, unexpired token with the same O(name) and the same subject fields is kept
    and the module reports no change. Its secret cannot be shown again.
  - A token with the same name but different subject fields or expiry (O(expires_at)), or O(force=true), is replaced
    by a new token, and the old one is deleted. When no such token exists a new one is created.
  - The secret (RV(token.token)) is returned only by the run that creates the token. Keep it secret, for example
    by giving it only to the host that redeems it.
  - With O(state=absent), every token of that name is deleted.
author:
  - frontdoor.pki contributors (@frontdoor-pki)
extends_documentation_fragment:
  - frontdoor.pki.frontdoor
attributes:
  check_mode:
    support: full
    description: Nothing is created or deleted; the result says what would be.
  diff_mode:
    support: full
    description: Shows the token's fields before and after (never its secret).
options:
  name:
    description:
      - Name of the token. It also becomes the name of the client certificate issued from it.
      - Tokens are matched by this name.
    type: str
    required: true
  common_name:
    description:
      - Common name (CN) locked into the certificate. When not set, the CN comes from the redeemer's CSR.
    type: str
    aliases: [commonName]
  organization:
    description:
      - Organization (O) locked into the certificate. When not set, it comes from the CSR.
    type: str
  organizational_unit:
    description:
      - Organizational unit (OU) locked into the certificate. When not set, it comes from the CSR.
    type: str
    aliases: [organizationalUnit]
  ttl:
    description:
      - Lifetime of a new token, in seconds or as a duration like V(90s), V(15m), V(24h) or V(7d).
      - Defaults to the frontdoor's default token lifetime (24 hours unless configured).
      - A change of O(ttl) alone does not replace an existing token (its expiry is relative to when it was made).
      - Mutually exclusive with O(expires_at).
    type: str
  expires_at:
    description:
      - Absolute expiry of the token, an RFC 3339 timestamp with a time zone such as V(2030-01-31T12:00:00Z).
      - An existing token with a different expiry is replaced.
      - Mutually exclusive with O(ttl).
    type: str
  subject_alt_names:
    description:
      - Subject Alternative Names locked into the certificate, like the subject fields. The certificate carries
        exactly these, whatever the CSR asks; without them it carries none.
      - DNS names are fully qualified host names (no wildcard; an internationalised name in its C(xn--) form),
        IPs are IPv4 or IPv6 addresses, URIs are absolute (for example a SPIFFE ID
        V(spiffe://example.org/ns/prod/sa/api)), emails are C(local@domain). At most 100 in all, none twice.
      - Compared with an existing token's SANs as sets per kind (order does not matter, DNS names and email domains
        case-insensitively); a difference replaces the token.
    type: dict
    aliases: [subjectAltNames]
    suboptions:
      dns:
        description: DNS names.
        type: list
        elements: str
      ip:
        description: IPv4 or IPv6 addresses.
        type: list
        elements: str
      uri:
        description: Absolute URIs.
        type: list
        elements: str
      email:
        description: Email addresses.
        type: list
        elements: str
  state:
    description:
      - V(present) makes sure an unredeemed, unexpired token with this name and these fields exists.
      - V(absent) deletes every token with this name, whatever its status.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=present), always replace the token (a new secret), even if an equal one exists.
    type: bool
    default: false
seealso:
  - module: frontdoor.pki.client_certificate
  - module: frontdoor.pki.certificate_request_token_info
  - module: frontdoor.pki.certificate_request_token_cleanup
"""

EXAMPLES = r"""
- name: Mint a token for a host through the gateway
  frontdoor.pki.certificate_request_token:
    gateway_url: https://pki.example.com:8443
    api_token: "{{ frontdoor_admin_token }}"
    name: "{{ inventory_hostname }}"
    common_name: "{{ inventory_hostname }}"
    organization: Example Corp
    organizational_unit: Ops
    ttl: 1h
  register: minted
  no_log: true

- name: Same on the embedded engine of this machine
  frontdoor.pki.certificate_request_token:
    state_dir: /var/lib/frontdoor
    name: build-agent-7
    common_name: build-agent-7.example.com
    expires_at: "2030-01-31T12:00:00Z"

- name: A token whose certificate carries a DNS name, an IP and a SPIFFE ID
  frontdoor.pki.certificate_request_token:
    name: api-1
    common_name: api-1.example.com
    subject_alt_names:
      dns: [api-1.example.com, api.example.com]
      ip: [10.0.0.7]
      uri: [spiffe://example.org/ns/prod/sa/api]

- name: Issue a fresh secret even if the token exists
  frontdoor.pki.certificate_request_token:
    name: build-agent-7
    common_name: build-agent-7.example.com
    force: true

- name: Delete the tokens of a host that was decommissioned
  frontdoor.pki.certificate_request_token:
    name: old-host
    state: absent
"""

RETURN = r"""
token:
  description:
    - The token that exists after the run (with O(state=present)), or the one deleted (with O(state=absent)).
    - In check mode, when a token would be created, RV(token.id) and RV(token.created_at) are null.
  returned: success
  type: dict
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
    token:
      description:
        - The secret to redeem. Only returned when the token was created or replaced by this run.
      type: str
      returned: when changed and not in check mode
      sample: crt_q3W0hT9mX2c7Yb1Lk8Pz0sV4nR6eJ5uA7dF3gH2iK9
    acme_eab:
      description:
        - ACME External Account Binding credentials of the token, for any ACME client (certbot C(--eab-kid) and
          C(--eab-hmac-key), lego, acme.sh, cert-manager, community.crypto) against the gateway's
          C(/acme/<frontdoor>/directory). Only returned with the secret, when the token was created by this run.
        - As secret as RV(token.token); register the result with C(no_log=true). Never stored; derived again
          from the token and a server key, and a refresh of the token changes them.
      type: dict
      returned: when changed and not in check mode
      contains:
        key_id:
          description: The EAB key id (the token id).
          type: str
          returned: always
          sample: token-6f0c8f5e-2a53-4f53-9d1c-1a7f8e2b9c31
        hmac_key:
          description: The EAB HMAC key, base64url without padding.
          type: str
          returned: always
          sample: 3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
    common_name:
      description: Locked common name, or null if the CSR provides it.
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
        - The SANs locked into the certificate, by kind (V(dns), V(ip), V(uri), V(email)); kinds without values are
          left out, and a token without SANs has an empty dict. DNS names and email domains lower-case, IPv6
          compressed.
      type: dict
      returned: success
      sample: {"dns": ["api-1.example.com"], "ip": ["10.0.0.7"], "uri": ["spiffe://example.org/ns/prod/sa/api"]}
    expires_at:
      description: When the token expires (RFC 3339, UTC).
      type: str
      returned: success
      sample: "2030-01-31T12:00:00Z"
    created_at:
      description: When the token was created (RFC 3339, UTC).
      type: str
      returned: success
      sample: "2030-01-30T12:00:00Z"
    status:
      description: V(active), V(expired) or V(redeemed).
      type: str
      returned: success
      sample: active
replaced_ids:
  description: Ids of the tokens this run deleted (replaced with O(state=present), removed with O(state=absent)).
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
    validate_expiry,
)
from ansible_collections.frontdoor.pki.plugins.module_utils.errors import FrontdoorError
from ansible_collections.frontdoor.pki.plugins.module_utils.sans import validate_subject_alt_names

SUBJECT_FIELDS = ("common_name", "organization", "organizational_unit")
SHOWN_FIELDS = ("id", "name", "common_name", "organization", "organizational_unit", "subject_alt_names", "expires_at",
                "created_at", "status")


def normalise(value):
    """Blank means 'not locked', exactly like leaving the field out."""
    if value is None:
        return None
    value = str(value)
    return value if value.strip() else None


def same_instant(a, b):
    """Compare RFC 3339 timestamps as instants (2030-01-01T00:00:00Z == 2030-01-01T01:00:00+01:00)."""
    from ansible_collections.frontdoor.pki.plugins.module_utils.tokens import parse_timestamp

    try:
        return parse_timestamp(a) == parse_timestamp(b)
    except FrontdoorError:
        return False


def san_sets(sans):
    """SANs (the API shape) as comparable sets per kind: the order of a list does not matter."""
    return {kind: frozenset(values) for kind, values in (sans or {}).items() if values}


def matches(token, wanted, expires_at, sans=None):
    """Whether an existing token already is what the task asks for. ``sans``: normalised, the API shape."""
    if token.get("status") != "active":
        return False
    for field in SUBJECT_FIELDS:
        if normalise(token.get(field)) != wanted[field]:
            return False
    if san_sets(token.get("subject_alt_names")) != san_sets(sans):
        return False
    if expires_at is not None and not same_instant(token.get("expires_at"), expires_at):
        return False
    return True


def decide(tokens, wanted, expires_at, force, sans=None):
    """(keep, replace): the token to keep unchanged (or None) and the tokens a new one replaces.

    Only active tokens count: an expired or redeemed token with this name is history, left to cleanup.
    """
    active = [t for t in tokens if t.get("status") == "active"]
    if not force:
        for token in reversed(active):  # newest first
            if matches(token, wanted, expires_at, sans):
                return token, []
    return None, active


def shown(token):
    return {k: token.get(k) for k in SHOWN_FIELDS} if token else {}


def main():
    argument_spec = frontdoor_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        common_name=dict(type="str", aliases=["commonName"]),
        organization=dict(type="str"),
        organizational_unit=dict(type="str", aliases=["organizationalUnit"]),
        ttl=dict(type="str"),
        expires_at=dict(type="str"),
        subject_alt_names=dict(
            type="dict", aliases=["subjectAltNames"],
            options=dict(dns=dict(type="list", elements="str"), ip=dict(type="list", elements="str"),
                         uri=dict(type="list", elements="str"), email=dict(type="list", elements="str")),
        ),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("ttl", "expires_at")],
        supports_check_mode=True,
    )
    check_libraries(module)
    params = module.params
    name = params["name"]
    wanted = {field: normalise(params[field]) for field in SUBJECT_FIELDS}

    backend = connect(module)
    try:
        tokens = backend.list_tokens(name=name)
        # the name filter of a store may be a prefix or case-insensitive match: only exact names count
        tokens = [t for t in tokens if t.get("name") == name]

        if params["state"] == "absent":
            ids = [t["id"] for t in tokens]
            deleted = []
            if not module.check_mode:
                deleted = [token_id for token_id in ids if backend.delete_token(token_id)]
            else:
                deleted = ids
            result = dict(
                changed=bool(deleted),
                token=shown(tokens[-1]) if tokens else {},
                replaced_ids=deleted,
                diff=dict(before={"tokens": [shown(t) for t in tokens]}, after={"tokens": []}),
            )
            module.exit_json(**result)

        validate_expiry(params["ttl"], params["expires_at"])
        # the engine's rules, before anything is created: a bad SAN fails the task, also in check mode
        sans = validate_subject_alt_names(params["subject_alt_names"]).to_dict()
        keep, replace = decide(tokens, wanted, params["expires_at"], params["force"], sans)
        if keep is not None:
            module.exit_json(changed=False, token=shown(keep), replaced_ids=[],
                             diff=dict(before=shown(keep), after=shown(keep)))

        before = shown(replace[-1]) if replace else {}
        if module.check_mode:
            planned = dict(id=None, name=name, expires_at=params["expires_at"], status="active", created_at=None,
                           subject_alt_names=sans)
            planned.update(wanted)
            module.exit_json(changed=True, token=planned, replaced_ids=[t["id"] for t in replace],
                             diff=dict(before=before, after=shown(planned)))

        # create first: if creation is refused (policy, TCP shares off), the old token still works
        created = backend.create_token(
            name, ttl=params["ttl"], expires_at=params["expires_at"], subject_alt_names=sans or None, **wanted
        )
        replaced = [t["id"] for t in replace if backend.delete_token(t["id"])]
        token = shown(created)
        token["token"] = created.get("token")
        if created.get("acme_eab"):
            token["acme_eab"] = created["acme_eab"]
        module.exit_json(changed=True, token=token, replaced_ids=replaced,
                         diff=dict(before=before, after=shown(created)))
    except FrontdoorError as exc:
        fail_from_error(module, exc, "Certificate request token %r" % name)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
