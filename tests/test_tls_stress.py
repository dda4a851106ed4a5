"""TLS under load on both loops: many connections through `create_server(ssl=)` and
`create_connection(ssl=)`, each echoing a few MiB written in random pieces (write and
writelines, bytes, bytearray and memoryview), with both sides pausing their reading now
and then, so the Rust record path keeps handing over to asyncio's SSLProtocol and back.
Every byte must come back in order (SHA-256 of both directions)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import ssl

import pytest
import trustme

CONNECTIONS = 12
PER_CONNECTION = 1536 * 1024


@pytest.fixture(scope="module")
def contexts():
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def shrink_send_buffer(transport):
    """A small kernel send buffer, so that flow control engages (loopback buffers are large
    enough to swallow a whole payload otherwise)."""
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)


class StutteringEcho(asyncio.Protocol):
    """Echoes everything; pauses its own reading for 1 ms every 5th chunk."""

    def __init__(self, loop):
        self.loop = loop
        self.chunks = 0

    def connection_made(self, transport):
        self.transport = transport
        shrink_send_buffer(transport)

    def data_received(self, data):
        self.transport.write(data)
        self.chunks += 1
        if self.chunks % 5 == 0:
            self.transport.pause_reading()
            self.loop.call_later(0.001, self.transport.resume_reading)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.transport.close()  # Python 3.10's TLS transport does not mark itself closed


class Sender(asyncio.Protocol):
    """Writes `data` in random pieces while flow control allows; hashes the echo."""

    def __init__(self, loop, data, seed):
        self.loop = loop
        self.data = memoryview(data)
        self.random = random.Random(seed)
        self.pos = 0
        self.can_write = True
        self.write_pauses = 0
        self.received = 0
        self.sha = hashlib.sha256()
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        shrink_send_buffer(transport)
        transport.set_write_buffer_limits(high=64 * 1024)
        self.pump()

    def pump(self):
        while self.can_write and self.pos < len(self.data):
            size = self.random.choice((1, 100, 1500, 16 * 1024, 70 * 1024))
            piece = self.data[self.pos : self.pos + size]
            self.pos += len(piece)
            kind = self.random.randrange(4)
            if kind == 0:
                self.transport.write(bytes(piece))
            elif kind == 1:
                self.transport.write(bytearray(piece))
            elif kind == 2:
                self.transport.write(piece)
            else:
                half = len(piece) // 2
                self.transport.writelines([bytes(piece[:half]), piece[half:]])

    def pause_writing(self):
        self.can_write = False
        self.write_pauses += 1

    def resume_writing(self):
        self.can_write = True
        self.pump()

    def data_received(self, data):
        self.sha.update(data)
        self.received += len(data)
        if self.random.randrange(7) == 0:
            self.transport.pause_reading()
            self.loop.call_later(0.001, self.transport.resume_reading)
        if self.received == len(self.data) and not self.done.done():
            self.done.set_result(self.sha.hexdigest())

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_many_tls_connections_echo_every_byte(loop, contexts):
    server_context, client_context = contexts

    async def main():
        server = await loop.create_server(
            lambda: StutteringEcho(loop), "127.0.0.1", 0, ssl=server_context
        )
        host, port = server.sockets[0].getsockname()[:2]
        payloads = [random.Random(i).randbytes(PER_CONNECTION) for i in range(CONNECTIONS)]
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda data=data, i=i: Sender(loop, data, i),
                    host,
                    port,
                    ssl=client_context,
                )
                for i, data in enumerate(payloads)
            )
        )
        digests = await asyncio.wait_for(
            asyncio.gather(*(protocol.done for _, protocol in made)), 30
        )
        assert digests == [hashlib.sha256(data).hexdigest() for data in payloads]
        # Flow control really was exercised on the way.
        assert sum(protocol.write_pauses for _, protocol in made) >= CONNECTIONS
        for transport, _ in made:
            transport.close()
        await asyncio.wait_for(asyncio.gather(*(protocol.lost for _, protocol in made)), 10)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
