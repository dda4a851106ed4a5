"""`loop.stats()`: the counters match what the test did (ferroloop)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time

import ferroloop
import pytest
from support import run_once


@pytest.fixture
def floop(guard):
    loop = ferroloop.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_stats_is_a_frozen_snapshot(floop):
    stats = floop.stats()
    assert isinstance(stats, ferroloop.LoopStats)
    assert isinstance(stats.lag, ferroloop.LagStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.callbacks = 1
    assert stats.iterations == stats.callbacks == 0
    assert dict(stats.transports) == {"stream": 0, "datagram": 0, "read_pipe": 0, "write_pipe": 0}


def test_callbacks_and_queue_sizes(floop):
    n = 1000
    handles = [floop.call_soon(lambda: None) for _ in range(n)]
    handles[0].cancel()
    before = floop.stats()
    assert before.ready == n and before.callbacks == 0 and before.call_soon == n
    run_once(floop)
    after = floop.stats()
    assert after.callbacks == n - 1
    assert after.iterations == 1
    assert after.ready == 0
    assert after.lag.sample_every == 64
    assert after.lag.samples == n // 64
    assert 0 < after.lag.p50 <= after.lag.p99 <= after.lag.max < 60
    assert 0 < after.lag.mean <= after.lag.max


def test_timers_scheduled_fired_cancelled(floop):
    k, j = 7, 5
    cancelled = [floop.call_later(0.001, lambda: None) for _ in range(k)]
    fired = []
    for _ in range(j):
        floop.call_later(0.001, fired.append, 1)
    assert floop.stats().timers == k + j
    for timer in cancelled:
        timer.cancel()
    cancelled[0].cancel()  # twice: counted once
    floop.run_until_complete(asyncio.sleep(0.05))
    stats = floop.stats()
    assert len(fired) == j
    assert stats.timers_cancelled == k
    assert stats.timers_fired == j + 1  # the sleep's own timer
    assert stats.timers_scheduled == k + j + 1
    assert stats.timers == 0
    assert stats.poll_time >= 0.04
    assert stats.iterations >= 2


def test_bytes_echoed_and_open_transports(floop):
    m = 300_000
    payload = os.urandom(m)
    seen = {}

    async def handle(reader, writer):
        data = await reader.readexactly(m)
        seen["open"] = dict(floop.stats().transports)  # the client waits for the echo
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        echoed = await reader.readexactly(m)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return echoed

    before = floop.stats()
    assert floop.run_until_complete(main()) == payload
    after = floop.stats()
    # Both ends are on this loop: each byte is written and read twice.
    assert after.bytes_written - before.bytes_written == 2 * m
    assert after.bytes_read - before.bytes_read == 2 * m
    assert seen["open"]["stream"] == 2
    assert after.transports["stream"] == 0
    assert after.io_events > before.io_events


def test_framed_transports_count_the_bytes_they_read(floop):
    """A ChunkProtocol's socket and pipe transports read into its splitter themselves."""
    from ferroloop.framing import ChunkProtocol, Delimiter

    wire = b"frame\n" * 1000

    async def main():
        frames = []
        near, far = socket.socketpair()
        protocol = ChunkProtocol(Delimiter(b"\n"), frames.append)
        transport, _ = await floop.connect_accepted_socket(lambda: protocol, near)
        rfd, wfd = os.pipe()
        piped = ChunkProtocol(Delimiter(b"\n"), frames.append)
        pipe, _ = await floop.connect_read_pipe(lambda: piped, os.fdopen(rfd, "rb", 0))
        far.sendall(wire)
        os.write(wfd, wire)
        while len(frames) < 2000:
            await asyncio.sleep(0.001)
        far.close()
        os.close(wfd)
        transport.close()
        pipe.close()
        await asyncio.sleep(0.01)

    before = floop.stats()
    floop.run_until_complete(main())
    assert floop.stats().bytes_read - before.bytes_read == 2 * len(wire)


def test_pipes_and_datagrams_are_counted(floop):
    async def main():
        rfd, wfd = os.pipe()
        got = asyncio.Queue()

        class Reader(asyncio.Protocol):
            def data_received(self, data):
                got.put_nowait(data)

        rt, _ = await floop.connect_read_pipe(Reader, os.fdopen(rfd, "rb", 0))
        wt, _ = await floop.connect_write_pipe(asyncio.Protocol, os.fdopen(wfd, "wb", 0))
        counts = dict(floop.stats().transports)
        wt.write(b"x" * 1000)
        received = 0
        while received < 1000:
            received += len(await got.get())
        wt.close()
        rt.close()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                got.put_nowait(data)

        udp, _ = await floop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        counts["datagram"] = floop.stats().transports["datagram"]
        target = udp.get_extra_info("sockname")
        udp.sendto(b"y" * 100, target)
        assert await got.get() == b"y" * 100
        udp.close()
        await asyncio.sleep(0)
        return counts

    before = floop.stats()
    counts = floop.run_until_complete(main())
    after = floop.stats()
    assert counts["read_pipe"] == 1 and counts["write_pipe"] == 1 and counts["datagram"] == 1
    assert after.bytes_written - before.bytes_written == 1100
    assert after.bytes_read - before.bytes_read == 1100
    assert dict(after.transports) == {"stream": 0, "datagram": 0, "read_pipe": 0, "write_pipe": 0}


def test_poll_and_callback_time(floop):
    floop.call_soon(time.sleep, 0.1)
    floop.run_until_complete(asyncio.sleep(0.1))
    stats = floop.stats()
    assert stats.callback_time >= 0.09
    assert stats.poll_time + stats.callback_time >= 0.19


def test_stats_of_a_closed_loop(floop):
    floop.close()
    assert floop.stats().ready == 0
