"""Pre-generated CSRs: key generation is the client's job and must not be inside the timed loop."""

from __future__ import annotations

import multiprocessing
from typing import List

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _csr(index: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-client-%d" % index)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_csrs(count: int, start: int = 0, processes: int = 2) -> List[str]:
    """``count`` distinct P-256 CSRs (each with its own key), CN ``bench-client-<i>``."""
    indexes = range(start, start + count)
    if count < 2000 or processes <= 1:
        return [_csr(i) for i in indexes]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        return pool.map(_csr, indexes, chunksize=500)
