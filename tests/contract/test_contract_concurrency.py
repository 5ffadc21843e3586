"""Contract: racing redemptions issue exactly one certificate per token (issue 2, section 5).

16 threads, each with its own key, race over the same 20 tokens; half of them go through a
second service instance on the same state (two gateways sharing one store). Every loser must
get token_already_used or redemption_in_progress, and only the winner may reach the signer.
"""

from __future__ import annotations

import collections
import threading

from frontdoor_pki.errors import FrontdoorError
from support.crypto import make_csr, shared_key

THREADS = 16
TOKENS = 20


def test_threads_racing_on_each_token_get_exactly_one_certificate(backend, make_service):
    first = make_service()  # wrapped: counts the real signer's calls
    second = make_service()
    tokens = [first.create_token("default", name="race-%02d" % i, common_name="race-%02d" % i) for i in range(TOKENS)]
    csrs = [make_csr(shared_key("p256", slot), cn="racer-%d" % slot) for slot in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    results = collections.defaultdict(list)  # token index -> [(thread, outcome)]
    unexpected = []
    lock = threading.Lock()

    def racer(slot: int) -> None:
        service = first if slot % 2 == 0 else second
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            unexpected.append((slot, "barrier broken"))
            return
        for index, (_, secret) in enumerate(tokens):
            try:
                outcome = service.redeem("default", secret, csrs[slot])
            except FrontdoorError as exc:
                outcome = exc
            except Exception as exc:  # anything else is a bug: record it, do not hide it
                with lock:
                    unexpected.append((slot, repr(exc)))
                continue
            with lock:
                results[index].append((slot, outcome))

    threads = [threading.Thread(target=racer, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert unexpected == []

    calls = first.signers["default"].calls + second.signers["default"].calls
    assert calls == TOKENS, "only the winner of each race may reach the signer"
    winners = {}
    for index in range(TOKENS):
        outcomes = results[index]
        assert len(outcomes) == THREADS
        won = [(slot, o) for slot, o in outcomes if not isinstance(o, FrontdoorError)]
        assert len(won) == 1, "token %d: %d winners" % (index, len(won))
        assert won[0][1].replayed is False
        winners[index] = won[0][1].certificate
        codes = {o.code for _, o in outcomes if isinstance(o, FrontdoorError)}
        assert codes <= {"token_already_used", "redemption_in_progress"}, codes

    page = first.list_certificates("default", size=1000)
    assert page.total == TOKENS
    by_token = collections.Counter(c.token_id for c in page.items)
    assert set(by_token.values()) == {1}
    for index, (record, _) in enumerate(tokens):
        stored = second.get_token("default", record.id)
        assert stored.status() == "redeemed"
        assert stored.certificate_id == winners[index].id
    assert len({c.serial_number for c in page.items}) == TOKENS
