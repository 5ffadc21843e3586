# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACME front (RFC 8555): standard ACME clients redeem certificate request tokens.

The token is the account credential, through External Account Binding (RFC 8555 §7.3.4): its EAB
key id is the token id and its HMAC key is derived from the token with a server key, so it is never
stored. The first account presenting a valid EAB is bound to the token; it may order exactly the
token's identifiers, whose authorizations are valid at once; finalizing is the redemption.

``problems``: ACME errors. ``protocol``: JWS verification (josepy), EAB and nonces. ``server``: the
rules (binding, identifiers, orders, finalize through the engine, renewal, revocation). The HTTP face
is ``frontdoor_gateway.acme``. Importable without Ansible or FastAPI.
"""
