"""Small helpers the contract and integration suites share."""

from __future__ import annotations

import pytest
from frontdoor_pki.errors import FrontdoorError

from support.backends import failing_first_record
from support.crypto import make_csr, shared_key


def error_of(fn, *args, **kwargs) -> FrontdoorError:
    """The FrontdoorError ``fn(*args, **kwargs)`` raises (the test fails if it raises none)."""
    with pytest.raises(FrontdoorError) as info:
        fn(*args, **kwargs)
    return info.value


def csr(slot=0, cn="client"):
    """A P-256 CSR from the ``slot``-th shared test key."""
    return make_csr(shared_key("p256", slot), cn=cn)


def redeem_through_a_store_fault(service, write_lands: bool):
    """Redeem while the store's first record write fails (``backends.failing_first_record``).

    A lost answer (``write_lands``): the redemption still succeeds, with the certificate whose
    write landed. A lost write: ``store_unavailable``, no certificate, and a redemption with
    another key then succeeds. Either way exactly one certificate in the end. Returns (the token
    as created, the token as stored right after the failed redemption or None, the result), for
    what each redemption path must show on top of that."""
    stored = None
    with failing_first_record(service.store, write_lands) as calls:
        record, secret = service.create_token("default", name="store-fault", common_name="store-fault")
        if write_lands:
            result = service.redeem("default", secret, csr())
            assert result.replayed is False and result.certificate.id == calls[0]
        else:
            error = error_of(service.redeem, "default", secret, csr())
            assert error.code == "store_unavailable"
            stored = service.get_token("default", record.id)
            assert stored.status() == "active"
            assert service.list_certificates("default").total == 0
            result = service.redeem("default", secret, csr(1))
            assert result.replayed is False
    page = service.list_certificates("default")
    assert page.total == 1 and page.items[0].id == result.certificate.id
    return record, stored, result
