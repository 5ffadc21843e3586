"""The Vault client's connections against a real OpenBao behind a faulty proxy: what is retried,
what never is, and that giving up leaves the token redeemable.

The policy (frontdoor_pki.vault.client.retry_policy): a refused connect is retried twice (nothing
was sent); a read that got no answer is sent once more; a write that may have reached Vault (a
check-and-set, pki/sign) is never sent again.
"""

from __future__ import annotations

import pytest
import urllib3.util.connection
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.tokens import hash_secret
from support.crypto import make_csr, shared_key
from support.openbao import FaultyProxy

pytestmark = pytest.mark.vault


@pytest.fixture
def proxy(bao):
    made = FaultyProxy(bao)
    yield made
    made.close()


def _refused(fn, *args) -> FrontdoorError:
    with pytest.raises(FrontdoorError) as info:
        fn(*args)
    return info.value


def _once(prefix: bytes):
    """A drop rule for the first request that starts with ``prefix``, and only that one."""
    left = [1]

    def rule(head: bytes) -> bool:
        if head.startswith(prefix) and left[0]:
            left[0] -= 1
            return True
        return False

    return rule


def _status(service, secret: str) -> str:
    return service.store.find_token_by_hash(hash_secret(secret)).status()


def test_a_dropped_read_is_sent_once_more(bao, proxy, make_vault_service):
    service, _ = make_vault_service(bao, url=proxy.url)
    _, secret = service.create_token("default", name="read-dropped", common_name="read-dropped")
    proxy.drop = _once(b"GET ")
    result = service.redeem("default", secret, make_csr(shared_key("p256", 40), cn="x"))
    assert result.certificate.subject.common_name == "read-dropped"
    assert len(proxy.dropped) == 1 and proxy.dropped[0].startswith(b"GET /v1/secret/data/")


def test_reads_dropped_until_the_retry_is_spent_store_unavailable_token_untouched(bao, proxy, make_vault_service):
    service, data = make_vault_service(bao, url=proxy.url)
    _, secret = service.create_token("default", name="reads-dropped", common_name="reads-dropped")
    csr = make_csr(shared_key("p256", 41), cn="x")
    proxy.drop = lambda head: head.startswith(b"GET ")
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "store_unavailable" and exc.status == 503 and "could not be reached" in exc.message, exc
    assert data["vault"]["token"] not in exc.message
    assert len(proxy.dropped) == 2  # sent, and sent once more
    proxy.drop = lambda head: False
    assert _status(service, secret) == "active"
    assert service.redeem("default", secret, csr).certificate.subject.common_name == "reads-dropped"


def test_a_dropped_write_is_never_sent_again(bao, proxy, make_vault_service):
    """Were the claim or the sign resent, these redemptions would succeed: they must fail instead."""
    service, _ = make_vault_service(bao, url=proxy.url)
    service.redeem("default", service.create_token("default", name="warm", common_name="warm")[1],
                   make_csr(shared_key("p256", 42), cn="x"))  # role written and CA chain read already
    _, secret = service.create_token("default", name="write-dropped", common_name="write-dropped")
    csr = make_csr(shared_key("p256", 43), cn="x")

    proxy.drop = _once(b"POST /v1/secret/data/")  # the claim's check-and-set
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "store_unavailable" and "could not be reached" in exc.message, exc
    assert len(proxy.dropped) == 1 and _status(service, secret) == "active"

    certificates = bao.certificate_count()
    proxy.drop = _once(b"POST /v1/pki/sign/")
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "signer_unavailable" and "could not be reached" in exc.message, exc
    assert len(proxy.dropped) == 2 and bao.certificate_count() == certificates
    assert _status(service, secret) == "active"  # the claim was released

    assert service.redeem("default", secret, csr).certificate.subject.common_name == "write-dropped"
    assert bao.certificate_count() == certificates + 1


def test_refused_connects_are_retried_twice_then_store_unavailable_token_untouched(bao, proxy, make_vault_service,
                                                                                     monkeypatch):
    service, data = make_vault_service(bao, url=proxy.url)
    _, secret = service.create_token("default", name="refused", common_name="refused")
    csr = make_csr(shared_key("p256", 44), cn="x")
    attempts = []
    connect = urllib3.util.connection.create_connection

    def counted(address, *args, **kwargs):  # a spy: every connect still goes out as it would
        attempts.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    proxy.refuse()
    exc = _refused(service.redeem, "default", secret, csr)
    assert exc.code == "store_unavailable" and exc.status == 503 and exc.retry_after, exc
    assert "could not be reached" in exc.message and "VAULT_ADDR" in exc.message
    assert data["vault"]["token"] not in exc.message
    assert attempts == [("127.0.0.1", proxy.port)] * 3  # the connect and two retries
    proxy.listen()
    assert _status(service, secret) == "active"
    assert service.redeem("default", secret, csr).certificate.subject.common_name == "refused"


def test_a_standby_redirect_is_followed(bao, proxy, make_vault_service):
    """A standby that does not forward answers 307 with the active node's address: reads and
    writes (method and body kept) reach the active node, with the token."""
    service, _ = make_vault_service(bao, url=proxy.url)
    proxy.redirect_to = bao.url
    _, secret = service.create_token("default", name="redirected", common_name="redirected")
    result = service.redeem("default", secret, make_csr(shared_key("p256", 45), cn="x"))
    assert result.certificate.subject.common_name == "redirected"
    assert service.store.client.requests >= 2 * 5  # every request answered twice: the 307, then the active node
