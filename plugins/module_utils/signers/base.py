# -*- coding: utf-8 -*-
# Copyright (c) frontdoor.pki contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signer interface.

A signer turns a SignRequest (subject, key and validity already decided by the
rules) into a certificate. The service checks what comes back, so a signer that
adds or drops a subject field, swaps the key or stretches the lifetime is caught
in one place rather than in each adapter.
"""

from __future__ import annotations

import abc
import datetime as _dt
from typing import Iterable, List, Optional, Tuple

from ..errors import FrontdoorError
from ..model import CertificateRecord, IssuedCertificate, SignRequest


class Signer(abc.ABC):
    #: short name for audit lines and health output
    kind = "abstract"
    #: Whether a redemption claims the token (a leased check-and-set) before signing. Signers that keep their
    #: own record of what they sign (Vault PKI, step-ca) need it, so that a lost race leaves no orphan there.
    claim_before_signing = True

    @abc.abstractmethod
    def sign(self, request: SignRequest) -> IssuedCertificate:
        """Issue the certificate. Raise SignerUnavailable (or another FrontdoorError) on failure;
        anything else is treated as the signer being unavailable."""

    @abc.abstractmethod
    def ca_chain(self) -> List[str]:
        """PEM certificates from the issuing CA up to the root."""

    def not_after_limit(self) -> Optional[_dt.datetime]:
        """The latest notAfter this signer can issue (its CA's own expiry), if known."""
        return None

    def revoke(self, certificate: CertificateRecord) -> None:
        """Revoke at the CA. Raise FrontdoorError('not_supported') where the CA cannot."""
        raise FrontdoorError("not_supported", "This signer (%s) cannot revoke certificates." % self.kind)

    def crl(self, revoked: Iterable[Tuple[str, _dt.datetime]]) -> bytes:
        """The CRL (DER). The local CA builds it from ``revoked``; external CAs fetch their own."""
        raise FrontdoorError("not_supported", "This signer (%s) does not publish a CRL here." % self.kind)

    def ping(self) -> None:
        """Raise SignerUnavailable if the signer cannot sign now (health checks)."""

    def close(self) -> None:
        """Release connections."""
