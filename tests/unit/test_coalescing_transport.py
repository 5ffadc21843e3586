"""The gateway's connection transport sends the writes of one loop turn as one write."""

from __future__ import annotations

import asyncio

from frontdoor_gateway.fastpath import _CoalescingTransport


class FakeTransport:
    def __init__(self):
        self.writes, self.closed, self.aborted = [], False, False

    def write(self, data):
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def run(scenario):
    async def main():
        real = FakeTransport()
        transport = _CoalescingTransport(real, asyncio.get_running_loop())
        await scenario(transport, real)
        return real

    return asyncio.run(main())


def test_head_and_body_of_one_turn_leave_as_one_write():
    async def scenario(transport, real):
        transport.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert real.writes == [] and transport.get_write_buffer_size() == 45
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"]

    run(scenario)


def test_writes_of_separate_turns_stay_separate_and_in_order():
    async def scenario(transport, real):
        transport.write(b"one")
        await asyncio.sleep(0)
        transport.writelines([b"two", b"", b"three"])
        await asyncio.sleep(0)
        assert real.writes == [b"one", b"twothree"]

    run(scenario)


def test_close_sends_what_is_pending_first_and_abort_drops_it():
    async def scenario(transport, real):
        transport.write(b"last words")
        transport.close()
        assert real.writes == [b"last words"] and real.closed
        await asyncio.sleep(0)
        assert real.writes == [b"last words"]  # the scheduled flush finds nothing left

    run(scenario)

    async def aborting(transport, real):
        transport.write(b"dropped")
        transport.abort()
        await asyncio.sleep(0)
        assert real.writes == [] and real.aborted

    run(aborting)


def test_other_calls_reach_the_real_transport():
    async def scenario(transport, real):
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
        assert transport.is_closing() is False
        real.closed = True
        transport.write(b"after the peer left")
        await asyncio.sleep(0)
        assert real.writes == []  # a closing transport is not written to

    run(scenario)


def test_a_large_response_goes_out_as_it_grows():
    """Writes past LIMIT pending bytes are sent at once, so a response streamed within one loop
    turn cannot pile up unbounded in front of the real transport's flow control."""
    async def scenario(transport, real):
        chunk = b"x" * 40_000
        transport.write(chunk)
        assert real.writes == []
        transport.write(chunk)  # 80 000 > LIMIT
        assert real.writes == [chunk + chunk] and transport.get_write_buffer_size() == 0
        transport.write(b"tail")
        await asyncio.sleep(0)
        assert real.writes == [chunk + chunk, b"tail"]

    run(scenario)
