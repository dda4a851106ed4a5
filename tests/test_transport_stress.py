"""Stream transport under load: bulk echo with flow control on both sides, many
connections at once, many small writes.  Each test should take well under 2 s."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

from support import run_until
from transport_support import RecordingProtocol

TIMEOUT = 10.0  # only a broken transport gets near this


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Producer(asyncio.Protocol):
    """Writes ``data`` as fast as flow control allows, then write_eof(); hashes what comes
    back, pausing its own reading for 2 ms every 8 chunks."""

    def __init__(self, loop, data: bytes, chunk: int = 256 * 1024) -> None:
        self.loop = loop
        self.view = memoryview(data)
        self.chunk = chunk
        self.pos = 0
        self.paused = False
        self.pauses = 0
        self.read_pauses = 0
        self.chunks_seen = 0
        self.sha = hashlib.sha256()
        self.received = 0
        self.lost = []
        self.done = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.write_more()

    def write_more(self) -> None:
        while not self.paused and self.pos < len(self.view):
            self.transport.write(self.view[self.pos : self.pos + self.chunk])
            self.pos += self.chunk
        if self.pos >= len(self.view) and not self.paused:
            self.transport.write_eof()
            self.pos = len(self.view) + 1  # only once

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self.write_more()

    def data_received(self, data) -> None:
        self.sha.update(data)
        self.received += len(data)
        self.chunks_seen += 1
        if self.chunks_seen % 8 == 0:
            self.transport.pause_reading()
            self.read_pauses += 1
            # Long enough for the echo side to back up and pause too.
            self.loop.call_later(0.002, self.transport.resume_reading)

    def eof_received(self):
        return None

    def connection_lost(self, exc) -> None:
        self.lost.append(exc)
        if not self.done.done():
            self.done.set_result(None)


class Echo(asyncio.Protocol):
    """Echoes everything; stops reading while its own write buffer is above the high mark."""

    def __init__(self) -> None:
        self.pauses = 0
        self.lost = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.pauses += 1
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self):
        return None  # close(): flushes what is queued, then closes

    def connection_lost(self, exc) -> None:
        self.lost.append(exc)


class BufferedEcho(asyncio.BufferedProtocol):
    """Echo through get_buffer()/buffer_updated()."""

    def __init__(self) -> None:
        self.buffer = bytearray(64 * 1024)
        self.lost = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes) -> None:
        self.transport.write(self.buffer[:nbytes])

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self):
        return None

    def connection_lost(self, exc) -> None:
        self.lost.append(exc)


def echo_through(stream_kit, server, size: int) -> tuple[Producer, object]:
    loop = stream_kit.loop
    data = random.Random(size).randbytes(size)
    expected = hashlib.sha256(data).hexdigest()
    producer = Producer(loop, data)
    # Small kernel buffers, so that whoever stops reading pushes back at once.
    stream_kit.open_both(producer, server, bufsize=128 * 1024)
    producer.start()
    loop.run_until_complete(asyncio.wait_for(producer.done, TIMEOUT))
    run_until(loop, lambda: server.lost)
    assert producer.received == size
    assert producer.sha.hexdigest() == expected
    assert producer.lost == [None]
    assert server.lost == [None]
    return producer, server


def test_echo_32_mib_with_flow_control_on_both_sides(stream_kit):
    producer, server = echo_through(stream_kit, Echo(), 32 * 1024 * 1024)
    # Both directions were throttled at least once, and the reader paused itself.
    assert producer.pauses > 0
    assert server.pauses > 0
    assert producer.read_pauses > 0


def test_echo_8_mib_through_buffered_protocol(stream_kit):
    echo_through(stream_kit, BufferedEcho(), 8 * 1024 * 1024)


def test_200_concurrent_connections(stream_kit):
    loop = stream_kit.loop
    fds_before = open_fd_count()
    pairs = []
    for i in range(200):
        a, b = stream_kit.socket_pair()
        client, server = RecordingProtocol(), Echo()
        stream_kit.transport(a, client, wait=False)
        stream_kit.transport(b, server, wait=False)
        pairs.append((i, client, server))
    run_until(loop, lambda: all(c.transport and s.transport for _, c, s in pairs))
    for i, client, _ in pairs:
        client.transport.write(f"hello from connection {i}".encode())
    run_until(
        loop,
        lambda: all(c.data == f"hello from connection {i}".encode() for i, c, _ in pairs),
    )
    for _, client, _ in pairs:
        client.transport.close()
    run_until(loop, lambda: all(c.lost and s.lost for _, c, s in pairs))
    for _, client, server in pairs:
        assert client.lost == [None]
        assert server.lost == [None]
        assert client.count("connection_lost") == 1
        assert client.transport.is_closing()
    stream_kit.close_all()
    assert open_fd_count() == fds_before


def test_many_small_writes_arrive_in_order(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    peer.start_reading()
    expected = bytearray()
    for i in range(20_000):
        message = b"%d," % i
        transport.write(message)
        expected += message
        if i % 1000 == 0:
            run_until(stream_kit.loop, lambda: True)
    peer.drain(len(expected))
    assert bytes(peer.data) == bytes(expected)


def test_many_small_writes_behind_a_full_buffer(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = bytearray(stream_kit.fill(transport))
    for i in range(20_000):
        message = b"%d;" % i
        transport.write(message)
        data += message
    peer.drain(len(data))
    assert bytes(peer.data) == bytes(data)
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    assert protocol.events == ["connection_made", "pause_writing", "resume_writing"]
