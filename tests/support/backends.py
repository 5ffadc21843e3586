"""The backend registry the contract suite (tests/contract) runs against.

Every backend must obey the same rules (issue 2, sections 4, 5 and 7), so the contract tests
are written once and run once per backend registered here.

Adding a backend (the whole change, in this file)::

    @register("vault", marks=["vault"], capabilities={"revoke", "crl"})
    def _vault(tmp_path, request):
        return request.getfixturevalue("openbao_config")   # or: from support.openbao import ...

A factory is called as ``factory(tmp_path, request)`` once per test and returns a
``frontdoor_pki.config.Config`` -- or a context manager yielding one, if it must clean up.
What it must provide:

* one frontdoor (``default``) with the backend's signer: the contract suite re-derives its own
  frontdoors from it (see ``contract_config``), giving each the same signer options;
* an isolated store per call (a fresh state dir, a fresh KV prefix, ...): tests count tokens;
* servers it needs started by its own (session-scoped) fixtures, reached via ``request``.

``marks`` (mark names or ``pytest.mark.*`` objects) are applied to every contract test of the
backend (step-ca: ``"stepca"``, deselected from the main run). ``capabilities`` say what the backend's CA can do, and the
tests assert *both* sides: with ``"crl"`` the CRL must list a revoked serial; without it
``service.crl`` must fail with ``not_supported`` (never an empty or stale CRL). Same for
``"revoke"``: with it ``revoke_certificate`` succeeds; without it, it fails with ``not_supported``
and records nothing.

Import this module as ``support.backends`` (never ``tests.support.backends``: a second copy
would have its own, empty registry).

The signer wrappers below (``wrap_signer``) are for fault tests: they wrap the backend's
*real* signer (every certificate handed out is a real one from that CA) and add a failure,
a delay, a block, or a changed request in front of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Sequence

import pytest
from frontdoor_pki.config import Config, load_config
from frontdoor_pki.errors import StoreUnavailable
from frontdoor_pki.model import IssuedCertificate, SignRequest
from frontdoor_pki.signers.base import Signer

CAPABILITIES = frozenset({"revoke", "crl"})


@dataclasses.dataclass(frozen=True)
class Backend:
    """A registered backend: callable like its factory, plus marks and capabilities."""

    name: str
    factory: Callable[..., Any]
    marks: tuple = ()
    capabilities: FrozenSet[str] = frozenset()

    def __call__(self, tmp_path, request):
        return self.factory(tmp_path, request)


BACKENDS: Dict[str, Backend] = {}


def register(name: str, *, marks: Sequence[Any] = (), capabilities: Iterable[str] = ()):
    """Decorator: register ``factory(tmp_path, request) -> Config | ContextManager[Config]``."""
    caps = frozenset(capabilities)
    unknown = caps - CAPABILITIES
    if unknown:
        raise ValueError("unknown capabilities %s (known: %s)" % (sorted(unknown), sorted(CAPABILITIES)))

    def decorate(factory):
        if name in BACKENDS:
            raise ValueError("backend %r registered twice" % name)
        resolved = tuple(getattr(pytest.mark, m) if isinstance(m, str) else m for m in marks)
        BACKENDS[name] = Backend(name, factory, resolved, caps)
        return factory

    return decorate


@register("local", capabilities={"revoke", "crl"})
def _local(tmp_path, request) -> Config:
    """The embedded default: SQLite in the state dir and the local CA."""
    return load_config(state_dir=str(tmp_path / "state"), env={}, data={"backend": "local"})


@register("step-ca", marks=["stepca"], capabilities={"revoke"})
def _stepca(tmp_path, request) -> Config:
    """SQLite in the state dir, signing by a real step-ca (one per session, support/stepca.py).

    step-ca 0.19 publishes no CRL, hence no "crl"; it revokes passively in its database."""
    from support.stepca import shared_stepca

    ca = shared_stepca()
    return load_config(state_dir=str(tmp_path / "state"), env={}, data={
        "backend": "local", "stepCa": ca.step_ca_options(), "frontdoors": [{"id": "default", "signer": "step-ca"}],
    })


@register("vault", marks=["vault"], capabilities={"revoke", "crl"})
def _vault(tmp_path, request) -> Config:
    """KV v2 store + PKI signer on the session's OpenBao, with a token limited to the printed policy."""
    from support.openbao import vault_backend_config

    return vault_backend_config(tmp_path, request)


# ---------------------------------------------------------------------------------------------
def contract_config(base: Config, frontdoors: List[Mapping[str, Any]], claim_lease: float) -> Config:
    """``base`` with the contract suite's frontdoors and lease, each frontdoor on base's signer.

    Goes through ``load_config`` again so the contract configuration is validated exactly as a
    user's file would be."""
    return load_config(state_dir=base.state_dir, env={}, data=contract_data(base, frontdoors, claim_lease))


def contract_data(base: Config, frontdoors: List[Mapping[str, Any]], claim_lease: float) -> Dict[str, Any]:
    """The configuration file's content behind ``contract_config`` (child processes load it too)."""
    if not base.frontdoors:
        raise ValueError("the backend's Config has no frontdoor to take the signer from")
    signer = dict(base.signers[base.frontdoors[0].id])
    data = {
        "backend": base.backend,
        "claimLeaseSeconds": claim_lease,
        "audit": {"path": base.audit_path or os.path.join(base.state_dir, "audit.jsonl")},
        "vault": dict(base.vault),
        "stepCa": dict(base.step_ca),
        "frontdoors": [dict(entry, signer=dict(signer)) for entry in frontdoors],
    }
    if base.api_tokens:
        data["apiTokens"] = list(base.api_tokens)
    return data


# ---------------------------------------------------------------------------------------------
# Fault injection around a real signer.

Hook = Callable[[SignRequest, int], None]


class WrappedSigner(Signer):
    """The real signer with ``before(request, call_number)`` run first (it may raise, sleep or
    block) and ``alter(request)`` applied to what the real signer is asked to sign."""

    def __init__(self, real: Signer, before: Hook | None = None,
                 alter: Callable[[SignRequest], SignRequest] | None = None):
        self.real = real
        self.kind = "wrapped-" + getattr(real, "kind", "signer")
        self.before = before
        self.alter = alter
        self.calls = 0
        self.issued: List[IssuedCertificate] = []
        self._lock = threading.Lock()

    def sign(self, request: SignRequest) -> IssuedCertificate:
        with self._lock:
            self.calls += 1
            number = self.calls
        if self.before is not None:
            self.before(request, number)
        if self.alter is not None:
            request = self.alter(request)
        issued = self.real.sign(request)
        with self._lock:
            self.issued.append(issued)
        return issued

    def ca_chain(self):
        return self.real.ca_chain()

    def not_after_limit(self):
        return self.real.not_after_limit()

    def revoke(self, certificate) -> None:
        return self.real.revoke(certificate)

    def crl(self, revoked):
        return self.real.crl(revoked)

    def ping(self) -> None:
        return self.real.ping()

    def close(self) -> None:
        return self.real.close()


def wrap_signer(service, frontdoor_id: str = "default", **hooks) -> WrappedSigner:
    """Install a WrappedSigner around ``service``'s real signer for ``frontdoor_id``."""
    wrapper = WrappedSigner(service.signers[frontdoor_id], **hooks)
    service.signers[frontdoor_id] = wrapper
    return wrapper


def raising(exc_factory: Callable[[], BaseException], calls: Iterable[int] | None = None) -> Hook:
    """Raise ``exc_factory()`` on the given call numbers (all calls if None)."""
    wanted = None if calls is None else set(calls)

    def hook(request, number):
        if wanted is None or number in wanted:
            raise exc_factory()

    return hook


def sleeping(seconds: float, calls: Iterable[int] | None = None) -> Hook:
    """Sleep before signing on the given call numbers (all calls if None)."""
    wanted = None if calls is None else set(calls)

    def hook(request, number):
        if wanted is None or number in wanted:
            time.sleep(seconds)

    return hook


def blocking(marker: str, release: str, timeout: float = 120.0) -> Hook:
    """Write ``marker``, then wait until the file ``release`` exists (at most ``timeout`` s).

    For crash tests: the process is killed while it waits, i.e. after the claim and before the
    certificate is recorded. The bound keeps an orphan from living on if the test died first."""

    def hook(request, number):
        with open(marker, "w", encoding="ascii") as handle:
            handle.write("%d\n" % os.getpid())
        deadline = time.monotonic() + timeout
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("blocking signer released without a kill")

    return hook


def other_subject(request: SignRequest) -> SignRequest:
    """``alter`` hook: ask the real CA for a certificate with a different common name."""
    subject = dataclasses.replace(request.subject, common_name="not-" + (request.subject.common_name or "x")[:60])
    return dataclasses.replace(request, subject=subject)


__all__ = [
    "BACKENDS", "Backend", "CAPABILITIES", "WrappedSigner", "blocking", "contract_config", "contract_data",
    "other_subject",
    "raising", "register", "sleeping", "wrap_signer",
]


@contextlib.contextmanager
def failing_first_record(store, write_lands: bool):
    """``store.record_redemption`` raises StoreUnavailable on its first call, after really
    writing when ``write_lands`` (the answer was lost, not the write). Yields the ids of the
    certificates it was asked to record, in order; the store's own method is back afterwards."""
    real_record = store.record_redemption
    calls: List[str] = []

    def failing_record(record, expected_version, certificate):
        calls.append(certificate.id)
        if len(calls) == 1:
            if write_lands:
                real_record(record, expected_version, certificate)
            raise StoreUnavailable("connection reset while writing")
        return real_record(record, expected_version, certificate)

    store.record_redemption = failing_record
    try:
        yield calls
    finally:
        store.record_redemption = real_record
