# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The host's key and certificate files: options shared by client_certificate and enroll.
    DOCUMENTATION = r"""
options:
  path:
    description:
      - Where the certificate (PEM) is written, atomically.
    type: path
    required: true
  chain_path:
    description:
      - Where the CA chain (PEM, issuer first, up to the root) is written. Not written when not set.
      - It is also how the host knows the frontdoor's CA without asking the gateway, to check that the
        certificate at O(path) was issued by it. Without it (and without O(fullchain_path)) the module fetches
        the chain from the gateway on every run, check mode included.
    type: path
  fullchain_path:
    description:
      - Where the certificate followed by the CA chain (PEM) is written, for servers that want one file.
    type: path
  privatekey_path:
    description:
      - Private key (PEM) from which the module makes the CSR. Generated (mode V(0600) from its first byte)
        if it does not exist, and regenerated as O(regenerate) says.
    type: path
  privatekey_passphrase:
    description:
      - Passphrase of an existing encrypted private key at O(privatekey_path). Generated keys are not encrypted.
    type: str
  privatekey_mode:
    description:
      - Mode of the private key file, for example V('0600') or V('u=rw,g=r'). A generated key is V(0600) unless
        this says otherwise; an existing key keeps its mode when this is not set.
    type: raw
  privatekey_owner:
    description:
      - Owner of the private key file (name or uid). Changing it needs the privileges C(chown) needs.
    type: str
  privatekey_group:
    description:
      - Group of the private key file (name or gid).
    type: str
  private_key_type:
    description:
      - Type of the key the module generates, and (with O(regenerate)) the type an existing key must have.
    type: str
    choices: [ec, rsa]
    default: ec
  private_key_size:
    description:
      - Size in bits of an RSA key. At least 2048.
    type: int
    default: 2048
  private_key_curve:
    description:
      - Curve of an EC key.
    type: str
    choices: [secp256r1, secp384r1]
    default: secp256r1
  regenerate:
    description:
      - When to make a new private key at O(privatekey_path), named as in C(community.crypto.openssl_privatekey).
        A new key needs a new certificate, which the current certificate renews (no token) when it can.
      - V(never) keeps any readable key, whatever its type.
      - V(fail) fails if the key is not the O(private_key_type), O(private_key_size) or O(private_key_curve) asked for.
      - V(partial_idempotence) makes a new key if the existing one is not of that type, size or curve (key type
        mismatch).
      - V(full_idempotence) also makes a new key if the existing one cannot be read (garbage, or a wrong
        O(privatekey_passphrase)).
      - V(always) makes a new key on every run (a rotation on every run, so never idempotent).
    type: str
    choices: [never, fail, partial_idempotence, full_idempotence, always]
    default: partial_idempotence
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
      - A certificate at O(path) that expires within this many days is renewed.
      - If the certificates the frontdoor issues live less than this, every run renews; the module warns.
    type: int
    default: 30
  renew:
    description:
      - Renew a certificate that is still valid (expiring within O(remaining_days), or whose key is
        regenerated) with the current certificate and key, through the frontdoor's renewal endpoint. No token is
        needed; the new certificate keeps the subject and SANs.
      - When renewal is refused (revoked, expired, renewal disabled) the module falls back to a token.
      - V(false) always uses a token.
    type: bool
    default: true
  force:
    description:
      - Issue a new certificate from the token even if O(path) holds a good one (no renewal).
    type: bool
    default: false
  backup:
    description:
      - Keep a timestamped copy of a certificate (and chain) that is replaced or removed.
    type: bool
    default: false
"""
