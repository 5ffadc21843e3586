# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Connection and backend options shared by every frontdoor.pki module.
    DOCUMENTATION = r"""
options:
  frontdoor_id:
    description:
      - The frontdoor whose tokens and certificates are managed.
    type: str
    default: default
  gateway_url:
    description:
      - Base URL of a frontdoor gateway, for example V(https://pki.example.com:8443).
      - When set, the module talks to the gateway over HTTP and ignores O(backend), O(state_dir) and the Vault
        options. When not set, the module runs the engine itself on O(backend).
      - If not set, the environment variable E(FRONTDOOR_URL) is used.
    type: str
  api_token:
    description:
      - Admin bearer token of the gateway, needed to create, list, delete and clean up tokens through O(gateway_url).
      - Redeeming a token through a gateway needs no API token; the certificate request token is the credential.
      - If not set, the environment variable E(FRONTDOOR_API_TOKEN) is used.
    type: str
  validate_certs:
    description:
      - Whether to verify the TLS certificate of the gateway (or of Vault with O(backend=vault)).
      - Only set to V(false) for test servers.
    type: bool
    default: true
  ca_path:
    description:
      - Path to a PEM bundle of CA certificates used to verify the gateway (or Vault) instead of the system's.
    type: path
  timeout:
    description:
      - Seconds to wait for an answer from the gateway or Vault.
    type: int
    default: 30
  backend:
    description:
      - Where the engine keeps tokens when the module runs it itself (O(gateway_url) not set).
      - V(local) uses the SQLite database and local CA in O(state_dir), the same state a gateway started with
        C(frontdoor-gateway serve --state-dir) serves.
      - V(vault) keeps tokens in a Vault or OpenBao KV v2 mount and signs with its PKI engine.
    type: str
    choices: [local, vault]
    default: local
  state_dir:
    description:
      - State directory of the embedded engine (database, local CA, audit log, optional C(config.yaml)).
      - A C(config.yaml) in this directory is read (frontdoors, their policies and Vault settings), and the
        module's options override its Vault settings.
      - If not set, the environment variable E(FRONTDOOR_STATE_DIR) is used, and then C(~/.frontdoor).
    type: path
  vault_url:
    description:
      - URL of Vault or OpenBao for O(backend=vault).
      - If not set, the environment variables E(VAULT_ADDR) and then E(BAO_ADDR) are used.
    type: str
  vault_token:
    description:
      - Vault token for O(vault_auth_method=token).
      - If not set, the environment variables E(VAULT_TOKEN) and then E(BAO_TOKEN) are used.
    type: str
  vault_auth_method:
    description:
      - How to log in to Vault.
    type: str
    choices: [token, approle]
    default: token
  vault_role_id:
    description:
      - AppRole role ID for O(vault_auth_method=approle).
    type: str
  vault_secret_id:
    description:
      - AppRole secret ID for O(vault_auth_method=approle).
    type: str
  vault_namespace:
    description:
      - Vault Enterprise or OpenBao namespace.
      - If not set, the environment variables E(VAULT_NAMESPACE) and then E(BAO_NAMESPACE) are used.
    type: str
  pki_mount:
    description:
      - Mount point of the PKI secrets engine that signs certificates. The engine's default is used when not set.
    type: str
  kv_mount:
    description:
      - Mount point of the KV version 2 secrets engine that holds the token records.
    type: str
  kv_prefix:
    description:
      - Path prefix of the token records inside O(kv_mount).
    type: str
requirements:
  - cryptography >= 42 (when the module runs the engine or makes keys and CSRs)
  - jwcrypto (where a certificate renews itself with the current one, the key's host)
  - hvac and requests (with O(backend=vault)); a gateway (O(gateway_url)) needs nothing beyond ansible-core
notes:
  - Token secrets are never stored, only their SHA-256 hashes, and never appear in the module's logs.
"""
